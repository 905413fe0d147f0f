//! Notifications: payloads, filters and delivery against a real local HTTP
//! server (axum on 127.0.0.1), with per-Rollout webhook URLs read from
//! Secrets in the in-memory API server.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams};
use rollwise::api::{MetricStatus, Phase, Rollout, RolloutStatus};
use rollwise::demo::cluster;
use rollwise::metrics::Metrics;
use rollwise::notify::{
    Format, Notification, NotificationKind, Notifier, NotifierOptions, notifications_for,
};
use rollwise::plan::{Reason, Transition};
use serde_json::{Value, json};

// ---------------------------------------------------------------- fixtures

/// A webhook receiver that records every request. The first `fail_first`
/// requests get `fail_status`; every request is answered after `delay`.
struct Hook {
    url: String,
    requests: Mutex<Vec<(String, Value)>>,
    fail_first: usize,
    fail_status: u16,
    delay: Duration,
    seen: AtomicUsize,
}

impl Hook {
    async fn start(fail_first: usize, fail_status: u16, delay: Duration) -> Arc<Hook> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hook = Arc::new(Hook {
            url: format!("http://{addr}/services/T0001/B0002/SECRETTOKEN"),
            requests: Mutex::default(),
            fail_first,
            fail_status,
            delay,
            seen: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        hook
    }
    async fn ok() -> Arc<Hook> {
        Self::start(0, 200, Duration::ZERO).await
    }
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn handle(State(hook): State<Arc<Hook>>, uri: Uri, body: Bytes) -> StatusCode {
    let n = hook.seen.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    hook.requests
        .lock()
        .unwrap()
        .push((uri.path().to_string(), body));
    tokio::time::sleep(hook.delay).await;
    if n < hook.fail_first {
        StatusCode::from_u16(hook.fail_status).unwrap()
    } else {
        StatusCode::OK
    }
}

/// A URL where nothing listens.
async fn down_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hooks/SECRETTOKEN")
}

fn fast() -> NotifierOptions {
    NotifierOptions {
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(3),
        ..NotifierOptions::default()
    }
}

fn secret(name: &str, key: &str, url: &str) -> Value {
    serde_json::to_value(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(cluster::NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(url.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
    .unwrap()
}

fn rollout(webhooks: Value) -> Rollout {
    let mut r = cluster::rollout("checkout", "checkout-v1", "checkout-v2", "checkout");
    r.spec.notifications = Some(serde_json::from_value(json!({ "webhooks": webhooks })).unwrap());
    r
}

fn plain_rollout() -> Rollout {
    cluster::rollout("checkout", "checkout-v1", "checkout-v2", "checkout")
}

fn error_rate(value: f64, failures: i32) -> MetricStatus {
    MetricStatus {
        name: "error-rate".into(),
        value: Some(value),
        max: Some(0.02),
        verdict: if value > 0.02 { "Fail" } else { "Pass" }.into(),
        failures,
        failure_limit: 1,
        message: format!("error-rate = {value}"),
        ..Default::default()
    }
}

fn at() -> jiff::Timestamp {
    "2026-03-02T10:00:00Z".parse().unwrap()
}

/// The notification of one transition, through `notifications_for`.
fn notification(r: &Rollout, reason: Reason, phase: Phase, weight: i32) -> Notification {
    let status = RolloutStatus {
        phase,
        step: "3/7".into(),
        canary_weight: weight,
        analysis: vec![error_rate(0.031, 2)],
        ..Default::default()
    };
    let t = Transition {
        warning: false,
        reason,
        message: format!("{reason}: something happened"),
    };
    let mut out = notifications_for(r, &status, &[t], at());
    assert_eq!(out.len(), 1, "{reason} gives one notification");
    out.remove(0)
}

fn rolled_back(r: &Rollout) -> Notification {
    notification(r, Reason::AnalysisFailed, Phase::RolledBack, 0)
}

async fn kube() -> kube::Client {
    cluster::client(vec![]).await.unwrap()
}

/// A sample of `rollwise_notifications_total{target, result}`.
fn count(m: &Metrics, target: &str, result: &str) -> u64 {
    sample(
        m,
        "rollwise_notifications_total{",
        &[
            &format!("target=\"{target}\""),
            &format!("result=\"{result}\""),
        ],
    )
}

fn sample(m: &Metrics, prefix: &str, labels: &[&str]) -> u64 {
    m.render()
        .lines()
        .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// The tests of this file run one at a time: one of them captures logs with
/// a thread-local tracing subscriber, and tracing's callsite interest, shared
/// by the process, can be settled by a test running on another thread at the
/// same moment, dropping the captured lines.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Logs of the rollwise crate, captured on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ---------------------------------------------------------------- pure

#[test]
fn reasons_map_to_kinds() {
    use NotificationKind::*;
    let table = [
        (Reason::RolloutStarted, Some(Started)),
        (Reason::NewCanary, Some(Started)),
        (Reason::Retry, Some(Started)),
        (Reason::WeightChanged, Some(StepAdvanced)),
        (Reason::StepAdvanced, Some(StepAdvanced)),
        (Reason::Paused, Some(Paused)),
        (Reason::AnalysisFailed, Some(RolledBack)),
        (Reason::CanaryWorse, Some(RolledBack)),
        (Reason::BudgetExhausted, Some(RolledBack)),
        (Reason::MetricsUnavailable, Some(RolledBack)),
        (Reason::Promoted, Some(Promoted)),
        (Reason::RolloutCompleted, Some(Promoted)),
        (Reason::Aborted, Some(Aborted)),
        (Reason::ActionRefused, None),
        (Reason::WaitingForData, None),
    ];
    for (reason, kind) in table {
        assert_eq!(NotificationKind::from_reason(reason), kind, "{reason}");
    }
    for reason in [
        Reason::AnalysisFailed,
        Reason::CanaryWorse,
        Reason::BudgetExhausted,
        Reason::MetricsUnavailable,
    ] {
        assert_eq!(
            NotificationKind::kinds_for_reason(reason),
            vec![AnalysisFailed, RolledBack],
            "{reason}"
        );
    }
    for k in NotificationKind::ALL {
        assert_eq!(NotificationKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(
        NotificationKind::parse("rolledback"),
        Some(NotificationKind::RolledBack)
    );
}

/// Every rollback the engine decides (by a threshold metric, the
/// comparison, the budget, unreadable metrics) is one notification that a
/// webhook filtering on `RolledBack` or on `AnalysisFailed` receives, and
/// one filtering on anything else does not; its title says why.
#[test]
fn every_rollback_reason_notifies_through_both_filters() {
    let r = plain_rollout();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (reason, title) in [
        (Reason::AnalysisFailed, "analysis failed, rolled back"),
        (Reason::CanaryWorse, "canary worse than stable, rolled back"),
        (
            Reason::BudgetExhausted,
            "exposure budget spent, rolled back",
        ),
        (
            Reason::MetricsUnavailable,
            "metrics unavailable, rolled back",
        ),
    ] {
        let n = notification(&r, reason, Phase::RolledBack, 0);
        assert_eq!(n.kind, NotificationKind::RolledBack, "{reason}");
        assert!(n.matches(Some(&s(&["RolledBack"]))), "{reason}");
        assert!(n.matches(Some(&s(&["analysisfailed"]))), "{reason}");
        assert!(
            !n.matches(Some(&s(&[
                "Started",
                "StepAdvanced",
                "Paused",
                "Promoted",
                "Aborted"
            ]))),
            "{reason}"
        );
        assert!(n.text().contains(title), "{reason}: {}", n.text());
        assert_eq!(n.json_payload()["reason"], reason.as_str());
    }
}

#[test]
fn transitions_give_one_notification_per_kind() {
    let r = plain_rollout();
    let status = RolloutStatus {
        phase: Phase::Succeeded,
        step: "7/7".into(),
        canary_weight: 100,
        ..Default::default()
    };
    let t = |reason: Reason, message: &str| Transition {
        warning: false,
        reason,
        message: message.into(),
    };
    // promote on the last step: Promoted and RolloutCompleted, same message.
    let out = notifications_for(
        &r,
        &status,
        &[
            t(Reason::Promoted, "promoted by hand: skipped step 7"),
            t(Reason::RolloutCompleted, "promoted by hand: skipped step 7"),
            t(Reason::ActionRefused, "ignored"),
        ],
        at(),
    );
    assert_eq!(out.len(), 1);
    let n = &out[0];
    assert_eq!(n.kind, NotificationKind::Promoted);
    assert_eq!(n.message, "promoted by hand: skipped step 7");
    assert_eq!(
        (n.rollout.as_str(), n.namespace.as_str()),
        ("checkout", "shop")
    );
    assert_eq!(
        (n.phase, n.step.as_str(), n.canary_weight),
        (Phase::Succeeded, "7/7", 100)
    );
    assert!(notifications_for(&r, &status, &[t(Reason::ActionRefused, "x")], at()).is_empty());
}

#[test]
fn a_rollback_by_the_analysis_is_one_notification_for_both_filters() {
    let r = plain_rollout();
    let n = rolled_back(&r);
    assert_eq!(n.kind, NotificationKind::RolledBack);
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(n.matches(None));
    assert!(n.matches(Some(&[])));
    assert!(n.matches(Some(&s(&["RolledBack"]))));
    assert!(n.matches(Some(&s(&["AnalysisFailed"]))));
    assert!(n.matches(Some(&s(&["Promoted", "analysisfailed"]))));
    assert!(!n.matches(Some(&s(&["Promoted", "Aborted"]))));
    // An abort is not an analysis failure.
    let aborted = notification(&r, Reason::Aborted, Phase::Aborted, 0);
    assert!(!aborted.matches(Some(&s(&["AnalysisFailed", "RolledBack"]))));
}

#[test]
fn json_payload_has_every_field_and_the_numbers() {
    let p = rolled_back(&plain_rollout()).json_payload();
    assert_eq!(p["kind"], "RolledBack");
    assert_eq!(p["events"], json!(["RolledBack", "AnalysisFailed"]));
    assert_eq!(p["rollout"], "checkout");
    assert_eq!(p["namespace"], "shop");
    assert_eq!(p["phase"], "RolledBack");
    assert_eq!(p["reason"], "AnalysisFailed");
    assert_eq!(p["message"], "AnalysisFailed: something happened");
    assert_eq!(p["step"], "3/7");
    assert_eq!(p["canaryWeight"], 0);
    assert_eq!(p["at"], "2026-03-02T10:00:00Z");
    let m = &p["analysis"][0];
    assert_eq!(m["name"], "error-rate");
    assert_eq!(m["value"], 0.031);
    assert_eq!(m["max"], 0.02);
    assert_eq!(m["verdict"], "Fail");
    assert_eq!(m["failures"], 2);
    assert_eq!(m["failureLimit"], 1);
}

#[test]
fn slack_payload_is_text_with_the_numbers() {
    let p = rolled_back(&plain_rollout()).slack_payload();
    let obj = p.as_object().unwrap();
    assert_eq!(obj.len(), 1, "only `text`: {p}");
    let text = p["text"].as_str().unwrap();
    assert!(text.starts_with('\u{23EA}'), "{text}");
    for part in [
        "shop/checkout",
        "analysis failed, rolled back",
        "AnalysisFailed: something happened",
        "phase RolledBack",
        "step 3/7",
        "canary 0%",
        "error-rate = 0.031 vs &lt;= 0.02: Fail (2 failed, limit 1)",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert_eq!(Format::parse("Slack"), Some(Format::Slack));
    assert_eq!(Format::parse("xml"), None);
}

// ---------------------------------------------------------------- delivery

#[tokio::test]
async fn json_payload_is_delivered_with_the_analysis_numbers() {
    let _serial = serial().await;
    let hook = Hook::ok().await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((hook.url.clone(), Format::Json)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    n.send(&r, rolled_back(&r));
    eventually("delivered", || count(&m, "operator", "delivered") == 1).await;
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["kind"], "RolledBack");
    assert_eq!(bodies[0]["analysis"][0]["value"], 0.031);
    assert_eq!(bodies[0]["analysis"][0]["max"], 0.02);
    assert_eq!(
        hook.requests.lock().unwrap()[0].0,
        "/services/T0001/B0002/SECRETTOKEN"
    );
    assert_eq!(count(&m, "operator", "failed"), 0);
    assert_eq!(sample(&m, "rollwise_notification_queue_length", &[]), 0);
}

#[tokio::test]
async fn slack_format_is_delivered_as_text() {
    let _serial = serial().await;
    let hook = Hook::ok().await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((hook.url.clone(), Format::Slack)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    n.send(
        &r,
        notification(&r, Reason::RolloutStarted, Phase::Pending, 0),
    );
    eventually("delivered", || count(&m, "operator", "delivered") == 1).await;
    let body = &hook.bodies()[0];
    let text = body["text"].as_str().expect("a text field");
    assert!(text.contains("rollout started"), "{text}");
}

#[tokio::test]
async fn a_500_is_retried_then_delivered() {
    let _serial = serial().await;
    let hook = Hook::start(1, 500, Duration::ZERO).await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((hook.url.clone(), Format::Json)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    n.send(&r, rolled_back(&r));
    eventually("delivered", || count(&m, "operator", "delivered") == 1).await;
    assert_eq!(hook.count(), 2);
    assert_eq!(count(&m, "operator", "failed"), 0);
}

#[tokio::test]
async fn a_429_is_retried_and_a_persistent_503_fails_after_three_attempts() {
    let _serial = serial().await;
    let throttled = Hook::start(1, 429, Duration::ZERO).await;
    let broken = Hook::start(usize::MAX, 503, Duration::ZERO).await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((throttled.url.clone(), Format::Json)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    n.send(&r, rolled_back(&r));
    eventually("delivered", || count(&m, "operator", "delivered") == 1).await;
    assert_eq!(throttled.count(), 2);

    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((broken.url.clone(), Format::Json)),
        &m.registry,
        fast(),
    );
    n.send(&r, rolled_back(&r));
    eventually("failed", || count(&m, "operator", "failed") == 1).await;
    assert_eq!(broken.count(), 3);
    assert_eq!(count(&m, "operator", "delivered"), 0);
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let _serial = serial().await;
    let hook = Hook::start(usize::MAX, 400, Duration::ZERO).await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((hook.url.clone(), Format::Json)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    n.send(&r, rolled_back(&r));
    eventually("failed", || count(&m, "operator", "failed") == 1).await;
    // Give a (wrong) retry the time to happen.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(hook.count(), 1);
    assert_eq!(count(&m, "operator", "delivered"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_after_the_retries_and_send_returns_at_once() {
    let _serial = serial().await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((down_url().await, Format::Json)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    let started = Instant::now();
    n.send(&r, rolled_back(&r));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(100), "send took {took:?}");
    eventually("failed", || count(&m, "operator", "failed") == 1).await;
    // Three attempts: two backoff waits (20 ms, 40 ms) happened.
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(count(&m, "operator", "delivered"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_does_not_wait_for_a_slow_webhook() {
    let _serial = serial().await;
    let hook = Hook::start(0, 200, Duration::from_secs(2)).await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((hook.url.clone(), Format::Json)),
        &m.registry,
        fast(),
    );
    let r = plain_rollout();
    n.send(
        &r,
        notification(&r, Reason::RolloutStarted, Phase::Pending, 0),
    );
    // The worker is now inside the request, the server holds it for 2 s.
    eventually("the first request", || hook.count() == 1).await;
    let started = Instant::now();
    n.send(
        &r,
        notification(&r, Reason::WeightChanged, Phase::Progressing, 5),
    );
    let took = started.elapsed();
    assert!(took < Duration::from_millis(100), "send took {took:?}");
    assert_eq!(count(&m, "operator", "delivered"), 0, "still in flight");
    assert_eq!(
        sample(&m, "rollwise_notification_queue_length", &[]),
        1,
        "the second waits in the queue"
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let _serial = serial().await;
    let hook = Hook::ok().await;
    let m = Metrics::new();
    let n = Notifier::with_options(
        kube().await,
        Some((hook.url.clone(), Format::Json)),
        &m.registry,
        NotifierOptions {
            queue_size: 1,
            ..fast()
        },
    );
    let r = plain_rollout();
    // On this single-threaded runtime the worker cannot run between the
    // sends: the first fills the queue, the next two are dropped.
    for reason in [
        Reason::RolloutStarted,
        Reason::WeightChanged,
        Reason::Paused,
    ] {
        n.send(&r, notification(&r, reason, Phase::Progressing, 5));
    }
    assert_eq!(count(&m, "operator", "dropped"), 2);
    assert_eq!(sample(&m, "rollwise_notification_queue_length", &[]), 1);
    eventually("delivered", || count(&m, "operator", "delivered") == 1).await;
    assert_eq!(hook.bodies()[0]["kind"], "Started");
    assert_eq!(sample(&m, "rollwise_notification_queue_length", &[]), 0);
}

#[tokio::test]
async fn per_rollout_webhooks_read_their_url_from_a_secret_and_filter_events() {
    let _serial = serial().await;
    let all = Hook::ok().await;
    let failures = Hook::ok().await;
    let client = cluster::client(vec![
        secret("hook-all", "url", &format!("{}\n", all.url)),
        secret("hook-failures", "webhook", &failures.url),
    ])
    .await
    .unwrap();
    let m = Metrics::new();
    let n = Notifier::with_options(client, None, &m.registry, fast());
    let r = rollout(json!([
        {"name": "team-all", "urlFrom": {"name": "hook-all", "key": "url"}, "format": "slack"},
        {"name": "team-failures", "urlFrom": {"name": "hook-failures", "key": "webhook"},
         "events": ["AnalysisFailed"]},
        {"name": "no-secret", "urlFrom": {"name": "missing", "key": "url"}, "events": ["Aborted"]},
    ]));
    n.send(
        &r,
        notification(&r, Reason::RolloutStarted, Phase::Pending, 0),
    );
    n.send(&r, rolled_back(&r));
    n.send(&r, notification(&r, Reason::Aborted, Phase::Aborted, 0));
    eventually("all delivered", || {
        count(&m, "team-all", "delivered") == 3
            && count(&m, "team-failures", "delivered") == 1
            && count(&m, "no-secret", "failed") == 1
    })
    .await;
    let texts: Vec<String> = all
        .bodies()
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect();
    assert!(texts[0].contains("rollout started"), "{texts:?}");
    assert!(texts[1].contains("rolled back"), "{texts:?}");
    assert!(texts[2].contains("aborted"), "{texts:?}");
    let f = failures.bodies();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["kind"], "RolledBack");
    assert_eq!(f[0]["analysis"][0]["value"], 0.031);
    // No operator-wide webhook: nothing counted for it.
    assert_eq!(count(&m, "operator", "delivered"), 0);
    assert!(!m.render().contains("target=\"operator\""));
}

#[tokio::test]
async fn a_url_read_from_a_secret_is_reused() {
    let _serial = serial().await;
    let hook = Hook::ok().await;
    let client = cluster::client(vec![secret("hook", "url", &hook.url)])
        .await
        .unwrap();
    let m = Metrics::new();
    let n = Notifier::with_options(client.clone(), None, &m.registry, fast());
    let r = rollout(json!([{"name": "team", "urlFrom": {"name": "hook", "key": "url"}}]));
    n.send(
        &r,
        notification(&r, Reason::RolloutStarted, Phase::Pending, 0),
    );
    eventually("first", || count(&m, "team", "delivered") == 1).await;
    Api::<Secret>::namespaced(client, cluster::NAMESPACE)
        .delete("hook", &DeleteParams::default())
        .await
        .unwrap();
    n.send(
        &r,
        notification(&r, Reason::WeightChanged, Phase::Progressing, 5),
    );
    eventually("second", || count(&m, "team", "delivered") == 2).await;
    assert_eq!(hook.count(), 2);
}

#[tokio::test]
async fn logs_name_the_target_and_the_failure_never_the_url() {
    let _serial = serial().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("rollwise=trace"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let rejecting = Hook::start(usize::MAX, 400, Duration::ZERO).await;
    let flaky = Hook::start(1, 502, Duration::ZERO).await;
    let down = down_url().await;
    let client = cluster::client(vec![
        secret("flaky", "url", &flaky.url),
        secret("down", "url", &down),
        secret("bad", "url", "not a url SECRETTOKEN"),
    ])
    .await
    .unwrap();
    let m = Metrics::new();
    let n = Notifier::with_options(
        client,
        Some((rejecting.url.clone(), Format::Slack)),
        &m.registry,
        fast(),
    );
    let r = rollout(json!([
        {"name": "flaky-hook", "urlFrom": {"name": "flaky", "key": "url"}},
        {"name": "down-hook", "urlFrom": {"name": "down", "key": "url"}},
        {"name": "bad-hook", "urlFrom": {"name": "bad", "key": "url"}},
        {"name": "missing-hook", "urlFrom": {"name": "missing", "key": "url"}},
    ]));
    n.send(&r, rolled_back(&r));
    eventually("every target done", || {
        count(&m, "operator", "failed") == 1
            && count(&m, "flaky-hook", "delivered") == 1
            && count(&m, "down-hook", "failed") == 1
            && count(&m, "bad-hook", "failed") == 1
            && count(&m, "missing-hook", "failed") == 1
    })
    .await;
    // Each target's outcome is counted before its last log line is written:
    // wait (bounded) for the lines as well.
    let parts = [
        "webhook=operator",
        "HTTP status 400",
        "webhook=flaky-hook",
        "HTTP status 502",
        "retrying",
        "webhook=down-hook",
        "connection failed",
        "webhook=bad-hook",
        "invalid webhook URL",
        "webhook=missing-hook",
        "Secret shop/missing key url: the Secret does not exist",
    ];
    eventually("every log line", || {
        parts.iter().all(|p| logs.text().contains(p))
    })
    .await;
    let text = logs.text();
    for part in parts {
        assert!(text.contains(part), "{part:?} not in the logs:\n{text}");
    }
    for secret in ["SECRETTOKEN", "127.0.0.1", "http://"] {
        assert!(!text.contains(secret), "{secret:?} in the logs:\n{text}");
    }
}
