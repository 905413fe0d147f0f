//! The newest `resourceVersion` this process has read or written of each
//! routing object, so that the operator's watches on routes can tell its own
//! writes (and versions it has already read) from changes made by someone
//! else: a route event whose version is already known here is the echo of
//! what the operator did, and triggers no reconcile.
//!
//! Process-wide because it is a fact about the process, not about one
//! router: routers are built per reconcile and forget everything. Bounded by
//! the number of routing objects the Rollouts use (entries are replaced in
//! place; [`forget`] drops an object no Rollout uses any more).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use kube::api::DynamicObject;

/// `(kind, namespace, name)`.
type Key = (String, String, String);

fn versions() -> &'static Mutex<HashMap<Key, String>> {
    static VERSIONS: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    VERSIONS.get_or_init(Mutex::default)
}

fn key(kind: &str, namespace: &str, name: &str) -> Key {
    (kind.to_owned(), namespace.to_owned(), name.to_owned())
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
    let mut map = versions().lock().unwrap_or_else(|p| p.into_inner());
    match map.get_mut(&key(kind, ns, name)) {
        Some(v) if v == rv => {}
        Some(v) => rv.clone_into(v),
        None => {
            map.insert(key(kind, ns, name), rv.to_owned());
        }
    }
}

/// Whether `resource_version` of `kind` `namespace/name` is the newest
/// version this process has read or written.
pub fn is_known(kind: &str, namespace: &str, name: &str, resource_version: &str) -> bool {
    versions()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key(kind, namespace, name))
        .is_some_and(|v| v == resource_version)
}

/// Drop what is known of an object (no Rollout uses it any more).
pub fn forget(kind: &str, namespace: &str, name: &str) {
    versions()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(kind, namespace, name));
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
    fn only_the_newest_noted_version_is_known() {
        note("SeenTestKind", &obj("a", "r", "5"));
        assert!(is_known("SeenTestKind", "a", "r", "5"));
        assert!(!is_known("SeenTestKind", "a", "r", "6"));
        assert!(!is_known("SeenTestKind", "b", "r", "5"));
        assert!(!is_known("OtherKind", "a", "r", "5"));
        note("SeenTestKind", &obj("a", "r", "7"));
        assert!(!is_known("SeenTestKind", "a", "r", "5"));
        assert!(is_known("SeenTestKind", "a", "r", "7"));
        forget("SeenTestKind", "a", "r");
        assert!(!is_known("SeenTestKind", "a", "r", "7"));
    }
}
