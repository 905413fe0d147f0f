//! Canary-vs-stable comparison that is valid at every look (pure).
//!
//! # The test
//!
//! Each request of a side fails with an unknown rate (`pc` for the canary,
//! `ps` for stable). The canary is *within tolerance* when `pc <= k·ps + a`
//! (`k = 1 + relative tolerance`, `a = absolute tolerance`); the line
//! `pc = k·ps + a` is the *boundary*. Two sequential tests run side by side:
//!
//! - **harm** tests the null "within tolerance" (`pc <= k·ps + a`);
//! - **fine** tests the null "worse than tolerated" (`pc >= k·ps + a`).
//!
//! Each is an *e-process*: a running product of per-look likelihood ratios
//! whose expectation is at most 1 under its null, whatever `ps` is. By
//! Ville's inequality such a product reaches `1/α` with probability at most
//! `α` — at *any* look, however many looks there are. A test concludes when
//! its product reaches `1/α = 1/(1 - confidence)` (100 at 0.99); the value
//! is shown to people as the "evidence" (how many times more likely the
//! counts are under the conclusion than under its opposite). Each test has
//! its own confidence ([`Confidence`]): Fine, which promotes, 0.99 by
//! default; Harm, which rolls back to the version already serving, 0.95.
//!
//! One look's factor (the *batch*: the requests and failures since the
//! previous look) is the likelihood ratio of an alternative `(qc, qs)`
//! against the point of the boundary closest to it in Kullback–Leibler
//! divergence, weighted by the batch's request counts (its *projection*,
//! `batch_factors` shows why that makes it an e-value for every point of
//! the boundary at once). So stable's unknown rate costs nothing but what
//! the data say about it: no union bound, no plug-in.
//!
//! The alternative is not known, so each test is an equal-weight mixture of
//! `COMPONENTS` products, each with its own alternative `qc = ρ·(k·qs + a)`
//! (log-spaced `ρ` from 1.1 to 8 for harm, from 0.95 down to 0.4 for
//! fine). `qs` is stable's rate estimated from the *earlier* looks, chosen
//! before the batch is seen, as a likelihood ratio's alternative must be.
//! The mixture costs about `ln(16 / components near the truth)` nats over
//! the best single alternative. The grid is dense where that cost is paid
//! in many requests: a canary near the boundary gains evidence slowly, so
//! each nat it pays costs hundreds of requests, while a canary far from it
//! (ρ above 8 or below 0.4) is still told apart by the nearest component in
//! a few requests more (a 50% error rate against a 1.1% boundary needs
//! about four failures instead of three). The grid was narrowed from
//! 1.1–30 and 0.95–0.05 when the decision-quality benchmark showed 10–20%
//! fewer requests to evidence in every scenario it runs, and never more.
//! Changing the grid keeps running evidence valid: each look's factor is an
//! e-value for any alternative chosen before the look.
//! Past the mixture's cost, each canary request adds
//! about `KL(pc ‖ k·ps + a)` to the winning log product — the rate of Wald's
//! sequential probability ratio test, which knows both rates.
//!
//! The counts are exact Bernoulli likelihoods (no normal approximation),
//! which matters for error rates of 0.1–5% and small counts. The running
//! products are kept in the Rollout's status between looks ([`State`]).
//!
//! # The exposure budget
//!
//! The failures the canary caused beyond the stable rate are estimated as
//! `fc - nc·p̂s` (point) and bounded above by `fc - nc·Ls`, with `Ls` the
//! lower end of an anytime-valid confidence sequence for stable's rate
//! (Robbins' Beta mixture, [`confidence_sequence`]).

/// Prior of the Beta mixture: Jeffreys' Beta(1/2, 1/2).
const PRIOR_A: f64 = 0.5;
const PRIOR_B: f64 = 0.5;

/// Cumulative counts of one side over the comparison window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
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
    /// A fixed limit: the canary is fine when `pc <= a`, whatever stable
    /// does (`k = 0`; stable's counts play no part). A threshold metric
    /// counted as requests and failures (`metrics[].requests`/`failures`
    /// with `max`).
    pub fixed: bool,
}

impl Tolerance {
    pub const ZERO: Tolerance = Tolerance {
        absolute: 0.0,
        relative: 0.0,
        fixed: false,
    };

    /// The fixed limit `pc <= max`.
    pub fn limit(max: f64) -> Tolerance {
        Tolerance {
            absolute: max,
            relative: 0.0,
            fixed: true,
        }
    }

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
                        fixed: false,
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
                            fixed: false,
                        }),
                        _ => Err(format!("{s:?} is not a percentage like \"20%\"")),
                    }
                } else {
                    match t.parse::<f64>() {
                        Ok(a) if (0.0..1.0).contains(&a) => Ok(Tolerance {
                            absolute: a,
                            relative: 0.0,
                            fixed: false,
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
        if self.fixed { 0.0 } else { 1.0 + self.relative }
    }

    /// The highest canary rate allowed for a stable rate `ps`.
    pub fn allowed(&self, ps: f64) -> f64 {
        self.k() * ps + self.absolute
    }

    pub fn describe(&self) -> String {
        let (a, r) = (self.absolute, self.relative);
        if self.fixed {
            format!("at most {a}")
        } else if r == 0.0 {
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
            Outcome::Harm => crate::api::COMPARISON_HARM,
            Outcome::Fine => crate::api::COMPARISON_FINE,
            Outcome::Inconclusive => "Inconclusive",
        }
    }
}

/// The mixture's alternatives, as multiples `ρ` of the tolerated rate
/// (`k·ps + a`): harm components above it, fine components below it.
/// Log-spaced; equal prior weights.
const COMPONENTS: usize = 16;

fn rho(harm: bool, i: usize) -> f64 {
    let t = i as f64 / (COMPONENTS - 1) as f64;
    if harm {
        // 1.1 … 8
        1.1 * (8.0f64 / 1.1).powf(t)
    } else {
        // 0.95 … 0.4
        0.95 * (0.4f64 / 0.95).powf(t)
    }
}

/// The stable rate assumed for the first batch, before stable has served
/// anything. Any value keeps the test valid; it only affects the power of the
/// first batch, and little (see `batch_log_e`).
const FIRST_STABLE_GUESS: f64 = 0.01;

/// The running evidence of one comparison is kept in status between looks
/// as it is (`basis` is the caller's: what the evidence was gathered for).
pub use crate::api::EvidenceState as State;

/// KL divergence of Bernoulli(q) from Bernoulli(r): `KL(q‖r)`.
pub fn kl(q: f64, r: f64) -> f64 {
    let term = |x: f64, y: f64| if x <= 0.0 { 0.0 } else { x * (x / y).ln() };
    term(q, r) + term(1.0 - q, 1.0 - r)
}

/// The point of the boundary `pc = k·ps + a` closest (in KL, weighted by
/// the batch's request counts) to the alternative `(qc, qs)`: returns
/// `(rc, rs)`.
fn project(qc: f64, qs: f64, nc: f64, ns: f64, tol: Tolerance) -> (f64, f64) {
    if tol.fixed {
        // The boundary is `pc = a` for every stable rate: the closest
        // point leaves stable where it is.
        return (tol.absolute, qs);
    }
    let (k, a) = (tol.k(), tol.absolute);
    let hi = ((1.0 - a) / k).min(1.0);
    // f(r) = nc·KL(qc‖k r + a) + ns·KL(qs‖r) is convex on (0, hi): Newton on
    // f', kept inside a bracket that shrinks with the sign of f' (bisection
    // when a step leaves it).
    let slope_curve = |r: f64| {
        let rc = k * r + a;
        let slope =
            nc * k * ((1.0 - qc) / (1.0 - rc) - qc / rc) + ns * ((1.0 - qs) / (1.0 - r) - qs / r);
        let curve = nc * k * k * ((1.0 - qc) / (1.0 - rc).powi(2) + qc / (rc * rc))
            + ns * ((1.0 - qs) / (1.0 - r).powi(2) + qs / (r * r));
        (slope, curve)
    };
    let (mut lo, mut up) = (0.0f64, hi);
    let mut r = qs.clamp(hi * 1e-9, hi * (1.0 - 1e-9));
    for _ in 0..100 {
        let (slope, curve) = slope_curve(r);
        if slope < 0.0 {
            lo = r;
        } else {
            up = r;
        }
        let newton = r - slope / curve;
        let next = if newton > lo && newton < up && newton.is_finite() {
            newton
        } else {
            0.5 * (lo + up)
        };
        if (next - r).abs() <= 1e-14 * r || up - lo <= f64::EPSILON * up {
            r = next;
            break;
        }
        r = next;
    }
    (k * r + a, r)
}

/// The per-request factors of one batch's e-value for the alternative
/// `(qc, qs)`: `(θc, φc, θs, φs)`, by which a failed / successful canary
/// request and a failed / successful stable request multiply it. They are
/// the likelihood ratios of the alternative against its projection `(rc,
/// rs)` on the boundary, weighted by the batch's request counts `nc`, `ns`.
///
/// Why the product is an e-value for every rate on the boundary, not just
/// the projection: its expectation there is `exp g(ps)` with
/// `g(ps) = nc·ln E_{k·ps+a}[factor] + ns·ln E_{ps}[factor]`, a sum of logs
/// of affine functions of `ps`, hence concave; `g(rs) = 0` (likelihood
/// ratios average 1 under the denominator) and `g'(rs) = 0` (that is the
/// condition for `rs` to be the projection). So `g <= 0` on the whole
/// boundary; off it, on the null's side, the canary factor's expectation is
/// smaller still.
fn batch_factors(qc: f64, qs: f64, nc: f64, ns: f64, tol: Tolerance) -> (f64, f64, f64, f64) {
    let (rc, rs) = project(qc, qs, nc, ns, tol);
    (
        qc / rc,
        (1.0 - qc) / (1.0 - rc),
        qs / rs,
        (1.0 - qs) / (1.0 - rs),
    )
}

/// `ln` of one batch's e-value for one alternative `(qc, qs)`.
fn batch_log_e(qc: f64, qs: f64, dc: Counts, ds: Counts, tol: Tolerance) -> f64 {
    // Against a fixed limit stable's factors are 1 (its projection is
    // itself): the canary's batch alone is a batch.
    if dc.requests <= 0.0 || (ds.requests <= 0.0 && !tol.fixed) {
        return 0.0;
    }
    let (tc, fc, ts, fs) = batch_factors(qc, qs, dc.requests, ds.requests, tol);
    // 0 · ln(anything) is 0: a side without failures (or successes) adds
    // nothing for them.
    let term = |count: f64, factor: f64| {
        if count > 0.0 {
            count * factor.ln()
        } else {
            0.0
        }
    };
    let v = term(dc.failures, tc)
        + term(dc.requests - dc.failures, fc)
        + term(ds.failures, ts)
        + term(ds.requests - ds.failures, fs);
    if v.is_finite() { v } else { 0.0 }
}

/// `ln` of the equal-weight mixture of `exp(l_i)`.
fn log_mean_exp(l: &[f64]) -> f64 {
    if l.is_empty() {
        return 0.0;
    }
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + (l.iter().map(|x| (x - m).exp()).sum::<f64>() / l.len() as f64).ln()
}

/// The evidence of one look, with every number a person needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Cumulative counts of the window.
    pub canary: Counts,
    pub stable: Counts,
    /// `pc - allowed(ps)` at the point estimates: above 0 means worse than
    /// tolerated.
    pub excess: f64,
    /// An interval for the excess, valid at every look with probability
    /// `confidence.fine`: `Lc - allowed(Us)` to `Uc - allowed(Ls)` from each
    /// side's confidence sequence at `α/2`. For people: it treats the sides
    /// separately, so it is wider than what the test uses, and a conclusion
    /// may come while it still contains 0.
    pub excess_lower: f64,
    pub excess_upper: f64,
    /// The e-values (likelihood ratios, see the module docs; the bar each
    /// must reach is `1 / (1 - confidence)` of its own [`Confidence`]): how many times
    /// more likely the data are if the canary is worse than tolerated than
    /// if it is within tolerance (`harm`), and the other way round (`fine`).
    pub harm: f64,
    pub fine: f64,
    pub outcome: Outcome,
    /// Failures the canary caused beyond the stable rate: point estimate
    /// and upper bound.
    pub extra_failures: f64,
    pub extra_failures_upper: f64,
    /// A rough estimate of how many more canary requests a conclusion needs
    /// at the current rates (None when conclusive or not estimable).
    pub more_requests_needed: Option<u64>,
    /// The running evidence after this look, to pass to the next one.
    pub state: State,
}

/// The confidence each conclusion needs. Their errors cost differently: a
/// canary wrongly found fine is promoted and serves all users, while a canary
/// wrongly found worse is rolled back and all traffic stays on the version
/// that was serving it (a retry costs time, not failed requests). So Harm
/// may ask for less than Fine: with the defaults (0.95 and 0.99) a canary
/// within tolerance is wrongly rolled back at most 5% of the time, one worse
/// than tolerated wrongly promoted on the evidence at most 1%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    /// For Fine: the bar `fineEvidence` must reach is `1 / (1 - fine)`; the
    /// intervals shown are at this confidence too.
    pub fine: f64,
    /// For Harm: the bar `harmEvidence` must reach is `1 / (1 - harm)`.
    pub harm: f64,
}

impl Confidence {
    /// `1 - fine`, kept where the arithmetic stays sound.
    fn alpha_fine(self) -> f64 {
        (1.0 - self.fine).clamp(1e-12, 0.5)
    }
    /// `1 - harm`, likewise.
    fn alpha_harm(self) -> f64 {
        (1.0 - self.harm).clamp(1e-12, 0.5)
    }
}

impl From<f64> for Confidence {
    /// The same confidence for both conclusions.
    fn from(c: f64) -> Confidence {
        Confidence { fine: c, harm: c }
    }
}

/// Largest e-value shown (JSON has no infinity).
const MAX_SHOWN: f64 = 1e15;

/// Evaluate one look: `prev` is the state the previous look returned
/// (`State::default()` for the first), `canary` and `stable` the cumulative
/// counts of the window. `confidence` in (0, 1), e.g. 0.99 for both
/// conclusions, or a [`Confidence`] for each.
pub fn evaluate(
    prev: &State,
    canary: Counts,
    stable: Counts,
    tolerance: Tolerance,
    confidence: impl Into<Confidence>,
) -> Result<Evidence, CountError> {
    let confidence = confidence.into();
    let canary = canary.checked("canary")?;
    // Against a fixed limit stable's counts are not part of the test.
    let stable = if tolerance.fixed {
        Counts::default()
    } else {
        stable.checked("stable")?
    };
    let alpha = confidence.alpha_fine();
    // The batch: what arrived since the previous look. Prometheus'
    // extrapolation can make a cumulative count dip; a dip is no batch.
    let batch = |now: Counts, before: Counts| {
        let requests = (now.requests - before.requests).max(0.0);
        let failures = (now.failures - before.failures).max(0.0).min(requests);
        Counts { requests, failures }
    };
    let seen_canary = Counts {
        requests: prev.canary_requests,
        failures: prev.canary_failures,
    };
    let seen_stable = Counts {
        requests: prev.stable_requests,
        failures: prev.stable_failures,
    };
    let (dc, ds) = (batch(canary, seen_canary), batch(stable, seen_stable));
    // The alternatives are chosen before the batch is seen: from stable's
    // counts of the earlier looks.
    let qs = if seen_stable.requests > 0.0 {
        (seen_stable.failures + 0.5) / (seen_stable.requests + 1.0)
    } else {
        FIRST_STABLE_GUESS
    };
    let allowed = tolerance.allowed(qs);
    let update = |harm: bool, before: &[f64]| -> Vec<f64> {
        (0..COMPONENTS)
            .map(|i| {
                // A component the stored state lacks starts now (a product
                // that is 1 until it starts is still an e-process); a value
                // that is not a number counts as no evidence at all.
                let l = match before.get(i) {
                    Some(v) if v.is_finite() => *v,
                    Some(_) => f64::MIN,
                    None => 0.0,
                };
                let qc = (rho(harm, i) * allowed).clamp(1e-9, 1.0 - 1e-9);
                let on_its_side = if harm { qc > allowed } else { qc < allowed };
                let e = if on_its_side {
                    batch_log_e(qc, qs, dc, ds, tolerance)
                } else {
                    0.0
                };
                // Kept at full precision: rounding at every look would add
                // up over the thousands of looks of a slow rollout.
                l + e
            })
            .collect()
    };
    let state = State {
        basis: prev.basis.clone(),
        canary_requests: seen_canary.requests.max(canary.requests),
        canary_failures: seen_canary.failures.max(canary.failures),
        stable_requests: seen_stable.requests.max(stable.requests),
        stable_failures: seen_stable.failures.max(stable.failures),
        harm: update(true, &prev.harm),
        fine: update(false, &prev.fine),
    };
    let (ln_harm, ln_fine) = (log_mean_exp(&state.harm), log_mean_exp(&state.fine));
    let ln_bar = (1.0 / alpha).ln();
    let ln_harm_bar = (1.0 / confidence.alpha_harm()).ln();
    let excess = canary.rate() - tolerance.allowed(stable.rate());
    let outcome = if canary.requests == 0.0 || (stable.requests == 0.0 && !tolerance.fixed) {
        Outcome::Inconclusive
    } else if ln_harm >= ln_harm_bar {
        Outcome::Harm
    } else if ln_fine >= ln_bar {
        Outcome::Fine
    } else {
        Outcome::Inconclusive
    };
    let (lc, uc) = confidence_sequence(canary, alpha / 2.0);
    let (ls, us) = confidence_sequence(stable, alpha / 2.0);
    let extra_failures = (canary.failures - canary.requests * stable.rate()).max(0.0);
    let extra_failures_upper = (canary.failures - canary.requests * ls).max(0.0);
    let more_requests_needed = match outcome {
        Outcome::Inconclusive => {
            let missing = if excess > 0.0 {
                ln_harm_bar - ln_harm
            } else {
                ln_bar - ln_fine
            };
            requests_needed(canary, stable, tolerance, missing)
        }
        _ => None,
    };
    Ok(Evidence {
        canary,
        stable,
        excess,
        excess_lower: lc - tolerance.allowed(us),
        excess_upper: uc - tolerance.allowed(ls),
        harm: ln_harm.exp().min(MAX_SHOWN),
        fine: ln_fine.exp().min(MAX_SHOWN),
        outcome,
        extra_failures,
        extra_failures_upper,
        more_requests_needed,
        state,
    })
}

/// Rough number of further canary requests before the evidence the point
/// estimates lean to gains the `missing` nats it lacks: each canary request
/// adds about `KL(p̂c ‖ allowed(p̂s))` when the rates are what they seem.
fn requests_needed(canary: Counts, stable: Counts, tol: Tolerance, missing: f64) -> Option<u64> {
    if canary.requests == 0.0 || (stable.requests == 0.0 && !tol.fixed) || missing <= 0.0 {
        return None;
    }
    let pc = ((canary.failures + 0.5) / (canary.requests + 1.0)).clamp(1e-9, 1.0 - 1e-9);
    let allowed = tol
        .allowed((stable.failures + 0.5) / (stable.requests + 1.0))
        .clamp(1e-9, 1.0 - 1e-9);
    let per_request = kl(pc, allowed);
    let more = (missing / per_request).ceil();
    (per_request > 1e-12 && more.is_finite() && more < 1e15).then_some(more as u64)
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
