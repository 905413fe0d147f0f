//! A small seedable random source and the two samplers the traffic model
//! needs (Poisson request counts, binomial failure counts). No dependency:
//! the simulator must give the same numbers for the same seed everywhere.

use crate::analysis::sequential::ln_gamma;

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, passes BigCrush,
/// and any seed is a good seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed.wrapping_add(GOLDEN)))
    }

    /// The stream of one simulated second: the draws of second `tick` do not
    /// depend on how many draws earlier seconds took, so two policies that
    /// route differently still see the same total traffic every second.
    pub fn for_tick(seed: u64, tick: u64) -> Self {
        Rng(mix(
            mix(seed.wrapping_add(GOLDEN)) ^ tick.wrapping_mul(GOLDEN)
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1): safe to take the logarithm of.
    fn open_uniform(&mut self) -> f64 {
        loop {
            let u = self.uniform();
            if u > 0.0 {
                return u;
            }
        }
    }

    /// A Poisson draw with mean `lambda`: Knuth's product method below 10,
    /// Hörmann's PTRS transformed rejection above (exact, O(1)).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda < 10.0 {
            let limit = (-lambda).exp();
            let mut k = 0;
            let mut p = self.uniform();
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            return k;
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.open_uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
                <= -lambda + k * loglam - ln_gamma(k + 1.0)
            {
                return k as u64;
            }
        }
    }

    /// A binomial draw: `n` trials with success probability `p`. Waiting
    /// times (geometric jumps) when `n·p < 10`, Hörmann's BTRS transformed
    /// rejection otherwise (exact, O(1)).
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p.is_nan() || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let nf = n as f64;
        if nf * p < 10.0 {
            // Count successes by jumping over the failures between them.
            let log_q = (-p).ln_1p();
            let mut successes = 0;
            let mut position = 0.0;
            loop {
                position += (self.open_uniform().ln() / log_q).floor() + 1.0;
                if position > nf {
                    return successes;
                }
                successes += 1;
            }
        }
        let q = 1.0 - p;
        let spq = (nf * p * q).sqrt();
        let b = 1.15 + 2.53 * spq;
        let a = -0.0873 + 0.0248 * b + 0.01 * p;
        let c = nf * p + 0.5;
        let vr = 0.92 - 4.2 / b;
        let alpha = (2.83 + 5.1 / b) * spq;
        let lpq = (p / q).ln();
        let m = ((nf + 1.0) * p).floor();
        let h = ln_gamma(m + 1.0) + ln_gamma(nf - m + 1.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.open_uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + c).floor();
            if k < 0.0 || k > nf {
                continue;
            }
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            let v = (v * alpha / (a / (us * us) + b)).ln();
            if v <= h - ln_gamma(k + 1.0) - ln_gamma(nf - k + 1.0) + (k - m) * lpq {
                return k as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(draws: impl Iterator<Item = u64>) -> (f64, f64) {
        let v: Vec<f64> = draws.map(|x| x as f64).collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn same_seed_same_numbers_and_tick_streams_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::new(7);
        let b: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert!(b.windows(2).all(|w| w[0] != w[1]));
        assert_ne!(
            Rng::for_tick(1, 10).next_u64(),
            Rng::for_tick(1, 11).next_u64()
        );
        assert_ne!(
            Rng::for_tick(1, 10).next_u64(),
            Rng::for_tick(2, 10).next_u64()
        );
    }

    #[test]
    fn poisson_has_its_mean_and_variance() {
        for lambda in [0.05, 1.0, 7.5, 10.0, 120.0, 2500.0] {
            let mut r = Rng::new(lambda as u64 + 1);
            let (mean, var) = moments((0..40_000).map(|_| r.poisson(lambda)));
            let se = (lambda / 40_000.0).sqrt();
            assert!((mean - lambda).abs() < 5.0 * se, "λ {lambda}: mean {mean}");
            assert!(
                (var / lambda - 1.0).abs() < 0.05,
                "λ {lambda}: variance {var}"
            );
        }
    }

    #[test]
    fn binomial_has_its_mean_and_variance() {
        for (n, p) in [
            (10, 0.3),
            (100, 0.006),
            (1_000, 0.05),
            (5_000, 0.06),
            (200, 0.9),
            (50_000, 0.5),
        ] {
            let mut r = Rng::new(n ^ 99);
            let (mean, var) = moments((0..40_000).map(|_| r.binomial(n, p)));
            let expected = n as f64 * p;
            let expected_var = expected * (1.0 - p);
            let se = (expected_var / 40_000.0).sqrt();
            assert!(
                (mean - expected).abs() < 5.0 * se,
                "n {n} p {p}: mean {mean}"
            );
            assert!(
                (var / expected_var - 1.0).abs() < 0.05,
                "n {n} p {p}: variance {var} vs {expected_var}"
            );
        }
        let mut r = Rng::new(1);
        assert_eq!(r.binomial(0, 0.5), 0);
        assert_eq!(r.binomial(10, 0.0), 0);
        assert_eq!(r.binomial(10, 1.0), 10);
    }
}
