//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder of
//! the Lease reconciles and writes.
//!
//! # How it works
//!
//! Every replica runs a [`LeaderElector`] on the same Lease
//! (`--lease-namespace`/`--lease-name`), with its own identity (the pod
//! name). One *step* of the elector is the client-go algorithm:
//!
//! 1. `GET` the Lease. Missing: `CREATE` it naming us as holder (a 409
//!    means another replica created it first: we are standby).
//! 2. Held by someone else and not expired: standby. "Expired" is judged on
//!    this replica's **own monotonic clock**: the Lease expires
//!    `leaseDurationSeconds` after we last *saw it change* (its
//!    `resourceVersion`), never by comparing its `renewTime` with our wall
//!    clock, so clock skew between nodes cannot cause two leaders.
//! 3. Free (no holder, e.g. released), expired, or already ours: `UPDATE`
//!    it (holder = us, `renewTime` = now; `acquireTime` and
//!    `leaseTransitions` move when the holder changes) **with the
//!    `resourceVersion` we read** (optimistic concurrency): if two standbys
//!    race, the API server accepts one write and answers 409 to the other.
//!
//! The leader renews every `duration / 5`. A renewal that finds the Lease
//! taken (it names another holder, or a 409 because someone else wrote it)
//! is a **loss**; one that fails without an answer about the Lease (a 5xx,
//! a network error, a slow API server) is retried every `duration / 5`
//! until the renew deadline, `2 × duration / 3` after the last successful
//! renewal, and is a loss when that passes (as client-go does: one slow
//! call on a loaded API server does not end the leadership). A loss is
//! reported at once: the status channel flips to standby, and
//! [`LeaderHandle::while_leader`] drops the guarded future (the kube-runtime
//! Controller, whose reconcile tasks are aborted with it) immediately. The
//! leader therefore stops writing at most `2 × duration / 3` after its last
//! successful renewal, while a standby takes over no earlier than `duration`
//! after it saw that renewal.
//!
//! Every replica also **watches the Lease** (`metadata.name` field
//! selector), so it does not learn of a change only at its next timer: a
//! standby notes each renewal as it happens and wakes exactly when the
//! holder's claim expires, so when the leader dies it takes over at most
//! `duration` (plus two API round trips) after the leader's last renewal,
//! that is within `duration` of the death; when the leader releases the
//! Lease on shutdown ([`LeaderElector::release`]: holder cleared, written
//! with the `resourceVersion` read, so it never clears another's hold) the
//! standby sees it free and takes it at once; and a leader sees another
//! holder in the Lease at once, confirms it with a fresh read and reports
//! the loss. The watch only makes the elector faster: the timers alone are
//! correct. Without it (say RBAC grants no `watch`; a warning says so) a
//! standby retries every `duration / 5`, so it sees a renewal up to that
//! much later and takes over up to `duration + duration / 5` after the
//! leader's death and within `duration / 5` of a release, and a leader sees
//! another holder at its next renewal.
//!
//! What the operator does on loss (see `controller::run`): it drops the
//! Controller at once and then **exits non-zero**, so Kubernetes restarts the
//! pod, which comes back as a standby with fresh state — as
//! controller-runtime does. Before exiting it releases the Lease if the
//! Lease still names this replica (say a renewal failed with a 500 and
//! nobody else wrote it), so a standby need not wait for expiry. The elector
//! itself would go on as a standby.
//!
//! # Why not kube-lease-manager
//!
//! kube-lease-manager 0.12 takes the Lease with server-side apply and frees
//! it with strategic-merge patches, relying on the API server moving field
//! ownership; kube-fake-client's in-memory API does not, so there a second
//! replica's apply conflicts (409) for ever and can never take over. It also
//! judges expiry by comparing `renewTime` with the wall clock (whole
//! seconds, no injectable clock), and in its `watch()` mode a failed
//! renewal is only logged and retried: the leader keeps being told it leads
//! until a later successful read shows another holder.
//!
//! # Time
//!
//! Expiry and renew deadlines use `tokio::time::Instant`, so tests drive
//! them with tokio's paused clock (`#[tokio::test(start_paused = true)]`);
//! the timestamps written into the Lease come from a [`Clock`] (injectable
//! with [`LeaderElector::with_clock`]), for humans and other tools only.
//!
//! # RBAC
//!
//! In the Lease's namespace: `create`, and `get`, `update`, `watch` on
//! `leases.coordination.k8s.io` (the last three can be limited to the
//! Lease's name with `resourceNames`: the watch selects it by name).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};
use prometheus::IntGauge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::http::{Election, Health};
use crate::metrics::Metrics;

/// Where the Lease is and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's holder identity (unique among replicas).
    pub identity: String,
    /// How long a holder's claim lasts after its last renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and retries a failed renewal (default
    /// `duration / 5`).
    pub renew_period: Duration,
    /// The leader gives up if no renewal succeeded this long after the last
    /// successful one (default `2 × duration / 3`). Also bounds one API
    /// attempt of a standby.
    pub renew_deadline: Duration,
    /// How often a standby tries to acquire (default `duration / 5`).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A Lease of `lease_duration`, with the derived periods above.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(1));
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration,
            renew_period: lease_duration / 5,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 5,
        }
    }

    /// The duration written into the Lease: whole seconds, rounded up (a
    /// standby must never expire the Lease sooner than its holder expects).
    fn duration_seconds(&self) -> i32 {
        let d = &self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// The holder identity when `POD_NAME` is not set: the hostname plus a
/// random suffix (two processes on one host must not share an identity).
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rollwise".to_string());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{host}-{:08x}", hasher.finish() as u32)
}

/// Whether this replica leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Standby,
}

/// What the elector publishes after every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionStatus {
    pub role: Role,
    /// The last call to the API server succeeded (a 409 counts as an
    /// answer). False before the first attempt.
    pub api_ok: bool,
    /// The holder named by the Lease when last read (None: free/unknown).
    pub holder: Option<String>,
    /// The elector's loop runs (false once it has stopped).
    pub running: bool,
}

impl ElectionStatus {
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// The role as `/readyz` sees it.
    pub fn as_health(&self) -> Election {
        match self.role {
            Role::Leader if self.running => Election::Leader,
            _ => Election::Standby {
                healthy: self.running && self.api_ok,
            },
        }
    }
}

/// Why a step did not make (or keep) this replica the leader.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("Lease API call failed: {0}")]
    Api(#[from] kube::Error),
    #[error("Lease API call timed out after {0:?}")]
    Timeout(Duration),
}

impl ElectionError {
    /// No answer about the Lease (a server error, a network error, a
    /// timeout): worth retrying. An answer (a 409 conflict: someone else
    /// wrote the Lease; a 403; a 404) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            ElectionError::Timeout(_) => true,
            ElectionError::Api(kube::Error::Api(s)) => s.code >= 500 || s.code == 429,
            ElectionError::Api(_) => true,
        }
    }
}

/// The outcome of the future guarded by [`LeaderHandle::while_leader`].
#[derive(Debug, PartialEq, Eq)]
pub enum Gated<T> {
    /// The future completed while this replica led.
    Completed(T),
    /// Leadership was lost (or never held, or the elector stopped): the
    /// future was dropped.
    Lost,
}

/// A read side of the elector's status, cheap to clone: the gate the run
/// loop uses, and what `/readyz` and the `rollwise_leader` gauge mirror.
#[derive(Clone)]
pub struct LeaderHandle {
    rx: watch::Receiver<ElectionStatus>,
}

impl LeaderHandle {
    pub fn status(&self) -> ElectionStatus {
        self.rx.borrow().clone()
    }
    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_leader() && !self.elector_gone()
    }
    fn elector_gone(&self) -> bool {
        self.rx.has_changed().is_err()
    }

    /// Wait until this replica leads. False if the elector stopped first.
    pub async fn acquired(&self) -> bool {
        let mut rx = self.rx.clone();
        rx.wait_for(|s| s.is_leader()).await.is_ok()
    }

    /// Resolves as soon as this replica does not lead (at once if it does
    /// not lead now), including when the elector stopped or was dropped.
    pub async fn lost(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| !s.is_leader()).await;
    }

    /// Run `fut` only while this replica leads: it is dropped the moment
    /// the elector reports the loss of the Lease (or stops), and never
    /// polled if this replica does not lead when called.
    pub async fn while_leader<F: Future>(&self, fut: F) -> Gated<F::Output> {
        let lost = self.lost();
        tokio::select! {
            biased;
            () = lost => Gated::Lost,
            out = fut => Gated::Completed(out),
        }
    }

    /// Keep `health` (for `/readyz`) and `gauge` (`rollwise_leader`) in step
    /// with the elector's status until it stops.
    pub async fn mirror(self, health: Health, gauge: IntGauge) {
        let mut rx = self.rx;
        loop {
            let status = rx.borrow_and_update().clone();
            health.set_election(status.as_health());
            gauge.set(i64::from(status.is_leader() && status.running));
            if rx.changed().await.is_err() {
                health.set_election(Election::Standby { healthy: false });
                gauge.set(0);
                return;
            }
        }
    }
}

/// The `rollwise_leader` gauge (1 on the leader, 0 otherwise), registered on
/// the operator's registry.
pub fn leader_gauge(metrics: &Metrics) -> IntGauge {
    let gauge = IntGauge::new(
        "leader",
        "1 if this replica holds the leader Lease (or runs without leader election), else 0",
    )
    .expect("static metric options are valid");
    if let Err(e) = metrics.registry.register(Box::new(gauge.clone())) {
        tracing::warn!(error = %e, "rollwise_leader gauge not registered");
    }
    gauge
}

/// What this replica last saw of the Lease.
struct Observed {
    /// Its `resourceVersion`...
    version: Option<String>,
    /// ...and when this replica first saw that version (its own clock):
    /// the holder's claim runs `duration` from here.
    at: Instant,
    /// The holder it names (None: free).
    holder: Option<String>,
    /// How long the holder's claim lasts (its `leaseDurationSeconds`).
    duration: Duration,
}

enum Attempt {
    /// We hold the Lease (acquired or renewed).
    Holding,
    /// Someone else holds it, or we lost a race for it.
    Standby { holder: Option<String> },
}

/// Drives the Lease for one replica. See the module documentation.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    status: watch::Sender<ElectionStatus>,
    /// The Lease as last seen (GET or watch).
    observed: Option<Observed>,
    /// When the last successful acquire/renew started (while leading).
    last_renew: Option<Instant>,
    /// The last renewal failed without an answer about the Lease: retried
    /// every retry period until the renew deadline.
    renew_failed: bool,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        let (status, _) = watch::channel(ElectionStatus {
            role: Role::Standby,
            api_ok: false,
            holder: None,
            running: true,
        });
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock: Arc::new(SystemClock),
            status,
            observed: None,
            last_renew: None,
            renew_failed: false,
        }
    }

    /// Use `clock` for the timestamps written into the Lease.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// A read side of the status (the gate, readiness, metrics).
    pub fn handle(&self) -> LeaderHandle {
        LeaderHandle {
            rx: self.status.subscribe(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.status.borrow().is_leader()
    }

    fn publish(&self, role: Role, api_ok: bool, holder: Option<String>) {
        self.status.send_if_modified(|s| {
            let next = ElectionStatus {
                role,
                api_ok,
                holder,
                running: s.running,
            };
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    /// One attempt to acquire (standby) or renew (leader) the Lease, bounded
    /// by the renew deadline. Ok(true): this replica leads. A leader whose
    /// renewal fails in any way has lost the Lease: the status says so
    /// before this returns.
    pub async fn step(&mut self) -> Result<bool, ElectionError> {
        let was_leader = self.is_leader();
        let limit = match (was_leader, self.last_renew) {
            (true, Some(at)) => self.config.renew_deadline.saturating_sub(at.elapsed()),
            _ => self.config.renew_deadline,
        };
        let attempt = async {
            if limit.is_zero() {
                // Past the renew deadline: too late to renew, the Lease is
                // lost whatever the API would say.
                return Err(ElectionError::Timeout(self.config.renew_deadline));
            }
            match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
                Ok(r) => r.map_err(ElectionError::Api),
                Err(_) => Err(ElectionError::Timeout(limit)),
            }
        };
        let result = attempt.await;
        let me = &self.config.identity;
        self.renew_failed = false;
        match result {
            Err(e) if was_leader && e.is_transient() && self.before_renew_deadline() => {
                let left = self
                    .config
                    .renew_deadline
                    .saturating_sub(self.last_renew.map_or(Duration::MAX, |at| at.elapsed()));
                tracing::warn!(identity = %me, error = %e, left = ?left, "renewing the leader lease failed; retrying until the renew deadline");
                self.renew_failed = true;
                Err(e)
            }
            Ok(Attempt::Holding) => {
                if !was_leader {
                    tracing::info!(identity = %me, lease = %self.config.name, "acquired the leader lease");
                }
                self.publish(Role::Leader, true, Some(me.clone()));
                Ok(true)
            }
            Ok(Attempt::Standby { holder }) => {
                if was_leader {
                    tracing::warn!(identity = %me, holder = ?holder, "lost the leader lease: another replica holds it");
                    self.last_renew = None;
                } else {
                    tracing::debug!(identity = %me, holder = ?holder, "standby: the lease is held");
                }
                self.publish(Role::Standby, true, holder);
                Ok(false)
            }
            Err(e) => {
                if was_leader {
                    tracing::warn!(identity = %me, error = %e, "lost the leader lease: renewal failed");
                    self.last_renew = None;
                } else {
                    tracing::warn!(identity = %me, error = %e, "standby: cannot read or acquire the lease");
                }
                let holder = self.status.borrow().holder.clone();
                let holder = holder.filter(|h| h != me);
                let api_ok =
                    matches!(e, ElectionError::Api(kube::Error::Api(ref s)) if s.code == 409);
                self.publish(Role::Standby, api_ok, holder);
                Err(e)
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let now = MicroTime(self.clock.now());
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.config.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.see(&created, Instant::now());
                    self.last_renew = Some(started);
                    Ok(Attempt::Holding)
                }
                Err(e) if is_conflict(&e) => Ok(Attempt::Standby { holder: None }),
                Err(e) => Err(e),
            };
        };
        self.see(&lease, Instant::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(me.as_str());
        if self.is_leader() && !mine {
            // Someone else took or cleared the Lease while we led.
            return Ok(Attempt::Standby { holder });
        }
        if let Some(other) = holder.as_deref().filter(|_| !mine) {
            let (seen_at, duration) = self
                .observed
                .as_ref()
                .map_or((started, self.config.lease_duration), |o| {
                    (o.at, o.duration)
                });
            if seen_at.elapsed() < duration {
                return Ok(Attempt::Standby { holder });
            }
            tracing::info!(identity = %me, previous = %other, ?duration, "the leader lease expired: taking over");
        }
        if mine {
            spec.renew_time = Some(now);
        } else {
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(self.config.duration_seconds());
        // `lease` carries the resourceVersion we read: a concurrent writer
        // makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.see(&updated, Instant::now());
                self.last_renew = Some(started);
                Ok(Attempt::Holding)
            }
            Err(e) if is_conflict(&e) && !self.is_leader() => Ok(Attempt::Standby { holder }),
            Err(e) => Err(e),
        }
    }

    /// Note the Lease's version, holder and claim; the expiry clock restarts
    /// when the version changes. `at` is when this replica learnt of it: an
    /// old version seen late only makes the claim last longer, never less.
    fn see(&mut self, lease: &Lease, at: Instant) {
        let version = lease.metadata.resource_version.clone();
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let duration = spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|d| u64::try_from(d).ok())
            .filter(|d| *d > 0)
            .map_or(self.config.lease_duration, Duration::from_secs);
        let at = match &self.observed {
            Some(o) if o.version == version => o.at,
            _ => at,
        };
        self.observed = Some(Observed {
            version,
            at,
            holder,
            duration,
        });
    }

    /// A version of the Lease (or its deletion: `None`) seen on the watch.
    /// True when it is worth a step now rather than at the next timer: the
    /// leader sees another holder (or none: the step confirms it with a
    /// fresh read and reports the loss), a standby sees the Lease free.
    fn on_watched(&mut self, lease: Option<&Lease>) -> bool {
        let Some(lease) = lease else {
            return true;
        };
        self.see(lease, Instant::now());
        let me = self.config.identity.as_str();
        let holder = self.observed.as_ref().and_then(|o| o.holder.as_deref());
        if self.is_leader() {
            holder != Some(me)
        } else {
            holder.is_none()
        }
    }

    /// Give the Lease up if it names this replica, so a standby takes over
    /// at its next retry instead of waiting for expiry. The status flips to
    /// standby *before* the write (the gate closes first). Ok(true) if the
    /// Lease was released; a 409 (someone else wrote it since we read it)
    /// leaves it alone.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let holder = self.status.borrow().holder.clone();
        self.publish(Role::Standby, true, holder);
        self.last_renew = None;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(self.clock.now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %self.config.identity, "released the leader lease");
                self.publish(Role::Standby, true, None);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the renew deadline since the last successful renewal is still
    /// ahead.
    fn before_renew_deadline(&self) -> bool {
        self.last_renew
            .is_some_and(|at| at.elapsed() < self.config.renew_deadline)
    }

    /// How long to wait before the next step: the leader renews every renew
    /// period; a standby retries every retry period, and wakes exactly when
    /// the holder's claim (as it last saw it) expires if that is sooner.
    fn next_wait(&self) -> Duration {
        match (self.is_leader(), self.last_renew) {
            (true, Some(at)) if self.renew_failed => self
                .config
                .retry_period
                .min(self.config.renew_deadline.saturating_sub(at.elapsed())),
            (true, Some(at)) => self.config.renew_period.saturating_sub(at.elapsed()),
            _ => {
                let retry = self.config.retry_period;
                let expires_in = self
                    .observed
                    .as_ref()
                    .filter(|o| o.holder.as_deref() != Some(self.config.identity.as_str()))
                    .filter(|o| o.holder.is_some())
                    .map(|o| o.duration.saturating_sub(o.at.elapsed()))
                    .filter(|left| !left.is_zero());
                expires_in.map_or(retry, |left| left.min(retry))
            }
        }
    }

    /// Acquire and keep the Lease until `shutdown` resolves, then release it
    /// (if held) and stop. A lost Lease is reported on the status channel
    /// and the loop goes on as a standby.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let mut watch = LeaseWatch::new(self.api.clone(), &self.config);
        'run: loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = self.step() => {}
            }
            // Wait for the timer, or for a version of the Lease that calls
            // for a step now.
            loop {
                let wait = self.next_wait();
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'run,
                    seen = watch.next() => {
                        if self.on_watched(seen.as_ref()) {
                            break;
                        }
                    }
                    () = tokio::time::sleep(wait) => break,
                }
            }
        }
        let limit = self.config.renew_deadline.max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.release()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
        self.status.send_modify(|s| {
            s.role = Role::Standby;
            s.running = false;
        });
    }
}

type WatchStream = BoxStream<'static, Result<WatchEvent<Lease>, kube::Error>>;

/// A watch on the one Lease, restarted whenever it ends. It only makes the
/// elector react sooner (a leader sees another holder at once, a standby
/// sees the Lease released at once and the holder's renewals as they
/// happen); the timers alone are correct without it, so when the watch
/// fails (say RBAC grants no `watch`) the elector polls and the watch is
/// retried every lease duration.
struct LeaseWatch {
    api: Api<Lease>,
    params: WatchParams,
    identity: String,
    backoff: Duration,
    state: WatchState,
    /// A failure was logged at warn level (later ones at debug).
    warned: bool,
}

enum WatchState {
    Idle { retry_at: Option<Instant> },
    Connecting(BoxFuture<'static, Result<WatchStream, kube::Error>>),
    Streaming(WatchStream),
}

impl LeaseWatch {
    fn new(api: Api<Lease>, config: &LeaseConfig) -> Self {
        LeaseWatch {
            api,
            params: WatchParams::default()
                .fields(&format!("metadata.name={}", config.name))
                .timeout(290),
            identity: config.identity.clone(),
            backoff: config.lease_duration,
            state: WatchState::Idle { retry_at: None },
            warned: false,
        }
    }

    /// The next version of the Lease (`None`: it was deleted). Cancel-safe:
    /// a pending connection or backoff carries over to the next call.
    async fn next(&mut self) -> Option<Lease> {
        loop {
            match &mut self.state {
                WatchState::Idle { retry_at } => {
                    if let Some(at) = *retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                    let (api, params) = (self.api.clone(), self.params.clone());
                    // Empty resourceVersion: the current state first, then
                    // every change.
                    self.state = WatchState::Connecting(
                        async move { api.watch(&params, "").await.map(StreamExt::boxed) }.boxed(),
                    );
                }
                WatchState::Connecting(connect) => match connect.await {
                    Ok(stream) => self.state = WatchState::Streaming(stream),
                    Err(e) => self.failed(&e),
                },
                WatchState::Streaming(stream) => match stream.next().await {
                    Some(Ok(WatchEvent::Added(l) | WatchEvent::Modified(l))) => {
                        self.warned = false;
                        return Some(l);
                    }
                    Some(Ok(WatchEvent::Deleted(_))) => return None,
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    // Typically 410 Gone: start again from the current state.
                    Some(Ok(WatchEvent::Error(e))) => {
                        tracing::debug!(identity = %self.identity, error = %e, "the lease watch ended");
                        self.state = WatchState::Idle { retry_at: None };
                    }
                    Some(Err(e)) => self.failed(&e),
                    // The server's timeout: start again.
                    None => self.state = WatchState::Idle { retry_at: None },
                },
            }
        }
    }

    fn failed(&mut self, e: &kube::Error) {
        if self.warned {
            tracing::debug!(identity = %self.identity, error = %e, "cannot watch the leader lease");
        } else {
            let hint = match e {
                kube::Error::Api(s) if s.code == 403 => {
                    " (grant `watch` on this Lease: leases.coordination.k8s.io)"
                }
                _ => "",
            };
            tracing::warn!(
                identity = %self.identity,
                error = %e,
                retry_in = ?self.backoff,
                "cannot watch the leader lease{hint}: polling it instead, so a hand-over takes up to a retry period longer"
            );
            self.warned = true;
        }
        self.state = WatchState::Idle {
            retry_at: Some(Instant::now() + self.backoff),
        };
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
