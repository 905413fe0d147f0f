//! Argo CD, on the Rollouts and routes captured from real runs
//! (`tests/fixtures/gitops/`, written and re-checked by `tests/gitops.rs` on
//! the real API server): the health check (`charts/rollwise/argocd/
//! health.lua`, run in Lua 5.1 as Argo CD runs it) gives each phase its
//! health; the `ignoreDifferences` of docs/routers.md hide exactly the
//! weights rollwise wrote; docs/gitops.md shows the script as it is. No
//! cluster needed.

mod common;

use std::path::Path;

use common::gitops::*;
use serde_json::json;

#[test]
fn argo_cd_health_of_every_captured_phase() {
    for (name, _, _) in EXPECTED_HEALTH {
        check_health(name, &read_fixture(name));
    }
}

#[test]
fn argo_cd_health_of_odd_objects_never_fails() {
    let odd = [
        json!({}),
        json!({"metadata": {}}),
        json!({"metadata": {"generation": 3}, "status": null}),
        json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}),
        json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready"}]}}),
        json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": []}}),
    ];
    for obj in odd {
        let (status, _) = argocd_health(&obj);
        assert_eq!(status, "Progressing", "{obj}");
    }
    // A newer generation than the status: Progressing, whatever the
    // conditions of the older one say.
    let mut stale = read_fixture("succeeded");
    stale["metadata"]["generation"] = json!(7);
    assert_eq!(argocd_health(&stale).0, "Progressing");
}

#[test]
fn documented_ignore_differences_hide_exactly_the_weights_rollwise_writes() {
    let paths = documented_jq_paths("HTTPRoute");
    let created = read_fixture("httproute-created");
    let base = normalized_spec(&created, &paths);
    for moved in ["httproute-progressing", "httproute-succeeded"] {
        let live = read_fixture(moved);
        assert_ne!(
            created["spec"], live["spec"],
            "{moved}: rollwise moved no weight?"
        );
        assert_eq!(
            normalized_spec(&live, &paths),
            base,
            "{moved}: Argo CD would report a difference"
        );
    }
    // And nothing else is hidden: a change of anything else still shows.
    let mut edited = read_fixture("httproute-progressing");
    edited["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!("/other");
    assert_ne!(normalized_spec(&edited, &paths), base);
    let mut edited = read_fixture("httproute-progressing");
    edited["spec"]["hostnames"] = json!(["other.test"]);
    assert_ne!(normalized_spec(&edited, &paths), base);
}

#[test]
fn docs_show_the_health_check_as_it_is() {
    let script = std::fs::read_to_string(Path::new(ROOT).join(HEALTH_LUA)).expect("health.lua");
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/gitops.md")).expect("gitops.md");
    let indented: String = script
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    assert!(
        doc.contains(&indented),
        "docs/gitops.md must show {HEALTH_LUA} verbatim (indented by 4 under the argocd-cm key)"
    );
}
