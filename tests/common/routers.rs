//! Setup shared by the traffic-router tests against `kube-fake-client`: the
//! usual Services, fake clients, interceptors that count, conflict or edit
//! concurrently, raw-JSON reads of what the fake stores, and the checks every
//! CRD-backed router shares.
//!
//! The fake applies merge patches with `json_patch::merge` and enforces the
//! `metadata.resourceVersion` precondition, so interceptors that patch
//! "behind the router's back" produce real conflicts.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::{CustomResource, Resource};
use kube_fake_client::{ClientBuilder, interceptor};
use rollwise::traffic::{Backends, HeaderRoute, Match, TrafficError, TrafficRouter, WeightReading};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const NS: &str = "shop";
pub const STABLE: &str = "web-stable";
pub const CANARY: &str = "web-canary";

/// The stable and canary Services in [`NS`], without Deployments or owner.
pub fn backends() -> Backends {
    Backends {
        namespace: NS.into(),
        stable_service: STABLE.into(),
        canary_service: CANARY.into(),
        ..Default::default()
    }
}

/// The Rollout `web` as the controlling owner, with `uid`.
pub fn rollout_owner(uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "rollwise.io/v1alpha1".into(),
        kind: "Rollout".into(),
        name: "web".into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn reading(w: u8) -> WeightReading {
    WeightReading { canary: Some(w) }
}

/// A test-only registration of a namespaced kind in the fake (the routers
/// themselves use `DynamicObject`), its spec kept as raw JSON.
macro_rules! raw_kind {
    ($spec:ident, $group:tt, $version:tt, $kind:tt, $plural:tt) => {
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
        #[kube(
                                                                            group = $group,
                                                                            version = $version,
                                                                            kind = $kind,
                                                                            plural = $plural,
                                                                            namespaced,
                                                                            schema = "disabled",
                                                                            derive = "Default"
                                                                        )]
        pub struct $spec {
            #[serde(flatten)]
            fields: Map<String, Value>,
        }
    };
}

raw_kind!(
    VirtualServiceSpec,
    "networking.istio.io",
    "v1",
    "VirtualService",
    "virtualservices"
);
raw_kind!(
    TraefikServiceSpec,
    "traefik.io",
    "v1alpha1",
    "TraefikService",
    "traefikservices"
);
raw_kind!(
    TrafficSplitSpec,
    "split.smi-spec.io",
    "v1alpha2",
    "TrafficSplit",
    "trafficsplits"
);

/// A fake client from `builder` holding `objects`, with `funcs` intercepting.
pub async fn client_from(
    builder: ClientBuilder,
    objects: Vec<Value>,
    funcs: interceptor::Funcs,
) -> kube::Client {
    builder
        .with_runtime_objects(objects)
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .expect("fake client")
}

/// A fake client serving the kind `K`, holding `objects`, with `funcs`
/// intercepting.
pub async fn client_for<K>(objects: Vec<Value>, funcs: interceptor::Funcs) -> kube::Client
where
    K: Resource<DynamicType = ()>,
{
    client_from(ClientBuilder::new().with_resource::<K>(), objects, funcs).await
}

/// Defines a router test file's fixtures for the kind `$kind`, whose object
/// under test is `NS/$name`: `client_with(objects)`,
/// `client_with_interceptor(objects, funcs)` (fake clients serving the kind)
/// and `stored(client)` (the object as raw JSON).
#[allow(unused_macros)]
macro_rules! fixtures {
    ($kind:ty, $name:expr) => {
        async fn client_with(objects: Vec<serde_json::Value>) -> kube::Client {
            client_with_interceptor(objects, kube_fake_client::interceptor::Funcs::new()).await
        }

        async fn client_with_interceptor(
            objects: Vec<serde_json::Value>,
            funcs: kube_fake_client::interceptor::Funcs,
        ) -> kube::Client {
            $crate::common::routers::client_for::<$kind>(objects, funcs).await
        }

        /// The stored object under test, as raw JSON.
        async fn stored(client: &kube::Client) -> serde_json::Value {
            $crate::common::routers::stored_raw::<$kind>(client, $crate::common::routers::NS, $name)
                .await
        }
    };
}
#[allow(unused_imports)]
pub(crate) use fixtures;

/// A fake client that serves no custom kind at all (the CRD is not installed).
pub async fn client_without_crds() -> kube::Client {
    ClientBuilder::new().build().await.expect("fake client")
}

/// The stored `K` `namespace/name` as raw JSON (nothing dropped by a typed
/// struct); `None` when there is none.
pub async fn stored_opt<K>(client: &kube::Client, namespace: &str, name: &str) -> Option<Value>
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    api.get_opt(name)
        .await
        .expect("get")
        .map(|o| serde_json::to_value(o).expect("json"))
}

/// The stored `K` `namespace/name` as raw JSON; panics when there is none.
pub async fn stored_raw<K>(client: &kube::Client, namespace: &str, name: &str) -> Value
where
    K: Resource<DynamicType = ()>,
{
    stored_opt::<K>(client, namespace, name)
        .await
        .unwrap_or_else(|| panic!("{} {namespace}/{name} is stored", K::kind(&())))
}

/// Patches pass through; each one is counted in `counter`.
pub fn counting_patches(counter: &Arc<AtomicU32>) -> interceptor::Funcs {
    let counter = counter.clone();
    interceptor::Funcs::new().patch(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    })
}

/// Every patch is refused with a 409 (and counted in `counter`).
pub fn conflicting_patches(counter: &Arc<AtomicU32>) -> interceptor::Funcs {
    let counter = counter.clone();
    interceptor::Funcs::new().patch(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Err(kube_fake_client::Error::Conflict(
            "the object has been modified; please apply your changes to the latest version and try again".into(),
        ))
    })
}

/// Right before the first patch lands, someone else merge-patches `edit`
/// into the same `K`, which makes that patch stale (a 409); every patch is
/// counted in `counter`.
pub fn concurrent_edit<K>(counter: &Arc<AtomicU32>, edit: Value) -> interceptor::Funcs
where
    K: Resource + Serialize + DeserializeOwned + Default,
{
    let counter = counter.clone();
    interceptor::Funcs::new().patch(move |ctx| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            ctx.client
                .patch::<K>(ctx.namespace, ctx.name, &edit, ctx.params)?;
        }
        Ok(None)
    })
}

/// Patches of `K` are stored as sent, but the server answers with the
/// stored object changed by `answer` (a mutating webhook's stand-in).
pub fn adjusted_answers<K>(
    answer: impl Fn(&mut Value) + Send + Sync + 'static,
) -> interceptor::Funcs
where
    K: Resource + Serialize + DeserializeOwned + Default,
{
    interceptor::Funcs::new().patch(move |ctx| {
        let mut stored = serde_json::to_value(ctx.client.patch::<K>(
            ctx.namespace,
            ctx.name,
            ctx.patch,
            ctx.params,
        )?)
        .expect("json");
        answer(&mut stored);
        Ok(Some(stored))
    })
}

pub fn header(name: &str, value: &str) -> Match {
    Match::Header {
        name: name.into(),
        value: value.into(),
    }
}

pub fn cookie(name: &str, value: &str) -> Match {
    Match::Cookie {
        name: name.into(),
        value: value.into(),
    }
}

/// Without the CRD, `verify`, `set_weight` and `restore_stable` all fail
/// with `CrdMissing` naming `crd`, a configuration error.
pub async fn assert_crd_missing(router: &dyn TrafficRouter, crd: &str) {
    for err in [
        router.verify().await.expect_err("no CRD"),
        router.set_weight(10).await.expect_err("no CRD"),
        router.restore_stable().await.expect_err("no CRD"),
    ] {
        assert!(
            matches!(&err, TrafficError::CrdMissing { crd: missing } if missing == crd),
            "{err:?}"
        );
        assert!(err.is_configuration());
    }
}

/// No header routes is fine; one is `Unsupported` by router `name`.
pub async fn assert_header_routes_unsupported(
    router: &dyn TrafficRouter,
    name: &'static str,
    matches: Vec<Match>,
) {
    router.set_header_routes(&[]).await.expect("none is fine");
    let err = router
        .set_header_routes(&[HeaderRoute {
            name: "beta".into(),
            matches,
        }])
        .await
        .expect_err("unsupported");
    assert!(
        matches!(err, TrafficError::Unsupported { router, .. } if router == name),
        "{err:?}"
    );
}

/// The router `router_for` built is `name`, reads `read` and writes 60.
pub async fn assert_built(router: &dyn TrafficRouter, name: &str, read: u8) {
    assert_eq!(router.name(), name);
    assert_eq!(router.current_weight().await.expect("read"), reading(read));
    assert_eq!(router.set_weight(60).await.expect("set"), reading(60));
}
