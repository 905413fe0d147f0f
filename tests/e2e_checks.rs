//! Webhook and Job checks on the real API server: `rollwise run` as a child
//! process, webhooks served by a local receiver on 127.0.0.1, Jobs run by
//! the real Job controller (the kit's fake kubelet ends their Pods with the
//! exit code of the `fake-kubelet.realk8s/exit-code` annotation).
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test e2e_checks -- --nocapture
//! ```
//! Without a cluster the test prints one `SKIPPED` line and passes.
//!
//! The last two run the operator as the Helm chart installs it (only the
//! chart ServiceAccount's token): with `checks.jobs=true` Job checks run
//! without a single 403; without it a Job check holds at 0% with `Error`
//! in status saying which value to set.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{OperatorOptions, TestNs, eventually, in_namespace};
use common::install::Install;
use common::receiver::Receiver;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DeleteParams, ListParams};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROLLOUT: &str = "checkout";
const TIMEOUT: Duration = Duration::from_secs(120);

fn rollout(ns: &str, checks: Value) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": ns},
        "spec": {
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
            "steps": [{"setWeight": 30}, {"pause": {"duration": "2s"}}, {"setWeight": 100}],
            "checks": checks
        }
    }))
    .expect("a valid Rollout")
}

fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "checkout"},
        "spec": {
            "parentRefs": [{"name": "e2e"}],
            "rules": [{"backendRefs": [{"name": STABLE, "port": 80}]}]
        }
    })
}

async fn setup(ns: &TestNs) {
    ns.versions(&[STABLE, CANARY], 1).await;
    ns.create_dynamic(&ApiResource::erase::<HttpRoute>(&()), route())
        .await;
    ns.start_operator(OperatorOptions::new(&ns.cluster.kubeconfig).namespace(&ns.name))
        .await;
}

fn job_check(name: &str, at: &str, exit_code: u16) -> Value {
    json!({
        "name": name,
        "at": [at],
        "job": {
            "metadata": {"labels": {"team": "checkout"}},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {
                        "fake-kubelet.realk8s/exit-code": exit_code.to_string(),
                        "fake-kubelet.realk8s/run-seconds": "1"
                    }},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "smoke", "image": "busybox", "command": ["sh", "-c", "exit 0"]}]
                    }
                }
            }
        }
    })
}

/// A preRollout webhook that answers 500 rolls the rollout back before any
/// traffic moved: the route never gave the canary anything, the decision
/// names the check, and the webhook was told the Rollout, the point and
/// both versions (with retries: 1 + 1 calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_rollout_webhook_leaves_all_traffic_on_stable() {
    in_namespace("checks-hook", async |ns: &TestNs| {
        let hook = Receiver::start("/check", 500).await;
        setup(ns).await;
        ns.create(&rollout(
            &ns.name,
            json!([{"name": "acceptance", "at": ["preRollout"],
                    "webhook": {"url": hook.url, "timeout": "3s", "retries": 1}}]),
        ))
        .await;
        let r = ns.wait_phase(ROLLOUT, Phase::RolledBack, 0, TIMEOUT).await;
        let st = r.status.expect("a status");
        let d = st.last_decision.clone().expect("a decision");
        assert_eq!(d.reason, "CheckFailed", "{d:?}");
        assert!(d.message.contains("acceptance"), "{d:?}");
        assert!(d.message.contains("before any traffic moved"), "{d:?}");
        let c = &st.checks[0];
        assert_eq!(
            (
                c.name.as_str(),
                c.point.as_str(),
                c.kind.as_str(),
                c.phase.as_str()
            ),
            ("acceptance", "preRollout", "webhook", "Failed"),
            "{c:?}"
        );
        assert_eq!(c.http_status, Some(500), "{c:?}");
        assert!(!c.message.contains(&hook.url), "the URL is never in status");
        assert_eq!(
            ns.route_canary_weight("checkout", CANARY).await,
            0,
            "no traffic ever moved"
        );
        let bodies = hook.bodies();
        assert_eq!(bodies.len(), 2, "one try and one retry: {bodies:?}");
        let b = &bodies[0];
        assert_eq!(b["rollout"], ROLLOUT, "{b}");
        assert_eq!(b["namespace"], ns.name.as_str(), "{b}");
        assert_eq!(b["point"], "preRollout", "{b}");
        assert_eq!(b["weight"], 0, "{b}");
        assert_eq!(b["canary"]["service"], CANARY, "{b}");
        assert_eq!(b["stable"]["deployment"], STABLE, "{b}");
        assert!(
            b["canary"]["images"]
                .as_array()
                .is_some_and(|i| !i.is_empty()),
            "{b}"
        );
        ns.wait_event("CheckFailed").await;
    })
    .await;
}

/// A confirm webhook holds the rollout at 0% (Waiting, never failed) while
/// it answers 403; once it answers 200 the rollout proceeds to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_gate_holds_until_the_endpoint_says_yes() {
    in_namespace("checks-confirm", async |ns: &TestNs| {
        let gate = Receiver::start("/check", 403).await;
        ns.versions(&[STABLE, CANARY], 1).await;
        ns.create_dynamic(&ApiResource::erase::<HttpRoute>(&()), route())
            .await;
        let operator = ns
            .start_operator(OperatorOptions::new(&ns.cluster.kubeconfig).namespace(&ns.name))
            .await;
        // The URL comes from a Secret, as notifications' do.
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "approvals"},
            "stringData": {"url": gate.url}
        }))
        .expect("a Secret");
        ns.create(&secret).await;
        ns.create(&rollout(
            &ns.name,
            json!([{"name": "approval", "at": ["preRollout"], "interval": "1s",
                    "webhook": {"type": "confirm", "urlFrom": {"name": "approvals", "key": "url"}}}]),
        ))
        .await;
        let r = ns
            .wait_rollout(ROLLOUT, "the confirm gate waiting", TIMEOUT, |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.checks
                        .first()
                        .is_some_and(|c| c.phase == "Waiting" && c.attempts >= 3)
                })
            })
            .await;
        let st = r.status.expect("a status");
        assert_eq!(st.canary_weight, 0);
        assert_eq!(st.phase, Phase::Pending);
        assert_eq!(
            st.last_decision.expect("a decision").reason,
            "WaitingForConfirm"
        );
        assert_eq!(st.checks[0].failures, 0, "a confirm gate never fails");
        assert_eq!(ns.route_canary_weight("checkout", CANARY).await, 0);
        gate.answer(200);
        let r = ns.wait_phase(ROLLOUT, Phase::Succeeded, 100, TIMEOUT).await;
        let c = &r.status.expect("a status").checks[0];
        assert_eq!(c.phase, "Passed", "{c:?}");
        assert!(
            !operator.log().contains(&gate.url),
            "the webhook URL is never logged"
        );
    })
    .await;
}

/// A Job check whose Pod exits 1 fails the Job (backoffLimit 0); with
/// `failureLimit: 2` it is run three times (one Job per attempt), then the
/// rollout rolls back at the step it ran at. The Job is owned by the Rollout
/// (controller reference, so garbage collection removes it), its name and
/// result are in status, only the newest two Jobs of the check are kept,
/// and the postRollback webhook is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_check_rolls_back() {
    in_namespace("checks-job-fail", async |ns: &TestNs| {
        let report = Receiver::start("/check", 200).await;
        setup(ns).await;
        let mut smoke = job_check("smoke", "step", 1);
        smoke["failureLimit"] = json!(2);
        smoke["interval"] = json!("1s");
        let created = ns
            .create(&rollout(
                &ns.name,
                json!([smoke, {"name": "incident", "at": ["postRollback"], "webhook": {"url": report.url}}]),
            ))
            .await;
        let r = ns.wait_phase(ROLLOUT, Phase::RolledBack, 0, TIMEOUT).await;
        let st = r.status.expect("a status");
        let d = st.last_decision.clone().expect("a decision");
        assert_eq!(d.reason, "CheckFailed", "{d:?}");
        assert!(d.message.contains("smoke") && d.message.contains("30%"), "{d:?}");
        let c = &st.checks[0];
        assert_eq!((c.point.as_str(), c.step, c.phase.as_str()), ("step", Some(2), "Failed"), "{c:?}");
        assert_eq!((c.attempts, c.failures, c.failure_limit), (3, 3, 2), "{c:?}");
        assert!(c.result.starts_with("Failed: "), "{c:?}");
        let job_name = c.job_name.clone().expect("the Job's name in status");
        let job = ns.api::<Job>().get(&job_name).await.expect("the Job exists");
        let owner = &job.metadata.owner_references.clone().expect("owned")[0];
        assert_eq!(owner.kind, "Rollout");
        assert_eq!(owner.name, ROLLOUT);
        assert_eq!(Some(&owner.uid), created.metadata.uid.as_ref());
        assert_eq!(owner.controller, Some(true));
        let labels = job.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("rollwise.io/rollout").map(String::as_str), Some(ROLLOUT));
        assert_eq!(labels.get("team").map(String::as_str), Some("checkout"));
        assert_eq!(ns.route_canary_weight("checkout", CANARY).await, 0, "all traffic back on stable");
        // Three Jobs were created; the oldest is deleted (Background).
        eventually("the oldest Job deleted", Duration::from_secs(30), || async {
            let jobs = ns
                .api::<Job>()
                .list(&ListParams::default().labels("rollwise.io/check=smoke"))
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = jobs
                .items
                .iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .filter_map(|j| j.metadata.name.clone())
                .collect();
            if names.len() == 2 && names.contains(&job_name) {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        })
        .await;
        // The postRollback check reported the rollback.
        let r = ns
            .wait_rollout(ROLLOUT, "the postRollback check passed", TIMEOUT, |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.checks.iter().any(|c| c.name == "incident" && c.phase == "Passed")
                })
            })
            .await;
        assert_eq!(r.status.expect("a status").phase, Phase::RolledBack);
        let bodies = report.bodies();
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        assert_eq!(bodies[0]["point"], "postRollback");
        assert_eq!(bodies[0]["phase"], "RolledBack");
    })
    .await;
}

/// A Job that runs past its `activeDeadlineSeconds` fails
/// (`DeadlineExceeded`): the check fails and the rollout rolls back with
/// all traffic still on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_fails_the_check() {
    in_namespace("checks-job-deadline", async |ns: &TestNs| {
        setup(ns).await;
        let mut slow = job_check("slow", "preRollout", 0);
        slow["job"]["spec"]["activeDeadlineSeconds"] = json!(2);
        slow["job"]["spec"]["template"]["metadata"]["annotations"]["fake-kubelet.realk8s/run-seconds"] =
            json!("600");
        ns.create(&rollout(&ns.name, json!([slow]))).await;
        let r = ns.wait_phase(ROLLOUT, Phase::RolledBack, 0, TIMEOUT).await;
        let st = r.status.expect("a status");
        let c = &st.checks[0];
        assert_eq!(c.phase, "Failed", "{c:?}");
        assert_eq!(c.result, "Failed: DeadlineExceeded", "{c:?}");
        assert_eq!(st.last_decision.expect("a decision").reason, "CheckFailed");
        assert_eq!(ns.route_canary_weight("checkout", CANARY).await, 0);
    })
    .await;
}

/// A Rollout with a smoke test before any traffic moves and a load Job
/// at each step, both exiting 0.
fn passing_job_checks(ns: &str) -> Rollout {
    rollout(
        ns,
        json!([
            job_check("smoke", "preRollout", 0),
            job_check("load", "step", 0)
        ]),
    )
}

/// The rollout of [`passing_job_checks`] completes, and its status shows
/// every check run passed: the smoke test once, the load Job at each of
/// the two steps.
async fn passing_job_checks_complete(ns: &TestNs) {
    let r = ns.wait_phase(ROLLOUT, Phase::Succeeded, 100, TIMEOUT).await;
    let st = r.status.expect("a status");
    let phases: Vec<_> = st
        .checks
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.point.as_str(),
                c.phase.as_str(),
                c.result.as_str(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("smoke", "preRollout", "Passed", "Complete"),
            ("load", "step", "Passed", "Complete"),
            ("load", "step", "Passed", "Complete"),
        ],
        "{:?}",
        st.checks
    );
}

/// A Job check whose Pod exits 0 passes: the rollout goes on to 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_job_check_lets_the_rollout_proceed() {
    in_namespace("checks-job-pass", async |ns: &TestNs| {
        setup(ns).await;
        ns.create(&passing_job_checks(&ns.name)).await;
        passing_job_checks_complete(ns).await;
        let jobs = ns
            .api::<Job>()
            .list(&ListParams::default().labels(&format!("rollwise.io/rollout={ROLLOUT}")))
            .await
            .expect("list jobs");
        assert_eq!(jobs.items.len(), 3, "one Job per check run");
    })
    .await;
}

/// The chart with `checks.jobs=true` (and the Gateway API router) installed
/// in the test's namespace, and `rollwise run` with its ServiceAccount's
/// token.
async fn chart_operator(ns: &TestNs, jobs: bool) -> (Install, Arc<common::cluster::Operator>) {
    ns.versions(&[STABLE, CANARY], 1).await;
    ns.create_dynamic(&ApiResource::erase::<HttpRoute>(&()), route())
        .await;
    let install = Install::helm(
        &ns.cluster,
        &ns.name,
        &[
            ("routers.gatewayAPI", "true"),
            ("checks.jobs", if jobs { "true" } else { "false" }),
        ],
    )
    .await;
    let operator = ns
        .start_operator(install.operator_options(&ns.name).await)
        .await;
    (install, operator)
}

/// Under the chart's RBAC with `checks.jobs=true`, Job checks at preRollout
/// and at each step (with the clean-up of older Jobs) run without a 403,
/// and the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_checks_run_under_the_charts_rbac_with_checks_jobs() {
    in_namespace("checks-rbac", async |ns: &TestNs| {
        let (install, operator) = chart_operator(ns, true).await;
        ns.create(&passing_job_checks(&ns.name)).await;
        passing_job_checks_complete(ns).await;
        install.finish(ns, &[&operator]).await;
    })
    .await;
}

/// Without `checks.jobs` the operator may not create Jobs: the Job check
/// holds the rollout at 0% with `Error` in status and a `CheckError` Event
/// that say what to set, and no traffic moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_check_without_the_right_to_create_jobs_holds_and_says_why() {
    in_namespace("checks-norbac", async |ns: &TestNs| {
        let (install, operator) = chart_operator(ns, false).await;
        ns.create(&rollout(
            &ns.name,
            json!([job_check("smoke", "preRollout", 0)]),
        ))
        .await;
        let r = ns
            .wait_rollout(ROLLOUT, "the Job check in Error", TIMEOUT, |r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.checks.first().is_some_and(|c| c.phase == "Error"))
            })
            .await;
        let st = r.status.expect("a status");
        let c = &st.checks[0];
        assert_eq!(c.result, "forbidden", "{c:?}");
        assert!(c.message.contains("checks.jobs=true"), "{c:?}");
        assert_eq!(st.canary_weight, 0);
        let d = st.last_decision.expect("a decision");
        assert_eq!(d.reason, "CheckError", "{d:?}");
        assert!(d.message.contains("cannot run"), "{d:?}");
        assert_eq!(ns.route_canary_weight("checkout", CANARY).await, 0);
        ns.wait_event("CheckError").await;
        // The Rollout goes while the operator runs (its finalizer), then the
        // release.
        ns.api::<Rollout>()
            .delete(ROLLOUT, &DeleteParams::default())
            .await
            .expect("delete the Rollout");
        eventually("the Rollout to be finalized", TIMEOUT, || async {
            match ns.api::<Rollout>().get_opt(ROLLOUT).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        operator.kill();
        install.uninstall().unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
}
