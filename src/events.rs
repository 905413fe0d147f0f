//! Kubernetes Events for every transition the engine reports.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::plan::Transition;

/// Publishes Events about Rollouts. Failures to publish are logged, never
/// fatal: an Event is a notice, the status is the record.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "rollwise".into(),
            instance,
        };
        Events {
            recorder: Recorder::new(client, reporter),
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
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.chars().take(128).collect(),
            note: Some(note.chars().take(1000).collect()),
            action: action.chars().take(128).collect(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    pub async fn transitions(&self, reference: &ObjectReference, transitions: &[Transition]) {
        for t in transitions {
            self.publish(reference, t.warning, t.reason, "Reconcile", &t.message)
                .await;
        }
    }
}
