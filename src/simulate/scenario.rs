//! The scenario file: how much traffic arrives, how often each version fails,
//! when the canary is available — synthetic or recorded. See
//! `docs/simulate.md` for the format; every error names its field.

use std::path::Path;

use serde_json::Value;

use crate::plan::compile::parse_duration;

/// How requests arrive in each simulated second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Poisson counts with the scenario's rate as mean; the canary's share
    /// is a binomial draw with the routed weight.
    Poisson,
    /// Exactly the rate (fractions carried over to the next second), split
    /// exactly by weight (fractions carried over too); only failures are
    /// random (binomial).
    Deterministic,
}

/// Requests per second over time.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestRate {
    Constant(f64),
    /// Linear from `from` to `to` over `over` seconds, then `to`.
    Ramp {
        from: f64,
        to: f64,
        over: u64,
    },
    /// `mean + amplitude·sin(2π·t/period)`, never below 0.
    Diurnal {
        mean: f64,
        amplitude: f64,
        period: u64,
    },
    /// `base`, and `peak` for `length` seconds every `every` seconds, the
    /// first burst starting at `start`.
    Bursts {
        base: f64,
        peak: f64,
        every: u64,
        length: u64,
        start: u64,
    },
    /// From the recorded file.
    Recorded,
}

/// An error rate over time: `(until, rate)` pieces; the last piece lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorCurve(pub Vec<(Option<u64>, f64)>);

impl ErrorCurve {
    pub fn at(&self, t: u64) -> f64 {
        for (until, rate) in &self.0 {
            match until {
                Some(u) if t < *u => return *rate,
                Some(_) => {}
                None => return *rate,
            }
        }
        self.0.last().map(|(_, r)| *r).unwrap_or(0.0)
    }

    pub fn constant(&self) -> Option<f64> {
        let first = self.0.first()?.1;
        self.0.iter().all(|(_, r)| *r == first).then_some(first)
    }
}

/// One interval of a recorded file, after interpretation.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRow {
    /// The interval is `[start, end)` in seconds.
    pub start: u64,
    pub end: u64,
    /// Total requests per second (both versions).
    pub rps: f64,
    pub stable_error_rate: f64,
    pub canary_error_rate: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Simulated seconds; the run stops earlier when the policy decides.
    pub duration: u64,
    pub arrivals: Arrivals,
    pub request_rate: RequestRate,
    pub stable: ErrorCurve,
    pub canary: ErrorCurve,
    /// Whether the scenario set the canary's error rate (over a recording).
    canary_overridden: bool,
    stable_overridden: bool,
    /// `(from, until)` windows in which the canary is available; empty:
    /// always.
    pub canary_ready: Vec<(u64, Option<u64>)>,
    pub recorded: Vec<RecordedRow>,
    /// Prometheus' scrape interval in seconds (`scrapeInterval`): a query
    /// sees the counts of the latest scrape. 0 (the default of a scenario
    /// file): every look sees fresh counts.
    pub scrape_interval: u64,
    /// What the Rollout's dependencies (`spec.dependsOn`) do over time
    /// (`dependencies`, see [`super::dependencies`]).
    pub dependencies: super::dependencies::Timelines,
}

/// Where a scenario's relative paths (`recorded:`) are resolved.
pub enum Base<'a> {
    Dir(&'a Path),
    /// Embedded scenarios: a recorded file is not allowed.
    None,
}

fn err(field: &str, msg: impl std::fmt::Display) -> String {
    format!("{field}: {msg}")
}

/// A duration: a Go-style string (`90s`, `10m`, `1h30m`) or a number of seconds.
fn duration(v: &Value, field: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(s) if s.is_finite() && s >= 0.0 => Ok(s.round() as u64),
            _ => Err(err(field, format!("{n} is not a number of seconds"))),
        },
        Value::String(s) => parse_duration(s)
            .map(|d| d.as_secs())
            .map_err(|e| err(field, e)),
        other => Err(err(
            field,
            format!("{other} is not a duration like 90s, 10m or 1h30m"),
        )),
    }
}

fn positive_duration(v: &Value, field: &str) -> Result<u64, String> {
    let d = duration(v, field)?;
    if d == 0 {
        return Err(err(field, "must be at least 1s"));
    }
    Ok(d)
}

fn number(v: &Value, field: &str) -> Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(err(field, format!("{v} is not a number"))),
    }
}

fn rate(v: &Value, field: &str) -> Result<f64, String> {
    let x = number(v, field)?;
    if x < 0.0 {
        return Err(err(field, format!("{x} is negative (requests per second)")));
    }
    Ok(x)
}

fn probability(v: &Value, field: &str) -> Result<f64, String> {
    let x = number(v, field)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(err(
            field,
            format!("{x} is not an error rate in [0, 1] (0.01 = 1%)"),
        ));
    }
    Ok(x)
}

fn object<'a>(
    v: &'a Value,
    field: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, String> {
    let map = v
        .as_object()
        .ok_or_else(|| err(field, format!("{v} is not a mapping")))?;
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(err(
                &format!("{field}.{key}"),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(map)
}

fn required<'a>(
    map: &'a serde_json::Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a Value, String> {
    map.get(key)
        .ok_or_else(|| err(&format!("{field}.{key}"), "is required"))
}

fn error_curve(v: &Value, field: &str) -> Result<ErrorCurve, String> {
    match v {
        Value::Array(pieces) => {
            if pieces.is_empty() {
                return Err(err(field, "must not be empty"));
            }
            let mut out = Vec::with_capacity(pieces.len());
            let mut last_until = None;
            for (i, p) in pieces.iter().enumerate() {
                let f = format!("{field}[{i}]");
                let map = object(p, &f, &["until", "rate"])?;
                let r = probability(required(map, "rate", &f)?, &format!("{f}.rate"))?;
                let until = match map.get("until") {
                    Some(u) => {
                        let u = duration(u, &format!("{f}.until"))?;
                        if last_until.is_some_and(|l| u <= l) {
                            return Err(err(
                                &format!("{f}.until"),
                                "must be later than the previous piece's",
                            ));
                        }
                        last_until = Some(u);
                        Some(u)
                    }
                    None if i + 1 < pieces.len() => {
                        return Err(err(
                            &format!("{f}.until"),
                            "is required on every piece but the last",
                        ));
                    }
                    None => None,
                };
                out.push((until, r));
            }
            Ok(ErrorCurve(out))
        }
        other => Ok(ErrorCurve(vec![(None, probability(other, field)?)])),
    }
}

fn request_rate(v: &Value, field: &str, total: u64) -> Result<RequestRate, String> {
    if v.is_number() {
        return Ok(RequestRate::Constant(rate(v, field)?));
    }
    let map = object(v, field, &["constant", "ramp", "diurnal", "bursts"])?;
    if map.len() != 1 {
        return Err(err(
            field,
            "set exactly one of constant, ramp, diurnal, bursts (or a plain number)",
        ));
    }
    let (kind, body) = map.iter().next().expect("one entry");
    let f = format!("{field}.{kind}");
    match kind.as_str() {
        "constant" => Ok(RequestRate::Constant(rate(body, &f)?)),
        "ramp" => {
            let m = object(body, &f, &["from", "to", "over"])?;
            Ok(RequestRate::Ramp {
                from: rate(required(m, "from", &f)?, &format!("{f}.from"))?,
                to: rate(required(m, "to", &f)?, &format!("{f}.to"))?,
                over: match m.get("over") {
                    Some(o) => positive_duration(o, &format!("{f}.over"))?,
                    None => total.max(1),
                },
            })
        }
        "diurnal" => {
            let m = object(body, &f, &["mean", "amplitude", "period"])?;
            Ok(RequestRate::Diurnal {
                mean: rate(required(m, "mean", &f)?, &format!("{f}.mean"))?,
                amplitude: rate(required(m, "amplitude", &f)?, &format!("{f}.amplitude"))?,
                period: match m.get("period") {
                    Some(p) => positive_duration(p, &format!("{f}.period"))?,
                    None => 86_400,
                },
            })
        }
        "bursts" => {
            let m = object(body, &f, &["base", "peak", "every", "length", "start"])?;
            let every = positive_duration(required(m, "every", &f)?, &format!("{f}.every"))?;
            let length = positive_duration(required(m, "length", &f)?, &format!("{f}.length"))?;
            if length > every {
                return Err(err(
                    &format!("{f}.length"),
                    "must not be longer than `every`",
                ));
            }
            Ok(RequestRate::Bursts {
                base: rate(required(m, "base", &f)?, &format!("{f}.base"))?,
                peak: rate(required(m, "peak", &f)?, &format!("{f}.peak"))?,
                every,
                length,
                start: match m.get("start") {
                    Some(s) => duration(s, &format!("{f}.start"))?,
                    None => every,
                },
            })
        }
        _ => unreachable!("checked by object()"),
    }
}

fn canary_ready(v: &Value, field: &str) -> Result<Vec<(u64, Option<u64>)>, String> {
    match v {
        Value::Bool(true) => Ok(Vec::new()),
        Value::Bool(false) => Ok(vec![(u64::MAX, None)]),
        Value::Array(windows) => {
            let mut out = Vec::new();
            for (i, w) in windows.iter().enumerate() {
                let f = format!("{field}[{i}]");
                let m = object(w, &f, &["from", "until"])?;
                let from = match m.get("from") {
                    Some(x) => duration(x, &format!("{f}.from"))?,
                    None => 0,
                };
                let until = m
                    .get("until")
                    .map(|u| duration(u, &format!("{f}.until")))
                    .transpose()?;
                if until.is_some_and(|u| u <= from) {
                    return Err(err(&format!("{f}.until"), "must be later than `from`"));
                }
                out.push((from, until));
            }
            if out.is_empty() {
                return Err(err(field, "must not be empty (omit it: always ready)"));
            }
            Ok(out)
        }
        other => Ok(vec![(duration(other, field)?, None)]),
    }
}

/// Parse a recorded CSV (see `docs/simulate.md`).
pub fn parse_recorded(text: &str, field: &str) -> Result<Vec<RecordedRow>, String> {
    let mut raw: Vec<(u64, [f64; 4])> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if raw.is_empty() && cells.first().is_some_and(|c| c.parse::<f64>().is_err()) {
            continue; // header
        }
        let at = |msg: String| err(&format!("{field} line {}", i + 1), msg);
        if cells.len() != 5 {
            return Err(at(format!(
                "{} columns; expected 5: seconds, stable_requests, stable_failures, canary_requests, canary_failures",
                cells.len()
            )));
        }
        let mut nums = [0.0; 5];
        for (j, c) in cells.iter().enumerate() {
            nums[j] = match c.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => x,
                _ => return Err(at(format!("{c:?} is not a non-negative number"))),
            };
        }
        let end = nums[0].round() as u64;
        let prev = raw.last().map(|r| r.0).unwrap_or(0);
        if end <= prev {
            return Err(at(format!(
                "seconds {end} must be later than the previous row's ({prev})"
            )));
        }
        if nums[2] > nums[1] || nums[4] > nums[3] {
            return Err(at("more failures than requests".into()));
        }
        raw.push((end, [nums[1], nums[2], nums[3], nums[4]]));
    }
    if raw.is_empty() {
        return Err(err(field, "has no data rows"));
    }
    // Rates per side; rows where a side served nothing borrow the nearest
    // earlier row's rate (or the first later one at the start).
    let side = |req: usize, fail: usize| -> Vec<f64> {
        let mut out: Vec<Option<f64>> = raw
            .iter()
            .map(|(_, c)| (c[req] > 0.0).then(|| c[fail] / c[req]))
            .collect();
        let first = out.iter().flatten().next().copied().unwrap_or(0.0);
        let mut last = first;
        for v in out.iter_mut() {
            match v {
                Some(x) => last = *x,
                None => *v = Some(last),
            }
        }
        out.into_iter().map(|v| v.unwrap_or(0.0)).collect()
    };
    let stable = side(0, 1);
    let canary = side(2, 3);
    let mut start = 0;
    Ok(raw
        .iter()
        .enumerate()
        .map(|(i, (end, c))| {
            let row = RecordedRow {
                start,
                end: *end,
                rps: (c[0] + c[2]) / (*end - start) as f64,
                stable_error_rate: stable[i],
                canary_error_rate: canary[i],
            };
            start = *end;
            row
        })
        .collect())
}

impl Scenario {
    /// Parse a scenario file's text. `base` resolves `recorded:`.
    pub fn parse(text: &str, base: Base<'_>) -> Result<Scenario, String> {
        let doc: Value =
            serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let map = object(
            &doc,
            "scenario",
            &[
                "name",
                "description",
                "duration",
                "traffic",
                "requestRate",
                "stable",
                "canary",
                "canaryReady",
                "recorded",
                "scrapeInterval",
                "dependencies",
            ],
        )?;
        let name = match map.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(err("name", format!("{other} is not a string"))),
            None => "scenario".into(),
        };
        let description = match map.get("description") {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(other) => return Err(err("description", format!("{other} is not a string"))),
            None => String::new(),
        };
        let recorded = match map.get("recorded") {
            None => Vec::new(),
            Some(Value::String(file)) => {
                let path = match base {
                    Base::Dir(dir) => dir.join(file),
                    Base::None => {
                        return Err(err("recorded", "not available for this scenario"));
                    }
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| err("recorded", format!("cannot read {}: {e}", path.display())))?;
                parse_recorded(&text, &format!("recorded ({})", path.display()))?
            }
            Some(other) => return Err(err("recorded", format!("{other} is not a file name"))),
        };
        let duration = match map.get("duration") {
            Some(d) => positive_duration(d, "duration")?,
            None if !recorded.is_empty() => recorded.last().map(|r| r.end).unwrap_or(1),
            None => return Err(err("duration", "is required (e.g. 2h)")),
        };
        let arrivals = match map.get("traffic") {
            None => Arrivals::Poisson,
            Some(Value::String(s)) if s == "poisson" => Arrivals::Poisson,
            Some(Value::String(s)) if s == "deterministic" => Arrivals::Deterministic,
            Some(other) => {
                return Err(err(
                    "traffic",
                    format!("{other} is neither poisson nor deterministic"),
                ));
            }
        };
        let request_rate = match (map.get("requestRate"), recorded.is_empty()) {
            (Some(v), _) => request_rate(v, "requestRate", duration)?,
            (None, false) => RequestRate::Recorded,
            (None, true) => return Err(err("requestRate", "is required (e.g. 100)")),
        };
        let side = |key: &str| -> Result<Option<ErrorCurve>, String> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => {
                    let m = object(v, key, &["errorRate"])?;
                    match m.get("errorRate") {
                        Some(r) => Ok(Some(error_curve(r, &format!("{key}.errorRate"))?)),
                        None => Ok(None),
                    }
                }
            }
        };
        let stable = side("stable")?;
        let canary = side("canary")?;
        if recorded.is_empty() {
            if stable.is_none() {
                return Err(err("stable.errorRate", "is required (e.g. 0.005)"));
            }
            if canary.is_none() {
                return Err(err("canary.errorRate", "is required (e.g. 0.005)"));
            }
        }
        let scrape_interval = match map.get("scrapeInterval") {
            None => 0,
            Some(v) => self::duration(v, "scrapeInterval")?,
        };
        let canary_ready = match map.get("canaryReady") {
            None => Vec::new(),
            Some(v) => canary_ready(v, "canaryReady")?,
        };
        Ok(Scenario {
            name,
            description,
            duration,
            arrivals,
            request_rate,
            stable_overridden: stable.is_some(),
            canary_overridden: canary.is_some(),
            stable: stable.unwrap_or(ErrorCurve(vec![(None, 0.0)])),
            canary: canary.unwrap_or(ErrorCurve(vec![(None, 0.0)])),
            canary_ready,
            recorded,
            scrape_interval,
            dependencies: match map.get("dependencies") {
                None => Vec::new(),
                Some(v) => super::dependencies::parse(v)?,
            },
        })
    }

    /// Read a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Scenario::parse(&text, Base::Dir(dir)).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn recorded_row(&self, t: u64) -> Option<&RecordedRow> {
        if self.recorded.is_empty() {
            return None;
        }
        let i = self.recorded.partition_point(|r| r.end <= t);
        Some(&self.recorded[i.min(self.recorded.len() - 1)])
    }

    /// Mean requests per second during second `t` (both versions together).
    pub fn rps(&self, t: u64) -> f64 {
        let x = t as f64 + 0.5;
        match &self.request_rate {
            RequestRate::Constant(r) => *r,
            RequestRate::Ramp { from, to, over } => {
                from + (to - from) * (x / *over as f64).min(1.0)
            }
            RequestRate::Diurnal {
                mean,
                amplitude,
                period,
            } => (mean + amplitude * (std::f64::consts::TAU * x / *period as f64).sin()).max(0.0),
            RequestRate::Bursts {
                base,
                peak,
                every,
                length,
                start,
            } => {
                if t >= *start && (t - start) % every < *length {
                    *peak
                } else {
                    *base
                }
            }
            RequestRate::Recorded => self.recorded_row(t).map(|r| r.rps).unwrap_or(0.0),
        }
    }

    pub fn stable_error_rate(&self, t: u64) -> f64 {
        match self.recorded_row(t) {
            Some(r) if !self.stable_overridden => r.stable_error_rate,
            _ => self.stable.at(t),
        }
    }

    pub fn canary_error_rate(&self, t: u64) -> f64 {
        match self.recorded_row(t) {
            Some(r) if !self.canary_overridden => r.canary_error_rate,
            _ => self.canary.at(t),
        }
    }

    pub fn canary_ready(&self, t: u64) -> bool {
        self.canary_ready.is_empty()
            || self
                .canary_ready
                .iter()
                .any(|(from, until)| t >= *from && until.is_none_or(|u| t < u))
    }

    /// `(stable, canary)` error rates when both are constant over the run.
    pub fn constant_rates(&self) -> Option<(f64, f64)> {
        if !self.recorded.is_empty() {
            return None;
        }
        Some((self.stable.constant()?, self.canary.constant()?))
    }

    /// The mean request rate over the scenario (for descriptions).
    pub fn mean_rps(&self) -> f64 {
        let n = self.duration.clamp(1, 86_400 * 7);
        let step = (n / 2_000).max(1);
        let (mut sum, mut k) = (0.0, 0.0);
        let mut t = 0;
        while t < n {
            sum += self.rps(t);
            k += 1.0;
            t += step;
        }
        sum / k
    }

    /// One line for people: traffic and error rates.
    pub fn describe_traffic(&self) -> String {
        let rate = match &self.request_rate {
            RequestRate::Constant(r) => format!("{} req/s", fmt(*r)),
            RequestRate::Ramp { from, to, over } => format!(
                "{} → {} req/s over {}",
                fmt(*from),
                fmt(*to),
                crate::plan::human(std::time::Duration::from_secs(*over))
            ),
            RequestRate::Diurnal {
                mean,
                amplitude,
                period,
            } => format!(
                "{} ± {} req/s (period {})",
                fmt(*mean),
                fmt(*amplitude),
                crate::plan::human(std::time::Duration::from_secs(*period))
            ),
            RequestRate::Bursts {
                base,
                peak,
                every,
                length,
                ..
            } => format!(
                "{} req/s, bursts of {} req/s for {} every {}",
                fmt(*base),
                fmt(*peak),
                crate::plan::human(std::time::Duration::from_secs(*length)),
                crate::plan::human(std::time::Duration::from_secs(*every))
            ),
            RequestRate::Recorded => format!(
                "recorded, {} intervals, mean {} req/s",
                self.recorded.len(),
                fmt(self.mean_rps())
            ),
        };
        let curve = |c: &ErrorCurve, recorded: bool| {
            if recorded {
                return "recorded".to_string();
            }
            c.0.iter()
                .map(|(until, r)| match until {
                    Some(u) => format!(
                        "{} until {}",
                        pct(*r),
                        crate::plan::human(std::time::Duration::from_secs(*u))
                    ),
                    None => pct(*r),
                })
                .collect::<Vec<_>>()
                .join(", then ")
        };
        let has_rec = !self.recorded.is_empty();
        let scrape = match self.scrape_interval {
            0 => String::new(),
            s => format!(
                "; scraped every {}",
                crate::plan::human(std::time::Duration::from_secs(s))
            ),
        };
        format!(
            "{rate}; stable errors {}; canary errors {}{scrape}",
            curve(&self.stable, has_rec && !self.stable_overridden),
            curve(&self.canary, has_rec && !self.canary_overridden)
        )
    }
}

pub(crate) fn fmt(x: f64) -> String {
    crate::analysis::fmt_num(x)
}

pub(crate) fn pct(x: f64) -> String {
    crate::analysis::fmt_pct(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_scenario_parses() {
        let s = Scenario::parse(
            r#"
name: turns bad
duration: 1h
traffic: deterministic
requestRate: {bursts: {base: 10, peak: 200, every: 10m, length: 1m}}
stable: {errorRate: 0.005}
canary:
  errorRate: [{until: 10m, rate: 0.005}, {rate: 0.05}]
canaryReady: [{from: 30s}]
"#,
            Base::None,
        )
        .unwrap();
        assert_eq!(s.duration, 3600);
        assert_eq!(s.arrivals, Arrivals::Deterministic);
        assert_eq!(s.rps(0), 10.0);
        assert_eq!(s.rps(600), 200.0);
        assert_eq!(s.rps(659), 200.0);
        assert_eq!(s.rps(660), 10.0);
        assert_eq!(s.canary_error_rate(599), 0.005);
        assert_eq!(s.canary_error_rate(600), 0.05);
        assert!(!s.canary_ready(29));
        assert!(s.canary_ready(30));
        assert_eq!(s.constant_rates(), None);
    }

    #[test]
    fn rate_shapes() {
        let s = |rate: &str| {
            Scenario::parse(
                &format!(
                    "duration: 100s\nrequestRate: {rate}\nstable: {{errorRate: 0}}\ncanary: {{errorRate: 0}}"
                ),
                Base::None,
            )
            .unwrap()
        };
        assert_eq!(s("5").rps(50), 5.0);
        let ramp = s("{ramp: {from: 0, to: 100}}");
        assert!((ramp.rps(49) - 49.5).abs() < 1e-9);
        assert_eq!(ramp.rps(1000), 100.0);
        let d = s("{diurnal: {mean: 10, amplitude: 5, period: 40s}}");
        assert!(d.rps(9) > 14.9 && d.rps(29) < 5.1);
        assert_eq!(s("{constant: 3}").rps(0), 3.0);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |text: &str| Scenario::parse(text, Base::None).unwrap_err();
        assert!(
            e("requestRate: 1\nstable: {errorRate: 0}\ncanary: {errorRate: 0}")
                .contains("duration")
        );
        assert!(
            e("duration: 1m\nrequestRate: 1\nstable: {errorRate: 2}\ncanary: {errorRate: 0}")
                .contains("stable.errorRate")
        );
        assert!(
            e("duration: 1m\nrequestRate: {ramp: {from: 1}}\nstable: {errorRate: 0}\ncanary: {errorRate: 0}")
                .contains("requestRate.ramp.to")
        );
        assert!(
            e("duration: 1m\nrequestRate: 1\nstable: {errorRate: 0}\ncanary: {errorRate: [{rate: 0.1}, {rate: 0.2}]}")
                .contains("canary.errorRate[0].until")
        );
        assert!(
            e("duration: 1m\nrequestRate: 1\nstable: {errorRate: 0}\ncanary: {errorRate: 0}\nscrapeInterval: soon")
                .contains("scrapeInterval")
        );
        assert!(e("duration: 1m\nrequestRate: 1\nstable: {errorRate: 0}\ncanary: {errorRate: 0}\nfoo: 1").contains("foo"));
        assert!(e("duration: 1m\nrequestRate: 1\nstable: {errorRate: 0}\ncanary: {errorRate: 0}\nrecorded: x.csv").contains("recorded"));
    }

    #[test]
    fn recorded_rows_are_interpreted_as_per_interval_rates() {
        let rows = parse_recorded(
            "seconds,stable_requests,stable_failures,canary_requests,canary_failures\n\
             60,6000,30,0,0\n\
             120,5700,30,300,15\n\
             180,6000,0,0,0\n",
            "f",
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[1].start, rows[1].end), (60, 120));
        assert!((rows[0].rps - 100.0).abs() < 1e-9);
        assert!((rows[0].stable_error_rate - 0.005).abs() < 1e-12);
        // No canary data in the first row: the first known canary rate.
        assert!((rows[0].canary_error_rate - 0.05).abs() < 1e-12);
        // ... and in the last: the previous one.
        assert!((rows[2].canary_error_rate - 0.05).abs() < 1e-12);
        assert_eq!(rows[2].stable_error_rate, 0.0);
        assert!(
            parse_recorded("60,1,2,0,0", "f")
                .unwrap_err()
                .contains("more failures")
        );
        assert!(parse_recorded("60,1,0,0", "f").unwrap_err().contains("5"));
        assert!(
            parse_recorded("60,1,0,0,0\n60,1,0,0,0", "f")
                .unwrap_err()
                .contains("later")
        );
    }
}
