//! Delivery: a bounded queue and ONE background task that posts each
//! notification to the operator-wide webhook and to the Rollout's own
//! webhooks, with retries.
//!
//! A webhook URL is a credential (Slack and Teams URLs embed their token):
//! it is never logged, never put in a metric label and never kept outside
//! the worker. Logs name the target ("operator" or the webhook's `name`) and
//! the kind of failure (status code, timeout, connection failed) only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use prometheus_http_query::reqwest;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{Format, Notification, wants};
use crate::api::{Rollout, SecretKeyRef};

/// The metrics label of the operator-wide webhook.
const OPERATOR: &str = "operator";

/// Tuning of a [`Notifier`]. The defaults are the production values; tests
/// shrink them.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Notifications waiting for delivery; beyond this they are dropped.
    pub queue_size: usize,
    /// Attempts per target (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub backoff: Duration,
    /// Longest wait between attempts (also caps a `Retry-After`).
    pub max_backoff: Duration,
    /// Timeout of one HTTP request (and of one Secret read).
    pub timeout: Duration,
    /// How long a URL read from a Secret is reused.
    pub secret_ttl: Duration,
    /// Most URLs kept from Secrets.
    pub secret_cache_size: usize,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_size: 1024,
            attempts: 3,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            secret_ttl: Duration::from_secs(60),
            secret_cache_size: 256,
        }
    }
}

#[derive(Clone)]
struct NotifyMetrics {
    /// By target and result (delivered, failed, dropped).
    total: IntCounterVec,
    queue: IntGauge,
}

impl NotifyMetrics {
    fn new(registry: &Registry) -> Self {
        let total = IntCounterVec::new(
            Opts::new(
                "notifications_total",
                "Notifications by target (\"operator\" or the webhook's name) and result (delivered, failed, dropped)",
            ),
            &["target", "result"],
        )
        .expect("static");
        let queue = IntGauge::new(
            "notification_queue_length",
            "Notifications waiting to be delivered",
        )
        .expect("static");
        for c in [
            Box::new(total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "notification metrics not registered");
            }
        }
        NotifyMetrics { total, queue }
    }

    fn count(&self, target: &str, result: &str) {
        self.total.with_label_values(&[target, result]).inc();
    }
}

/// Where one notification goes.
#[derive(Debug, Clone)]
enum Target {
    /// The operator-wide webhook (`--notify-url`).
    Operator,
    /// One of the Rollout's `spec.notifications.webhooks`.
    Webhook {
        name: String,
        url_from: SecretKeyRef,
        format: Format,
    },
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::Operator => OPERATOR,
            Target::Webhook { name, .. } => name,
        }
    }
}

struct Job {
    namespace: String,
    notification: Notification,
    targets: Vec<Target>,
}

/// Sends notifications without ever making the caller wait: [`send`](Self::send)
/// queues, one background task delivers. Cheap to clone (all clones share
/// the queue and the task).
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    has_global: bool,
    metrics: NotifyMetrics,
}

impl Notifier {
    /// A notifier with the production settings. `global` is the
    /// operator-wide webhook (URL, format), told about every notification.
    /// Registers `notifications_total{target, result}` and
    /// `notification_queue_length` on `registry` (the operator's registry
    /// adds the `rollwise_` prefix). Must be called inside a tokio runtime:
    /// it spawns the delivery task, which ends when the last clone is dropped.
    pub fn new(
        client: kube::Client,
        global: Option<(String, Format)>,
        registry: &Registry,
    ) -> Notifier {
        Self::with_options(client, global, registry, NotifierOptions::default())
    }

    /// [`new`](Self::new) with explicit tuning (tests: tiny queue, short backoff).
    pub fn with_options(
        client: kube::Client,
        global: Option<(String, Format)>,
        registry: &Registry,
        options: NotifierOptions,
    ) -> Notifier {
        let metrics = NotifyMetrics::new(registry);
        let global = global
            .map(|(url, format)| (url.trim().to_string(), format))
            .filter(|(url, _)| !url.is_empty());
        if global.is_some() {
            for result in ["delivered", "failed", "dropped"] {
                metrics.total.with_label_values(&[OPERATOR, result]);
            }
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            // A redirect would turn the POST into a GET, or send the
            // payload elsewhere: configure the final URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rollwise/", env!("CARGO_PKG_VERSION")))
            .build();
        let http = match http {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %DeliveryError::from_reqwest(&e), "cannot build the notification HTTP client: notifications will fail");
                None
            }
        };
        let (tx, rx) = mpsc::channel(options.queue_size.max(1));
        let has_global = global.is_some();
        let worker = Worker {
            rx,
            kube: client,
            http,
            global,
            options,
            metrics: metrics.clone(),
            cache: HashMap::new(),
        };
        tokio::spawn(worker.run());
        Notifier {
            tx,
            has_global,
            metrics,
        }
    }

    /// Queue a notification for the operator-wide webhook and the Rollout's
    /// webhooks whose `events` want it. Never blocks: when the queue is full
    /// the notification is dropped and counted (`result="dropped"`).
    pub fn send(&self, rollout: &Rollout, n: Notification) {
        let mut targets = Vec::new();
        if self.has_global {
            targets.push(Target::Operator);
        }
        for w in wants(rollout, &n) {
            targets.push(Target::Webhook {
                name: if w.name.is_empty() {
                    "unnamed".into()
                } else {
                    w.name.clone()
                },
                url_from: w.url_from.clone(),
                format: w
                    .format
                    .as_deref()
                    .and_then(Format::parse)
                    .unwrap_or_default(),
            });
        }
        if targets.is_empty() {
            return;
        }
        let job = Job {
            namespace: rollout.namespace().unwrap_or_default(),
            notification: n,
            targets,
        };
        self.metrics.queue.inc();
        if let Err(e) = self.tx.try_send(job) {
            self.metrics.queue.dec();
            let (why, job) = match e {
                TrySendError::Full(job) => ("queue full", job),
                TrySendError::Closed(job) => ("notifier stopped", job),
            };
            for t in &job.targets {
                self.metrics.count(t.label(), "dropped");
            }
            tracing::warn!(
                rollout = %job.notification.rollout,
                namespace = %job.namespace,
                kind = job.notification.kind.as_str(),
                targets = job.targets.len(),
                "notification dropped: {why}"
            );
        }
    }
}

/// Why a delivery failed, safe to log: never the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryError {
    /// The webhook answered with this status.
    Status(u16),
    Timeout,
    Connect,
    /// The URL is not a valid http(s) URL.
    InvalidUrl,
    /// Any other transport error.
    Request,
    /// No HTTP client could be built.
    NoClient,
}

impl DeliveryError {
    pub(crate) fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_builder() {
            DeliveryError::InvalidUrl
        } else if e.is_timeout() {
            DeliveryError::Timeout
        } else if e.is_connect() {
            DeliveryError::Connect
        } else if let Some(s) = e.status() {
            DeliveryError::Status(s.as_u16())
        } else {
            DeliveryError::Request
        }
    }

    /// Connection errors, timeouts, 5xx and 429 are worth another attempt;
    /// other 4xx (bad URL, revoked token) are not.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            DeliveryError::Status(s) => *s >= 500 || *s == 429,
            DeliveryError::Timeout | DeliveryError::Connect | DeliveryError::Request => true,
            DeliveryError::InvalidUrl | DeliveryError::NoClient => false,
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::Status(s) => write!(f, "HTTP status {s}"),
            DeliveryError::Timeout => f.write_str("timed out"),
            DeliveryError::Connect => f.write_str("connection failed"),
            DeliveryError::InvalidUrl => f.write_str("invalid webhook URL"),
            DeliveryError::Request => f.write_str("request failed"),
            DeliveryError::NoClient => f.write_str("no HTTP client"),
        }
    }
}

struct Worker {
    rx: mpsc::Receiver<Job>,
    kube: kube::Client,
    http: Option<reqwest::Client>,
    global: Option<(String, Format)>,
    options: NotifierOptions,
    metrics: NotifyMetrics,
    /// (namespace, secret, key) -> (read at, URL).
    cache: HashMap<(String, String, String), (Instant, String)>,
}

impl Worker {
    async fn run(mut self) {
        while let Some(job) = self.rx.recv().await {
            self.metrics.queue.dec();
            self.process(job).await;
        }
    }

    async fn process(&mut self, job: Job) {
        let n = &job.notification;
        // Resolve the URLs first (one at a time: the cache is ours), then
        // post to every target at once.
        let mut deliveries: Vec<(String, String, Format)> = Vec::new();
        for t in &job.targets {
            match t {
                Target::Operator => {
                    if let Some((url, format)) = &self.global {
                        deliveries.push((OPERATOR.into(), url.clone(), *format));
                    }
                }
                Target::Webhook {
                    name,
                    url_from,
                    format,
                } => match self.url_from_secret(&job.namespace, url_from).await {
                    Ok(url) => deliveries.push((name.clone(), url, *format)),
                    Err(why) => {
                        self.metrics.count(name, "failed");
                        tracing::warn!(
                            webhook = %name,
                            rollout = %n.rollout,
                            namespace = %job.namespace,
                            kind = n.kind.as_str(),
                            "notification not sent: no webhook URL: {why}"
                        );
                    }
                },
            }
        }
        let http = self.http.as_ref();
        let options = &self.options;
        let sends = deliveries.iter().map(|(name, url, format)| async move {
            let body = serde_json::to_vec(&n.payload(*format)).unwrap_or_default();
            let result = match http {
                Some(http) => post(http, options, name, url, body).await,
                None => Err((DeliveryError::NoClient, 1)),
            };
            (name, result)
        });
        for (name, result) in join_all(sends).await {
            match result {
                Ok(attempts) => {
                    self.metrics.count(name, "delivered");
                    tracing::debug!(
                        webhook = %name,
                        rollout = %n.rollout,
                        namespace = %job.namespace,
                        kind = n.kind.as_str(),
                        attempts,
                        "notification delivered"
                    );
                }
                Err((error, attempts)) => {
                    self.metrics.count(name, "failed");
                    tracing::warn!(
                        webhook = %name,
                        rollout = %n.rollout,
                        namespace = %job.namespace,
                        kind = n.kind.as_str(),
                        attempts,
                        error = %error,
                        "notification delivery failed"
                    );
                }
            }
        }
    }

    /// The webhook URL from `url_from` in `namespace`, cached for
    /// `secret_ttl`. The error says why, without the Secret's content.
    async fn url_from_secret(
        &mut self,
        namespace: &str,
        from: &SecretKeyRef,
    ) -> Result<String, String> {
        let key = (namespace.to_string(), from.name.clone(), from.key.clone());
        if let Some((at, url)) = self.cache.get(&key)
            && at.elapsed() < self.options.secret_ttl
        {
            return Ok(url.clone());
        }
        let url = read_url_from_secret(&self.kube, namespace, from, self.options.timeout).await?;
        if self.cache.len() >= self.options.secret_cache_size.max(1) {
            let ttl = self.options.secret_ttl;
            self.cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if self.cache.len() >= self.options.secret_cache_size.max(1) {
                self.cache.clear();
            }
        }
        self.cache.insert(key, (Instant::now(), url.clone()));
        Ok(url)
    }
}

/// A webhook URL from a Secret key in `namespace`, read with `timeout`.
/// The error says why, without the Secret's content. Shared by
/// notifications and webhook checks.
pub(crate) async fn read_url_from_secret(
    kube: &kube::Client,
    namespace: &str,
    from: &SecretKeyRef,
    timeout: Duration,
) -> Result<String, String> {
    let place = format!("Secret {namespace}/{} key {}", from.name, from.key);
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let secret = match tokio::time::timeout(timeout, api.get(&from.name)).await {
        Err(_) => return Err(format!("{place}: reading it timed out")),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
            return Err(format!("{place}: the Secret does not exist"));
        }
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
            return Err(format!(
                "{place}: forbidden (the operator needs get on secrets)"
            ));
        }
        Ok(Err(kube::Error::Api(s))) => {
            return Err(format!("{place}: API error {} {}", s.code, s.reason));
        }
        Ok(Err(_)) => return Err(format!("{place}: cannot reach the API server")),
        Ok(Ok(s)) => s,
    };
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&from.key))
        .map(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&from.key))
                .map(|s| Some(s.clone()))
        });
    let url = match raw {
        None => return Err(format!("{place}: no such key")),
        Some(None) => return Err(format!("{place}: the value is not UTF-8")),
        Some(Some(s)) => s.trim().to_string(),
    };
    if url.is_empty() {
        return Err(format!("{place}: the value is empty"));
    }
    Ok(url)
}

/// POST `body` to `url`, retrying with exponential backoff. Returns the
/// number of attempts made.
async fn post(
    http: &reqwest::Client,
    options: &NotifierOptions,
    name: &str,
    url: &str,
    body: Vec<u8>,
) -> Result<u32, (DeliveryError, u32)> {
    let attempts = options.attempts.max(1);
    let mut backoff = options.backoff;
    for attempt in 1..=attempts {
        let sent = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let (error, retry_after) = match sent {
            Ok(resp) if resp.status().is_success() => return Ok(attempt),
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                (DeliveryError::Status(resp.status().as_u16()), retry_after)
            }
            Err(e) => (DeliveryError::from_reqwest(&e), None),
        };
        if !error.retryable() || attempt == attempts {
            return Err((error, attempt));
        }
        let wait = retry_after
            .map_or(backoff, |ra| ra.max(backoff))
            .min(options.max_backoff);
        tracing::debug!(webhook = %name, attempt, error = %error, wait_ms = wait.as_millis() as u64, "notification attempt failed, retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
    unreachable!("the loop returns on its last attempt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy() {
        assert!(DeliveryError::Status(500).retryable());
        assert!(DeliveryError::Status(503).retryable());
        assert!(DeliveryError::Status(429).retryable());
        assert!(!DeliveryError::Status(400).retryable());
        assert!(!DeliveryError::Status(404).retryable());
        assert!(DeliveryError::Connect.retryable());
        assert!(DeliveryError::Timeout.retryable());
        assert!(!DeliveryError::InvalidUrl.retryable());
    }

    #[test]
    fn errors_display_no_url() {
        for e in [
            DeliveryError::Status(502),
            DeliveryError::Timeout,
            DeliveryError::Connect,
            DeliveryError::InvalidUrl,
            DeliveryError::Request,
        ] {
            let s = e.to_string();
            assert!(!s.contains("http"), "{s}");
        }
    }
}
