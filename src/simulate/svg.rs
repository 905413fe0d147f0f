//! A hand-written SVG chart of one run: the canary weight over time as a
//! filled step line (left axis), both versions' error rates as lines
//! (right axis), and a marker for every decision — advance, hold,
//! rollback, promote — with the final one labelled. No dependency.

use std::fmt::Write;

use super::scenario::Scenario;
use super::world::{Mark, Run, Verdict, human};

pub struct Chart<'a> {
    pub run: &'a Run,
    pub scenario: &'a Scenario,
    pub policy: &'a str,
    /// The policy's configuration in one line.
    pub configuration: &'a str,
    pub rollout: &'a str,
}

const W: f64 = 1000.0;
const H: f64 = 580.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = W - 84.0;
const TOP: f64 = 104.0;
const BOTTOM: f64 = H - 118.0;

const WEIGHT: &str = "#3a6ea5";
const CANARY: &str = "#e4572e";
const STABLE: &str = "#17a398";
const ADVANCE: &str = "#2e8b57";
const HOLD: &str = "#e0a100";
const ROLLBACK: &str = "#c0392b";
const PROMOTE: &str = "#6a3d9a";
const INK: &str = "#222";
const MUTED: &str = "#666";
const GRID: &str = "#e3e3e3";

/// Escape text for XML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The smallest "nice" number (1, 2, 2.5, 5 × 10^k) at or above `x`.
fn nice_ceil(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let e = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * e >= x * (1.0 - 1e-12) {
            return m * e;
        }
    }
    10.0 * e
}

/// The smallest "nice" duration at or above `s` seconds.
fn nice_duration(s: u64) -> u64 {
    const NICE: [u64; 22] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200,
        86_400, 172_800, 604_800, 2_592_000, 31_536_000,
    ];
    NICE.iter().copied().find(|n| *n >= s).unwrap_or(s)
}

/// An axis label: `90s` as `1m30s`, `86400` as `1d` (not `1d0h`).
fn axis_time(s: u64) -> String {
    let h = human(s);
    match h.strip_suffix("0h") {
        Some(d) if d.ends_with('d') => d.to_string(),
        _ => h,
    }
}

/// Tick spacing in seconds for a span.
fn time_step(span: f64) -> u64 {
    const STEPS: [u64; 18] = [
        10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
        172_800, 604_800, 2_592_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / *s as f64 <= 10.0)
        .unwrap_or(2_592_000)
}

fn pct_label(x: f64) -> String {
    format!("{}%", crate::analysis::fmt_num(x * 100.0))
}

struct Frame {
    span: f64,
    ymax: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.span).clamp(0.0, 1.0) * (RIGHT - LEFT)
    }
    fn yw(&self, weight: f64) -> f64 {
        BOTTOM - weight / 100.0 * (BOTTOM - TOP)
    }
    fn yr(&self, rate: f64) -> f64 {
        BOTTOM - (rate / self.ymax) * (BOTTOM - TOP)
    }
}

/// `(t, rate)` points; `None` where the version served nothing.
type Series = Vec<(u64, Option<f64>)>;

/// Canary and stable error rates over a trailing window, every `step`.
fn series(run: &Run, step: u64, window: u64) -> (Series, Series) {
    let mut canary = Vec::new();
    let mut stable = Vec::new();
    let mut t = step.min(run.end.max(1));
    while t <= run.end.max(1) {
        let c = run.traffic.last(t, window);
        canary.push((t, c.canary_rate()));
        stable.push((t, c.stable_rate()));
        t += step;
    }
    (canary, stable)
}

fn polylines(frame: &Frame, points: &[(u64, Option<f64>)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (t, r) in points {
        match r {
            Some(r) => {
                let _ = write!(cur, "{:.1},{:.1} ", frame.x(*t as f64), frame.yr(*r));
            }
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn marker(o: &mut String, mark: Mark, x: f64, y: f64, title: &str) {
    let title = format!("<title>{}</title>", esc(title));
    let _ = match mark {
        Mark::Start => writeln!(
            o,
            r##"<circle class="marker start" cx="{x:.1}" cy="{y:.1}" r="4.5" fill="#fff" stroke="{MUTED}" stroke-width="1.5">{title}</circle>"##
        ),
        Mark::Advance => writeln!(
            o,
            r##"<polygon class="marker advance" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{ADVANCE}" stroke="#fff" stroke-width="1">{title}</polygon>"##,
            x,
            y - 7.0,
            x - 6.0,
            y + 4.0,
            x + 6.0,
            y + 4.0
        ),
        Mark::Hold => writeln!(
            o,
            r##"<circle class="marker hold" cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{HOLD}" stroke="#fff" stroke-width="1">{title}</circle>"##
        ),
        Mark::Rollback => writeln!(
            o,
            r##"<path class="marker rollback" d="M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}" stroke="{ROLLBACK}" stroke-width="3.5" stroke-linecap="round">{title}</path>"##,
            x - 7.0,
            y - 7.0,
            x + 7.0,
            y + 7.0,
            x - 7.0,
            y + 7.0,
            x + 7.0,
            y - 7.0
        ),
        Mark::Promote => {
            let pts: Vec<String> = (0..10)
                .map(|i| {
                    let r = if i % 2 == 0 { 9.0 } else { 4.0 };
                    let a = std::f64::consts::PI * (i as f64) / 5.0 - std::f64::consts::FRAC_PI_2;
                    format!("{:.1},{:.1}", x + r * a.cos(), y + r * a.sin())
                })
                .collect();
            writeln!(
                o,
                r##"<polygon class="marker promote" points="{}" fill="{PROMOTE}" stroke="#fff" stroke-width="1">{title}</polygon>"##,
                pts.join(" ")
            )
        }
    };
}

/// Render the chart.
pub fn render(c: &Chart<'_>) -> String {
    let run = c.run;
    let end = run.end.max(1) as f64;
    let span = (end + (end * 0.06).max(20.0)).max(60.0);
    let sample = nice_duration((span / 300.0).ceil() as u64).max(5);
    // A trailing window long enough for about 200 canary requests on
    // average (so a quiet canary's line is not all 0% and 100%), at least
    // a minute, at most a fifteenth of the chart.
    let served = run.traffic.total().canary_requests as f64;
    let per_second = served / (run.end.max(1) as f64);
    let wanted = if per_second > 0.0 {
        (200.0 / per_second) as u64
    } else {
        60
    };
    let window = nice_duration(wanted.min((span / 15.0) as u64))
        .max(sample)
        .max(60);
    let (canary, stable) = series(run, sample, window);

    // Right axis: the configured rates and most observed ones fit.
    let mut configured: f64 = 0.0;
    let mut t = 0;
    while t <= run.end {
        configured = configured
            .max(c.scenario.canary_error_rate(t))
            .max(c.scenario.stable_error_rate(t));
        t += sample;
    }
    let mut observed: Vec<f64> = canary
        .iter()
        .chain(stable.iter())
        .filter_map(|(_, r)| *r)
        .collect();
    observed.sort_by(f64::total_cmp);
    let p95 = observed
        .get(((observed.len() as f64) * 0.95) as usize)
        .or(observed.last())
        .copied()
        .unwrap_or(0.0);
    let ymax = nice_ceil((configured * 1.25).max(p95).max(0.001));
    let f = Frame { span, ymax };

    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12" fill="{INK}">"##
    );
    let s = &run.summary;
    let outcome = match s.outcome {
        Verdict::Undecided => format!("undecided after {}", human(run.end)),
        v => format!("{} after {} ({})", v.as_str(), s.decided_after, s.reason),
    };
    let title = format!(
        "{} · {} — {}: {}",
        c.rollout, c.scenario.name, c.policy, outcome
    );
    let _ = writeln!(o, "<title>{}</title>", esc(&title));
    let _ = writeln!(o, r##"<rect width="{W}" height="{H}" fill="#fff"/>"##);
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="30" font-size="{:.1}" font-weight="bold">{}</text>"##,
        // Bold Helvetica is about 0.6 em per character: fit the width.
        (860.0 / (0.6 * title.chars().count() as f64)).clamp(11.0, 18.0),
        esc(&title)
    );
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="52" fill="{MUTED}">traffic: {} · seed {}</text>"##,
        esc(&truncate(&c.scenario.describe_traffic(), 120)),
        s.seed
    );
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="70" fill="{MUTED}">{}: {}</text>"##,
        esc(c.policy),
        esc(&truncate(c.configuration, 140))
    );
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="88" fill="{MUTED}">canary served {} requests, {} failed ({} more than stable would have) until the decision</text>"##,
        s.canary_requests,
        s.canary_failures,
        crate::analysis::fmt_num(s.extra_failures)
    );

    // Grid and axes.
    let _ = writeln!(o, r##"<g class="grid" stroke="{GRID}" stroke-width="1">"##);
    for w in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = f.yw(w);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}"/>"##
        );
    }
    let step = time_step(span);
    let mut tick = 0;
    while (tick as f64) <= span {
        let x = f.x(tick as f64);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}"/>"##
        );
        tick += step;
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(o, r##"<g class="axes" fill="{MUTED}">"##);
    for w in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{WEIGHT}">{w}%</text>"##,
            LEFT - 8.0,
            f.yw(w) + 4.0
        );
        let r = ymax * w / 100.0;
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" fill="{CANARY}">{}</text>"##,
            RIGHT + 8.0,
            f.yr(r) + 4.0,
            pct_label(r)
        );
    }
    let mut tick = 0;
    while (tick as f64) <= span {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            f.x(tick as f64),
            BOTTOM + 18.0,
            if tick == 0 {
                "0".to_string()
            } else {
                axis_time(tick)
            }
        );
        tick += step;
    }
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the rollout started</text>"##,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 38.0
    );
    let _ = writeln!(
        o,
        r##"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle" fill="{WEIGHT}">canary weight</text>"##,
        (TOP + BOTTOM) / 2.0
    );
    let _ = writeln!(
        o,
        r##"<text transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle" fill="{CANARY}">error rate (trailing {})</text>"##,
        W - 14.0,
        (TOP + BOTTOM) / 2.0,
        human(window)
    );
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#bbb"/>"##,
        RIGHT - LEFT,
        BOTTOM - TOP
    );
    let _ = writeln!(o, "</g>");
    let _ = writeln!(
        o,
        r##"<defs><clipPath id="plot"><rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath></defs>"##,
        TOP - 1.0,
        RIGHT - LEFT,
        BOTTOM - TOP + 2.0
    );

    // The weight: a filled step line.
    let mut line = String::new();
    let first = run.weights.first().map(|(_, w)| *w).unwrap_or(0);
    let _ = write!(line, "M{:.1},{:.1}", f.x(0.0), f.yw(first as f64));
    for (t, w) in run.weights.iter().skip(1) {
        let _ = write!(line, " H{:.1} V{:.1}", f.x(*t as f64), f.yw(*w as f64));
    }
    let _ = write!(line, " H{:.1}", f.x(span));
    let area = format!("{line} V{:.1} H{:.1} Z", f.yw(0.0), f.x(0.0));
    let _ = writeln!(
        o,
        r##"<path class="weight-area" d="{area}" fill="{WEIGHT}" fill-opacity="0.16" stroke="none"/>"##
    );
    let _ = writeln!(
        o,
        r##"<path class="weight" d="{line}" fill="none" stroke="{WEIGHT}" stroke-width="2.5" stroke-linejoin="round"/>"##
    );

    // Error rates.
    let _ = writeln!(
        o,
        r##"<g clip-path="url(#plot)" fill="none" stroke-width="1.8" stroke-linejoin="round">"##
    );
    for pts in polylines(&f, &stable) {
        let _ = writeln!(
            o,
            r##"<polyline class="stable-rate" points="{}" stroke="{STABLE}"/>"##,
            pts.trim_end()
        );
    }
    for pts in polylines(&f, &canary) {
        let _ = writeln!(
            o,
            r##"<polyline class="canary-rate" points="{}" stroke="{CANARY}"/>"##,
            pts.trim_end()
        );
    }
    let _ = writeln!(o, "</g>");

    // Decisions.
    let _ = writeln!(o, r##"<g class="decisions">"##);
    let mut last_label_x = f64::NEG_INFINITY;
    let mut prev_weight = first;
    for e in &run.timeline {
        let x = f.x(e.t as f64);
        let y = f.yw(e.weight as f64);
        let tip = format!(
            "{} · step {} · {}% · {} {}: {}",
            super::world::clock(e.t),
            e.step,
            e.weight,
            e.kind,
            e.reason,
            e.message
        );
        if matches!(e.mark, Mark::Rollback | Mark::Promote) {
            let colour = if e.mark == Mark::Rollback {
                ROLLBACK
            } else {
                PROMOTE
            };
            let _ = writeln!(
                o,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5,4"/>"##
            );
            let label = match e.mark {
                Mark::Rollback => format!("rollback after {} ({})", human(e.t), e.reason),
                _ => format!("promoted after {} ({})", human(e.t), e.reason),
            };
            let anchor = if x > (LEFT + RIGHT) / 2.0 {
                "end"
            } else {
                "start"
            };
            let dx = if anchor == "end" { -6.0 } else { 6.0 };
            let _ = writeln!(
                o,
                r##"<text class="label {}" x="{:.1}" y="{:.1}" text-anchor="{anchor}" fill="{colour}" font-weight="bold">{}</text>"##,
                if e.mark == Mark::Rollback {
                    "rollback"
                } else {
                    "promote"
                },
                x + dx,
                TOP + 16.0,
                esc(&label)
            );
        }
        let y = if e.mark == Mark::Rollback {
            f.yw(prev_weight.max(e.weight) as f64)
        } else {
            y
        };
        marker(&mut o, e.mark, x, y, &tip);
        if e.mark == Mark::Advance && e.weight != prev_weight && x - last_label_x > 34.0 {
            let _ = writeln!(
                o,
                r##"<text class="label advance" x="{:.1}" y="{:.1}" text-anchor="middle" fill="{ADVANCE}" font-size="11">{}%</text>"##,
                x,
                y - 11.0,
                e.weight
            );
            last_label_x = x;
        }
        prev_weight = e.weight;
    }
    let _ = writeln!(o, "</g>");

    // Legend.
    let ly = H - 44.0;
    let _ = writeln!(o, r##"<g class="legend" font-size="12">"##);
    let mut lx = LEFT;
    let _ = writeln!(
        o,
        r##"<rect x="{lx}" y="{:.1}" width="22" height="12" fill="{WEIGHT}" fill-opacity="0.16" stroke="{WEIGHT}" stroke-width="2"/><text x="{:.1}" y="{:.1}">canary weight (left)</text>"##,
        ly - 10.0,
        lx + 28.0,
        ly
    );
    lx += 170.0;
    for (colour, label) in [
        (CANARY, "canary error rate (right)"),
        (STABLE, "stable error rate (right)"),
    ] {
        let _ = writeln!(
            o,
            r##"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2.5"/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            ly - 4.0,
            lx + 22.0,
            ly - 4.0,
            lx + 28.0,
            ly
        );
        lx += 185.0;
    }
    for (mark, label) in [
        (Mark::Advance, "advance"),
        (Mark::Hold, "hold"),
        (Mark::Promote, "promote"),
        (Mark::Rollback, "rollback"),
    ] {
        marker(&mut o, mark, lx + 6.0, ly - 4.0, label);
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}">{label}</text>"##,
            lx + 18.0,
            ly
        );
        lx += 78.0;
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="{:.1}" fill="{MUTED}" font-size="10" text-anchor="end">rollwise simulate · hover a marker for the decision and its reason</text>"##,
        RIGHT,
        H - 12.0
    );
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(0.07), 0.1);
        assert_eq!(nice_ceil(0.012), 0.02);
        assert_eq!(nice_ceil(0.021), 0.025);
        assert_eq!(nice_ceil(0.03), 0.05);
        assert_eq!(time_step(1500.0), 300);
        assert_eq!(time_step(90.0), 10);
        assert_eq!(nice_duration(7), 10);
        assert_eq!(nice_duration(575), 600);
        assert_eq!(axis_time(86_400), "1d");
        assert_eq!(axis_time(108_000), "1d6h");
        assert_eq!(axis_time(600), "10m");
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
