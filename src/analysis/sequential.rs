//! Canary-vs-stable comparison that is valid at every look (pure).
//!
//! # The test
//!
//! Each side's failures are Bernoulli draws with an unknown rate (`pc` for
//! the canary, `ps` for stable). For each side we keep an *anytime-valid
//! confidence sequence* for its rate: the Beta-mixture martingale of Robbins
//!
//! ```text
//! M_n(p) = [ B(f + a, n - f + b) / B(a, b) ] / [ p^f (1 - p)^(n - f) ]
//! ```
//!
//! is a nonnegative martingale under the true `p`, so by Ville's inequality
//! `P(exists n: M_n(p) >= 1/δ) <= δ`, and `{p : M_n(p) < 1/δ}` contains the
//! true rate at *every* n simultaneously with probability `1 - δ`. Checking
//! every interval for hours does not inflate the error rate.
//!
//! With `δ = α/2` per side (`α = 1 - confidence`), both sequences hold at
//! once with probability at least `1 - α` (union bound). On that event:
//!
//! - **harm** is declared only if `Lc > k·Us + a` — the canary's lowest
//!   plausible rate is above the highest plausible allowed rate (`k = 1 +
//!   relative tolerance`, `a = absolute tolerance`). A canary within
//!   tolerance (`pc <= k·ps + a`) is therefore wrongly rolled back with
//!   probability at most `α`, however often it is looked at;
//! - **fine** is declared if `Uc <= k·Ls + a`: the canary is within
//!   tolerance with the same confidence;
//! - otherwise the evidence is **inconclusive**: hold.
//!
//! The Beta mixture is exact for Bernoulli data (no normal approximation),
//! which matters for error rates of 0.1–5% and small counts. The cost of
//! validity at every look is a `log` factor in the width compared with a
//! fixed-sample interval.
//!
//! # The exposure budget
//!
//! The failures the canary caused beyond the stable rate are estimated as
//! `fc - nc·p̂s` (point) and bounded above by `fc - nc·Ls` (on the same event).

/// Prior of the Beta mixture: Jeffreys' Beta(1/2, 1/2).
const PRIOR_A: f64 = 0.5;
const PRIOR_B: f64 = 0.5;

/// Cumulative counts of one side over the comparison window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub requests: f64,
    pub failures: f64,
}

/// A count that cannot be right (negative, NaN, more failures than requests):
/// the query is broken, which is an error outcome, never harm.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CountError {
    #[error("{side} {what} is {value}, not a count (check the query)")]
    NotACount {
        side: &'static str,
        what: &'static str,
        value: f64,
    },
    #[error(
        "{side} has {failures} failures but only {requests} requests (the failures query counts more than the requests query)"
    )]
    MoreFailuresThanRequests {
        side: &'static str,
        failures: f64,
        requests: f64,
    },
}

impl Counts {
    /// Check and round the counts (Prometheus `increase()` extrapolates, so
    /// counts arrive as floats).
    pub fn checked(self, side: &'static str) -> Result<Counts, CountError> {
        for (what, value) in [("requests", self.requests), ("failures", self.failures)] {
            if !value.is_finite() || value < 0.0 {
                return Err(CountError::NotACount { side, what, value });
            }
        }
        let requests = self.requests.round();
        let failures = self.failures.round();
        // Extrapolation can push failures a little over requests; more
        // than that is a broken query.
        if failures > requests + (0.01 * requests).max(1.0) {
            return Err(CountError::MoreFailuresThanRequests {
                side,
                failures,
                requests,
            });
        }
        Ok(Counts {
            requests,
            failures: failures.min(requests),
        })
    }

    pub fn rate(&self) -> f64 {
        if self.requests > 0.0 {
            self.failures / self.requests
        } else {
            0.0
        }
    }
}

/// How much worse the canary may be and still be fine: `pc <= k·ps + a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute error rate `a`.
    pub absolute: f64,
    /// Relative tolerance; `k = 1 + relative`.
    pub relative: f64,
}

impl Tolerance {
    pub const ZERO: Tolerance = Tolerance {
        absolute: 0.0,
        relative: 0.0,
    };

    /// Parse `0.005` (absolute) or `"20%"` (relative).
    pub fn parse(v: Option<&serde_json::Value>) -> Result<Tolerance, String> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(Tolerance::ZERO),
            Some(serde_json::Value::Number(n)) => {
                let a = n.as_f64().unwrap_or(f64::NAN);
                if (0.0..1.0).contains(&a) {
                    Ok(Tolerance {
                        absolute: a,
                        relative: 0.0,
                    })
                } else {
                    Err(format!("{a} is not an error rate in [0, 1)"))
                }
            }
            Some(serde_json::Value::String(s)) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(r) if r.is_finite() && r >= 0.0 => Ok(Tolerance {
                            absolute: 0.0,
                            relative: r / 100.0,
                        }),
                        _ => Err(format!("{s:?} is not a percentage like \"20%\"")),
                    }
                } else {
                    match t.parse::<f64>() {
                        Ok(a) if (0.0..1.0).contains(&a) => Ok(Tolerance {
                            absolute: a,
                            relative: 0.0,
                        }),
                        _ => Err(format!(
                            "{s:?} is neither an error rate like 0.005 nor a percentage like \"20%\""
                        )),
                    }
                }
            }
            Some(other) => Err(format!("{other} is neither an error rate nor a percentage")),
        }
    }

    fn k(&self) -> f64 {
        1.0 + self.relative
    }

    /// The highest canary rate allowed for a stable rate `ps`.
    pub fn allowed(&self, ps: f64) -> f64 {
        self.k() * ps + self.absolute
    }

    pub fn describe(&self) -> String {
        let (a, r) = (self.absolute, self.relative);
        if r == 0.0 {
            format!("+{a}")
        } else if a == 0.0 {
            format!("+{}%", r * 100.0)
        } else {
            format!("+{}% +{a}", r * 100.0)
        }
    }
}

/// What the evidence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The canary is worse than stable + tolerance, with confidence.
    Harm,
    /// The canary is within tolerance, with confidence.
    Fine,
    /// Not enough evidence either way yet.
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Harm => "Harm",
            Outcome::Fine => "Fine",
            Outcome::Inconclusive => "Inconclusive",
        }
    }
}

/// The evidence of one look, with every number a person needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub canary: Counts,
    pub stable: Counts,
    /// Confidence-sequence bounds of each side's rate.
    pub canary_bounds: (f64, f64),
    pub stable_bounds: (f64, f64),
    /// `pc - allowed(ps)`: above 0 means worse than tolerated. Point
    /// estimate and bounds (lower = `Lc - allowed(Us)`, upper = `Uc - allowed(Ls)`).
    pub excess: f64,
    pub excess_lower: f64,
    pub excess_upper: f64,
    pub outcome: Outcome,
    /// Failures the canary caused beyond the stable rate: point estimate
    /// and upper bound.
    pub extra_failures: f64,
    pub extra_failures_upper: f64,
    /// A rough estimate of how many more canary requests a conclusion needs
    /// at the current rates (None when conclusive or not estimable).
    pub more_requests_needed: Option<u64>,
}

/// Evaluate one look. `confidence` in (0, 1), e.g. 0.99.
pub fn evaluate(
    canary: Counts,
    stable: Counts,
    tolerance: Tolerance,
    confidence: f64,
) -> Result<Evidence, CountError> {
    let canary = canary.checked("canary")?;
    let stable = stable.checked("stable")?;
    let alpha = (1.0 - confidence).clamp(1e-12, 0.5);
    let delta = alpha / 2.0;
    let (lc, uc) = confidence_sequence(canary, delta);
    let (ls, us) = confidence_sequence(stable, delta);
    let excess = canary.rate() - tolerance.allowed(stable.rate());
    let excess_lower = lc - tolerance.allowed(us);
    let excess_upper = uc - tolerance.allowed(ls);
    let outcome = if canary.requests == 0.0 || stable.requests == 0.0 {
        Outcome::Inconclusive
    } else if excess_lower > 0.0 {
        Outcome::Harm
    } else if excess_upper <= 0.0 {
        Outcome::Fine
    } else {
        Outcome::Inconclusive
    };
    let extra_failures = (canary.failures - canary.requests * stable.rate()).max(0.0);
    let extra_failures_upper = (canary.failures - canary.requests * ls).max(0.0);
    let more_requests_needed = match outcome {
        Outcome::Inconclusive => requests_needed(canary, excess, excess_lower, excess_upper),
        _ => None,
    };
    Ok(Evidence {
        canary,
        stable,
        canary_bounds: (lc, uc),
        stable_bounds: (ls, us),
        excess,
        excess_lower,
        excess_upper,
        outcome,
        extra_failures,
        extra_failures_upper,
        more_requests_needed,
    })
}

/// Rough number of further canary requests before the bounds clear the
/// tolerance line at the current point estimates (same traffic split). The
/// bounds' half-width shrinks like `sqrt(log n / n)`; solved by a few
/// fixed-point steps rather than by re-running the test.
fn requests_needed(canary: Counts, excess: f64, lower: f64, upper: f64) -> Option<u64> {
    let gap = excess.abs();
    let half = if excess >= 0.0 {
        excess - lower
    } else {
        upper - excess
    };
    if canary.requests == 0.0 || gap < 1e-9 || !half.is_finite() || half <= 0.0 {
        return None;
    }
    let n = canary.requests.max(2.0);
    let mut scale = (half / gap).powi(2);
    for _ in 0..8 {
        scale = (half / gap).powi(2) * ((scale * n).ln().max(1.0) / n.ln().max(1.0));
    }
    let more = ((scale - 1.0).max(0.0) * n).ceil();
    (more.is_finite() && more < 1e15).then_some(more as u64)
}

/// `{p : M_n(p) < 1/δ}` as `(lower, upper)`.
pub fn confidence_sequence(c: Counts, delta: f64) -> (f64, f64) {
    let n = c.requests;
    let f = c.failures.min(n);
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let threshold = (1.0 / delta).ln();
    let log_mix = ln_beta(f + PRIOR_A, n - f + PRIOR_B) - ln_beta(PRIOR_A, PRIOR_B);
    // log M(p) = log_mix - [f ln p + (n-f) ln(1-p)]; convex in p, minimal at f/n.
    let log_m = |p: f64| log_mix - (f * p.ln() + (n - f) * (1.0 - p).ln());
    let p_hat = (f / n).clamp(1e-15, 1.0 - 1e-15);
    let lower = if f == 0.0 || log_m(1e-15) < threshold {
        0.0
    } else {
        bisect(|p| log_m(p) >= threshold, 1e-15, p_hat)
    };
    let upper = if f == n || log_m(1.0 - 1e-15) < threshold {
        1.0
    } else {
        // On (p_hat, 1): log M increases; find where it crosses.
        1.0 - bisect(|q| log_m(1.0 - q) >= threshold, 1e-15, 1.0 - p_hat)
    };
    (lower, upper)
}

/// The boundary point in `[lo, hi]` where `outside` turns from true (at
/// `lo`) to false (at `hi`), in log space for small numbers.
fn bisect(outside: impl Fn(f64) -> bool, lo: f64, hi: f64) -> f64 {
    let (mut lo, mut hi) = (lo.ln(), hi.ln());
    for _ in 0..45 {
        let mid = 0.5 * (lo + hi);
        if outside(mid.exp()) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (0.5 * (lo + hi)).exp()
}

/// ln B(a, b).
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests;
