//! What each Rollout depends on besides itself, and the watches that wake it
//! up when one of those objects changes: its routing object (always, so a
//! change made by someone else, e.g. a GitOps tool re-applying the route, is
//! put right at once, also after the rollout completed) and its Deployments
//! (while the rollout is in progress: it waits on the canary's
//! availability). No Rollout polls the API server for these.
//!
//! The watches are metadata-only and keep no cache: an event is mapped
//! through the index (object → Rollouts) to reconcile requests and
//! forgotten. A watch per kind starts the first time a Rollout depends on
//! that kind. Events are ignored when they carry nothing new:
//! - the watch's first listing (the state at start-up is not a change: every
//!   Rollout is reconciled at start-up anyway);
//! - a version of a routing object the operator itself wrote or already
//!   read, or a deletion it made ([`crate::traffic::seen`]): the echo of its
//!   own writes (judged once the operator's writes of that object in
//!   progress are answered, as the answer can come after the watch event).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::Rollout;
use crate::traffic::seen;

/// A request to reconcile one Rollout.
pub type Trigger = ObjectRef<PartialObjectMeta<Rollout>>;

/// How often a watch that keeps failing (a kind the operator may not list,
/// a CRD that is not installed) is reported in the log.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(300);

/// How long a change waits at most for the operator's own writes of the
/// object in progress to be answered (their echo can arrive before the
/// answer).
const WRITE_SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// An object, by kind, namespace and name. Kinds and namespaces are
/// shared (interned) strings: with 10,000 Rollouts the index holds tens of
/// thousands of keys, and a `String` each for a handful of distinct values
/// would be most of its size.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ObjKey {
    kind: Arc<str>,
    namespace: Arc<str>,
    name: Box<str>,
}

/// A Rollout, by namespace and name.
type RolloutKey = (Arc<str>, Box<str>);

#[derive(Default)]
struct Index {
    /// object → the Rollouts (names, in the object's namespace) that depend
    /// on it. The key is shared with `uses`.
    dependents: HashMap<Arc<ObjKey>, Vec<Box<str>>>,
    /// Rollout → the objects it depends on.
    uses: HashMap<RolloutKey, Box<[Arc<ObjKey>]>>,
    /// Kinds whose watch runs (or is starting).
    watched_kinds: HashSet<Arc<str>>,
    /// Namespaces of the keys above (each name once).
    namespaces: HashSet<Arc<str>>,
}

impl Index {
    /// The shared name of `namespace`, added when new.
    fn namespace(&mut self, namespace: &str) -> Arc<str> {
        if let Some(ns) = self.namespaces.get(namespace) {
            return ns.clone();
        }
        let ns: Arc<str> = Arc::from(namespace);
        self.namespaces.insert(ns.clone());
        ns
    }

    /// Forget `namespace` once no key uses it (only the set holds it).
    fn release_namespace(&mut self, namespace: &str) {
        if self
            .namespaces
            .get(namespace)
            .is_some_and(|ns| Arc::strong_count(ns) == 1)
        {
            self.namespaces.remove(namespace);
        }
    }

    /// The key of `object` as `dependents` holds it (one allocation shared
    /// by every Rollout that uses the object), or a new one.
    fn key(&self, kind: Arc<str>, namespace: Arc<str>, name: &str) -> Arc<ObjKey> {
        let key = ObjKey {
            kind,
            namespace,
            name: Box::from(name),
        };
        match self.dependents.get_key_value(&key) {
            Some((shared, _)) => shared.clone(),
            None => Arc::new(key),
        }
    }
}

/// The index and the watches. Cheap to share (`Arc`).
pub struct Watches {
    client: kube::Client,
    /// The operator's scope: one namespace, or all.
    namespace: Option<String>,
    trigger: mpsc::UnboundedSender<Trigger>,
    index: Mutex<Index>,
    /// Rollout → the Rollouts that depend on it (`spec.dependsOn`).
    dependents: super::dependencies::Dependents,
}

/// What a Rollout depends on: `(kind, name)` in its own namespace.
pub type Dependencies = Vec<(ApiResource, String)>;

/// The Deployments of a Rollout, as dependencies.
pub fn deployments<'a>(names: impl IntoIterator<Item = &'a String>) -> Dependencies {
    let resource = ApiResource::erase::<Deployment>(&());
    names
        .into_iter()
        .map(|n| (resource.clone(), n.clone()))
        .collect()
}

impl Watches {
    /// The index and the stream of reconcile requests it produces (hand it
    /// to the Controller's `reconcile_on`).
    pub fn new(
        client: kube::Client,
        namespace: Option<String>,
    ) -> (Arc<Self>, impl Stream<Item = Trigger> + Send + 'static) {
        let (trigger, requests) = mpsc::unbounded();
        let watches = Arc::new(Watches {
            client,
            dependents: super::dependencies::Dependents::new(trigger.clone(), namespace.clone()),
            namespace,
            trigger,
            index: Mutex::default(),
        });
        (watches, requests)
    }

    /// The index from a Rollout to the Rollouts that depend on it.
    pub fn dependents(&self) -> &super::dependencies::Dependents {
        &self.dependents
    }

    /// Make `deps` exactly what the Rollout `namespace/name` depends on.
    /// Starts the watch of a kind no Rollout depended on before.
    pub fn set(self: &Arc<Self>, namespace: &str, name: &str, deps: Dependencies) {
        let mut new_kinds = Vec::new();
        {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let ns = index.namespace(namespace);
            let mut keys = Vec::with_capacity(deps.len());
            for (resource, object) in &deps {
                let kind = match index.watched_kinds.get(resource.kind.as_str()) {
                    Some(k) => k.clone(),
                    None => {
                        let k: Arc<str> = Arc::from(resource.kind.as_str());
                        index.watched_kinds.insert(k.clone());
                        new_kinds.push(resource.clone());
                        k
                    }
                };
                keys.push(index.key(kind, ns.clone(), object));
            }
            let rollout: RolloutKey = (ns, Box::from(name));
            // (`rollout` and `keys` hold the namespace's name until the end
            // of this block, when it is released if nothing kept them.)
            if index.uses.get(&rollout).map(|k| &k[..]) != Some(&keys[..]) {
                let old = index.uses.remove(&rollout).unwrap_or_default();
                unlink(&mut index, &old, name);
                for key in &keys {
                    let names = index.dependents.entry(key.clone()).or_default();
                    if !names.iter().any(|n| **n == *name) {
                        names.push(Box::from(name));
                    }
                }
                if keys.is_empty() {
                    drop(rollout);
                } else {
                    index.uses.insert(rollout, keys.into_boxed_slice());
                }
            } else {
                drop((rollout, keys));
            }
            index.release_namespace(namespace);
        }
        for resource in new_kinds {
            tokio::spawn(self.clone().watch_kind(resource));
        }
    }

    /// The Rollout is gone: it depends on nothing any more.
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ns) = index.namespaces.get(namespace).cloned() else {
            return;
        };
        let old = index
            .uses
            .remove(&(ns.clone(), Box::from(name)))
            .unwrap_or_default();
        unlink(&mut index, &old, name);
        drop((ns, old));
        index.release_namespace(namespace);
    }

    /// How many objects and Rollouts the index holds (for tests and the
    /// footprint benchmark).
    pub fn len(&self) -> (usize, usize) {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        (index.dependents.len(), index.uses.len())
    }

    /// The Rollouts to reconcile when `kind` `namespace/name` changed to
    /// `resource_version` (none when that version is the operator's own).
    fn affected(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Vec<Trigger> {
        if resource_version.is_some_and(|rv| seen::is_known(kind, namespace, name, rv)) {
            return Vec::new();
        }
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let key = ObjKey {
            kind: Arc::from(kind),
            namespace: Arc::from(namespace),
            name: Box::from(name),
        };
        index
            .dependents
            .get(&key)
            .map(|names| {
                names
                    .iter()
                    .map(|n| ObjectRef::new(n).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Watch one kind (metadata only) for as long as the operator runs.
    async fn watch_kind(self: Arc<Self>, resource: ApiResource) {
        let api: Api<PartialObjectMeta<DynamicObject>> = match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        tracing::info!(kind = %resource.kind, "watching (metadata only) for changes Rollouts wait on");
        // Page by page, for the reason given in `run::reconcile_until`: a
        // cluster's routes or Deployments can number tens of thousands.
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut first_listing = true;
        let mut listing = false;
        let mut last_error: Option<Instant> = None;
        while let Some(event) = stream.next().await {
            let changed = match event {
                Ok(watcher::Event::Init) => {
                    listing = true;
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    listing = false;
                    first_listing = false;
                    continue;
                }
                // The state at start-up is not a change; a later listing
                // (after the watch lost its place) may hold changes.
                Ok(watcher::Event::InitApply(_)) if listing && first_listing => continue,
                Ok(watcher::Event::InitApply(m) | watcher::Event::Apply(m)) => (m, false),
                Ok(watcher::Event::Delete(m)) => (m, true),
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                        tracing::warn!(kind = %resource.kind, error = %e, "cannot watch this kind (is it installed, and may the operator list and watch it?); Rollouts that use it are looked at on their timers only");
                        last_error = Some(Instant::now());
                    }
                    continue;
                }
            };
            let (changed, deleted) = changed;
            let (Some(ns), Some(name)) = (
                changed.metadata.namespace.as_deref(),
                changed.metadata.name.as_deref(),
            ) else {
                continue;
            };
            if deleted && seen::take_deleted(&resource.kind, ns, name) {
                continue;
            }
            let rv = changed
                .metadata
                .resource_version
                .clone()
                .filter(|_| !deleted);
            if rv
                .as_deref()
                .is_some_and(|rv| seen::is_known(&resource.kind, ns, name, rv))
            {
                continue;
            }
            // The echo of the operator's own write can arrive before the
            // write's response has been noted: wait for writes in progress,
            // then judge.
            let (watches, kind, ns, name) = (
                self.clone(),
                resource.kind.clone(),
                ns.to_owned(),
                name.to_owned(),
            );
            tokio::spawn(async move {
                seen::settled(&kind, &ns, &name, WRITE_SETTLE_LIMIT).await;
                for t in watches.affected(&kind, &ns, &name, rv.as_deref()) {
                    tracing::debug!(%kind, object = %name, rollout = %t.name, "changed: reconciling the Rollout that depends on it");
                    let _ = watches.trigger.unbounded_send(t);
                }
            });
        }
    }
}

/// Remove `rollout` from the dependents of `keys`; an object no Rollout
/// depends on any more is forgotten.
fn unlink(index: &mut Index, keys: &[Arc<ObjKey>], rollout: &str) {
    for key in keys {
        if let Some(names) = index.dependents.get_mut(key) {
            names.retain(|n| **n != *rollout);
            if names.is_empty() {
                index.dependents.remove(key);
                seen::forget(&key.kind, &key.namespace, &key.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> (ApiResource, String) {
        (
            ApiResource::erase::<::gateway_api::apis::standard::httproutes::HttpRoute>(&()),
            name.to_owned(),
        )
    }

    /// A client that is never called: these tests do not start watches
    /// (the kinds are marked as watched beforehand).
    async fn watches() -> Arc<Watches> {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .expect("an empty fake API");
        let (w, _) = Watches::new(client, None);
        {
            let mut index = w.index.lock().unwrap();
            for kind in ["HTTPRoute", "Deployment"] {
                index.watched_kinds.insert(Arc::from(kind));
            }
        }
        w
    }

    fn names(t: Vec<Trigger>) -> Vec<String> {
        let mut n: Vec<String> = t.into_iter().map(|t| t.name).collect();
        n.sort();
        n
    }

    #[tokio::test]
    async fn changes_reach_exactly_the_rollouts_that_depend_on_them() {
        let w = watches().await;
        w.set("shop", "checkout", vec![route("r1")]);
        w.set("shop", "cart", vec![route("r1"), route("r2")]);
        w.set("other", "checkout", vec![route("r1")]);
        assert_eq!(
            names(w.affected("HTTPRoute", "shop", "r1", Some("7"))),
            ["cart", "checkout"]
        );
        assert_eq!(
            names(w.affected("HTTPRoute", "shop", "r2", Some("7"))),
            ["cart"]
        );
        assert!(w.affected("HTTPRoute", "shop", "r3", Some("7")).is_empty());
        assert!(w.affected("Deployment", "shop", "r1", Some("7")).is_empty());
        let other = w.affected("HTTPRoute", "other", "r1", None);
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].namespace.as_deref(), Some("other"));

        // Changing what a Rollout depends on replaces it; removing it forgets it.
        w.set("shop", "cart", deployments(&["cart-v2".to_string()]));
        assert_eq!(
            names(w.affected("HTTPRoute", "shop", "r1", Some("8"))),
            ["checkout"]
        );
        assert!(w.affected("HTTPRoute", "shop", "r2", Some("8")).is_empty());
        assert_eq!(
            names(w.affected("Deployment", "shop", "cart-v2", Some("8"))),
            ["cart"]
        );
        w.remove("shop", "cart");
        w.remove("shop", "checkout");
        w.remove("other", "checkout");
        assert_eq!(w.len(), (0, 0));
        // Nothing is kept of them: not even their namespaces' names.
        assert!(w.index.lock().unwrap().namespaces.is_empty());
    }

    #[tokio::test]
    async fn rollouts_that_use_the_same_object_share_its_key() {
        let w = watches().await;
        w.set("shop", "a", vec![route("r1")]);
        w.set("shop", "b", vec![route("r1")]);
        let index = w.index.lock().unwrap();
        let a = &index.uses[&(Arc::from("shop"), Box::from("a"))][0];
        let b = &index.uses[&(Arc::from("shop"), Box::from("b"))][0];
        assert!(Arc::ptr_eq(a, b));
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        assert_eq!(index.namespaces.len(), 1);
    }

    #[tokio::test]
    async fn the_operators_own_versions_wake_nobody() {
        let w = watches().await;
        w.set("shop", "checkout", vec![route("own-writes")]);
        let written: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": "shop", "name": "own-writes", "resourceVersion": "42"}
        }))
        .unwrap();
        seen::note("HTTPRoute", &written);
        assert!(
            w.affected("HTTPRoute", "shop", "own-writes", Some("42"))
                .is_empty()
        );
        assert_eq!(
            names(w.affected("HTTPRoute", "shop", "own-writes", Some("43"))),
            ["checkout"]
        );
        // Once nobody depends on the route, its versions are forgotten.
        w.remove("shop", "checkout");
        assert!(!seen::is_known("HTTPRoute", "shop", "own-writes", "42"));
    }

    #[tokio::test]
    async fn setting_the_same_dependencies_again_changes_nothing() {
        let w = watches().await;
        w.set("shop", "checkout", vec![route("r1")]);
        w.set("shop", "checkout", vec![route("r1")]);
        assert_eq!(w.len(), (1, 1));
        w.set("shop", "checkout", Vec::new());
        assert_eq!(w.len(), (0, 0));
        assert!(w.index.lock().unwrap().namespaces.is_empty());
    }
}
