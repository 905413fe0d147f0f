//! What this process has read, written or deleted of each routing object,
//! so that the operator's watches on routes can tell its own writes from
//! changes made by someone else: a route event whose version the operator
//! itself wrote (or already read), or the deletion it made itself, is the
//! echo of what it did, and triggers no reconcile.
//!
//! The watch event of a write can arrive before the write's response: a
//! write in progress is marked ([`writing`]), and [`settled`] waits for it
//! before the event is judged.
//!
//! Process-wide because it is a fact about the process, not about one
//! router: routers are built per reconcile and forget everything. Bounded by
//! the number of routing objects the Rollouts use (a few versions each;
//! [`forget`] drops an object no Rollout uses any more).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use kube::api::DynamicObject;

/// `(kind, namespace, name)`.
type Key = (String, String, String);

/// Versions remembered per object: a late event of an older write of ours
/// is still ours.
const VERSIONS: usize = 4;

#[derive(Default)]
struct Known {
    /// The newest versions read or written, newest last.
    versions: VecDeque<String>,
    /// Writes (or deletes) in progress.
    writing: u32,
    /// Deleted by us (the delete event is ours).
    deleted: bool,
}

fn table() -> &'static Mutex<HashMap<Key, Known>> {
    static TABLE: OnceLock<Mutex<HashMap<Key, Known>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

fn key(kind: &str, namespace: &str, name: &str) -> Key {
    (kind.to_owned(), namespace.to_owned(), name.to_owned())
}

fn with<T>(kind: &str, namespace: &str, name: &str, f: impl FnOnce(&mut Known) -> T) -> T {
    let mut map = table().lock().unwrap_or_else(|p| p.into_inner());
    f(map.entry(key(kind, namespace, name)).or_default())
}

/// Remember the version of `obj` (of kind `kind`) as read or written by us.
pub fn note(kind: &str, obj: &DynamicObject) {
    let (Some(ns), Some(name), Some(rv)) = (
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref(),
        obj.metadata.resource_version.as_deref(),
    ) else {
        return;
    };
    with(kind, ns, name, |k| {
        k.deleted = false;
        if k.versions.iter().any(|v| v == rv) {
            return;
        }
        if k.versions.len() >= VERSIONS {
            k.versions.pop_front();
        }
        k.versions.push_back(rv.to_owned());
    });
}

/// Remember that we deleted the object (its delete event is ours).
pub fn note_deleted(kind: &str, namespace: &str, name: &str) {
    with(kind, namespace, name, |k| k.deleted = true);
}

/// Marks a write (or delete) of an object in progress until dropped.
pub struct Writing(Key);

/// Mark a write of `kind` `namespace/name` in progress: keep the guard
/// until the write's result has been noted.
pub fn writing(kind: &str, namespace: &str, name: &str) -> Writing {
    with(kind, namespace, name, |k| k.writing += 1);
    Writing(key(kind, namespace, name))
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut map = table().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = map.get_mut(&self.0) {
            k.writing = k.writing.saturating_sub(1);
        }
    }
}

/// Wait (bounded by `limit`) until no write of the object is in progress.
pub async fn settled(kind: &str, namespace: &str, name: &str, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let busy = table()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(kind, namespace, name))
            .is_some_and(|k| k.writing > 0);
        if !busy || Instant::now() >= end {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `resource_version` of `kind` `namespace/name` is one this
/// process wrote or read.
pub fn is_known(kind: &str, namespace: &str, name: &str, resource_version: &str) -> bool {
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key(kind, namespace, name))
        .is_some_and(|k| k.versions.iter().any(|v| v == resource_version))
}

/// Whether the object's deletion was ours (answered once: a later deletion
/// of a re-created object is someone else's).
pub fn take_deleted(kind: &str, namespace: &str, name: &str) -> bool {
    let mut map = table().lock().unwrap_or_else(|p| p.into_inner());
    match map.get_mut(&key(kind, namespace, name)) {
        Some(k) if k.deleted => {
            k.deleted = false;
            true
        }
        _ => false,
    }
}

/// Drop what is known of an object (no Rollout uses it any more).
pub fn forget(kind: &str, namespace: &str, name: &str) {
    let mut map = table().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = map.get(&key(kind, namespace, name))
        && k.writing == 0
    {
        map.remove(&key(kind, namespace, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str, rv: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Thing",
            "metadata": {"namespace": ns, "name": name, "resourceVersion": rv}
        }))
        .unwrap()
    }

    #[test]
    fn the_last_few_noted_versions_are_known() {
        note("SeenTestKind", &obj("a", "r", "5"));
        assert!(is_known("SeenTestKind", "a", "r", "5"));
        assert!(!is_known("SeenTestKind", "a", "r", "6"));
        assert!(!is_known("SeenTestKind", "b", "r", "5"));
        assert!(!is_known("OtherKind", "a", "r", "5"));
        for rv in ["6", "7", "8"] {
            note("SeenTestKind", &obj("a", "r", rv));
        }
        assert!(
            is_known("SeenTestKind", "a", "r", "5"),
            "a late event of an older write"
        );
        note("SeenTestKind", &obj("a", "r", "9"));
        assert!(
            !is_known("SeenTestKind", "a", "r", "5"),
            "only the last {VERSIONS}"
        );
        assert!(is_known("SeenTestKind", "a", "r", "9"));
        forget("SeenTestKind", "a", "r");
        assert!(!is_known("SeenTestKind", "a", "r", "9"));
    }

    #[test]
    fn a_deletion_of_ours_is_told_once() {
        note_deleted("SeenDelKind", "a", "canary");
        assert!(take_deleted("SeenDelKind", "a", "canary"));
        assert!(!take_deleted("SeenDelKind", "a", "canary"));
        assert!(!take_deleted("SeenDelKind", "a", "other"));
    }

    #[tokio::test(start_paused = true)]
    async fn settled_waits_for_writes_in_progress() {
        let guard = writing("SeenWriteKind", "a", "r");
        let waiter = tokio::spawn(settled("SeenWriteKind", "a", "r", Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "a write is in progress");
        note("SeenWriteKind", &obj("a", "r", "3"));
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("settled once the write is done")
            .unwrap();
        assert!(is_known("SeenWriteKind", "a", "r", "3"));
    }
}
