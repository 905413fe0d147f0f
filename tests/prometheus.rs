//! `PrometheusProvider` against a real Prometheus server (the path the
//! operator takes), plus the failure modes of the network around it.
//!
//! Needs `prometheus` and `promtool`: `bash scripts/install-test-deps.sh`.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::prometheus::{Backfill, PrometheusServer};
use rollwise::analysis::provider::prometheus::PrometheusProvider;
use rollwise::analysis::{MetricsProvider, QueryOutcome};

const TIMEOUT: Duration = Duration::from_secs(5);

/// checkout-v2: 9.8 req/s OK and 0.2 req/s 5xx, an error rate of 0.02.
/// checkout-idle: counters that never increase (rate 0/0 = NaN).
const ERROR_RATE: &str = r#"sum(rate(http_requests_total{service="SERVICE",code=~"5.."}[1m])) / sum(rate(http_requests_total{service="SERVICE"}[1m]))"#;

/// One server, with backfilled data, shared by the tests of this file.
fn server() -> &'static PrometheusServer {
    static SERVER: OnceLock<PrometheusServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = Backfill::new()
            .counter(
                "http_requests_total",
                &[("service", "checkout-v2"), ("code", "200")],
                9.8,
            )
            .counter(
                "http_requests_total",
                &[("service", "checkout-v2"), ("code", "500")],
                0.2,
            )
            .counter(
                "http_requests_total",
                &[("service", "checkout-idle"), ("code", "200")],
                0.0,
            )
            .counter(
                "http_requests_total",
                &[("service", "checkout-idle"), ("code", "500")],
                0.0,
            );
        PrometheusServer::start_with_openmetrics(&data.to_openmetrics())
    })
}

fn provider() -> PrometheusProvider {
    PrometheusProvider::new(&server().address(), TIMEOUT).expect("valid address")
}

fn error_rate(service: &str) -> String {
    ERROR_RATE.replace("SERVICE", service)
}

fn expect_error(outcome: QueryOutcome) -> String {
    match outcome {
        QueryOutcome::Error(msg) => msg,
        other => panic!("expected an Error, got {other:?}"),
    }
}

fn expect_no_data(outcome: QueryOutcome) -> String {
    match outcome {
        QueryOutcome::NoData(msg) => msg,
        other => panic!("expected NoData, got {other:?}"),
    }
}

#[tokio::test]
async fn error_rate_query_returns_the_backfilled_rate() {
    let outcome = provider().query(&error_rate("checkout-v2")).await;
    let QueryOutcome::Value(v) = outcome else {
        panic!("expected a value, got {outcome:?}")
    };
    assert!((v - 0.02).abs() < 1e-6, "error rate {v}, expected 0.02");
}

#[tokio::test]
async fn request_rate_of_one_series_is_returned_as_its_value() {
    let q = r#"rate(http_requests_total{service="checkout-v2",code="200"}[1m])"#;
    let outcome = provider().query(q).await;
    let QueryOutcome::Value(v) = outcome else {
        panic!("expected a value, got {outcome:?}")
    };
    assert!((v - 9.8).abs() < 1e-6, "request rate {v}, expected 9.8");
}

#[tokio::test]
async fn query_for_a_service_without_series_gives_no_data() {
    let msg = expect_no_data(provider().query(&error_rate("no-such-service")).await);
    assert!(msg.contains("no series"), "{msg}");
}

#[tokio::test]
async fn zero_over_zero_for_an_idle_service_gives_no_data_nan() {
    let msg = expect_no_data(provider().query(&error_rate("checkout-idle")).await);
    assert!(msg.contains("NaN"), "{msg}");
}

#[tokio::test]
async fn scalar_results_are_values_and_infinity_is_a_value() {
    let p = provider();
    assert_eq!(p.query("1 + 1").await, QueryOutcome::Value(2.0));
    assert_eq!(p.query("1 / 0").await, QueryOutcome::Value(f64::INFINITY));
    assert!(expect_no_data(p.query("0 / 0").await).contains("NaN"));
}

#[tokio::test]
async fn query_returning_several_series_is_an_error_suggesting_sum() {
    let q = r#"rate(http_requests_total{service="checkout-v2"}[1m])"#;
    let msg = expect_error(provider().query(q).await);
    assert!(msg.contains("2 series"), "{msg}");
    assert!(msg.contains("sum("), "{msg}");
}

#[tokio::test]
async fn range_vector_and_string_results_are_errors_naming_the_type() {
    let p = provider();
    let msg = expect_error(
        p.query(r#"http_requests_total{service="checkout-v2"}[5m]"#)
            .await,
    );
    assert!(msg.contains("matrix"), "{msg}");
    let msg = expect_error(p.query(r#""hello""#).await);
    assert!(msg.contains("string"), "{msg}");
}

#[tokio::test]
async fn invalid_promql_is_an_error_with_prometheus_message() {
    let msg = expect_error(provider().query("sum(rate(http_requests_total[1m])").await);
    assert!(msg.contains("bad_data"), "{msg}");
    assert!(msg.contains("parse error"), "{msg}");
}

#[tokio::test]
async fn credentials_in_the_address_are_sent_and_never_shown() {
    // Prometheus ignores basic auth, so the query works; its errors and the
    // provider's own must not echo the password.
    let address = server()
        .address()
        .replace("http://", "http://alice:s3cret@");
    let p = PrometheusProvider::new(&address, TIMEOUT).unwrap();
    assert!(!format!("{p:?}").contains("s3cret"));
    assert!(matches!(
        p.query(&error_rate("checkout-v2")).await,
        QueryOutcome::Value(_)
    ));
    let msg = expect_error(p.query("sum(").await);
    assert!(!msg.contains("s3cret"), "{msg}");

    let port = common::prometheus::free_port();
    let p =
        PrometheusProvider::new(&format!("http://alice:s3cret@127.0.0.1:{port}"), TIMEOUT).unwrap();
    let msg = expect_error(p.query("up").await);
    assert!(!msg.contains("s3cret") && !msg.contains("alice"), "{msg}");
}

#[tokio::test]
async fn address_where_nothing_listens_is_an_error_well_within_the_timeout() {
    let port = common::prometheus::free_port();
    let p = PrometheusProvider::new(&format!("http://127.0.0.1:{port}"), TIMEOUT).unwrap();
    let started = Instant::now();
    let msg = expect_error(p.query("up").await);
    let elapsed = started.elapsed();
    assert!(elapsed < TIMEOUT / 2, "took {elapsed:?}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "{msg}");
}

#[tokio::test]
async fn server_that_never_answers_is_an_error_after_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            open.push(socket); // accept, then say nothing
        }
    });
    let timeout = Duration::from_millis(500);
    let p = PrometheusProvider::new(&format!("http://127.0.0.1:{port}"), timeout).unwrap();
    let started = Instant::now();
    let msg = expect_error(p.query("up").await);
    let elapsed = started.elapsed();
    silent.abort();
    assert!(
        elapsed >= timeout,
        "gave up after {elapsed:?}, before the {timeout:?} timeout"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert!(msg.contains("did not answer within 500ms"), "{msg}");
}

#[tokio::test]
async fn scraping_server_sees_the_target_metrics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { "rollwise_test_answer 42\n" }),
    );
    let http = tokio::spawn(async move { axum::serve(listener, app).await });

    let prometheus = PrometheusServer::start_scraping(&target);
    let p = PrometheusProvider::new(&prometheus.address(), TIMEOUT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = p.query("rollwise_test_answer").await;
    while last != QueryOutcome::Value(42.0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = p.query("rollwise_test_answer").await;
    }
    http.abort();
    assert_eq!(
        last,
        QueryOutcome::Value(42.0),
        "server log:\n{}",
        prometheus.log()
    );
}

#[tokio::test]
async fn http_error_from_something_that_is_not_prometheus_is_an_error_with_the_status() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::response::Html("<h1>502 Bad Gateway</h1>"),
        )
    });
    let proxy = tokio::spawn(async move { axum::serve(listener, app).await });
    let p = PrometheusProvider::new(&format!("http://127.0.0.1:{port}"), TIMEOUT).unwrap();
    let msg = expect_error(p.query("up").await);
    proxy.abort();
    assert!(msg.contains("502"), "{msg}");
}

#[tokio::test]
async fn query_on_an_empty_server_gives_no_data() {
    let prometheus = PrometheusServer::start();
    let p = PrometheusProvider::new(&prometheus.address(), TIMEOUT).unwrap();
    let msg = expect_no_data(p.query(&error_rate("checkout-v2")).await);
    assert!(msg.contains("no series"), "{msg}");
}
