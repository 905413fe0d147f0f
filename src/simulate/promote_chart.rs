//! The benchmark's time-to-promote chart: for every scenario a canary
//! should pass, one box per policy over the runs it promoted — whiskers
//! from the 10th to the 90th percentile, the box from the 25th to the 75th,
//! a tick at the median — on a log time axis. Hand-written SVG, like
//! `svg.rs`; no dependency.

use std::fmt::Write;

use super::benchmark::{Kind, ScenarioResult};
use super::svg::esc;
use super::world::human;

const W: f64 = 1000.0;
const LEFT: f64 = 250.0;
const RIGHT: f64 = W - 150.0;
const TOP: f64 = 70.0;
const ROW: f64 = 18.0;
const GAP: f64 = 14.0;
const INK: &str = "#222";
const MUTED: &str = "#666";
const GRID: &str = "#e3e3e3";

/// Policy colours, in the benchmark's policy order (rollwise, Flagger, Argo).
const COLOURS: [&str; 3] = ["#3a6ea5", "#e0a100", "#17a398"];

/// Candidate axis ticks, in seconds.
const TICKS: [u64; 12] = [
    60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400,
];

/// The `q`-quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Five numbers of one box: p10, p25, median, p75, p90 (seconds).
pub fn five_numbers(times: &[f64]) -> Option<[f64; 5]> {
    let mut sorted: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some([0.1, 0.25, 0.5, 0.75, 0.9].map(|q| quantile(&sorted, q)))
}

/// Whether a scenario's canary should be promoted (the chart's rows).
fn should_promote(kind: Kind) -> bool {
    matches!(kind, Kind::Healthy | Kind::WithinTolerance)
}

/// The chart, or `None` when no scenario has a promoted run.
pub fn render(results: &[ScenarioResult]) -> Option<String> {
    let rows: Vec<&ScenarioResult> = results.iter().filter(|r| should_promote(r.kind)).collect();
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.by_policy.iter())
        .filter_map(|d| five_numbers(&d.promote_times))
        .flat_map(|f| [f[0], f[4]])
        .collect();
    if all.is_empty() {
        return None;
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 2.0);
    // The axis spans whole ticks around the data.
    let start = TICKS
        .iter()
        .rev()
        .find(|&&t| (t as f64) <= lo)
        .copied()
        .unwrap_or(TICKS[0]) as f64;
    let end = TICKS
        .iter()
        .find(|&&t| (t as f64) >= hi)
        .copied()
        .unwrap_or(TICKS[TICKS.len() - 1]) as f64;
    let end = end.max(start * 2.0);
    let x =
        |t: f64| LEFT + (t.clamp(start, end) / start).ln() / (end / start).ln() * (RIGHT - LEFT);
    let policies = rows[0].by_policy.len();
    let block = policies as f64 * ROW + GAP;
    let bottom = TOP + rows.len() as f64 * block;
    let h = bottom + 60.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12" fill="{INK}">"##
    );
    let _ = writeln!(o, r##"<rect width="{W}" height="{h}" fill="#fff"/>"##);
    let _ = writeln!(
        o,
        r##"<text x="20" y="28" font-size="16" font-weight="bold">Time to promote a canary that should pass</text>"##
    );
    let _ = writeln!(
        o,
        r##"<text x="20" y="48" fill="{MUTED}">Runs that promoted; whiskers 10th–90th percentile, box 25th–75th, tick at the median; log time axis. Right: runs promoted of all runs.</text>"##
    );
    for &t in TICKS
        .iter()
        .filter(|&&t| (t as f64) >= start && (t as f64) <= end)
    {
        let tx = x(t as f64);
        let _ = writeln!(
            o,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{bottom}" stroke="{GRID}"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="{MUTED}">{}</text>"##,
            bottom + 16.0,
            human(t)
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{MUTED}">time from the start of the rollout to the promotion</text>"##,
        (LEFT + RIGHT) / 2.0,
        bottom + 36.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y0 = TOP + i as f64 * block + GAP / 2.0;
        let _ = writeln!(
            o,
            r##"<text x="20" y="{:.1}" font-weight="bold">{}</text>"##,
            y0 + ROW * 0.75,
            esc(&r.scenario.name)
        );
        for (j, d) in r.by_policy.iter().enumerate() {
            let colour = COLOURS[j % COLOURS.len()];
            let cy = y0 + j as f64 * ROW + ROW / 2.0;
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">{}</text>"##,
                LEFT - 8.0,
                cy + 4.0,
                esc(&d.policy)
            );
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" fill="{MUTED}">{} / {}</text>"##,
                RIGHT + 10.0,
                cy + 4.0,
                d.promoted,
                d.trials
            );
            let Some([p10, p25, p50, p75, p90]) = five_numbers(&d.promote_times) else {
                let _ = writeln!(
                    o,
                    r##"<text x="{LEFT}" y="{:.1}" fill="{MUTED}">never promoted</text>"##,
                    cy + 4.0
                );
                continue;
            };
            let half = ROW * 0.32;
            let _ = writeln!(
                o,
                r##"<g><title>{}: {} promoted of {}; p10 {}, p25 {}, median {}, p75 {}, p90 {}</title><line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{colour}" stroke-width="1.5"/><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{INK}" stroke-width="2"/></g>"##,
                esc(&d.policy),
                d.promoted,
                d.trials,
                human(p10.round() as u64),
                human(p25.round() as u64),
                human(p50.round() as u64),
                human(p75.round() as u64),
                human(p90.round() as u64),
                x(p10),
                x(p90),
                x(p25),
                cy - half,
                (x(p75) - x(p25)).max(1.0),
                2.0 * half,
                x(p50),
                cy - half - 2.0,
                x(p50),
                cy + half + 2.0,
            );
        }
    }
    o.push_str("</svg>\n");
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_numbers_are_ordered_percentiles() {
        let times: Vec<f64> = (1..=100).map(f64::from).collect();
        let f = five_numbers(&times).unwrap();
        assert_eq!(f, [11.0, 26.0, 51.0, 75.0, 90.0]);
        assert!(five_numbers(&[]).is_none());
        assert!(five_numbers(&[f64::NAN]).is_none());
        assert_eq!(five_numbers(&[42.0]).unwrap(), [42.0; 5]);
    }
}
