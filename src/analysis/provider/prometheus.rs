//! Prometheus HTTP API provider: one instant query per metric, through
//! `prometheus-http-query`.
//!
//! An instant query's result becomes a [`QueryOutcome`]:
//!
//! | result                         | outcome                                  |
//! |--------------------------------|------------------------------------------|
//! | vector, no series              | `NoData` (nothing matched)               |
//! | vector, one series / scalar    | `Value`, except NaN which is `NoData`    |
//! | vector, several series         | `Error` (ambiguous: aggregate with sum)  |
//! | matrix / string                | `Error` (not a single number)            |
//! | HTTP, timeout, bad PromQL, ... | `Error` with Prometheus's message        |
//!
//! Every query is bounded by the provider's timeout, three times over: the
//! HTTP client's timeout, Prometheus's own evaluation timeout (the `timeout`
//! query parameter) and a `tokio::time::timeout` around the whole call.
//! Error messages never contain credentials from the address.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_http_query::response::Data;
use prometheus_http_query::{Client, Error as PromError, reqwest};

use super::{MetricsProvider, ProviderError};
use crate::analysis::QueryOutcome;

/// A [`MetricsProvider`] that runs instant queries against a Prometheus
/// server (or anything speaking its HTTP API: Thanos, Mimir, VictoriaMetrics).
#[derive(Clone)]
pub struct PrometheusProvider {
    client: Client,
    timeout: Duration,
    /// The address without credentials, for messages.
    display_address: String,
    /// Secrets from the address (user info) to scrub from any message.
    secrets: Vec<String>,
}

impl std::fmt::Debug for PrometheusProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusProvider")
            .field("address", &self.display_address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusProvider {
    /// A provider for the Prometheus server at `address` (`http://` or
    /// `https://`, optionally with a path prefix and `user:password@`
    /// credentials, sent as basic auth). Every query is bounded by `timeout`.
    pub fn new(address: &str, timeout: Duration) -> Result<Self, ProviderError> {
        let invalid = |message: String| ProviderError::InvalidAddress {
            address: redact_address(address),
            message,
        };
        if timeout.is_zero() {
            return Err(invalid(
                "the query timeout must be greater than zero".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        let client = Client::from(http, address.trim()).map_err(|e| invalid(error_chain(&e)))?;
        let url = client.base_url();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "the scheme must be http or https, not {:?} (write e.g. http://prometheus:9090)",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the address has no host".into()));
        }
        let mut secrets = Vec::new();
        if let Some(password) = url.password().filter(|p| !p.is_empty()) {
            secrets.push(password.to_string());
        }
        let mut display = url.clone();
        // Setting these cannot fail on an http(s) URL with a host.
        let _ = display.set_password(None);
        let _ = display.set_username("");
        Ok(PrometheusProvider {
            display_address: display.to_string(),
            client,
            timeout,
            secrets,
        })
    }

    /// The server's address, without credentials.
    pub fn address(&self) -> &str {
        &self.display_address
    }

    /// The bound of every query.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn scrub(&self, mut message: String) -> String {
        for secret in &self.secrets {
            message = message.replace(secret.as_str(), "***");
        }
        message
    }

    fn describe_error(&self, err: &PromError) -> String {
        let message = match err {
            PromError::Prometheus(e) => format!(
                "Prometheus rejected the query ({}): {}",
                e.error_type(),
                e.message()
            ),
            PromError::Client(e) => match e.inner() {
                Some(re) if re.is_timeout() => format!(
                    "Prometheus at {} did not answer within {}",
                    self.display_address,
                    human_duration(self.timeout)
                ),
                Some(re) if re.is_decode() => {
                    let chain = reqwest_error_chain(re);
                    if chain.contains("unknown variant `string`") {
                        "the query returned a string, not a number \
                         (a metric query must return one series or a scalar)"
                            .to_string()
                    } else {
                        format!("cannot read Prometheus's answer: {chain}")
                    }
                }
                Some(re) => format!(
                    "cannot query Prometheus at {}: {}: {}",
                    self.display_address,
                    e,
                    reqwest_error_chain(re)
                ),
                None => format!("cannot query Prometheus at {}: {}", self.display_address, e),
            },
            other => format!(
                "cannot query Prometheus at {}: {}",
                self.display_address,
                error_chain(other)
            ),
        };
        self.scrub(message)
    }
}

#[async_trait]
impl MetricsProvider for PrometheusProvider {
    async fn query(&self, query: &str) -> QueryOutcome {
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let request = self.client.query(query).timeout(timeout_ms).get();
        match tokio::time::timeout(self.timeout, request).await {
            Err(_elapsed) => QueryOutcome::Error(format!(
                "Prometheus at {} did not answer within {}",
                self.display_address,
                human_duration(self.timeout)
            )),
            Ok(Err(err)) => QueryOutcome::Error(self.describe_error(&err)),
            Ok(Ok(result)) => outcome_of(result.into_inner().0),
        }
    }
}

/// Turn an instant query's result into an outcome (see the module doc).
fn outcome_of(data: Data) -> QueryOutcome {
    match data {
        Data::Scalar(sample) => number(sample.value()),
        Data::Vector(series) => match series.as_slice() {
            [] => QueryOutcome::NoData("query returned no series".into()),
            [one] => number(one.sample().value()),
            many => QueryOutcome::Error(format!(
                "query returned {} series, expected one: aggregate it to a single number, \
                 e.g. with sum(...); first series: {}",
                many.len(),
                labels(many[0].metric())
            )),
        },
        Data::Matrix(series) => QueryOutcome::Error(format!(
            "query returned a matrix (range vector, {} series), expected one number: \
             wrap the range selector in a function such as rate(...) and aggregate with sum(...)",
            series.len()
        )),
    }
}

fn number(value: f64) -> QueryOutcome {
    if value.is_nan() {
        QueryOutcome::NoData("query returned NaN (e.g. 0/0: no requests in the window)".into())
    } else {
        QueryOutcome::Value(value)
    }
}

/// `{a="1", b="2"}`, sorted, for messages.
fn labels(metric: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = metric.iter().collect();
    pairs.sort();
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// `e: source: source…`, skipping repeated messages.
fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    append_sources(&mut out, err.source());
    out
}

/// A reqwest error without its URL (which would carry the query and
/// possibly credentials), then its sources.
fn reqwest_error_chain(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "connection failed"
    } else if err.is_status() {
        "unexpected HTTP status"
    } else if err.is_decode() {
        "cannot decode the response body"
    } else if err.is_body() {
        "body error"
    } else if err.is_redirect() {
        "redirect error"
    } else if err.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    if let Some(status) = err.status() {
        let _ = write!(out, " ({status})");
    }
    append_sources(&mut out, err.source());
    out
}

fn append_sources(out: &mut String, mut source: Option<&(dyn StdError + 'static)>) {
    let mut last = String::new();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && text != last && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        source = s.source();
    }
}

fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The address with any `user:password@` replaced by `***@`, also when it
/// does not parse as a URL.
fn redact_address(address: &str) -> String {
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, address),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: serde_json::Value) -> Data {
        serde_json::from_value(json).expect("valid Prometheus data")
    }

    fn vector(values: &[&str]) -> Data {
        let result: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| serde_json::json!({"metric": {"pod": format!("p{i}")}, "value": [1700000000.0, v]}))
            .collect();
        data(serde_json::json!({"resultType": "vector", "result": result}))
    }

    #[test]
    fn one_series_is_its_value() {
        assert_eq!(outcome_of(vector(&["0.02"])), QueryOutcome::Value(0.02));
    }

    #[test]
    fn no_series_is_no_data() {
        let QueryOutcome::NoData(msg) = outcome_of(vector(&[])) else {
            panic!("expected NoData")
        };
        assert!(msg.contains("no series"), "{msg}");
    }

    #[test]
    fn nan_is_no_data_and_infinity_is_a_value() {
        let QueryOutcome::NoData(msg) = outcome_of(vector(&["NaN"])) else {
            panic!("expected NoData")
        };
        assert!(msg.contains("NaN"), "{msg}");
        assert_eq!(
            outcome_of(vector(&["+Inf"])),
            QueryOutcome::Value(f64::INFINITY)
        );
        assert_eq!(
            outcome_of(vector(&["-Inf"])),
            QueryOutcome::Value(f64::NEG_INFINITY)
        );
    }

    #[test]
    fn several_series_are_an_error_that_suggests_sum() {
        let QueryOutcome::Error(msg) = outcome_of(vector(&["1", "2", "3"])) else {
            panic!("expected Error")
        };
        assert!(msg.contains("3 series"), "{msg}");
        assert!(msg.contains("sum("), "{msg}");
        assert!(msg.contains(r#"pod="p0""#), "{msg}");
    }

    #[test]
    fn scalar_is_a_value_unless_nan() {
        let scalar = |v: &str| {
            data(serde_json::json!({"resultType": "scalar", "result": [1700000000.0, v]}))
        };
        assert_eq!(outcome_of(scalar("1.5")), QueryOutcome::Value(1.5));
        assert!(matches!(outcome_of(scalar("NaN")), QueryOutcome::NoData(_)));
    }

    #[test]
    fn matrix_is_an_error_naming_the_type() {
        let m = data(serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1700000000.0, "1"], [1700000015.0, "2"]]}
        ]}));
        let QueryOutcome::Error(msg) = outcome_of(m) else {
            panic!("expected Error")
        };
        assert!(msg.contains("matrix"), "{msg}");
    }

    #[test]
    fn invalid_addresses_are_rejected_without_credentials() {
        let t = Duration::from_secs(1);
        for bad in [
            "",
            "not a url",
            "prometheus:9090",
            "ftp://prometheus:9090",
            "http://",
        ] {
            assert!(
                matches!(
                    PrometheusProvider::new(bad, t),
                    Err(ProviderError::InvalidAddress { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
        let err = PrometheusProvider::new("ftp://alice:s3cret@prometheus:9090", t).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!err.to_string().contains("alice"), "{err}");
        assert!(PrometheusProvider::new("http://prometheus:9090", Duration::ZERO).is_err());
    }

    #[test]
    fn valid_addresses_are_accepted_and_displayed_without_credentials() {
        let t = Duration::from_secs(1);
        let p =
            PrometheusProvider::new("https://alice:s3cret@prom.example.com/prometheus", t).unwrap();
        assert_eq!(p.address(), "https://prom.example.com/prometheus");
        assert_eq!(p.scrub("x s3cret y".into()), "x *** y");
        let p = PrometheusProvider::new("http://prometheus.monitoring:9090", t).unwrap();
        assert_eq!(p.address(), "http://prometheus.monitoring:9090/");
        assert_eq!(p.timeout(), t);
    }

    #[test]
    fn redaction_handles_unparseable_addresses() {
        assert_eq!(
            redact_address("http://a:b@host:1/x@y"),
            "http://***@host:1/x@y"
        );
        assert_eq!(redact_address("a:b c@host"), "***@host");
        assert_eq!(redact_address("http://host:9090"), "http://host:9090");
    }
}
