//! Kubernetes Events (`events.k8s.io/v1`) for every transition the engine
//! reports, created directly: one `create` per Event, nothing kept in
//! memory afterwards (kube's `Recorder` keeps every Event it sent for six
//! minutes to fold repeats into a series; rollwise's Events are transitions,
//! which do not repeat, and a fleet of thousands of Rollouts must not grow
//! the operator's memory with what it has said).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::plan::Transition;

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "rollwise";

/// Publishes Events about Rollouts. Failures to publish are logged, never
/// fatal: an Event is a notice, the status is the record.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    /// `reportingInstance`: this replica (the pod name), else the controller.
    instance: String,
}

impl Events {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Events {
            client,
            instance: instance
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| REPORTING_CONTROLLER.to_owned()),
        }
    }

    pub async fn publish(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let ev = event(
            &self.instance,
            reference,
            warning,
            reason,
            action,
            note,
            Timestamp::now(),
        );
        let ns = reference.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        match tokio::time::timeout(
            crate::controller::API_TIMEOUT,
            api.create(&PostParams::default(), &ev),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, reason, "could not publish event"),
            Err(_) => tracing::warn!(reason, "could not publish event: timed out"),
        }
    }

    pub async fn transitions(&self, reference: &ObjectReference, transitions: &[Transition]) {
        for t in transitions {
            self.publish(
                reference,
                t.warning,
                t.reason.as_str(),
                "Reconcile",
                &t.message,
            )
            .await;
        }
    }
}

/// The Event as it is sent, from `instance` (no I/O).
pub fn event(
    instance: &str,
    reference: &ObjectReference,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
    now: Timestamp,
) -> Event {
    let name = reference.name.as_deref().unwrap_or("rollout");
    Event {
        metadata: ObjectMeta {
            // Unique: the time in nanoseconds and a per-process counter
            // (`generateName` is refused for Events by their validation).
            name: Some(format!("{}.{:x}", truncate(name, 200), unique(now))),
            namespace: reference.namespace.clone(),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        reason: Some(truncate(reason, 128).to_owned()),
        action: Some(truncate(action, 128).to_owned()),
        note: Some(truncate(note, 1000).to_owned()),
        regarding: Some(reference.clone()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(truncate(instance, 128).to_owned()),
        ..Default::default()
    }
}

/// A number that differs at every call in this process (and, with the
/// time in it, from other processes' in practice).
fn unique(now: Timestamp) -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (now.as_nanosecond() as u128).wrapping_add(u128::from(n) << 64)
}

/// At most `max` bytes of `s`, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_and_is_bounded() {
        let reference = ObjectReference {
            kind: Some("Rollout".into()),
            name: Some("checkout".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let long = "é".repeat(800);
        let ev = event(
            "rollwise-0",
            &reference,
            true,
            "CanaryWorse",
            "Reconcile",
            &long,
            now,
        );
        let name = ev.metadata.name.clone().unwrap();
        assert!(name.starts_with("checkout."), "{name}");
        let again = event(
            "rollwise-0",
            &reference,
            true,
            "CanaryWorse",
            "Reconcile",
            "x",
            now,
        );
        assert_ne!(
            again.metadata.name, ev.metadata.name,
            "names differ at the same instant"
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reason.as_deref(), Some("CanaryWorse"));
        assert_eq!(ev.action.as_deref(), Some("Reconcile"));
        assert_eq!(ev.regarding.as_ref(), Some(&reference));
        assert_eq!(ev.reporting_controller.as_deref(), Some("rollwise"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("rollwise-0"));
        assert_eq!(ev.event_time, Some(MicroTime(now)));
        let note = ev.note.unwrap();
        assert!((999..=1000).contains(&note.len()), "{}", note.len());
        assert!(note.chars().all(|c| c == 'é'));
        let ev = event(
            "r",
            &reference,
            false,
            "Completed",
            "Reconcile",
            "done",
            now,
        );
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
    }
}
