//! Webhook checks: POST the payload, read the status code (and at most
//! [`MAX_BODY`] bytes of the answer, for the message). The URL is a
//! credential: it is never logged and never put in status.

use std::time::Duration;

use prometheus_http_query::reqwest;

use super::{CheckRequest, result};
use crate::api::WebhookCheck;
use crate::notify::{DeliveryError, read_url_from_secret};
use crate::plan::checks::{CheckOutcome, CheckResult};
use crate::plan::compile::parse_duration;

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default retries of one attempt.
pub const DEFAULT_RETRIES: i32 = 2;
/// The most of an answer read (the rest is dropped).
pub const MAX_BODY: usize = 64 * 1024;
/// The most of an answer put in the status message.
const MAX_MESSAGE: usize = 200;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) fn client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        // A redirect would turn the POST into a GET, or send the payload
        // elsewhere: configure the final URL.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rollwise/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| tracing::error!(error = %DeliveryError::from_reqwest(&e), "cannot build the webhook check HTTP client"))
        .ok()
}

pub(super) async fn run(
    kube: &kube::Client,
    http: Option<&reqwest::Client>,
    req: &CheckRequest<'_>,
    w: &WebhookCheck,
) -> CheckResult {
    let due = req.due;
    let timeout = w
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let url = match (&w.url, &w.url_from) {
        (Some(u), _) => u.clone(),
        (None, Some(from)) => {
            let ns = req.rollout.metadata.namespace.clone().unwrap_or_default();
            match read_url_from_secret(kube, &ns, from, timeout).await {
                Ok(u) => u,
                Err(why) => return result(due, CheckOutcome::Error, "no URL", &why),
            }
        }
        (None, None) => return result(due, CheckOutcome::Error, "no URL", "needs url or urlFrom"),
    };
    let Some(http) = http else {
        return result(
            due,
            CheckOutcome::Error,
            "no HTTP client",
            "the operator could not build its HTTP client",
        );
    };
    let confirm = w.is_confirm();
    // A confirm gate is asked again after its interval anyway.
    let tries = if confirm {
        1
    } else {
        w.retries.unwrap_or(DEFAULT_RETRIES).clamp(0, 10) as u32 + 1
    };
    let body = serde_json::to_vec(req.payload).unwrap_or_default();
    let mut backoff = FIRST_BACKOFF;
    let mut last = (String::new(), String::new(), None);
    for attempt in 1..=tries {
        let sent = http
            .post(&url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let error = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = read_bounded(resp, timeout).await;
                let tried = if attempt > 1 {
                    format!(" after {attempt} tries")
                } else {
                    String::new()
                };
                if (200..300).contains(&status) {
                    let mut r = result(
                        due,
                        CheckOutcome::Passed,
                        &format!("HTTP {status}"),
                        &format!("HTTP {status}{tried}{text}"),
                    );
                    r.http_status = Some(status);
                    return r;
                }
                last = (
                    format!("HTTP {status}"),
                    format!("HTTP {status}{tried}{text}"),
                    Some(status),
                );
                DeliveryError::Status(status)
            }
            Err(e) => {
                let e = DeliveryError::from_reqwest(&e);
                last = (
                    e.to_string(),
                    format!("{e} (timeout {})", crate::plan::human(timeout)),
                    None,
                );
                e
            }
        };
        if !error.retryable() || attempt == tries {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    // A confirm gate's "no" is a failed attempt too: the engine makes it
    // a wait.
    let mut r = result(due, CheckOutcome::Failed, &last.0, &last.1);
    r.http_status = last.2;
    r
}

/// At most [`MAX_BODY`] bytes of the answer, as `: first line` for the
/// message (at most [`MAX_MESSAGE`] characters), or nothing.
async fn read_bounded(mut resp: reqwest::Response, timeout: Duration) -> String {
    let mut buf = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = MAX_BODY.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if buf.len() >= MAX_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    summarize(&buf)
}

fn summarize(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_MESSAGE)
        .collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_bounded_and_on_one_line() {
        assert_eq!(summarize(b""), "");
        assert_eq!(summarize(b"not\n  approved yet"), ": not approved yet");
        let long = vec![b'x'; 10_000];
        assert_eq!(summarize(&long).len(), 2 + MAX_MESSAGE);
    }
}
