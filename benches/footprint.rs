//! Footprint benchmark: what the operator holds per cached Rollout, and what
//! one pure decision costs. Run with `cargo bench --bench footprint`; it
//! prints a report and writes it to `docs/benchmarks/footprint.md`.
//!
//! Goal: a 10,000-Rollout fleet in 64 MiB. The benchmark exits non-zero when
//! the realistic cache cost (trimmed objects in the reflector store) exceeds
//! 6,400 bytes per Rollout (64 MB / 10,000). Nothing here is a timed test:
//! times are reported, never asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::{reflector, watcher};
use rollwise::analysis::{MetricOutcome, QueryOutcome};
use rollwise::api::{Rollout, RolloutSpec, RolloutStatus};
use rollwise::plan::{AnalysisRound, Observation, Readiness, decide};
use rollwise::status::{self, build_conditions};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Counting allocator

/// `System`, counting live bytes and allocations while `COUNTING` is on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(true);
/// Live bytes as requested by the program.
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Live bytes as glibc malloc would hold them (chunk header + 16-byte
/// rounding, 32-byte minimum): a model, not a measurement.
static LIVE_CHUNKS: AtomicU64 = AtomicU64::new(0);
/// Live allocations.
static LIVE_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations made, ever.
static TOTAL_ALLOCS: AtomicU64 = AtomicU64::new(0);

fn chunk(size: usize, align: usize) -> u64 {
    let base = (size + 8 + 15) & !15;
    (base.max(32) + if align > 16 { align } else { 0 }) as u64
}

fn on_alloc(size: usize, align: usize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(size as u64, Relaxed);
        LIVE_CHUNKS.fetch_add(chunk(size, align), Relaxed);
        LIVE_ALLOCS.fetch_add(1, Relaxed);
        TOTAL_ALLOCS.fetch_add(1, Relaxed);
    }
}

/// A realloc is one allocation, resized (not a new one).
fn on_realloc(old: usize, new: usize, align: usize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(new as u64, Relaxed);
        LIVE.fetch_sub(old as u64, Relaxed);
        LIVE_CHUNKS.fetch_add(chunk(new, align), Relaxed);
        LIVE_CHUNKS.fetch_sub(chunk(old, align), Relaxed);
    }
}

fn on_dealloc(size: usize, align: usize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_sub(size as u64, Relaxed);
        LIVE_CHUNKS.fetch_sub(chunk(size, align), Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters have
// no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size(), layout.align());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size(), layout.align());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        on_dealloc(layout.size(), layout.align());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_realloc(layout.size(), new_size, layout.align());
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What glibc malloc itself reports as in use (chunks with their headers,
/// small and mmapped), measured with `mallinfo2` (glibc 2.33+).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_in_use() -> Option<u64> {
    #[repr(C)]
    struct Mallinfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> Mallinfo2;
    }
    // SAFETY: glibc's mallinfo2 takes no arguments and returns a plain struct.
    let m = unsafe { mallinfo2() };
    Some((m.uordblks + m.hblkhd) as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_in_use() -> Option<u64> {
    None
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    bytes: u64,
    chunks: u64,
    allocs: u64,
    heap: Option<u64>,
}

fn snapshot() -> Snapshot {
    Snapshot {
        bytes: LIVE.load(Relaxed),
        chunks: LIVE_CHUNKS.load(Relaxed),
        allocs: LIVE_ALLOCS.load(Relaxed),
        heap: malloc_in_use(),
    }
}

/// Live memory held since `base`, per object.
#[derive(Debug, Clone, Copy)]
struct PerObject {
    /// Bytes the program asked for.
    bytes: f64,
    /// The glibc chunk model of those allocations.
    chunks: f64,
    /// What malloc reports in use (`mallinfo2`), when available.
    heap: Option<f64>,
    allocs: f64,
}

impl PerObject {
    /// What the allocator really holds: measured when possible, else the model.
    fn malloc(&self) -> f64 {
        self.heap.unwrap_or(self.chunks).max(self.bytes)
    }
}

fn per_object(base: Snapshot, now: Snapshot, n: usize) -> PerObject {
    let n = n as f64;
    PerObject {
        bytes: now.bytes.saturating_sub(base.bytes) as f64 / n,
        chunks: now.chunks.saturating_sub(base.chunks) as f64 / n,
        heap: base
            .heap
            .zip(now.heap)
            .map(|(b, a)| a.saturating_sub(b) as f64 / n),
        allocs: now.allocs.saturating_sub(base.allocs) as f64 / n,
    }
}

// ---------------------------------------------------------------------------
// Realistic objects

const FLEET: usize = 10_000;
/// 64 MB / 10,000 Rollouts (64 MiB would allow 6,710).
const BUDGET_PER_ROLLOUT: f64 = 6_400.0;
const BUDGET_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

const WORDS: [&str; 12] = [
    "checkout",
    "payments-api",
    "search",
    "cart",
    "recommendations",
    "auth",
    "inventory-sync",
    "catalog",
    "shipping-quotes",
    "notifications",
    "user-profile",
    "pricing-engine",
];

fn app_name(i: usize) -> String {
    format!("{}-{:04}", WORDS[i % WORDS.len()], i)
}

const QUERY: &str = "sum(rate(http_requests_total{service=\"{{service}}\",code=~\"5..\"}[1m])) / sum(rate(http_requests_total{service=\"{{service}}\"}[1m]))";

/// A 10-step spec with one metric.
fn spec_json(app: &str) -> Value {
    json!({
        "stable": {"service": format!("{app}-stable"), "deployment": format!("{app}-v41")},
        "canary": {"service": format!("{app}-canary"), "deployment": format!("{app}-v42")},
        "trafficRouting": {"gatewayAPI": {"httpRoute": app}},
        "steps": [
            {"setWeight": 5}, {"pause": {"duration": "1m"}},
            {"setWeight": 10}, {"pause": {"duration": "2m"}},
            {"setWeight": 25}, {"pause": {"duration": "5m"}},
            {"setWeight": 50}, {"pause": {"duration": "5m"}},
            {"setWeight": 75}, {"pause": {"duration": "10m"}}
        ],
        "analysis": {
            "interval": "30s",
            "prometheus": {"address": "http://prometheus-operated.monitoring.svc:9090"},
            "metrics": [{"name": "error-rate", "query": QUERY, "max": 0.02, "failureLimit": 1}],
            "consecutiveErrorLimit": 4
        }
    })
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": 3, "lastTransitionTime": at})
}

/// Mid-rollout status as the operator writes it: step 6/10 (pause 5m at 25%)
/// with an analysis entry, the last decision and the five conditions.
fn status_json(app: &str) -> Value {
    let msg = "step 6/10: 25% on the canary, pause 3m left; error-rate = 0.004 (within <= 0.02)";
    json!({
        "phase": "Progressing",
        "currentStepIndex": 5,
        "stepCount": 10,
        "step": "6/10",
        "canaryWeight": 25,
        "desiredWeight": 25,
        "stepStartedAt": "2026-03-02T10:12:00Z",
        "canaryRef": format!("{app}-canary/{app}-v42"),
        "observedGeneration": 3,
        "message": msg,
        "verdict": "Pass",
        "lastAnalysisAt": "2026-03-02T10:13:30Z",
        "passesInStep": 3,
        "consecutiveErrors": 0,
        "analysis": [{
            "name": "error-rate", "value": 0.004, "max": 0.02, "verdict": "Pass",
            "failures": 0, "failureLimit": 1,
            "message": "error-rate = 0.004 (within <= 0.02)",
            "measuredAt": "2026-03-02T10:13:30Z"
        }],
        "lastDecision": {"kind": "Hold", "reason": "PauseInProgress", "message": msg, "at": "2026-03-02T10:14:00Z"},
        "conditions": [
            condition("Ready", "True", "Valid", "spec is valid and its references exist", "2026-03-01T08:00:02Z"),
            condition("Progressing", "True", "PauseInProgress", msg, "2026-03-02T10:00:00Z"),
            condition("Paused", "False", "NotPaused", "", "2026-03-01T08:00:02Z"),
            condition("Completed", "False", "NotCompleted", "", "2026-03-01T08:00:02Z"),
            condition("RolledBack", "False", "NotRolledBack", "", "2026-03-01T08:00:02Z")
        ]
    })
}

/// `f:`-keyed fieldsV1 tree of the spec above, as the API server records it.
fn spec_fields() -> Value {
    json!({
        ".": {},
        "f:analysis": {".": {}, "f:consecutiveErrorLimit": {}, "f:interval": {}, "f:metrics": {},
                       "f:prometheus": {".": {}, "f:address": {}}},
        "f:canary": {".": {}, "f:deployment": {}, "f:service": {}},
        "f:stable": {".": {}, "f:deployment": {}, "f:service": {}},
        "f:steps": {},
        "f:trafficRouting": {".": {}, "f:gatewayAPI": {".": {}, "f:httpRoute": {}}}
    })
}

fn status_fields() -> Value {
    let cond = json!({".": {}, "f:lastTransitionTime": {}, "f:message": {}, "f:observedGeneration": {},
                      "f:reason": {}, "f:status": {}, "f:type": {}});
    let mut conditions = serde_json::Map::new();
    for t in ["Completed", "Paused", "Progressing", "Ready", "RolledBack"] {
        conditions.insert(format!("k:{{\"type\":\"{t}\"}}"), cond.clone());
    }
    json!({
        "f:status": {
            "f:analysis": {}, "f:canaryRef": {}, "f:canaryWeight": {}, "f:conditions": conditions,
            "f:consecutiveErrors": {}, "f:currentStepIndex": {}, "f:desiredWeight": {},
            "f:lastAnalysisAt": {}, "f:lastDecision": {".": {}, "f:at": {}, "f:kind": {}, "f:message": {}, "f:reason": {}},
            "f:message": {}, "f:observedGeneration": {}, "f:passesInStep": {}, "f:phase": {},
            "f:step": {}, "f:stepCount": {}, "f:stepStartedAt": {}, "f:verdict": {}
        }
    })
}

/// One Rollout as the API server sends it in a list or watch event.
fn rollout_json(i: usize) -> String {
    let app = app_name(i);
    let ns = format!("team-{:02}", i % 40);
    let labels = json!({
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/part-of": WORDS[i % WORDS.len()],
        "app.kubernetes.io/managed-by": "kubectl",
        "team": ns,
        "environment": "production"
    });
    let spec = spec_json(&app);
    let last_applied = json!({
        "apiVersion": "rollwise.io/v1alpha1", "kind": "Rollout",
        "metadata": {"annotations": {}, "labels": labels, "name": app, "namespace": ns},
        "spec": spec
    });
    let mut fields_kubectl = json!({
        "f:metadata": {
            "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
            "f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {}, "f:app.kubernetes.io/name": {},
                         "f:app.kubernetes.io/part-of": {}, "f:environment": {}, "f:team": {}}
        }
    });
    fields_kubectl["f:spec"] = spec_fields();
    let object = json!({
        "apiVersion": "rollwise.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": app,
            "namespace": ns,
            "uid": format!("{:08x}-5c1e-4d7a-9f3b-{:012x}", 0x3a7b_0000_u32 + i as u32, 0x0042_dead_beef_u64 + i as u64 * 7919),
            "resourceVersion": format!("{}", 48_213_377 + i * 13),
            "generation": 3,
            "creationTimestamp": "2026-03-01T08:00:00Z",
            "labels": labels,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": format!("{last_applied}\n")
            },
            "finalizers": ["rollwise.io/restore-stable"],
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update",
                 "apiVersion": "rollwise.io/v1alpha1", "time": "2026-03-02T10:11:58Z",
                 "fieldsType": "FieldsV1", "fieldsV1": fields_kubectl},
                {"manager": "rollwise", "operation": "Update",
                 "apiVersion": "rollwise.io/v1alpha1", "time": "2026-03-01T08:00:01Z",
                 "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:finalizers": {".": {}, "v:\"rollwise.io/restore-stable\"": {}}}}},
                {"manager": "rollwise", "operation": "Apply",
                 "apiVersion": "rollwise.io/v1alpha1", "time": "2026-03-02T10:14:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": status_fields(), "subresource": "status"}
            ]
        },
        "spec": spec,
        "status": status_json(&app)
    });
    serde_json::to_string(&object).expect("serializes")
}

use rollwise::controller::{trim, trim_meta};

struct Memory {
    json_bytes: f64,
    untrimmed: PerObject,
    trimmed: PerObject,
    managed_fields_slack: usize,
    compact: PerObject,
    parts: [(&'static str, PerObject); 3],
    full_store: PerObject,
    store: PerObject,
    rollout_size: usize,
    store_len: usize,
}

fn measure_memory() -> Memory {
    // Warm up lazily-initialised statics (none expected) outside the window.
    drop(serde_json::from_str::<Rollout>(&rollout_json(0)).expect("parses"));

    let base = snapshot();
    let mut json_total = 0usize;
    let mut objects: Vec<Rollout> = Vec::with_capacity(FLEET);
    for i in 0..FLEET {
        let text = rollout_json(i);
        json_total += text.len();
        let r: Rollout = serde_json::from_str(&text).expect("a realistic Rollout parses");
        objects.push(r);
    }
    let untrimmed = per_object(base, snapshot(), FLEET);
    assert_eq!(objects[17].managed_fields().len(), 3);
    assert!(
        objects[17]
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.len() == 5)
    );

    for r in &mut objects {
        trim(r);
    }
    let trimmed = per_object(base, snapshot(), FLEET);
    assert!(objects[17].managed_fields().is_empty() && objects[17].annotations().is_empty());
    // `trim` clears managedFields in place: the vector keeps its buffer.
    let managed_fields_slack = objects[17]
        .metadata
        .managed_fields
        .as_ref()
        .map_or(0, Vec::capacity)
        * std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>();

    // A clone is exact-sized (no Vec growth slack from parsing, no cleared
    // buffers): that is what the store's `Arc` holds.
    let before_clones = snapshot();
    let clones: Vec<Rollout> = objects.clone();
    let compact = per_object(before_clones, snapshot(), FLEET);
    drop(clones);

    // Where the compact object's bytes are: each part cloned on its own
    // (inline size included, as in the object).
    let part = |clone_all: &dyn Fn() -> Box<dyn std::any::Any>| {
        let before = snapshot();
        let held = clone_all();
        let p = per_object(before, snapshot(), FLEET);
        drop(held);
        p
    };
    let parts = [
        (
            "metadata (trimmed)",
            part(&|| {
                Box::new(
                    objects
                        .iter()
                        .map(|r| r.metadata.clone())
                        .collect::<Vec<_>>(),
                )
            }),
        ),
        (
            "spec",
            part(&|| Box::new(objects.iter().map(|r| r.spec.clone()).collect::<Vec<_>>())),
        ),
        (
            "status",
            part(&|| Box::new(objects.iter().map(|r| r.status.clone()).collect::<Vec<_>>())),
        ),
    ];

    // A reflector store of whole trimmed Rollouts (Arc per object, ObjectRef
    // key, AHashMap), filled as on the initial list: for comparison.
    let full_store = {
        let before = snapshot();
        let (reader, mut writer) = reflector::store::<Rollout>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for r in &objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(r.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let p = per_object(before, snapshot(), FLEET);
        drop((reader, writer));
        p
    };

    // What the operator really keeps: a metadata-only watch, trimmed with
    // `trim_meta`; each reconcile reads its one Rollout fresh.
    let metas: Vec<PartialObjectMeta<Rollout>> = objects
        .iter()
        .map(|r| {
            let mut m: PartialObjectMeta<Rollout> =
                r.metadata.clone().into_request_partial::<Rollout>();
            trim_meta(&mut m);
            m
        })
        .collect();
    drop(objects);
    let before_store = snapshot();
    let (reader, mut writer) = reflector::store::<PartialObjectMeta<Rollout>>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for m in &metas {
        writer.apply_watcher_event(&watcher::Event::InitApply(m.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let store = per_object(before_store, snapshot(), FLEET);
    let store_len = reader.len();
    drop(metas);
    drop((reader, writer));
    let _ = base;

    Memory {
        json_bytes: json_total as f64 / FLEET as f64,
        untrimmed,
        trimmed,
        managed_fields_slack,
        compact,
        parts,
        full_store,
        store,
        rollout_size: std::mem::size_of::<Rollout>(),
        store_len,
    }
}

// ---------------------------------------------------------------------------
// decide + build_conditions

struct Scenario {
    name: &'static str,
    ns: Vec<f64>,
    allocs: u64,
    kind: &'static str,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn now() -> Timestamp {
    "2026-03-02T10:14:30Z".parse().expect("timestamp")
}

fn one_call(
    plan: &rollwise::plan::Plan,
    prev: &RolloutStatus,
    obs: &Observation,
    at: Timestamp,
) -> rollwise::plan::Decision {
    let mut d = decide(plan, prev, obs, at);
    build_conditions(
        &mut d.status,
        &status::Readiness::Ready,
        d.reason.as_str(),
        &d.message,
        obs.generation,
        plan.pause_deadline,
        at,
    );
    d
}

const ITERATIONS: u32 = 200_000;
const RUNS: usize = 5;

fn time_scenario(name: &'static str, step_started: SignedDuration) -> Scenario {
    let app = app_name(42);
    let spec: RolloutSpec = serde_json::from_value(spec_json(&app)).expect("spec parses");
    let plan = rollwise::plan::validate(&spec).expect("the 10-step spec is valid");
    assert_eq!(plan.steps.len(), 10);
    let mut prev: RolloutStatus = serde_json::from_value(status_json(&app)).expect("status parses");
    let at = now();
    prev.step_started_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        at - step_started,
    ));
    prev.last_analysis_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        at - SignedDuration::from_secs(30),
    ));
    assert!(
        rollwise::plan::analysis_due(&plan, &prev, 25, at),
        "an analysis round is due"
    );
    let obs = Observation {
        generation: 3,
        canary: Readiness::Ready,
        actual_weight: Some(25),
        analysis: Some(AnalysisRound {
            at,
            outcomes: vec![MetricOutcome {
                name: "error-rate".into(),
                outcome: QueryOutcome::Value(0.0041),
            }],
            comparisons: vec![],
        }),
        action: None,
        checks: vec![],
    };

    // Allocations of one call (counted), then timing with the counters off.
    let before = TOTAL_ALLOCS.load(Relaxed);
    let d = one_call(&plan, &prev, &obs, at);
    let allocs = TOTAL_ALLOCS.load(Relaxed) - before;
    let kind = d.kind.as_str();
    assert_eq!(d.status.conditions.len(), 5);
    drop(d);

    let run = || {
        let start = Instant::now();
        for _ in 0..ITERATIONS {
            let d = one_call(
                black_box(&plan),
                black_box(&prev),
                black_box(&obs),
                black_box(at),
            );
            black_box(&d);
        }
        start.elapsed()
    };
    // Allocated while counting is on, so that it is also freed that way.
    let mut ns = Vec::with_capacity(RUNS);
    COUNTING.store(false, Relaxed);
    run(); // warm-up
    for _ in 0..RUNS {
        ns.push(run().as_nanos() as f64 / f64::from(ITERATIONS));
    }
    COUNTING.store(true, Relaxed);
    Scenario {
        name,
        ns,
        allocs,
        kind,
    }
}

// ---------------------------------------------------------------------------
// Report

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    let started = Instant::now();
    let mem = measure_memory();
    let hold = time_scenario(
        "hold mid-pause (most reconciles)",
        SignedDuration::from_mins(2),
    );
    let advance = time_scenario(
        "pause over, analysis passed: advance",
        SignedDuration::from_mins(6),
    );
    let elapsed = started.elapsed();

    let store_fleet = mem.store.bytes * FLEET as f64;
    let store_fleet_malloc = mem.store.malloc() * FLEET as f64;
    // Gate on what malloc holds, the figure the process's memory limit sees.
    let gated = mem.store.malloc();
    let malloc_source = if mem.store.heap.is_some() {
        "measured with glibc `mallinfo2`"
    } else {
        "glibc chunk model: no `mallinfo2` on this platform"
    };
    let within = gated <= BUDGET_PER_ROLLOUT;

    let mut r = String::new();
    let w = &mut r;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(w, "# Footprint benchmark\n");
    let _ = writeln!(
        w,
        "Generated by `benches/footprint.rs`; do not edit by hand, rerun it.\n"
    );
    let _ = writeln!(
        w,
        "- Date: {}",
        Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(
        w,
        "- Machine: {cores} cores (`nproc`), {}; load average at start {load} (a shared machine \
         makes the times noisy; the memory figures do not depend on load)",
        cpu_model()
    );
    let _ = writeln!(
        w,
        "- Toolchain: {}; bench profile (optimised); glibc `malloc` via `std::alloc::System`",
        command_output("rustc", &["--version"]).unwrap_or_else(|| "rustc (version unknown)".into())
    );
    let _ = writeln!(
        w,
        "- Command: `cargo bench --bench footprint` (ran in {:.1} s, build excluded)\n",
        elapsed.as_secs_f64()
    );

    let _ = writeln!(w, "## Memory per cached Rollout ({FLEET} objects)\n");
    let _ = writeln!(
        w,
        "Each object is parsed from the JSON the API server sends: labels, uid, resourceVersion, \
         creationTimestamp, a finalizer, `managedFields` (kubectl-client-side-apply on metadata+spec; \
         rollwise for the finalizer and, server-side apply, on status), the \
         `kubectl.kubernetes.io/last-applied-configuration` annotation, a 10-step spec with one metric \
         and a full status (5 conditions, one analysis entry, the last decision). Names vary per object.\n"
    );
    let _ = writeln!(
        w,
        "\"Asked\" is live heap bytes counted by a global allocator wrapping `System` (what the \
         program asked for, including the inline `Rollout` value of {} bytes: metadata {}, spec {}, \
         status {}). \"malloc\" is what glibc malloc holds for it, chunk headers and rounding \
         included ({malloc_source}; the chunk model gives {:.0} bytes for the store row). \
         Shares and totals use the malloc figure.\n",
        mem.rollout_size,
        std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        std::mem::size_of::<RolloutSpec>(),
        std::mem::size_of::<Option<RolloutStatus>>(),
        mem.store.chunks
    );
    let _ = writeln!(
        w,
        "| What | asked / Rollout | malloc / Rollout | allocations / Rollout | for {FLEET} | share of 64 MiB |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| Serialized JSON (for comparison) | {:.0} | – | – | {:.1} MiB | {:.0}% |",
        mem.json_bytes,
        mib(mem.json_bytes * FLEET as f64),
        100.0 * mem.json_bytes * FLEET as f64 / BUDGET_BYTES
    );
    for (what, p) in [
        ("Parsed, untrimmed", mem.untrimmed),
        (
            "After `trim` (in place, as the watch event carries it)",
            mem.trimmed,
        ),
        (
            "After `trim`, exact-sized clone (the object the store's `Arc` holds)",
            mem.compact,
        ),
        (
            "Reflector store of whole trimmed Rollouts (not what the operator keeps; for comparison)",
            mem.full_store,
        ),
        (
            &*format!(
                "**Reflector store of the metadata-only watch** (what the operator keeps: `trim_meta`, `Arc` + `ObjectRef` key + `AHashMap`, {} objects)",
                mem.store_len
            ),
            mem.store,
        ),
    ] {
        let _ = writeln!(
            w,
            "| {what} | {:.0} | {:.0} | {:.1} | {:.1} MiB | {:.1}% |",
            p.bytes,
            p.malloc(),
            p.allocs,
            mib(p.malloc() * FLEET as f64),
            100.0 * p.malloc() * FLEET as f64 / BUDGET_BYTES
        );
    }
    let _ = writeln!(
        w,
        "\nWhere the exact-sized object's bytes are (each part cloned on its own):\n"
    );
    let _ = writeln!(
        w,
        "| Part | asked / Rollout | malloc / Rollout | allocations / Rollout |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|");
    for (what, p) in &mem.parts {
        let _ = writeln!(
            w,
            "| {what} | {:.0} | {:.0} | {:.1} |",
            p.bytes,
            p.malloc(),
            p.allocs
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(
        w,
        "## CPU: one `decide` + `status::build_conditions` (10-step plan, analysis round)\n"
    );
    let _ = writeln!(
        w,
        "{ITERATIONS} iterations per run, {RUNS} runs after a warm-up, wall time, median reported; \
         the allocation counters are off while timing.\n"
    );
    let _ = writeln!(
        w,
        "| Scenario | decision | median ns / call | min | max | allocations / call |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|");
    for s in [&hold, &advance] {
        let mut ns = s.ns.clone();
        let med = median(&mut ns);
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} |",
            s.name,
            s.kind,
            med,
            ns[0],
            ns[ns.len() - 1],
            s.allocs
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Interpretation\n");
    let _ = writeln!(
        w,
        "- The cache of {FLEET} Rollouts holds {:.1} MiB of malloc heap in the reflector store \
         ({:.1} MiB asked for; the rest is malloc's chunk headers and rounding over {:.0} \
         allocations per Rollout): {:.0}% of the 64 MiB budget, leaving {:.1} MiB for the \
         runtime, TLS, HTTP, the controller's queues and allocator fragmentation, none of which is \
         measured here.",
        mib(store_fleet_malloc),
        mib(store_fleet),
        mem.store.allocs,
        100.0 * store_fleet_malloc / BUDGET_BYTES,
        mib(BUDGET_BYTES - store_fleet_malloc)
    );
    let _ = writeln!(
        w,
        "- `trim` removes {:.0}% of the parsed object ({:.0} → {:.0} bytes of malloc heap); without it \
         the cache alone would need {:.0} MiB.",
        100.0 * (1.0 - mem.trimmed.malloc() / mem.untrimmed.malloc()),
        mem.untrimmed.malloc(),
        mem.trimmed.malloc(),
        mib(mem.untrimmed.malloc() * FLEET as f64)
    );
    let _ = writeln!(
        w,
        "- The operator watches Rollouts with a metadata-only watch and caches only trimmed \
         metadata (name, namespace, uid, resourceVersion, generation, finalizers, the action \
         annotation); every reconcile reads the one Rollout it works on. A cache of whole trimmed \
         Rollouts would hold {:.0} bytes (malloc) per Rollout ({:.1} MiB for {FLEET}); the \
         `managedFields` buffer left by an in-place clear was {} bytes before `trim` dropped the \
         vector.",
        mem.full_store.malloc(),
        mib(mem.full_store.malloc() * FLEET as f64),
        mem.managed_fields_slack,
    );
    let mut h = hold.ns.clone();
    let mut a = advance.ns.clone();
    let (h, a) = (median(&mut h), median(&mut a));
    let (lo, hi) = (h.min(a), h.max(a));
    let range = |lo: f64, hi: f64, digits: usize| {
        let (l, h) = (format!("{lo:.digits$}"), format!("{hi:.digits$}"));
        if l == h { l } else { format!("{l}–{h}") }
    };
    let _ = writeln!(
        w,
        "- One decision with its status costs {} µs of CPU on this machine: reconciling every one \
         of the {FLEET} Rollouts once spends {} ms in the engine, negligible next to the API calls \
         each reconcile makes.",
        range(lo / 1000.0, hi / 1000.0, 1),
        range(lo * FLEET as f64 / 1e6, hi * FLEET as f64 / 1e6, 0)
    );
    let _ = writeln!(
        w,
        "- Gate: the benchmark exits non-zero when the reflector store holds more than \
         {BUDGET_PER_ROLLOUT:.0} bytes of malloc heap per Rollout (64 MB / {FLEET}; 64 MiB would \
         allow 6,710). This run: {:.0} bytes, **{}**.",
        gated,
        if within {
            "within budget"
        } else {
            "OVER BUDGET"
        }
    );

    print!("{r}");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks/footprint.md");
    if let Err(e) = std::fs::create_dir_all(path.parent().expect("has a parent"))
        .and_then(|()| std::fs::write(&path, &r))
    {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("report written to {}", path.display());
    if within {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "FAIL: {gated:.0} bytes per cached Rollout exceeds the budget of {BUDGET_PER_ROLLOUT:.0}"
        );
        ExitCode::FAILURE
    }
}
