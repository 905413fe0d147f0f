//! Unit, property and Monte Carlo tests of the sequential comparison.

use proptest::prelude::*;

use super::*;

/// The simulator's seeded generator: fixed seeds, reproducible Monte Carlo.
use crate::simulate::rng::Rng;

fn c(requests: f64, failures: f64) -> Counts {
    Counts { requests, failures }
}

#[test]
fn ln_gamma_matches_known_values() {
    assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
    assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    assert!((ln_gamma(1.0)).abs() < 1e-12);
    assert!((ln_gamma(101.0) - 363.739_375_555_563_5).abs() < 1e-9);
}

#[test]
fn bounds_contain_the_estimate_and_shrink_with_data() {
    let (l1, u1) = confidence_sequence(c(100.0, 5.0), 0.005);
    let (l2, u2) = confidence_sequence(c(10_000.0, 500.0), 0.005);
    assert!(l1 < 0.05 && 0.05 < u1);
    assert!(l2 < 0.05 && 0.05 < u2);
    assert!(u2 - l2 < (u1 - l1) / 5.0, "{l1}..{u1} vs {l2}..{u2}");
    assert!(l2 > 0.039 && u2 < 0.062, "{l2}..{u2}");
}

#[test]
fn edge_counts_give_edge_bounds() {
    assert_eq!(confidence_sequence(c(0.0, 0.0), 0.005), (0.0, 1.0));
    let (l, u) = confidence_sequence(c(1000.0, 0.0), 0.005);
    assert_eq!(l, 0.0);
    assert!(u > 0.0 && u < 0.02, "{u}");
    let (l, u) = confidence_sequence(c(1000.0, 1000.0), 0.005);
    assert_eq!(u, 1.0);
    assert!(l > 0.98, "{l}");
    // Huge counts: no overflow, tight bounds.
    let (l, u) = confidence_sequence(c(1e12, 1e9), 0.005);
    assert!(l < 1e-3 && u > 1e-3 && u - l < 1e-5, "{l}..{u}");
}

#[test]
fn broken_counts_are_errors_not_harm() {
    let t = Tolerance::ZERO;
    assert!(evaluate(c(f64::NAN, 0.0), c(10.0, 0.0), t, 0.99).is_err());
    assert!(evaluate(c(10.0, -1.0), c(10.0, 0.0), t, 0.99).is_err());
    assert!(evaluate(c(10.0, 0.0), c(10.0, f64::INFINITY), t, 0.99).is_err());
    let e = evaluate(c(10.0, 50.0), c(10.0, 0.0), t, 0.99).unwrap_err();
    assert!(e.to_string().contains("more"), "{e}");
    // A little over from extrapolation is tolerated and capped.
    let ev = evaluate(c(100.2, 100.9), c(1000.0, 1.0), t, 0.99).unwrap();
    assert_eq!(ev.canary.failures, ev.canary.requests);
}

#[test]
fn zero_traffic_or_zero_failures_is_never_harm() {
    let t = Tolerance::ZERO;
    assert_eq!(
        evaluate(c(0.0, 0.0), c(1000.0, 5.0), t, 0.99)
            .unwrap()
            .outcome,
        Outcome::Inconclusive
    );
    assert_eq!(
        evaluate(c(1000.0, 0.0), c(0.0, 0.0), t, 0.99)
            .unwrap()
            .outcome,
        Outcome::Inconclusive
    );
    let both_clean = evaluate(c(50.0, 0.0), c(1000.0, 0.0), t, 0.99).unwrap();
    assert_ne!(both_clean.outcome, Outcome::Harm);
    // Zero failures on both sides with a tolerance: fine once there is data.
    let tol = Tolerance {
        absolute: 0.01,
        relative: 0.0,
    };
    assert_eq!(
        evaluate(c(5000.0, 0.0), c(50_000.0, 0.0), tol, 0.99)
            .unwrap()
            .outcome,
        Outcome::Fine
    );
}

#[test]
fn ten_times_the_error_rate_is_harm_after_few_requests() {
    // stable 0.5%, canary 5%: 300 canary requests with 15 failures.
    let ev = evaluate(c(300.0, 15.0), c(5700.0, 28.0), Tolerance::ZERO, 0.99).unwrap();
    assert_eq!(ev.outcome, Outcome::Harm, "{ev:?}");
    assert!(ev.extra_failures > 12.0 && ev.extra_failures_upper >= ev.extra_failures);
}

#[test]
fn within_tolerance_is_fine_with_enough_data_and_inconclusive_before() {
    let tol = Tolerance {
        absolute: 0.005,
        relative: 0.0,
    };
    let early = evaluate(c(100.0, 1.0), c(1900.0, 19.0), tol, 0.99).unwrap();
    assert_eq!(early.outcome, Outcome::Inconclusive);
    assert!(
        early.more_requests_needed.is_some_and(|n| n > 100),
        "{early:?}"
    );
    let later = evaluate(c(20_000.0, 200.0), c(380_000.0, 3800.0), tol, 0.99).unwrap();
    assert_eq!(later.outcome, Outcome::Fine, "{later:?}");
}

#[test]
fn relative_tolerance_scales_with_the_stable_rate() {
    let t = Tolerance::parse(Some(&serde_json::json!("20%"))).unwrap();
    assert_eq!((t.absolute, t.relative), (0.0, 0.2));
    assert!((t.allowed(0.01) - 0.012).abs() < 1e-12);
    let a = Tolerance::parse(Some(&serde_json::json!(0.005))).unwrap();
    assert_eq!((a.absolute, a.relative), (0.005, 0.0));
    assert_eq!(
        Tolerance::parse(Some(&serde_json::json!("0.01")))
            .unwrap()
            .absolute,
        0.01
    );
    assert!(Tolerance::parse(Some(&serde_json::json!("fast"))).is_err());
    assert!(Tolerance::parse(Some(&serde_json::json!(1.5))).is_err());
    assert!(Tolerance::parse(Some(&serde_json::json!({"a": 1}))).is_err());
    assert_eq!(Tolerance::parse(None).unwrap(), Tolerance::ZERO);
}

#[test]
fn a_counter_reset_between_looks_does_not_break_a_look() {
    // Each look is computed from the window's totals; smaller totals later
    // (a reset Prometheus did not see) are just another look.
    let a = evaluate(c(1000.0, 10.0), c(10_000.0, 100.0), Tolerance::ZERO, 0.99).unwrap();
    let b = evaluate(c(400.0, 4.0), c(4000.0, 40.0), Tolerance::ZERO, 0.99).unwrap();
    assert_ne!(a.outcome, Outcome::Harm);
    assert_ne!(b.outcome, Outcome::Harm);
}

/// Run `trials` A/A rollouts (both sides at rate `p`), looking after every
/// batch for `looks` batches; return the fraction that ever declared harm.
fn false_harm_rate(
    trials: u64,
    looks: u32,
    batch_canary: u64,
    batch_stable: u64,
    p: f64,
    seed: u64,
) -> f64 {
    let mut rng = Rng::new(seed);
    let mut alarms = 0;
    for _ in 0..trials {
        let (mut cn, mut cf, mut sn, mut sf) = (0u64, 0u64, 0u64, 0u64);
        for _ in 0..looks {
            cn += batch_canary;
            sn += batch_stable;
            cf += rng.binomial(batch_canary, p);
            sf += rng.binomial(batch_stable, p);
            let ev = evaluate(
                c(cn as f64, cf as f64),
                c(sn as f64, sf as f64),
                Tolerance::ZERO,
                0.99,
            )
            .unwrap();
            if ev.outcome == Outcome::Harm {
                alarms += 1;
                break;
            }
        }
    }
    alarms as f64 / trials as f64
}

/// The same A/A setting with a naive fixed-sample one-sided z-test at 99%,
/// peeked at every batch: the inflation the sequential test avoids.
fn naive_peeking_rate(trials: u64, looks: u32, batch: u64, p: f64, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut alarms = 0;
    for _ in 0..trials {
        let (mut n, mut cf, mut sf) = (0u64, 0u64, 0u64);
        for _ in 0..looks {
            n += batch;
            cf += rng.binomial(batch, p);
            sf += rng.binomial(batch, p);
            let (pc, ps) = (cf as f64 / n as f64, sf as f64 / n as f64);
            let pooled = (cf + sf) as f64 / (2 * n) as f64;
            let se = (2.0 * pooled * (1.0 - pooled) / n as f64).sqrt();
            if se > 0.0 && (pc - ps) / se > 2.326 {
                alarms += 1;
                break;
            }
        }
    }
    alarms as f64 / trials as f64
}

#[test]
fn monte_carlo_false_rollback_rate_stays_within_the_bound_despite_peeking() {
    // 1000 A/A trials, 100 looks each (a look every interval for hours),
    // error rate 1%, 5% of traffic on the canary. Bound: 1 - confidence =
    // 0.01, plus three standard errors of the estimate.
    let trials = 1000;
    let bound = 0.01 + 3.0 * (0.01f64 * 0.99 / trials as f64).sqrt();
    let rate = false_harm_rate(trials, 100, 50, 950, 0.01, 42);
    assert!(rate <= bound, "false rollback rate {rate} > {bound}");
    // Low traffic and a low error rate (the hard case for approximations).
    let rate = false_harm_rate(trials, 100, 2, 38, 0.002, 7);
    assert!(
        rate <= bound,
        "low-traffic false rollback rate {rate} > {bound}"
    );
    // The same Monte Carlo catches a test that is not valid at every look:
    // a naive z-test peeked at 100 times exceeds the bound.
    let naive = naive_peeking_rate(trials, 100, 500, 0.01, 42);
    assert!(
        naive > bound,
        "the harness should detect peeking inflation (naive rate {naive})"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bounds_are_ordered_and_contain_the_point_estimate(n in 1u64..1_000_000, frac in 0.0f64..=1.0, delta in 0.0001f64..0.2) {
        let f = (n as f64 * frac).floor();
        let (l, u) = confidence_sequence(c(n as f64, f), delta);
        let p = f / n as f64;
        prop_assert!(0.0 <= l && l <= p + 1e-9 && p <= u + 1e-9 && u <= 1.0, "{l} {p} {u}");
    }

    #[test]
    fn more_canary_failures_never_make_it_look_better(n in 10u64..100_000, f in 0u64..1000, extra in 1u64..100) {
        let f = f.min(n - 1);
        let g = (f + extra).min(n);
        let stable = c(10.0 * n as f64, (n / 100) as f64);
        let a = evaluate(c(n as f64, f as f64), stable, Tolerance::ZERO, 0.99).unwrap();
        let b = evaluate(c(n as f64, g as f64), stable, Tolerance::ZERO, 0.99).unwrap();
        prop_assert!(b.excess_lower >= a.excess_lower - 1e-12);
        prop_assert!(b.extra_failures >= a.extra_failures);
        if a.outcome == Outcome::Harm { prop_assert_eq!(b.outcome, Outcome::Harm); }
    }
}
