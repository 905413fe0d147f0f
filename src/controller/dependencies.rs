//! Dependencies between Rollouts (`spec.dependsOn`), the I/O side:
//! - an index from a Rollout to the Rollouts that depend on it, so a change
//!   of its status re-reconciles them at once (no polling). The operator
//!   writes every Rollout's status itself, so the reconcile that changes a
//!   Rollout's status is what tells its dependents (a dependency created
//!   later, or deleted, is told the same way: the index keeps the names it
//!   was asked about, whether they exist or not);
//! - reading what each dependency is doing, and the chain behind it (for
//!   cycles), for the pure gate in [`crate::plan::depend`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::channel::mpsc;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::watches::Trigger;
use super::{Result, with_timeout};
use crate::api::Rollout;
use crate::plan::depend::{Key, Observed, Requirement, mark_cycle, requirements};

/// The most Rollouts read to look for a cycle behind one Rollout.
const MAX_CHAIN: usize = 64;

/// A Rollout, by namespace and name.
type Ref = (String, String);

#[derive(Default)]
struct Index {
    /// dependency → the Rollouts that depend on it.
    dependents: HashMap<Ref, HashSet<Ref>>,
    /// Rollout → its dependencies.
    uses: HashMap<Ref, Vec<Ref>>,
}

/// The index from a Rollout to its dependents.
pub struct Dependents {
    index: Mutex<Index>,
    trigger: mpsc::UnboundedSender<Trigger>,
    /// The operator's scope: one namespace, or all.
    scope: Option<String>,
}

impl Dependents {
    pub fn new(trigger: mpsc::UnboundedSender<Trigger>, scope: Option<String>) -> Self {
        Dependents {
            index: Mutex::default(),
            trigger,
            scope,
        }
    }

    /// The namespace the operator is limited to, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Make `deps` (namespace, name) exactly what `namespace/name` depends on.
    pub fn set(&self, namespace: &str, name: &str, deps: Vec<Ref>) {
        let me = (namespace.to_string(), name.to_string());
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if index.uses.get(&me) == Some(&deps) {
            return;
        }
        if let Some(old) = index.uses.remove(&me) {
            for d in old {
                if let Some(set) = index.dependents.get_mut(&d) {
                    set.remove(&me);
                    if set.is_empty() {
                        index.dependents.remove(&d);
                    }
                }
            }
        }
        if deps.is_empty() {
            return;
        }
        for d in &deps {
            index
                .dependents
                .entry(d.clone())
                .or_default()
                .insert(me.clone());
        }
        index.uses.insert(me, deps);
    }

    /// Forget a deleted Rollout's own dependencies.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.set(namespace, name, Vec::new());
    }

    /// The Rollouts that depend on `namespace/name`.
    pub fn of(&self, namespace: &str, name: &str) -> Vec<Ref> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Ref> = index
            .dependents
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// `namespace/name` changed (its status, or it appeared or went):
    /// reconcile its dependents.
    pub fn notify(&self, namespace: &str, name: &str) {
        for (ns, n) in self.of(namespace, name) {
            tracing::debug!(dependency = %format!("{namespace}/{name}"), dependent = %format!("{ns}/{n}"), "dependency changed");
            let _ = self.trigger.unbounded_send(ObjectRef::new(&n).within(&ns));
        }
    }
}

/// The (namespace, name) of each requirement.
pub fn refs(reqs: &[Requirement]) -> Vec<Ref> {
    reqs.iter()
        .map(|r| (r.namespace.clone(), r.name.clone()))
        .collect()
}

enum Read {
    Found(Box<Rollout>),
    Problem(Observed),
}

async fn read(
    client: &kube::Client,
    scope: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<Read> {
    if let Some(s) = scope
        && s != namespace
    {
        return Ok(Read::Problem(Observed::NotWatched(format!(
            "only namespace {s}"
        ))));
    }
    let api: Api<Rollout> = Api::namespaced(client.clone(), namespace);
    match with_timeout("get dependency rollout", api.get_opt(name)).await {
        // Being deleted: as good as gone (its dependents are told once more
        // when its finalizer is done).
        Ok(Some(r)) if r.metadata.deletion_timestamp.is_some() => {
            Ok(Read::Problem(Observed::NotFound))
        }
        Ok(Some(r)) => Ok(Read::Found(Box::new(r))),
        Ok(None) => Ok(Read::Problem(Observed::NotFound)),
        Err(super::Error::Kube(kube::Error::Api(s))) if s.code == 403 => {
            Ok(Read::Problem(Observed::Forbidden(s.message)))
        }
        Err(e) => Err(e),
    }
}

fn observed(r: &Rollout) -> Observed {
    let st = r.status.clone().unwrap_or_default();
    Observed::Found {
        phase: st.phase,
        weight: st.canary_weight.clamp(0, 100) as u8,
        canary_service: r.spec.canary.service.clone(),
        message: st.message,
    }
}

/// What each requirement's Rollout is doing, and whether the chain of
/// dependencies behind `namespace/name` leads back to it (a cycle).
pub async fn observe(
    client: &kube::Client,
    scope: Option<&str>,
    namespace: &str,
    name: &str,
    reqs: &[Requirement],
) -> Result<Vec<Observed>> {
    let me: Key = format!("{namespace}/{name}");
    let mut out = Vec::with_capacity(reqs.len());
    let mut edges: HashMap<Key, Vec<Key>> = HashMap::new();
    edges.insert(me.clone(), reqs.iter().map(|r| r.key()).collect());
    let mut queue: Vec<(String, String, Option<Rollout>)> = Vec::new();
    for r in reqs {
        match read(client, scope, &r.namespace, &r.name).await? {
            Read::Found(found) => {
                out.push(observed(&found));
                queue.push((r.namespace.clone(), r.name.clone(), Some(*found)));
            }
            Read::Problem(p) => out.push(p),
        }
    }
    // Walk the chain the operator can see, each Rollout once.
    let mut seen: HashSet<Key> = HashSet::from([me.clone()]);
    let mut reads = 0;
    while let Some((ns, n, found)) = queue.pop() {
        let key = format!("{ns}/{n}");
        if !seen.insert(key.clone()) {
            continue;
        }
        let found = match found {
            Some(f) => f,
            None if reads < MAX_CHAIN => {
                reads += 1;
                match read(client, scope, &ns, &n).await? {
                    Read::Found(f) => *f,
                    Read::Problem(_) => continue,
                }
            }
            None => continue,
        };
        let next = requirements(&found.spec, &ns);
        edges.insert(key, next.iter().map(|r| r.key()).collect());
        for r in next {
            if !seen.contains(&r.key()) {
                queue.push((r.namespace, r.name, None));
            }
        }
    }
    mark_cycle(&me, reqs, &edges, &mut out);
    Ok(out)
}
