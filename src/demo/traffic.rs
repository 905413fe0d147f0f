//! Simulated traffic and a simulated Prometheus over it. Requests are split
//! between the versions by the weights the route really carries, failures
//! are drawn per request from each version's error rate (seeded), and the
//! "Prometheus" answers the error-rate query over the last minute — 0/0 (no
//! requests) is NaN, i.e. no data, as in a real Prometheus.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};

use crate::analysis::{MetricsProvider, ProviderError, QueryOutcome};
use crate::controller::ProviderFactory;
use crate::simulate::rng::Rng;

/// The query window of the simulated error-rate query.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Series {
    /// (time, requests, failures) per tick.
    buckets: VecDeque<(Timestamp, u64, u64)>,
    total_requests: u64,
    total_failures: u64,
}

struct State {
    rng: Rng,
    rps: f64,
    error_rates: HashMap<String, f64>,
    series: HashMap<String, Series>,
    now: Timestamp,
    down: bool,
}

/// Shared handle on the simulated traffic.
#[derive(Clone)]
pub struct Traffic(Arc<Mutex<State>>);

impl Traffic {
    pub fn new(seed: u64, rps: f64, now: Timestamp) -> Self {
        Traffic(Arc::new(Mutex::new(State {
            rng: Rng::new(seed),
            rps,
            error_rates: HashMap::new(),
            series: HashMap::new(),
            now,
            down: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_error_rate(&self, service: &str, rate: f64) {
        self.lock().error_rates.insert(service.to_string(), rate);
    }

    pub fn set_rps(&self, rps: f64) {
        self.lock().rps = rps;
    }

    /// Make the simulated Prometheus unreachable (or reachable again).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Serve `dt` worth of requests ending at `now`, split by `weights`
    /// (backend name, weight) as a Gateway would.
    pub fn serve(&self, now: Timestamp, dt: Duration, weights: &[(String, i64)]) {
        let mut s = self.lock();
        s.now = now;
        let total: i64 = weights.iter().map(|(_, w)| (*w).max(0)).sum();
        if total == 0 {
            return;
        }
        let requests = s.rps * dt.as_secs_f64();
        for (service, w) in weights {
            let expected = requests * (*w).max(0) as f64 / total as f64;
            let n = expected.floor() as u64 + u64::from(s.rng.uniform() < expected.fract());
            let p = s.error_rates.get(service).copied().unwrap_or(0.0);
            let failures = s.rng.binomial(n, p);
            let series = s.series.entry(service.clone()).or_default();
            series.buckets.push_back((now, n, failures));
            series.total_requests += n;
            series.total_failures += failures;
            while series.buckets.len() > 4096 {
                series.buckets.pop_front();
            }
        }
    }

    /// (requests, failures) a service served in the window ending now.
    pub fn window(&self, service: &str) -> (u64, u64) {
        let s = self.lock();
        let since = s
            .now
            .checked_sub(SignedDuration::try_from(WINDOW).unwrap_or_default())
            .unwrap_or(s.now);
        s.series
            .get(service)
            .map(|series| {
                series
                    .buckets
                    .iter()
                    .filter(|(t, _, _)| *t > since)
                    .fold((0, 0), |(r, f), (_, n, e)| (r + n, f + e))
            })
            .unwrap_or((0, 0))
    }

    /// (requests, failures) a service served in the `window` ending now;
    /// `None` when it never served anything (no series).
    pub fn over(&self, service: &str, window: Duration) -> Option<(u64, u64)> {
        let s = self.lock();
        let since = s
            .now
            .checked_sub(SignedDuration::try_from(window).unwrap_or_default())
            .unwrap_or(s.now);
        s.series.get(service).map(|series| {
            series
                .buckets
                .iter()
                .filter(|(t, _, _)| *t > since)
                .fold((0, 0), |(r, f), (_, n, e)| (r + n, f + e))
        })
    }

    /// (requests, failures) a service served in total.
    pub fn totals(&self, service: &str) -> (u64, u64) {
        let s = self.lock();
        s.series
            .get(service)
            .map(|x| (x.total_requests, x.total_failures))
            .unwrap_or((0, 0))
    }

    pub fn providers(&self) -> Arc<dyn ProviderFactory> {
        Arc::new(SimulatedProviders(self.clone()))
    }
}

/// The `service="..."` label value of a rendered query.
fn service_of(query: &str) -> Option<&str> {
    let start = query.find("service=\"")? + "service=\"".len();
    let end = query[start..].find('"')?;
    Some(&query[start..start + end])
}

/// Answers error-rate queries from the simulated traffic.
pub struct SimulatedPrometheus(Traffic);

#[async_trait]
impl MetricsProvider for SimulatedPrometheus {
    async fn query(&self, query: &str) -> QueryOutcome {
        if self.0.lock().down {
            return QueryOutcome::Error(
                "Get \"http://prometheus.demo:9090/api/v1/query\": connection refused".into(),
            );
        }
        let Some(service) = service_of(query) else {
            return QueryOutcome::Error(format!(
                "the simulated Prometheus only knows service error rates, not {query:?}"
            ));
        };
        // Counting queries (`sum(increase(...[Ns]))`) for comparisons.
        if query.contains("increase(") {
            let window = query
                .split('[')
                .nth(1)
                .and_then(|w| w.split(']').next())
                .and_then(|w| w.strip_suffix('s'))
                .and_then(|w| w.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(WINDOW);
            let failures_query = query.contains("code=~\"5..\"");
            return match self.0.over(service, window) {
                None => QueryOutcome::NoData("query returned no series".into()),
                Some((requests, failures)) => {
                    QueryOutcome::Value(if failures_query { failures } else { requests } as f64)
                }
            };
        }
        let (requests, failures) = self.0.window(service);
        if requests == 0 {
            return QueryOutcome::NoData(
                "the query returned NaN (no requests in the window)".into(),
            );
        }
        QueryOutcome::Value(failures as f64 / requests as f64)
    }
}

struct SimulatedProviders(Traffic);

impl ProviderFactory for SimulatedProviders {
    fn provider(&self, _address: &str) -> Result<Arc<dyn MetricsProvider>, ProviderError> {
        Ok(Arc::new(SimulatedPrometheus(self.0.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[tokio::test]
    async fn error_rate_follows_the_weights_and_rates() {
        let traffic = Traffic::new(1, 1000.0, t(0));
        traffic.set_error_rate("v2", 0.1);
        for i in 1..=12 {
            traffic.serve(
                t(i * 5),
                Duration::from_secs(5),
                &[("v1".into(), 80), ("v2".into(), 20)],
            );
        }
        let (r1, _) = traffic.window("v1");
        let (r2, f2) = traffic.window("v2");
        assert!((r2 as f64 / (r1 + r2) as f64 - 0.2).abs() < 0.01);
        let p = SimulatedPrometheus(traffic.clone());
        let QueryOutcome::Value(v) = p.query(r#"x{service="v2"}"#).await else {
            panic!()
        };
        assert!((v - 0.1).abs() < 0.02, "{v} from {f2}/{r2}");
        assert!(matches!(
            p.query(r#"x{service="v3"}"#).await,
            QueryOutcome::NoData(_)
        ));
        traffic.set_down(true);
        assert!(matches!(
            p.query(r#"x{service="v2"}"#).await,
            QueryOutcome::Error(_)
        ));
    }
}
