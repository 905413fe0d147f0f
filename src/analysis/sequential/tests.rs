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

fn tol(a: f64) -> Tolerance {
    Tolerance {
        absolute: a,
        relative: 0.0,
        fixed: false,
    }
}

/// One look from scratch.
fn first(canary: Counts, stable: Counts, t: Tolerance) -> Evidence {
    evaluate(&State::default(), canary, stable, t, 0.99).unwrap()
}

#[test]
fn broken_counts_are_errors_not_harm() {
    let t = Tolerance::ZERO;
    let s0 = State::default();
    assert!(evaluate(&s0, c(f64::NAN, 0.0), c(10.0, 0.0), t, 0.99).is_err());
    assert!(evaluate(&s0, c(10.0, -1.0), c(10.0, 0.0), t, 0.99).is_err());
    assert!(evaluate(&s0, c(10.0, 0.0), c(10.0, f64::INFINITY), t, 0.99).is_err());
    let e = evaluate(&s0, c(10.0, 50.0), c(10.0, 0.0), t, 0.99).unwrap_err();
    assert!(e.to_string().contains("more"), "{e}");
    // A little over from extrapolation is tolerated and capped.
    let ev = first(c(100.2, 100.9), c(1000.0, 1.0), t);
    assert_eq!(ev.canary.failures, ev.canary.requests);
}

#[test]
fn zero_traffic_or_zero_failures_is_never_harm() {
    let t = Tolerance::ZERO;
    assert_eq!(
        first(c(0.0, 0.0), c(1000.0, 5.0), t).outcome,
        Outcome::Inconclusive
    );
    assert_eq!(
        first(c(1000.0, 0.0), c(0.0, 0.0), t).outcome,
        Outcome::Inconclusive
    );
    let both_clean = first(c(50.0, 0.0), c(1000.0, 0.0), t);
    assert_ne!(both_clean.outcome, Outcome::Harm);
    assert!(both_clean.harm <= 1.0, "{both_clean:?}");
    // Zero failures on both sides with a tolerance: fine once there is data.
    assert_eq!(
        first(c(5000.0, 0.0), c(50_000.0, 0.0), tol(0.01)).outcome,
        Outcome::Fine
    );
    // All failures on both sides: neither side is worse.
    let all = first(c(500.0, 500.0), c(5000.0, 5000.0), Tolerance::ZERO);
    assert_eq!(all.outcome, Outcome::Inconclusive, "{all:?}");
}

#[test]
fn ten_times_the_error_rate_is_harm_after_few_requests() {
    // stable 0.5%, canary 5%: 300 canary requests with 15 failures.
    let ev = first(c(300.0, 15.0), c(5700.0, 28.0), Tolerance::ZERO);
    assert_eq!(ev.outcome, Outcome::Harm, "{ev:?}");
    assert!(ev.harm >= 100.0, "the bar at confidence 0.99: {ev:?}");
    assert!(ev.extra_failures > 12.0 && ev.extra_failures_upper >= ev.extra_failures);
    // The interval for people contains the point estimate; here it is
    // already above 0.
    assert!(ev.excess_lower > 0.0 && ev.excess_lower <= ev.excess && ev.excess <= ev.excess_upper);
    // Half the counts are still enough (7 of 150 against 14 of 2850); two
    // failures in 40 are not.
    let half = first(c(150.0, 7.0), c(2850.0, 14.0), Tolerance::ZERO);
    assert_eq!(half.outcome, Outcome::Harm, "{half:?}");
    let half = first(c(40.0, 2.0), c(760.0, 4.0), Tolerance::ZERO);
    assert_ne!(half.outcome, Outcome::Harm, "{half:?}");
}

#[test]
fn within_tolerance_is_fine_with_enough_data_and_inconclusive_before() {
    let early = first(c(100.0, 1.0), c(1900.0, 19.0), tol(0.005));
    assert_eq!(early.outcome, Outcome::Inconclusive);
    assert!(
        early.more_requests_needed.is_some_and(|n| n > 100),
        "{early:?}"
    );
    let later = first(c(20_000.0, 200.0), c(380_000.0, 3800.0), tol(0.005));
    assert_eq!(later.outcome, Outcome::Fine, "{later:?}");
    assert!(later.fine >= 100.0 && later.harm < 1.0, "{later:?}");
}

#[test]
fn evidence_accumulates_across_looks() {
    // Ten looks of 100 canary requests at stable's rate (0.6%, tolerance
    // +0.005): each look alone is too little, together they are enough.
    let mut st = State::default();
    let (mut cn, mut cf, mut sn, mut sf) = (0.0, 0.0, 0.0, 0.0);
    let mut outcomes = vec![];
    for i in 0..60 {
        cn += 100.0;
        sn += 1900.0;
        // One canary failure every 2 looks (0.5%), 11 stable ones per look.
        cf += (i % 2) as f64;
        sf += 11.0;
        let ev = evaluate(&st, c(cn, cf), c(sn, sf), tol(0.005), 0.99).unwrap();
        assert_eq!(
            c(ev.state.canary_requests, ev.state.canary_failures),
            c(cn, cf),
            "the state has taken the look in"
        );
        outcomes.push(ev.outcome);
        st = ev.state;
    }
    assert_eq!(outcomes[0], Outcome::Inconclusive);
    assert_eq!(*outcomes.last().unwrap(), Outcome::Fine, "{outcomes:?}");
    // Starting over from the totals is a single batch: also fine, but a
    // test restarted from scratch at every look would be invalid, which is
    // why the state is kept.
    assert_eq!(
        first(c(cn, cf), c(sn, sf), tol(0.005)).outcome,
        Outcome::Fine
    );
}

#[test]
fn harm_and_fine_each_need_their_own_confidence() {
    // 5 failures in 70 canary requests against stable's 0.6% and a
    // tolerance of +0.005: harm evidence between 20 and 100.
    let (canary, stable) = (c(70.0, 5.0), c(1330.0, 8.0));
    let both = evaluate(&State::default(), canary, stable, tol(0.005), 0.99).unwrap();
    assert!(both.harm > 20.0 && both.harm < 100.0, "{both:?}");
    assert_eq!(both.outcome, Outcome::Inconclusive);
    let own = Confidence {
        fine: 0.99,
        harm: 0.95,
    };
    let split = evaluate(&State::default(), canary, stable, tol(0.005), own).unwrap();
    assert_eq!(split.outcome, Outcome::Harm, "{split:?}");
    assert_eq!((split.harm, split.fine), (both.harm, both.fine));
    // Fine keeps its bar: a canary with fine evidence between 20 and 100
    // is not fine at a harm confidence of 0.95.
    let (canary, stable) = (c(1800.0, 8.0), c(34_200.0, 205.0));
    let both = evaluate(&State::default(), canary, stable, tol(0.005), 0.95).unwrap();
    let split = evaluate(&State::default(), canary, stable, tol(0.005), own).unwrap();
    assert!(split.fine > 20.0 && split.fine < 100.0, "{split:?}");
    assert_eq!(both.outcome, Outcome::Fine);
    assert_eq!(split.outcome, Outcome::Inconclusive);
}

#[test]
fn a_dip_in_the_totals_adds_no_batch_and_loses_nothing() {
    // Prometheus' extrapolation (or a counter reset it did not see) can
    // make a later total smaller: no batch, and the state keeps the larger
    // totals so the requests are not counted twice when they come back.
    let a = first(c(1000.0, 10.0), c(10_000.0, 100.0), Tolerance::ZERO);
    let b = evaluate(
        &a.state,
        c(400.0, 4.0),
        c(4000.0, 40.0),
        Tolerance::ZERO,
        0.99,
    )
    .unwrap();
    assert_eq!(b.state.harm, a.state.harm);
    assert_eq!(b.state.fine, a.state.fine);
    assert_eq!(
        (b.state.canary_requests, b.state.canary_failures),
        (1000.0, 10.0)
    );
    assert_ne!(b.outcome, Outcome::Harm);
}

#[test]
fn a_damaged_state_never_adds_evidence() {
    // Fewer components than now (an older rollwise), or values that are not
    // numbers: the missing ones start now, the broken ones count as none.
    let a = first(c(1000.0, 10.0), c(10_000.0, 100.0), Tolerance::ZERO);
    let mut damaged = a.state.clone();
    damaged.harm.truncate(4);
    damaged.fine = vec![f64::NAN; COMPONENTS];
    let b = evaluate(
        &damaged,
        c(2000.0, 20.0),
        c(20_000.0, 200.0),
        Tolerance::ZERO,
        0.99,
    )
    .unwrap();
    assert_eq!(b.state.harm.len(), COMPONENTS);
    assert!(b.state.harm.iter().all(|l| l.is_finite()));
    assert!(b.fine <= 1e-300, "{}", b.fine);
}

#[test]
fn huge_counts_do_not_overflow() {
    let ev = first(c(1e12, 5e10), c(1e13, 1e11), Tolerance::ZERO);
    assert_eq!(ev.outcome, Outcome::Harm);
    assert!(ev.harm.is_finite() && ev.harm <= 1e15, "{ev:?}");
    assert!(ev.state.harm.iter().all(|l| l.is_finite()));
    let ev = first(c(1e12, 1e9), c(1e13, 1e10), tol(0.001));
    assert_eq!(ev.outcome, Outcome::Fine, "{ev:?}");
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

/// `ln E[e]` of one batch's e-value when the true rates are `(pc, ps)`:
/// the factors are per request, so the expectation is a product of powers.
fn log_expectation(qc: f64, qs: f64, nc: f64, ns: f64, t: Tolerance, pc: f64, ps: f64) -> f64 {
    let (tc, fc, ts, fs) = batch_factors(qc, qs, nc, ns, t);
    nc * (pc * tc + (1.0 - pc) * fc).ln() + ns * (ps * ts + (1.0 - ps) * fs).ln()
}

/// A/A-style Monte Carlo: `trials` rollouts with the canary exactly on the
/// boundary (`pc = ps + a`, so *both* nulls hold), looking after every batch
/// for `looks` batches; the fractions that ever declared harm and fine.
fn false_conclusions(
    trials: u64,
    looks: u32,
    (batch_canary, batch_stable): (u64, u64),
    ps: f64,
    t: Tolerance,
    confidence: Confidence,
    seed: u64,
) -> (f64, f64) {
    let mut rng = Rng::new(seed);
    let (mut harm, mut fine) = (0, 0);
    for _ in 0..trials {
        let (mut cn, mut cf, mut sn, mut sf) = (0u64, 0u64, 0u64, 0u64);
        let mut st = State::default();
        for _ in 0..looks {
            cn += batch_canary;
            sn += batch_stable;
            cf += rng.binomial(batch_canary, t.allowed(ps));
            sf += rng.binomial(batch_stable, ps);
            let ev = evaluate(
                &st,
                c(cn as f64, cf as f64),
                c(sn as f64, sf as f64),
                t,
                confidence,
            )
            .unwrap();
            st = ev.state;
            match ev.outcome {
                Outcome::Harm => {
                    harm += 1;
                    break;
                }
                Outcome::Fine => {
                    fine += 1;
                    break;
                }
                Outcome::Inconclusive => {}
            }
        }
    }
    (harm as f64 / trials as f64, fine as f64 / trials as f64)
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
fn monte_carlo_false_conclusions_stay_within_the_bound_despite_peeking() {
    // 1000 trials, 100 looks each (a look every interval for hours), 5% of
    // traffic on the canary, the canary exactly on the boundary. Bound:
    // 1 - confidence = 0.01, plus three standard errors of the estimate.
    let trials = 1000;
    let bound = 0.01 + 3.0 * (0.01f64 * 0.99 / trials as f64).sqrt();
    for (name, batch_c, batch_s, ps, t, seed) in [
        ("busy, equal rates", 50, 950, 0.01, tol(0.0), 42),
        ("busy, tolerance +0.005", 50, 950, 0.006, tol(0.005), 43),
        ("low traffic, low rate", 2, 38, 0.002, tol(0.0), 7),
        ("half the traffic", 500, 500, 0.02, tol(0.005), 8),
        // A fixed limit: the canary exactly at it, stable elsewhere.
        ("fixed limit 5%", 50, 950, 0.001, Tolerance::limit(0.05), 9),
        (
            "fixed limit 1%, low traffic",
            2,
            38,
            0.03,
            Tolerance::limit(0.01),
            10,
        ),
    ] {
        let (harm, fine) =
            false_conclusions(trials, 100, (batch_c, batch_s), ps, t, 0.99.into(), seed);
        assert!(harm <= bound, "{name}: false harm rate {harm} > {bound}");
        assert!(fine <= bound, "{name}: false fine rate {fine} > {bound}");
    }
    // Each conclusion at its own confidence (the defaults: rollback 0.95,
    // promotion 0.99): each error rate stays within its own bound.
    let defaults = Confidence {
        fine: 0.99,
        harm: 0.95,
    };
    let harm_bound = 0.05 + 3.0 * (0.05f64 * 0.95 / trials as f64).sqrt();
    for (name, batch_c, batch_s, ps, t, seed) in [
        ("busy, tolerance +0.005", 50, 950, 0.006, tol(0.005), 44),
        ("fixed limit 5%", 50, 950, 0.001, Tolerance::limit(0.05), 45),
    ] {
        let (harm, fine) =
            false_conclusions(trials, 100, (batch_c, batch_s), ps, t, defaults, seed);
        assert!(
            harm <= harm_bound,
            "{name}: false harm rate {harm} > {harm_bound}"
        );
        assert!(fine <= bound, "{name}: false fine rate {fine} > {bound}");
    }
    // The same Monte Carlo catches a test that is not valid at every look:
    // a naive z-test peeked at 100 times exceeds the bound.
    let naive = naive_peeking_rate(trials, 100, 500, 0.01, 42);
    assert!(
        naive > bound,
        "the harness should detect peeking inflation (naive rate {naive})"
    );
}

#[test]
fn a_fixed_limit_ignores_stable_entirely() {
    let t = Tolerance::limit(0.05);
    let s0 = State::default();
    let canary = c(400.0, 30.0);
    let alone = evaluate(&s0, canary, c(0.0, 0.0), t, 0.99).unwrap();
    // Stable's counts, even broken ones, change nothing.
    for stable in [c(1e6, 10.0), c(10.0, 50.0), c(f64::NAN, 0.0)] {
        let ev = evaluate(&s0, canary, stable, t, 0.99).unwrap();
        assert_eq!(ev, alone, "stable {stable:?}");
    }
    assert_eq!(alone.stable, Counts::default());
    // 7.5% against 5%: the excess is measured from the limit.
    assert!((alone.excess - 0.025).abs() < 1e-12, "{}", alone.excess);
    assert!(alone.excess_lower < alone.excess && alone.excess < alone.excess_upper);
    assert_eq!(t.describe(), "at most 0.05");
}

#[test]
fn a_fixed_limit_rolls_back_a_30_percent_canary_within_a_few_dozen_requests() {
    let t = Tolerance::limit(0.05);
    // 30 requests, 9 failed: 30% against at most 5%.
    let ev = first(c(30.0, 9.0), c(0.0, 0.0), t);
    assert_eq!(ev.outcome, Outcome::Harm, "{ev:?}");
    // 10 requests, 1 failed: not enough either way.
    let ev = first(c(10.0, 1.0), c(0.0, 0.0), t);
    assert_eq!(ev.outcome, Outcome::Inconclusive, "{ev:?}");
    assert!(ev.more_requests_needed.is_some());
}

#[test]
fn a_fixed_limit_finds_a_canary_well_under_it_fine() {
    let t = Tolerance::limit(0.05);
    let mut st = State::default();
    let mut outcome = Outcome::Inconclusive;
    let mut looks = 0;
    // 0.5% errors, 50 requests a look.
    for i in 1..=100 {
        let n = 50.0 * i as f64;
        let ev = evaluate(&st, c(n, (n * 0.005).floor()), c(0.0, 0.0), t, 0.99).unwrap();
        st = ev.state;
        outcome = ev.outcome;
        looks = i;
        if outcome != Outcome::Inconclusive {
            break;
        }
    }
    assert_eq!(outcome, Outcome::Fine);
    assert!(looks > 1 && looks < 20, "fine after {looks} looks");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn bounds_are_ordered_and_contain_the_point_estimate(n in 1u64..1_000_000, frac in 0.0f64..=1.0, delta in 0.0001f64..0.2) {
        let f = (n as f64 * frac).floor();
        let (l, u) = confidence_sequence(c(n as f64, f), delta);
        let p = f / n as f64;
        prop_assert!(0.0 <= l && l <= p + 1e-9 && p <= u + 1e-9 && u <= 1.0, "{l} {p} {u}");
    }

    /// The heart of the validity argument, checked exactly: for any
    /// alternative, batch sizes and tolerance, the batch's e-value has
    /// expectation at most 1 at *every* point of the boundary and on the
    /// null's side of it — not only at the projection it was built on.
    #[test]
    fn a_batch_e_value_averages_at_most_one_under_its_null(
        qs in 0.0005f64..0.3,
        rho in 0.05f64..30.0,
        nc in 1.0f64..5000.0,
        ns in 1.0f64..50_000.0,
        a in prop_oneof![Just(0.0), 0.0f64..0.05],
        rel in prop_oneof![Just(0.0), 0.0f64..1.0],
        ps in 0.0f64..0.6,
        below in 0.0f64..1.0,
    ) {
        let t = Tolerance { absolute: a, relative: rel, fixed: false };
        let qc = (rho * t.allowed(qs)).min(0.999);
        prop_assume!((qc - t.allowed(qs)).abs() > 1e-6);
        let harm = qc > t.allowed(qs);
        let edge = t.allowed(ps);
        prop_assume!(edge < 1.0);
        // A point of the null: on the boundary, or inside on its side.
        let pc = if harm { edge * below } else { edge + (1.0 - edge) * (1.0 - below) };
        let l = log_expectation(qc, qs, nc, ns, t, pc, ps);
        prop_assert!(l <= 1e-9, "ln E = {l} at pc {pc} ps {ps} (qc {qc} qs {qs})");
    }

    #[test]
    fn more_canary_failures_never_make_it_look_better(n in 10u64..100_000, f in 0u64..1000, extra in 1u64..100) {
        let f = f.min(n - 1);
        let g = (f + extra).min(n);
        let stable = c(10.0 * n as f64, (n / 100) as f64);
        let a = first(c(n as f64, f as f64), stable, Tolerance::ZERO);
        let b = first(c(n as f64, g as f64), stable, Tolerance::ZERO);
        prop_assert!(b.harm >= a.harm * (1.0 - 1e-9), "{} < {}", b.harm, a.harm);
        prop_assert!(b.fine <= a.fine * (1.0 + 1e-9) + 1e-12);
        prop_assert!(b.extra_failures >= a.extra_failures);
        prop_assert!(b.excess_lower >= a.excess_lower - 1e-12);
        prop_assert!(a.excess_lower <= a.excess + 1e-12 && a.excess <= a.excess_upper + 1e-12);
        if a.outcome == Outcome::Harm { prop_assert_eq!(b.outcome, Outcome::Harm); }
    }
}
