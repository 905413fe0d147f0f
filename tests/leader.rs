//! Leader election against the in-memory API (kube-fake-client): who leads,
//! takeover on death and on release, loss on a foreign write / 409 / 500,
//! the gate that drops the controller future, and `/readyz`.
//!
//! Most tests run on tokio's paused clock (`start_paused`): timers fire in
//! order and time only moves when every task waits, so the timing assertions
//! are exact rather than racy, and the suite takes milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube_fake_client::{ClientBuilder, interceptor};
use rollwise::http::{Election, Health, router};
use rollwise::leader::{
    ElectionError, Gated, LeaderElector, LeaderHandle, LeaseConfig, Role, leader_gauge,
};
use rollwise::metrics::Metrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tower::ServiceExt;

const NS: &str = "rollwise-system";
const LEASE: &str = "rollwise-leader";
/// Generous bound for "eventually" waits (paused clock: costs nothing).
const BOUND: Duration = Duration::from_secs(60);

async fn fake() -> kube::Client {
    ClientBuilder::new().build().await.expect("fake client")
}

fn config(identity: &str, secs: u64) -> LeaseConfig {
    LeaseConfig::new(LEASE, NS, identity, Duration::from_secs(secs))
}

async fn lease(client: &kube::Client) -> Lease {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE)
        .await
        .expect("lease exists")
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// An elector running in its own task, stoppable (release) or killable.
struct Running {
    handle: LeaderHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start(client: &kube::Client, config: LeaseConfig) -> Running {
    let elector = LeaderElector::new(client.clone(), config);
    let handle = elector.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    Running {
        handle,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// Graceful shutdown: the elector releases the Lease and stops.
    async fn shutdown(&mut self) {
        let _ = self.stop.take().expect("not stopped yet").send(());
        timeout(BOUND, &mut self.task)
            .await
            .expect("elector stops")
            .expect("elector task ok");
    }
    /// The process dies: no release, no more renewals.
    fn kill(&self) {
        self.task.abort();
    }
}

async fn wait_leader(h: &LeaderHandle) {
    assert!(
        timeout(BOUND, h.acquired()).await.expect("leads in time"),
        "elector stopped before leading"
    );
}

/// A future that never ends and records when it is dropped.
fn guarded_forever(dropped: Arc<AtomicBool>) -> impl Future<Output = ()> {
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    async move {
        let _guard = SetOnDrop(dropped);
        std::future::pending::<()>().await
    }
}

/// Let every ready task run, without moving the clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn one_of_two_leads_and_the_other_stays_standby() {
    let client = fake().await;
    let a = start(&client, config("a", 2));
    let b = start(&client, config("b", 2));
    let winner = timeout(BOUND, async {
        tokio::select! {
            _ = a.handle.acquired() => "a",
            _ = b.handle.acquired() => "b",
        }
    })
    .await
    .expect("someone leads");
    // Many lease durations later, still exactly that one leads.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (leader, standby) = if winner == "a" { (&a, &b) } else { (&b, &a) };
    assert!(leader.handle.is_leader());
    assert!(!standby.handle.is_leader());
    let status = standby.handle.status();
    assert_eq!(status.role, Role::Standby);
    assert!(status.api_ok, "a standby that reads the lease is healthy");
    assert_eq!(status.holder.as_deref(), Some(winner));
    let l = lease(&client).await;
    assert_eq!(holder(&l).as_deref(), Some(winner));
    let spec = l.spec.unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(2));
    assert_eq!(
        spec.lease_transitions,
        Some(0),
        "renewals are no transitions"
    );
}

#[tokio::test(start_paused = true)]
async fn stepwise_acquire_conflict_expiry_and_takeover() {
    let client = fake().await;
    let mut a = LeaderElector::new(client.clone(), config("a", 2));
    let mut b = LeaderElector::new(client.clone(), config("b", 2));
    assert!(a.step().await.unwrap(), "a creates the lease and leads");
    assert!(!b.step().await.unwrap(), "b sees a live holder");
    assert!(a.step().await.unwrap(), "a renews");
    // a stops renewing; b only takes over once the lease has not changed for
    // a whole lease duration, measured on b's own clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !b.step().await.unwrap(),
        "a's lease (renewed 1.5 s ago) still holds"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!b.step().await.unwrap(), "b saw the renewal 1.5 s ago only");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        b.step().await.unwrap(),
        "2.1 s without a change: b takes over"
    );
    let l = lease(&client).await;
    assert_eq!(holder(&l).as_deref(), Some("b"));
    assert_eq!(l.spec.unwrap().lease_transitions, Some(1));
    // a wakes up (a stalled process): its renew deadline (2/3 of the
    // duration) passed long ago, so it has lost without asking; then it sees
    // b's live lease and stays standby: no fight back.
    let gate = a.handle();
    assert!(gate.is_leader());
    assert!(matches!(a.step().await, Err(ElectionError::Timeout(_))));
    assert!(!gate.is_leader());
    assert!(!a.step().await.unwrap());
    assert_eq!(gate.status().holder.as_deref(), Some("b"));
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn standby_takes_over_within_the_lease_duration_when_the_leader_dies() {
    let client = fake().await;
    let secs = 6;
    let a = start(&client, config("a", secs));
    wait_leader(&a.handle).await;
    let b = start(&client, config("b", secs));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(a.handle.is_leader() && !b.handle.is_leader());

    let died = Instant::now();
    a.kill();
    // The dead elector's gate closes (nobody renews any more).
    timeout(BOUND, a.handle.lost()).await.expect("gate closes");
    wait_leader(&b.handle).await;
    let took = died.elapsed();
    // a renewed at most duration/3 before dying; b waits a full duration
    // from when it saw that renewal and wakes when it expires. The fake API
    // has no watch, so b sees a renewal only at its next retry (at most
    // duration/5 late); on a real API server the watch shows it at once
    // (tests/e2e_leader.rs).
    let d = Duration::from_secs(secs);
    assert!(took >= d - d / 3, "took over too early: {took:?}");
    assert!(
        took <= d + d / 5 + Duration::from_millis(100),
        "took over too late: {took:?}"
    );
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn leader_releases_on_shutdown_and_the_standby_takes_over_promptly() {
    let client = fake().await;
    let secs = 30;
    let mut a = start(&client, config("a", secs));
    wait_leader(&a.handle).await;
    let b = start(&client, config("b", secs));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!b.handle.is_leader());

    let released = Instant::now();
    a.shutdown().await;
    assert!(!a.handle.is_leader());
    assert!(!a.handle.status().running);
    wait_leader(&b.handle).await;
    let took = released.elapsed();
    // One standby retry (duration/5 = 6 s), far below the 30 s expiry (no
    // watch in the fake API; on a real one the standby sees the release at
    // once).
    assert!(
        took <= Duration::from_secs(secs) / 5 + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("b"));
}

#[tokio::test]
async fn release_hands_over_on_the_real_clock_too() {
    // Real time, short lease: nothing here depends on tight timing.
    let client = fake().await;
    let mut a = start(&client, config("a", 1));
    wait_leader(&a.handle).await;
    let b = start(&client, config("b", 1));
    a.shutdown().await;
    timeout(Duration::from_secs(5), b.handle.acquired())
        .await
        .expect("b leads within 5 s");
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_foreign_write_is_a_loss_and_drops_the_gated_future_at_once() {
    let client = fake().await;
    let mut a = LeaderElector::new(client.clone(), config("a", 3));
    assert!(a.step().await.unwrap());
    let handle = a.handle();
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = tokio::spawn({
        let handle = handle.clone();
        let fut = guarded_forever(dropped.clone());
        async move { handle.while_leader(fut).await }
    });
    settle().await;
    assert!(!gate.is_finished() && !dropped.load(Ordering::SeqCst));

    // Another replica writes the Lease (e.g. after a partition).
    let api = Api::<Lease>::namespaced(client.clone(), NS);
    let mut l = api.get(LEASE).await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    api.replace(LEASE, &PostParams::default(), &l)
        .await
        .unwrap();

    // a's next renewal sees it: loss, reported before step() returns.
    assert!(!a.step().await.unwrap());
    settle().await;
    assert!(dropped.load(Ordering::SeqCst), "controller future dropped");
    assert_eq!(gate.await.unwrap(), Gated::Lost);
    assert_eq!(handle.status().holder.as_deref(), Some("intruder"));
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("intruder"));
}

#[tokio::test(start_paused = true)]
async fn a_500_on_renewal_is_retried_and_a_loss_at_the_renew_deadline() {
    let fail = Arc::new(AtomicBool::new(false));
    let funcs = interceptor::Funcs::new().get({
        let fail = fail.clone();
        move |_| {
            if fail.load(Ordering::SeqCst) {
                Err(kube_fake_client::Error::Internal("injected".into()))
            } else {
                Ok(None)
            }
        }
    });
    let client = ClientBuilder::new()
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .unwrap();
    let secs = 3;
    let a = start(&client, config("a", secs));
    wait_leader(&a.handle).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = tokio::spawn({
        let handle = a.handle.clone();
        let fut = guarded_forever(dropped.clone());
        async move { handle.while_leader(fut).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!gate.is_finished(), "renewals keep the gate open");

    // One failed renewal (a server error: no answer about the Lease) is
    // retried, and leadership goes on when the retry succeeds.
    fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(secs) / 5 + Duration::from_millis(100)).await;
    fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    assert!(!gate.is_finished(), "a retried renewal keeps the gate open");
    assert_eq!(a.handle.status().role, Role::Leader);

    // Failing for good: a loss by the renew deadline (2/3 of the lease
    // after the last successful renewal, itself at most duration/5 before).
    fail.store(true, Ordering::SeqCst);
    let injected = Instant::now();
    assert_eq!(timeout(BOUND, gate).await.unwrap().unwrap(), Gated::Lost);
    assert!(dropped.load(Ordering::SeqCst));
    let elapsed = injected.elapsed();
    assert!(
        elapsed <= Duration::from_secs(secs) * 2 / 3
            && elapsed >= Duration::from_secs(secs) * 2 / 3 - Duration::from_secs(secs) / 5,
        "lost {elapsed:?} after the API started failing"
    );
    let status = a.handle.status();
    assert_eq!(status.role, Role::Standby);
    assert!(
        !status.api_ok,
        "the standby cannot reach the API: not ready"
    );

    // The API recovers: the Lease still names a, so a leads again (the
    // operator itself exits on loss; the elector alone goes on).
    fail.store(false, Ordering::SeqCst);
    wait_leader(&a.handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_409_on_renewal_is_a_loss() {
    let conflict = Arc::new(AtomicBool::new(false));
    let funcs = interceptor::Funcs::new().replace({
        let conflict = conflict.clone();
        move |_| {
            if conflict.load(Ordering::SeqCst) {
                Err(kube_fake_client::Error::Conflict("injected".into()))
            } else {
                Ok(None)
            }
        }
    });
    let client = ClientBuilder::new()
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .unwrap();
    let mut a = LeaderElector::new(client.clone(), config("a", 3));
    assert!(a.step().await.unwrap(), "created: leads");
    assert!(a.step().await.unwrap(), "renewed (replace)");
    let handle = a.handle();
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = tokio::spawn({
        let handle = handle.clone();
        let fut = guarded_forever(dropped.clone());
        async move { handle.while_leader(fut).await }
    });
    settle().await;
    conflict.store(true, Ordering::SeqCst);
    match a.step().await {
        Err(ElectionError::Api(kube::Error::Api(s))) => assert_eq!(s.code, 409),
        other => panic!("expected a 409, got {other:?}"),
    }
    settle().await;
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(gate.await.unwrap(), Gated::Lost);
    assert!(
        handle.status().api_ok,
        "a 409 is an answer: the API is reachable"
    );
}

#[tokio::test(start_paused = true)]
async fn the_gate_never_runs_without_the_lease_and_closes_when_the_elector_goes() {
    let client = fake().await;
    // Standby (never stepped): the future is not even polled.
    let standby = LeaderElector::new(client.clone(), config("a", 3));
    let polled = Arc::new(AtomicBool::new(false));
    let out = standby
        .handle()
        .while_leader({
            let polled = polled.clone();
            async move { polled.store(true, Ordering::SeqCst) }
        })
        .await;
    assert_eq!(out, Gated::Lost);
    assert!(!polled.load(Ordering::SeqCst));

    // Leader: the future runs to completion while the lease is held.
    let mut leader = LeaderElector::new(client.clone(), config("b", 3));
    assert!(leader.step().await.unwrap());
    let handle = leader.handle();
    assert_eq!(
        handle.while_leader(async { 42 }).await,
        Gated::Completed(42)
    );

    // The elector is dropped (its task died): nobody renews, the gate closes.
    let dropped = Arc::new(AtomicBool::new(false));
    let gate = tokio::spawn({
        let handle = handle.clone();
        let fut = guarded_forever(dropped.clone());
        async move { handle.while_leader(fut).await }
    });
    settle().await;
    assert!(!dropped.load(Ordering::SeqCst));
    drop(leader);
    settle().await;
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(gate.await.unwrap(), Gated::Lost);
    assert!(!handle.is_leader());
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn readyz_answers_by_role_and_cache_sync() {
    let health = Health::default();
    let app = router(Metrics::new(), health.clone());
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);

    // Without leader election: ready once the cache synced (as before).
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    health.set_ready(true);
    assert_eq!(get(&app, "/readyz").await, (StatusCode::OK, "ready".into()));

    // Leader: ready only with a synced cache.
    health.set_election(Election::Leader);
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    health.set_ready(false);
    let (code, body) = get(&app, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("leader"), "{body}");

    // Standby: ready while healthy, whatever the (absent) cache.
    health.set_election(Election::Standby { healthy: true });
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, "ready: standby".into())
    );
    health.set_election(Election::Standby { healthy: false });
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&app, "/healthz").await.0,
        StatusCode::OK,
        "liveness unaffected"
    );
}

#[tokio::test(start_paused = true)]
async fn readyz_and_the_leader_gauge_follow_the_elector() {
    let fail = Arc::new(AtomicBool::new(false));
    let funcs = interceptor::Funcs::new().get({
        let fail = fail.clone();
        move |_| {
            if fail.load(Ordering::SeqCst) {
                Err(kube_fake_client::Error::Internal("injected".into()))
            } else {
                Ok(None)
            }
        }
    });
    let client = ClientBuilder::new()
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .unwrap();
    let metrics = Metrics::new();
    let gauge = leader_gauge(&metrics);
    let health = Health::default();
    let app = router(metrics, health.clone());

    let mut a = LeaderElector::new(client.clone(), config("a", 3));
    let mut b = LeaderElector::new(client.clone(), config("b", 3));
    // b mirrors into this replica's health and gauge.
    tokio::spawn(b.handle().mirror(health.clone(), gauge));
    settle().await;
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "before any lease call"
    );
    assert!(get(&app, "/metrics").await.1.contains("rollwise_leader 0"));

    assert!(a.step().await.unwrap());
    assert!(!b.step().await.unwrap());
    settle().await;
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, "ready: standby".into())
    );

    fail.store(true, Ordering::SeqCst);
    b.step().await.unwrap_err();
    settle().await;
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    fail.store(false, Ordering::SeqCst);

    // a releases; b leads; not ready until its cache syncs.
    assert!(a.release().await.unwrap());
    assert!(b.step().await.unwrap());
    settle().await;
    assert!(get(&app, "/metrics").await.1.contains("rollwise_leader 1"));
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    health.set_ready(true);
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, "ready: leader".into())
    );

    // b stops: gauge back to 0, not ready.
    drop(b);
    settle().await;
    assert!(get(&app, "/metrics").await.1.contains("rollwise_leader 0"));
    assert_eq!(
        get(&app, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_operator_stops_reconciling_and_exits_non_zero_on_loss() {
    // The whole `run()` with --leader-election against the in-memory API
    // (real clock, 2 s lease: loss is seen within the next renewal, 0.67 s).
    let client = ClientBuilder::new()
        .with_resource::<rollwise::api::Rollout>()
        .build()
        .await
        .unwrap();
    let mut config = rollwise::controller::RunConfig::from_env();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.leader_election = true;
    config.lease_namespace = Some(NS.into());
    config.lease_name = LEASE.into();
    config.lease_duration_seconds = 2;
    config.instance = Some("run-a".into());
    let operator = tokio::spawn(rollwise::controller::run(client.clone(), config));

    let api = Api::<Lease>::namespaced(client.clone(), NS);
    timeout(Duration::from_secs(10), async {
        while api
            .get_opt(LEASE)
            .await
            .unwrap()
            .as_ref()
            .and_then(holder)
            .as_deref()
            != Some("run-a")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the operator takes the lease");
    assert!(!operator.is_finished());

    let mut l = api.get(LEASE).await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    api.replace(LEASE, &PostParams::default(), &l)
        .await
        .unwrap();

    let result = timeout(Duration::from_secs(10), operator)
        .await
        .expect("the operator stops")
        .unwrap();
    let err = result.expect_err("exits with an error (non-zero)");
    assert!(err.to_string().contains("lost the leader lease"), "{err}");
    assert_eq!(
        holder(&lease(&client).await).as_deref(),
        Some("intruder"),
        "not released: not ours"
    );
}
