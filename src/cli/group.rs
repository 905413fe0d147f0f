//! Releases of several services followed and steered as one: the
//! dependency tree of a Rollout (`spec.dependsOn`, both ways) for the
//! `status` view, and the `--group` form of `promote` and `abort`.
//!
//! Semantics of `--group NAME`:
//! - `promote --group NAME` promotes NAME and every Rollout it depends on,
//!   transitively (what NAME needs to go on), dependencies first. The
//!   dependencies are promoted where they wait for a person (phase Paused);
//!   the others are skipped with a note. NAME itself is promoted as
//!   `promote NAME` does; a promote the operator cannot carry out yet
//!   because a dependency is not met waits for it (the annotation stays).
//! - `abort --group NAME` aborts NAME and every Rollout that depends on it,
//!   transitively (what would break without it), dependents first.
//!   Rollouts already over are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;

use kube::api::{Api, ListParams};

use super::{EXIT_FAILED, EXIT_OK, Failure};
use crate::api::{Phase, Rollout};
use crate::plan::ManualAction;
use crate::plan::depend::requirements;

/// `namespace/name` of a Rollout.
pub fn key(r: &Rollout) -> String {
    format!(
        "{}/{}",
        r.metadata.namespace.as_deref().unwrap_or_default(),
        r.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `namespace/name` → its dependencies' keys.
fn edges(all: &[Rollout]) -> BTreeMap<String, Vec<String>> {
    all.iter()
        .map(|r| {
            let ns = r.metadata.namespace.as_deref().unwrap_or_default();
            (
                key(r),
                requirements(&r.spec, ns)
                    .iter()
                    .map(|q| q.key())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            )
        })
        .collect()
}

/// Post-order walk from `root` along `next`: the farthest first, each
/// once, `root` excluded.
fn walk(root: &str, next: &dyn Fn(&str) -> Vec<String>) -> Vec<String> {
    fn go(
        node: &str,
        next: &dyn Fn(&str) -> Vec<String>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        for n in next(node) {
            if seen.insert(n.clone()) {
                go(&n, next, seen, out);
                out.push(n);
            }
        }
    }
    let mut seen = BTreeSet::from([root.to_string()]);
    let mut out = Vec::new();
    go(root, next, &mut seen, &mut out);
    out
}

/// Every Rollout `root` depends on, transitively, the deepest first.
pub fn upstream(root: &str, all: &[Rollout]) -> Vec<String> {
    let e = edges(all);
    walk(root, &|n| e.get(n).cloned().unwrap_or_default())
}

/// Every Rollout that depends on `root`, transitively, the farthest first.
pub fn downstream(root: &str, all: &[Rollout]) -> Vec<String> {
    let e = edges(all);
    walk(root, &|n| {
        e.iter()
            .filter(|(_, deps)| deps.iter().any(|d| d == n))
            .map(|(k, _)| k.clone())
            .collect()
    })
}

fn state(r: Option<&Rollout>) -> String {
    match r {
        None => "not found".into(),
        Some(r) => match &r.status {
            None => "no status yet".into(),
            Some(s) => format!(
                "{} {}% canary {}",
                s.phase.as_str(),
                s.canary_weight,
                r.spec.canary.service
            ),
        },
    }
}

/// The dependency tree of `root`: what it depends on (with each
/// requirement and whether it is met), transitively, and what depends on
/// it. Empty when it has neither.
pub fn render_tree(root: &Rollout, all: &[Rollout]) -> String {
    let by_key: BTreeMap<String, &Rollout> = all.iter().map(|r| (key(r), r)).collect();
    let me = key(root);
    let mut o = String::new();
    fn deps(
        r: &Rollout,
        by_key: &BTreeMap<String, &Rollout>,
        depth: usize,
        seen: &mut BTreeSet<String>,
        o: &mut String,
    ) {
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let st = r.status.clone().unwrap_or_default();
        for q in requirements(&r.spec, ns) {
            let entry = st
                .dependencies
                .iter()
                .find(|e| e.name == q.name && e.namespace == q.namespace);
            let met = match entry {
                Some(e) if e.satisfied => "met",
                Some(e) if e.passed => "passed",
                Some(_) if st.waiting_for == q.key() => "WAITING",
                Some(_) => "not met",
                None => "not checked yet",
            };
            let dep = by_key.get(&q.key()).copied();
            let _ = writeln!(
                o,
                "{}└ {}  {}  (needs {}: {met})",
                "  ".repeat(depth + 1),
                q.key(),
                state(dep),
                q.describe()
            );
            if let Some(d) = dep
                && seen.insert(q.key())
            {
                deps(d, by_key, depth + 1, seen, o);
                // `seen` is the path from the root: a Rollout two others
                // need is shown under both, only a way back is a cycle.
                seen.remove(&q.key());
            } else if dep.is_some() {
                let _ = writeln!(o, "{}(cycle)", "  ".repeat(depth + 2));
            }
        }
    }
    if root.spec.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
        let _ = writeln!(o, "Depends on");
        let mut seen = BTreeSet::from([me.clone()]);
        deps(root, &by_key, 0, &mut seen, &mut o);
    }
    let direct: Vec<&Rollout> = all
        .iter()
        .filter(|r| {
            let ns = r.metadata.namespace.as_deref().unwrap_or_default();
            requirements(&r.spec, ns).iter().any(|q| q.key() == me)
        })
        .collect();
    if !direct.is_empty() {
        let _ = writeln!(o, "Needed by");
        for r in direct {
            let waits = if r.status.as_ref().is_some_and(|s| s.waiting_for == me) {
                "  (waiting for this one)"
            } else {
                ""
            };
            let _ = writeln!(o, "  └ {}  {}{waits}", key(r), state(Some(r)));
        }
    }
    o
}

/// Every Rollout the plugin may list: all namespaces, else the one given.
pub async fn list_all(client: &kube::Client, ns: &str) -> Vec<Rollout> {
    let all: Api<Rollout> = Api::all(client.clone());
    match all.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(_) => {
            let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
            api.list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
        }
    }
}

/// `promote --group` / `abort --group` (see the module docs).
pub async fn act_group(
    client: kube::Client,
    ns: &str,
    name: &str,
    action: ManualAction,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let root = super::get_rollout(&client, ns, name).await?;
    let all = list_all(&client, ns).await;
    let me = key(&root);
    let mut members = match action {
        ManualAction::Abort => downstream(&me, &all),
        _ => upstream(&me, &all),
    };
    members.push(me.clone());
    let _ = writeln!(
        out,
        "group of {me} ({}): {}",
        match action {
            ManualAction::Abort => "it and every Rollout that depends on it",
            _ => "it and every Rollout it depends on",
        },
        members.join(", ")
    );
    let mut failed = false;
    for m in &members {
        let (mns, mname) = m.split_once('/').unwrap_or((ns, m.as_str()));
        let r = match super::get_rollout(&client, mns, mname).await {
            Ok(r) => r,
            Err(f) => {
                let _ = writeln!(out, "{m}: skipped: {}", f.message);
                failed |= m == &me;
                continue;
            }
        };
        let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
        // Promote: the dependencies are promoted where they wait for a
        // person (Paused); NAME itself as `promote NAME` does.
        let skip = match action {
            ManualAction::Abort => phase.is_terminal(),
            _ if m == &me => false,
            _ => phase != Phase::Paused,
        };
        if skip {
            let why = if phase.is_terminal() || action == ManualAction::Abort {
                String::new()
            } else {
                ", not waiting for a promote".to_string()
            };
            let _ = writeln!(out, "{m}: skipped: it is {}{why}", phase.as_str());
            continue;
        }
        if let Err(why) = super::check_action(&r, action) {
            let _ = writeln!(out, "{m}: skipped: {why}");
            failed |= m == &me;
            continue;
        }
        let _ = writeln!(out, "{m}:");
        if let Err(f) = super::act(client.clone(), mns, mname, action, out).await {
            let _ = writeln!(out, "{m}: {}", f.message);
            failed = true;
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(name: &str, deps: &[&str], phase: &str, weight: i32) -> Rollout {
        let deps: Vec<_> = deps.iter().map(|d| json!({"name": d})).collect();
        serde_json::from_value(json!({
            "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "stable": {"service": format!("{name}-v1")},
                "canary": {"service": format!("{name}-v2")},
                "trafficRouting": {"gatewayAPI": {"httpRoute": name}},
                "dependsOn": deps,
            },
            "status": {"phase": phase, "canaryWeight": weight}
        }))
        .unwrap()
    }

    #[test]
    fn groups_follow_the_chain_both_ways() {
        let all = [
            r("ledger", &[], "Succeeded", 100),
            r("payments", &["ledger"], "Paused", 40),
            r("checkout", &["payments"], "Pending", 0),
            r("cart", &["checkout", "payments"], "Pending", 0),
            r("search", &[], "Progressing", 5),
        ];
        assert_eq!(
            upstream("shop/cart", &all),
            ["shop/ledger", "shop/payments", "shop/checkout"]
        );
        assert_eq!(upstream("shop/ledger", &all), Vec::<String>::new());
        assert_eq!(
            downstream("shop/payments", &all),
            ["shop/cart", "shop/checkout"]
        );
        assert_eq!(downstream("shop/search", &all), Vec::<String>::new());
    }

    #[test]
    fn a_cycle_ends_the_walk() {
        let all = [r("a", &["b"], "Pending", 0), r("b", &["a"], "Pending", 0)];
        assert_eq!(upstream("shop/a", &all), ["shop/b"]);
        assert_eq!(downstream("shop/a", &all), ["shop/b"]);
    }

    #[test]
    fn the_tree_shows_both_ways_with_phase_and_weight() {
        let mut checkout = r("checkout", &["payments"], "Pending", 0);
        if let Some(s) = checkout.status.as_mut() {
            s.waiting_for = "shop/payments".into();
            s.dependencies = vec![crate::api::DependencyStatus {
                name: "payments".into(),
                namespace: "shop".into(),
                ..Default::default()
            }];
        }
        let all = [
            r("ledger", &[], "Succeeded", 100),
            r("payments", &["ledger"], "Paused", 40),
            checkout.clone(),
        ];
        let tree = render_tree(&checkout, &all);
        assert!(tree.contains("Depends on\n  └ shop/payments  Paused 40% canary payments-v2  (needs Succeeded before step 1: WAITING)"), "{tree}");
        assert!(
            tree.contains("    └ shop/ledger  Succeeded 100% canary ledger-v2"),
            "{tree}"
        );
        let tree = render_tree(&all[1], &all);
        assert!(tree.contains("Needed by\n  └ shop/checkout  Pending 0% canary checkout-v2  (waiting for this one)"), "{tree}");
        assert_eq!(render_tree(&r("search", &[], "Pending", 0), &all), "");
    }

    #[test]
    fn a_shared_dependency_is_no_cycle_a_way_back_is() {
        // cart needs checkout and payments; checkout needs payments too.
        let all = [
            r("payments", &[], "Paused", 40),
            r("checkout", &["payments"], "Pending", 0),
            r("cart", &["checkout", "payments"], "Pending", 0),
        ];
        let tree = render_tree(&all[2], &all);
        assert!(!tree.contains("(cycle)"), "{tree}");
        assert_eq!(tree.matches("└ shop/payments").count(), 2, "{tree}");
        let all = [r("a", &["b"], "Pending", 0), r("b", &["a"], "Pending", 0)];
        assert!(render_tree(&all[0], &all).contains("(cycle)"));
    }
}
