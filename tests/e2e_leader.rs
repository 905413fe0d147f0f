//! Leader election on a real Lease, on the real API server: two `rollwise
//! run` processes with `--leader-election` on the Lease `rollwise-leader` of
//! the test's own namespace (so tests do not interfere), both watching only
//! that namespace, and one Rollout on a Gateway API HTTPRoute going
//! 10% → 20% → 40% → 60% → 80% → 100% with a 3 s pause after each step.
//!
//! - Only the holder works: the standby's `rollwise_reconciles_total` stays
//!   0 and its `rollwise_leader` gauge 0, the Lease names the holder, and
//!   every Event about the Rollout names the holder as its reporting
//!   instance.
//! - SIGKILL of the holder mid-rollout: the standby takes over within the
//!   lease duration (measured from the kill to the Lease's new holder, to
//!   the new leader's first reconcile and to its first write of the
//!   Rollout), and the rollout carries on from the step it was at.
//! - SIGTERM of the holder: it releases the Lease and exits 0; the standby
//!   takes over at once (far under the lease duration).
//! - A Lease taken by another identity (what a partition looks like from the
//!   leader's side): the old leader stops at once and exits non-zero; the
//!   standby waits for the new holder's claim to expire, then takes over.
//!
//! Throughout, watches on the Rollout, the HTTPRoute and the Lease record
//! every version of them as it arrives: the canary weight (route and
//! `status.canaryWeight`) and `status.currentStepIndex` never decrease, and
//! nothing writes the Rollout or the route while nobody should.
//!
//! ```text
//! ROLLWISE_E2E_KUBECONFIG=/path/to/kubeconfig cargo test --test e2e_leader -- --nocapture
//! ```
//! Without a cluster the tests print one `SKIPPED` line and pass.

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::gateway_api::apis::standard::httproutes::HttpRoute;
use common::cluster::{Operator, OperatorOptions, TestNs, eventually, in_namespace, pretty};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use rollwise::api::{Phase, Rollout};
use serde_json::{Value, json};

const STABLE: &str = "checkout-v1";
const CANARY: &str = "checkout-v2";
const ROUTE: &str = "checkout";
const ROLLOUT: &str = "checkout";
/// The Lease both operators elect on (in the test's namespace).
const LEASE: &str = "rollwise-leader";
/// The replica started first (it leads), and the standby.
const FIRST: &str = "replica-a";
const SECOND: &str = "replica-b";
/// The identity that takes the Lease from the leader in the partition test.
const INTRUDER: &str = "replica-elsewhere";

/// 10 → 20 → 40 → 60 → 80 → 100, a 3 s pause after each but the last.
const WEIGHTS: [i32; 6] = [10, 20, 40, 60, 80, 100];
const PAUSE: &str = "3s";
/// The step index of the pause after 20%: the disruptions happen there.
const PAUSE_AFTER_20: i32 = 3;

/// How much later than "the lease duration after the kill" the Lease may
/// name the new holder: the standby sees each renewal on its watch and
/// wakes when the claim expires, then reads and writes the Lease (two
/// round trips; measured: about 20 ms).
const HOLDER_MARGIN: Duration = Duration::from_secs(1);
/// The same for the new leader's first reconcile and first Rollout write:
/// it also starts its Rollout watch and reads the route (measured: about
/// 200 ms).
const WORK_MARGIN: Duration = Duration::from_secs(2);
/// "At once": the SIGTERM hand-over, and the exit of a leader that sees
/// another holder in the Lease (measured: about 100 ms and 50 ms).
const AT_ONCE: Duration = Duration::from_secs(2);

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// The standby does nothing while the holder runs the rollout; SIGKILL of
/// the holder at the pause after 20%: the standby holds the Lease, has
/// reconciled and has written the Rollout within the lease duration of the
/// kill, and the rollout finishes from where it was, without any weight or
/// step going back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_within_the_lease_duration_without_regression() {
    const LEASE_SECONDS: u64 = 8;
    in_namespace("leader-kill", async |ns: &TestNs| {
        let pair = Pair::start(ns, LEASE_SECONDS).await;
        let record = Recorder::start(ns);
        ns.create(&rollout(&ns.name)).await;
        let before = wait_mid_rollout(ns).await;
        pair.assert_only_the_first_works().await;

        pair.first.signal("KILL");
        let killed = Instant::now();
        eprintln!(
            "[e2e] {}: SIGKILL to the leader {FIRST} at {}",
            ns.name,
            summary(&before)
        );
        let status = pair.first.wait_exit(Duration::from_secs(10)).await;
        assert!(
            !status.success(),
            "a SIGKILLed process exits by the signal: {status}"
        );
        let reconciled = pair.wait_second_reconciles(killed, LEASE_SECONDS).await;

        ns.wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        let samples = record.stop();
        let timeline = timeline(&samples, killed);
        eprintln!("[e2e] {}: timeline (t=0: SIGKILL)\n{timeline}", ns.name);

        let holder = first_holder_change(&samples, killed, SECOND)
            .unwrap_or_else(|| panic!("the Lease never named {SECOND} after the kill\n{timeline}"));
        let written = first_write_after(&samples, Kind::Rollout, holder)
            .unwrap_or_else(|| panic!("the new leader never wrote the Rollout\n{timeline}"));
        let lease = Duration::from_secs(LEASE_SECONDS);
        eprintln!(
            "[e2e] MEASURED (SIGKILL, lease {LEASE_SECONDS}s): Lease holder {SECOND} after {:?}, \
             first reconcile by {SECOND} after {:?}, first Rollout write after {:?}",
            holder - killed,
            reconciled - killed,
            written - killed
        );
        assert!(
            holder - killed <= lease + HOLDER_MARGIN,
            "the standby took the Lease {:?} after the kill (lease {lease:?})\n{timeline}",
            holder - killed
        );
        assert!(
            reconciled - killed <= lease + WORK_MARGIN,
            "the new leader first reconciled {:?} after the kill (lease {lease:?})\n{timeline}",
            reconciled - killed
        );
        assert!(
            written - killed <= lease + WORK_MARGIN,
            "the Rollout was first written {:?} after the kill (lease {lease:?})\n{timeline}",
            written - killed
        );
        // The dead leader's last requests may land just after the kill;
        // then nothing until the new leader holds the Lease.
        assert_quiet_between(&samples, killed + Duration::from_secs(1), holder, &timeline);
        assert_no_regression(&samples, &timeline);
        assert_resumed_where_it_was(&samples, killed, &timeline);
        assert_lease_transitions(ns, SECOND, 1, LEASE_SECONDS).await;
        assert_eq!(
            pair.second.metric_sum("rollwise_leader", &[]).await,
            1.0,
            "the new leader's rollwise_leader gauge"
        );
        assert_events_by_the_holder(ns, FIRST, SECOND, lease_acquired(ns).await).await;
    })
    .await;
}

/// SIGTERM to the holder at the pause after 20%: it releases the Lease and
/// exits 0, the standby holds the Lease at once (a 15 s lease, taken over in
/// well under 3 s) and finishes the rollout without any weight going back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_leader_hands_over_at_once_and_exits_zero() {
    const LEASE_SECONDS: u64 = 15;
    in_namespace("leader-term", async |ns: &TestNs| {
        let pair = Pair::start(ns, LEASE_SECONDS).await;
        let record = Recorder::start(ns);
        ns.create(&rollout(&ns.name)).await;
        let before = wait_mid_rollout(ns).await;
        pair.assert_only_the_first_works().await;

        pair.first.signal("TERM");
        let terminated = Instant::now();
        eprintln!("[e2e] {}: SIGTERM to the leader {FIRST} at {}", ns.name, summary(&before));
        let status = pair.first.wait_exit(Duration::from_secs(LEASE_SECONDS)).await;
        let exited = Instant::now();
        assert!(
            status.success(),
            "the terminated leader should exit 0, not {status}; its log:\n{}",
            common::cluster::tail(&pair.first.log(), 80)
        );
        assert!(
            pair.first.log().contains("released the leader lease"),
            "the terminated leader should say it released the Lease; its log:\n{}",
            common::cluster::tail(&pair.first.log(), 80)
        );
        let reconciled = pair.wait_second_reconciles(terminated, LEASE_SECONDS).await;

        ns.wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        let samples = record.stop();
        let timeline = timeline(&samples, terminated);
        eprintln!("[e2e] {}: timeline (t=0: SIGTERM)\n{timeline}", ns.name);

        let holder = first_holder_change(&samples, terminated, SECOND).unwrap_or_else(|| {
            panic!("the Lease never named {SECOND} after the SIGTERM\n{timeline}")
        });
        eprintln!(
            "[e2e] MEASURED (SIGTERM, lease {LEASE_SECONDS}s): {FIRST} exited after {:?}, \
             Lease holder {SECOND} after {:?}, first reconcile by {SECOND} after {:?}",
            exited - terminated,
            holder - terminated,
            reconciled - terminated
        );
        assert!(
            holder - terminated < AT_ONCE,
            "the standby took the released Lease {:?} after the SIGTERM (lease {LEASE_SECONDS}s)\n{timeline}",
            holder - terminated
        );
        assert!(
            reconciled - terminated < AT_ONCE + WORK_MARGIN,
            "the new leader first reconciled {:?} after the SIGTERM\n{timeline}",
            reconciled - terminated
        );
        assert_no_regression(&samples, &timeline);
        assert_resumed_where_it_was(&samples, terminated, &timeline);
        assert_lease_transitions(ns, SECOND, 1, LEASE_SECONDS).await;
        assert_events_by_the_holder(ns, FIRST, SECOND, lease_acquired(ns).await).await;
    })
    .await;
}

/// Another identity writes itself into the Lease while the leader runs the
/// rollout (from the leader's side, a partition healed after another
/// replica took over looks like this): the old leader stops at once and
/// exits non-zero without touching the Lease; nothing writes the Rollout or
/// the route until the standby takes over, once the new holder's claim has
/// expired (never before); the rollout then finishes without regression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_loses_the_lease_stops_at_once_and_exits_non_zero() {
    const LEASE_SECONDS: u64 = 8;
    in_namespace("leader-lost", async |ns: &TestNs| {
        let pair = Pair::start(ns, LEASE_SECONDS).await;
        let record = Recorder::start(ns);
        ns.create(&rollout(&ns.name)).await;
        let before = wait_mid_rollout(ns).await;
        pair.assert_only_the_first_works().await;

        let taken = take_the_lease(ns, INTRUDER, LEASE_SECONDS).await;
        eprintln!(
            "[e2e] {}: the Lease now names {INTRUDER} (rollout at {})",
            ns.name,
            summary(&before)
        );
        let status = pair.first.wait_exit(Duration::from_secs(LEASE_SECONDS)).await;
        let exited = Instant::now();
        // Exited on its own; from here on it is not "unexpectedly dead".
        pair.first.kill();
        let log = pair.first.log();
        assert!(
            !status.success(),
            "a leader that lost its Lease should exit non-zero, not {status}; its log:\n{}",
            common::cluster::tail(&log, 80)
        );
        assert!(
            log.contains("lost the leader lease"),
            "the old leader should say it lost the Lease; its log:\n{}",
            common::cluster::tail(&log, 80)
        );

        ns.wait_phase(ROLLOUT, Phase::Succeeded, 100, ROLLOUT_TIMEOUT)
            .await;
        let samples = record.stop();
        let timeline = timeline(&samples, taken);
        eprintln!("[e2e] {}: timeline (t=0: Lease taken by {INTRUDER})\n{timeline}", ns.name);

        let holder = first_holder_change(&samples, taken, SECOND).unwrap_or_else(|| {
            panic!("the Lease never named {SECOND} after {INTRUDER} took it\n{timeline}")
        });
        let lease = Duration::from_secs(LEASE_SECONDS);
        eprintln!(
            "[e2e] MEASURED (Lease taken, lease {LEASE_SECONDS}s): {FIRST} exited after {:?}, \
             Lease holder {SECOND} after {:?}",
            exited - taken,
            holder - taken
        );
        assert!(
            exited - taken < AT_ONCE,
            "the old leader exited {:?} after losing the Lease: it should stop at once",
            exited - taken
        );
        // The standby respects the new holder's claim (whole seconds,
        // measured on its own clock from when it saw the write)...
        assert!(
            holder - taken >= lease - Duration::from_millis(500),
            "the standby took the Lease {:?} after {INTRUDER} wrote it: before the claim of {lease:?} expired\n{timeline}",
            holder - taken
        );
        // ...and takes over as soon as it expires.
        assert!(
            holder - taken <= lease + HOLDER_MARGIN,
            "the standby took the Lease {:?} after {INTRUDER} wrote it (lease {lease:?})\n{timeline}",
            holder - taken
        );
        assert_lease_never_named(&samples, taken, holder, &[FIRST], &timeline);
        assert_quiet_between(&samples, taken + Duration::from_secs(1), holder, &timeline);
        assert_no_regression(&samples, &timeline);
        assert_resumed_where_it_was(&samples, taken, &timeline);
        assert_lease_transitions(ns, SECOND, 1, LEASE_SECONDS).await;
        assert_events_by_the_holder(ns, FIRST, SECOND, lease_acquired(ns).await).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Two operators on one Lease
// ---------------------------------------------------------------------------

struct Pair<'a> {
    ns: &'a TestNs,
    /// Started first: holds the Lease.
    first: Arc<Operator>,
    /// Started once the first holds the Lease: standby.
    second: Arc<Operator>,
}

impl<'a> Pair<'a> {
    /// The two versions, the route, then the first operator (which takes
    /// the Lease), then the second (standby).
    async fn start(ns: &'a TestNs, lease_seconds: u64) -> Pair<'a> {
        ns.show("HTTPRoutes", route_resource());
        ns.show("Leases", ApiResource::erase::<Lease>(&()));
        ns.versions(&[STABLE, CANARY], 1).await;
        ns.create_dynamic(&route_resource(), http_route()).await;
        let first = ns.start_operator(options(ns, FIRST, lease_seconds)).await;
        wait_holder(ns, FIRST).await;
        let second = ns.start_operator(options(ns, SECOND, lease_seconds)).await;
        assert_eq!(
            lease_holder(ns).await.as_deref(),
            Some(FIRST),
            "the Lease changed hands when the standby started"
        );
        Pair { ns, first, second }
    }

    /// While the first holds the Lease and has worked the Rollout: the
    /// standby has not reconciled at all and says it does not lead.
    async fn assert_only_the_first_works(&self) {
        let (first, second) = (&self.first, &self.second);
        assert_eq!(
            lease_holder(self.ns).await.as_deref(),
            Some(FIRST),
            "the Lease's holderIdentity"
        );
        assert_eq!(
            first.metric_sum("rollwise_leader", &[]).await,
            1.0,
            "the leader's rollwise_leader gauge"
        );
        assert!(
            first.metric_sum("rollwise_reconciles_total", &[]).await > 0.0,
            "the leader has reconciled"
        );
        assert_eq!(
            second.metric_sum("rollwise_leader", &[]).await,
            0.0,
            "the standby's rollwise_leader gauge"
        );
        assert_eq!(
            second.metric_sum("rollwise_reconciles_total", &[]).await,
            0.0,
            "the standby's rollwise_reconciles_total"
        );
    }

    /// Poll the second operator's reconcile counter (every 50 ms) until it
    /// moves; when it did. Fails after the lease duration plus a generous
    /// bound.
    async fn wait_second_reconciles(&self, since: Instant, lease_seconds: u64) -> Instant {
        let end = since + Duration::from_secs(lease_seconds) + Duration::from_secs(30);
        loop {
            let count = self
                .second
                .metric_sum("rollwise_reconciles_total", &[])
                .await;
            if count > 0.0 {
                return Instant::now();
            }
            self.second.check_alive();
            assert!(
                Instant::now() < end,
                "the standby {SECOND} never reconciled; its log:\n{}",
                common::cluster::tail(&self.second.log(), 80)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn options(ns: &TestNs, identity: &str, lease_seconds: u64) -> OperatorOptions {
    OperatorOptions::new(&ns.cluster.kubeconfig)
        .namespace(&ns.name)
        .leader_election(&ns.name, identity, lease_seconds)
}

/// Wait (bounded) until the Rollout is past 20% and at the pause after it,
/// not finished.
async fn wait_mid_rollout(ns: &TestNs) -> Rollout {
    ns.wait_rollout(ROLLOUT, "the pause after 20%", ROLLOUT_TIMEOUT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.current_step_index >= PAUSE_AFTER_20 && s.canary_weight >= 20)
    })
    .await
}

fn summary(r: &Rollout) -> String {
    common::cluster::summary(r)
}

async fn lease_holder(ns: &TestNs) -> Option<String> {
    let lease = ns
        .api::<Lease>()
        .get(LEASE)
        .await
        .unwrap_or_else(|e| panic!("cannot read the Lease {LEASE}: {e}"));
    lease.spec.and_then(|s| s.holder_identity)
}

async fn wait_holder(ns: &TestNs, identity: &str) {
    let leases: Api<Lease> = ns.api();
    eventually(
        &format!("the Lease {LEASE} to name {identity}"),
        Duration::from_secs(30),
        || {
            let leases = leases.clone();
            async move {
                match leases.get_opt(LEASE).await {
                    Ok(Some(l)) => {
                        let holder = l.spec.and_then(|s| s.holder_identity);
                        if holder.as_deref() == Some(identity) {
                            Ok(())
                        } else {
                            Err(format!("holder {holder:?}"))
                        }
                    }
                    Ok(None) => Err("no Lease yet".into()),
                    Err(e) => Err(format!("get: {e}")),
                }
            }
        },
    )
    .await;
}

/// Write `identity` into the Lease as its holder (a merge patch, no
/// resourceVersion: it wins whatever the leader does), with a claim of
/// `seconds`; when the write was answered.
async fn take_the_lease(ns: &TestNs, identity: &str, seconds: u64) -> Instant {
    let now = serde_json::to_value(MicroTime(jiff::Timestamp::now())).expect("a time serializes");
    let patch = json!({"spec": {
        "holderIdentity": identity,
        "leaseDurationSeconds": seconds,
        "acquireTime": now,
        "renewTime": now,
    }});
    ns.api::<Lease>()
        .patch(LEASE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot write the Lease {LEASE}: {e}"));
    Instant::now()
}

/// The Lease as a user sees it (`kubectl get lease -o yaml`): held by
/// `holder`, `transitions` hand-overs, the duration the operators were
/// given, a renewal within the last lease duration, acquired no later than
/// renewed.
async fn assert_lease_transitions(ns: &TestNs, holder: &str, transitions: i32, seconds: u64) {
    let lease = ns
        .api::<Lease>()
        .get(LEASE)
        .await
        .unwrap_or_else(|e| panic!("cannot read the Lease {LEASE}: {e}"));
    let spec = lease.spec.clone().unwrap_or_default();
    let shown = pretty(&lease.spec);
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(holder),
        "holderIdentity: {shown}"
    );
    assert_eq!(
        spec.lease_transitions,
        Some(transitions),
        "leaseTransitions: {shown}"
    );
    assert_eq!(
        spec.lease_duration_seconds,
        Some(i32::try_from(seconds).expect("small")),
        "leaseDurationSeconds: {shown}"
    );
    let acquired = spec.acquire_time.map(|t| t.0);
    let renewed = spec
        .renew_time
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("no renewTime: {shown}"));
    assert!(
        acquired.is_some_and(|a| a <= renewed),
        "acquireTime after renewTime: {shown}"
    );
    let age = jiff::Timestamp::now().duration_since(renewed);
    assert!(
        age >= jiff::SignedDuration::from_secs(-2)
            && age <= jiff::SignedDuration::from_secs(i64::try_from(seconds).expect("small")),
        "renewTime is {age:?} old: the leader does not renew (or writes a wrong time): {shown}"
    );
}

/// When the current holder of the Lease acquired it (`acquireTime`, its
/// own clock: the one its Events carry).
async fn lease_acquired(ns: &TestNs) -> jiff::Timestamp {
    let lease = ns
        .api::<Lease>()
        .get(LEASE)
        .await
        .unwrap_or_else(|e| panic!("cannot read the Lease {LEASE}: {e}"));
    lease
        .spec
        .as_ref()
        .and_then(|s| s.acquire_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("the Lease has no acquireTime: {}", pretty(&lease.spec)))
}

/// The Events rollwise reported about the Rollout name the replica that
/// held the Lease when they were sent: `first` before `handed_over` (the
/// new holder's `acquireTime`), `second` from then on; each sent some.
async fn assert_events_by_the_holder(
    ns: &TestNs,
    first: &str,
    second: &str,
    handed_over: jiff::Timestamp,
) {
    let events: Api<Event> = ns.api();
    let list = events
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("cannot list Events: {e}"));
    let mut ours: Vec<(jiff::Timestamp, &Event)> = list
        .items
        .iter()
        .filter(|e| e.reporting_component.as_deref() == Some("rollwise"))
        .map(|e| {
            // eventTime: when the operator sent it, in microseconds.
            let at = e
                .event_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(|| panic!("an Event without eventTime: {e:?}"));
            (at, e)
        })
        .collect();
    ours.sort_by_key(|(at, _)| *at);
    let lines = ours
        .iter()
        .map(|(at, e)| {
            format!(
                "  {at} {} by {:?}: {}",
                e.reason.as_deref().unwrap_or("-"),
                e.reporting_instance,
                e.message.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (before, after): (Vec<_>, Vec<_>) = ours.iter().partition(|(at, _)| *at < handed_over);
    for (events, identity, when) in [(before, first, "before"), (after, second, "after")] {
        assert!(
            !events.is_empty(),
            "no Event from rollwise {when} the hand-over at {handed_over}; all of them:\n{lines}"
        );
        assert!(
            events
                .iter()
                .all(|(_, e)| e.reporting_instance.as_deref() == Some(identity)),
            "every Event {when} the hand-over at {handed_over} should be reported by {identity}:\n{lines}"
        );
    }
}

// ---------------------------------------------------------------------------
// The record: every version of the Rollout, the route and the Lease
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rollout,
    Route,
    Lease,
}

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    kind: Kind,
    resource_version: Option<String>,
    /// Rollout: (currentStepIndex, status.canaryWeight, phase).
    status: Option<(i32, i32, Phase)>,
    /// Route: (stable, canary) weights of the first rule.
    weights: Option<(i64, i64)>,
    /// Lease: holderIdentity.
    holder: Option<String>,
}

/// Watches on the Rollout, the HTTPRoute and the Lease, each version
/// recorded with the time it arrived.
struct Recorder {
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    fn start(ns: &TestNs) -> Recorder {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = vec![
            watch(
                ns.api::<Rollout>(),
                ROLLOUT,
                samples.clone(),
                |r: &Rollout| Sample {
                    kind: Kind::Rollout,
                    status: r
                        .status
                        .as_ref()
                        .map(|s| (s.current_step_index, s.canary_weight, s.phase)),
                    ..Sample::new(Kind::Rollout, r.metadata.resource_version.clone())
                },
            ),
            watch(
                ns.dynamic(&route_resource()),
                ROUTE,
                samples.clone(),
                |r: &DynamicObject| Sample {
                    weights: Some(route_weights(r)),
                    ..Sample::new(Kind::Route, r.metadata.resource_version.clone())
                },
            ),
            watch(ns.api::<Lease>(), LEASE, samples.clone(), |l: &Lease| {
                Sample {
                    holder: l.spec.as_ref().and_then(|s| s.holder_identity.clone()),
                    ..Sample::new(Kind::Lease, l.metadata.resource_version.clone())
                }
            }),
        ];
        Recorder { samples, tasks }
    }

    /// Stop watching; the samples in the order they arrived.
    fn stop(self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Sample {
    fn new(kind: Kind, resource_version: Option<String>) -> Sample {
        Sample {
            at: Instant::now(),
            kind,
            resource_version,
            status: None,
            weights: None,
            holder: None,
        }
    }
}

fn watch<K>(
    api: Api<K>,
    name: &str,
    samples: Arc<Mutex<Vec<Sample>>>,
    sample: impl Fn(&K) -> Sample + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let name = name.to_string();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let s = sample(&obj);
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                }
                Ok(_) => {}
                Err(e) => eprintln!("[e2e] watch {name}: {e}"),
            }
        }
    })
}

/// One line per recorded version, times relative to `zero`.
fn timeline(samples: &[Sample], zero: Instant) -> String {
    let mut out = String::new();
    for s in samples {
        let t = if s.at >= zero {
            format!("+{:.3}s", (s.at - zero).as_secs_f64())
        } else {
            format!("-{:.3}s", (zero - s.at).as_secs_f64())
        };
        let what = match s.kind {
            Kind::Rollout => match s.status {
                Some((step, weight, phase)) => {
                    format!(
                        "Rollout step={step} canaryWeight={weight} phase={}",
                        phase.as_str()
                    )
                }
                None => "Rollout (no status)".to_string(),
            },
            Kind::Route => {
                let (stable, canary) = s.weights.unwrap_or_default();
                format!("HTTPRoute weights stable={stable} canary={canary}")
            }
            Kind::Lease => format!("Lease holder={:?}", s.holder),
        };
        let _ = writeln!(
            out,
            "  {t:>9} {what} (resourceVersion {})",
            s.resource_version.as_deref().unwrap_or("-")
        );
    }
    out
}

/// When the Lease first named `identity` after `since`.
fn first_holder_change(samples: &[Sample], since: Instant, identity: &str) -> Option<Instant> {
    samples
        .iter()
        .filter(|s| s.kind == Kind::Lease && s.at >= since)
        .find(|s| s.holder.as_deref() == Some(identity))
        .map(|s| s.at)
}

/// When a version of `kind` other than the last one seen before `since`
/// first arrived after `since`.
fn first_write_after(samples: &[Sample], kind: Kind, since: Instant) -> Option<Instant> {
    let last_before = samples
        .iter()
        .rfind(|s| s.kind == kind && s.at < since)
        .and_then(|s| s.resource_version.clone());
    samples
        .iter()
        .filter(|s| s.kind == kind && s.at >= since)
        .find(|s| s.resource_version != last_before)
        .map(|s| s.at)
}

/// No new version of the Rollout or the route arrived in `[from, to)`:
/// nobody wrote them while no replica should.
fn assert_quiet_between(samples: &[Sample], from: Instant, to: Instant, timeline: &str) {
    for kind in [Kind::Rollout, Kind::Route] {
        let last_before = samples
            .iter()
            .rfind(|s| s.kind == kind && s.at < from)
            .and_then(|s| s.resource_version.clone());
        let written = samples
            .iter()
            .filter(|s| s.kind == kind && s.at >= from && s.at < to)
            .find(|s| s.resource_version != last_before);
        assert!(
            written.is_none(),
            "the {kind:?} was written while no replica held the Lease: {written:?}\n{timeline}"
        );
    }
}

/// Between `from` and `to` the Lease never named any of `identities`.
fn assert_lease_never_named(
    samples: &[Sample],
    from: Instant,
    to: Instant,
    identities: &[&str],
    timeline: &str,
) {
    let bad = samples
        .iter()
        .filter(|s| s.kind == Kind::Lease && s.at > from && s.at < to)
        .find(|s| s.holder.as_deref().is_some_and(|h| identities.contains(&h)));
    assert!(
        bad.is_none(),
        "the Lease named {:?} after it was lost: {bad:?}\n{timeline}",
        bad.and_then(|b| b.holder.clone())
    );
}

/// `status.currentStepIndex` and `status.canaryWeight`, and the route's
/// canary weight, never decrease (and its stable weight never increases)
/// over the whole record; the rollout reached 100% on the route.
fn assert_no_regression(samples: &[Sample], timeline: &str) {
    let mut last: Option<(i32, i32)> = None;
    for s in samples.iter().filter(|s| s.kind == Kind::Rollout) {
        let Some((step, weight, _)) = s.status else {
            assert!(
                last.is_none(),
                "the Rollout's status disappeared\n{timeline}"
            );
            continue;
        };
        if let Some((last_step, last_weight)) = last {
            assert!(
                step >= last_step,
                "currentStepIndex went back from {last_step} to {step}\n{timeline}"
            );
            assert!(
                weight >= last_weight,
                "status.canaryWeight went back from {last_weight} to {weight}\n{timeline}"
            );
        }
        last = Some((step, weight));
    }
    // The canary's share of the rule's traffic (the route starts with the
    // stable backendRef alone, weight 1 by default).
    let share = |(stable, canary): (i64, i64)| {
        if stable + canary > 0 {
            canary as f64 / (stable + canary) as f64
        } else {
            0.0
        }
    };
    let mut last: Option<(i64, i64)> = None;
    for s in samples.iter().filter(|s| s.kind == Kind::Route) {
        let (stable, canary) = s.weights.expect("route samples carry weights");
        if let Some((last_stable, last_canary)) = last {
            assert!(
                canary >= last_canary
                    && share((stable, canary)) >= share((last_stable, last_canary)),
                "the route's weights went back from stable={last_stable}/canary={last_canary} \
                 to stable={stable}/canary={canary}\n{timeline}"
            );
        }
        last = Some((stable, canary));
    }
    assert_eq!(
        last,
        Some((0, 100)),
        "the route's last (stable, canary) weights\n{timeline}"
    );
}

/// The first Rollout version written after `since` continues from the step
/// and weight of the last one before: the same step, or the next.
fn assert_resumed_where_it_was(samples: &[Sample], since: Instant, timeline: &str) {
    let status_at = |s: &Sample| s.status.map(|(step, weight, _)| (step, weight));
    let before = samples
        .iter()
        .filter(|s| s.kind == Kind::Rollout && s.at < since)
        .filter_map(status_at)
        .next_back()
        .unwrap_or_else(|| panic!("no Rollout status before the disruption\n{timeline}"));
    let last_rv = samples
        .iter()
        .rfind(|s| s.kind == Kind::Rollout && s.at < since)
        .and_then(|s| s.resource_version.clone());
    let after = samples
        .iter()
        .filter(|s| s.kind == Kind::Rollout && s.at >= since && s.resource_version != last_rv)
        .find_map(status_at)
        .unwrap_or_else(|| panic!("no Rollout status after the disruption\n{timeline}"));
    assert!(
        after.0 == before.0 || after.0 == before.0 + 1,
        "the rollout was at step {} ({}%) and the new leader wrote step {} ({}%): \
         it should carry on from the same step\n{timeline}",
        before.0,
        before.1,
        after.0,
        after.1
    );
    assert!(
        after.1 >= before.1,
        "weight went back across the hand-over\n{timeline}"
    );
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

fn route_resource() -> ApiResource {
    ApiResource::erase::<HttpRoute>(&())
}

/// All `/checkout` traffic to the stable Service (the Gateway need not
/// exist: nothing sends traffic here).
fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": ROUTE},
        "spec": {
            "parentRefs": [{"name": "e2e"}],
            "hostnames": ["checkout.leader.rollwise.test"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                "backendRefs": [{"name": STABLE, "port": 80}]
            }]
        }
    })
}

/// `(stable, canary)` weights of the route's first rule: 0 for a missing
/// backendRef, 1 (the Gateway API default) for a missing weight.
fn route_weights(route: &DynamicObject) -> (i64, i64) {
    let refs = route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let weight = |service: &str| {
        refs.iter().find(|r| r["name"] == service).map_or(0, |r| {
            r.get("weight").map_or(1, |w| w.as_i64().unwrap_or(-1))
        })
    };
    (weight(STABLE), weight(CANARY))
}

/// 10 → 20 → 40 → 60 → 80 → 100 with a 3 s pause after each but the last.
fn rollout(ns: &str) -> Rollout {
    let mut steps = Vec::new();
    for (i, w) in WEIGHTS.iter().enumerate() {
        steps.push(json!({"setWeight": w}));
        if i + 1 < WEIGHTS.len() {
            steps.push(json!({"pause": {"duration": PAUSE}}));
        }
    }
    assert_eq!(steps[PAUSE_AFTER_20 as usize - 1], json!({"setWeight": 20}));
    serde_json::from_value(json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": ns},
        "spec": {
            "stable": {"service": STABLE, "deployment": STABLE},
            "canary": {"service": CANARY, "deployment": CANARY},
            "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
            "steps": steps,
        },
    }))
    .expect("a valid Rollout")
}

/// The Rollout passes the CRD's admission rules and the operator's
/// validation (no cluster needed).
#[test]
fn offline_the_rollout_is_valid() {
    let crd = common::cluster::rollout_crd();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let r = rollout("rollwise-e2e-leader");
    let obj = serde_json::to_value(&r).expect("a Rollout serializes");
    if let Err(e) = kube::core::cel::Validator::new().validate(schema, &obj, None) {
        let messages: Vec<String> = e.into_vec().into_iter().map(|e| e.message).collect();
        panic!("the API server would reject {}: {messages:?}", pretty(&obj));
    }
    if let Err(errors) = rollwise::plan::validate(&r.spec) {
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!(
            "the operator would mark {} Invalid: {messages:?}",
            pretty(&obj)
        );
    }
}
