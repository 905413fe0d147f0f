//! The operator's Kubernetes client: the usual one (kubeconfig, or the pod's
//! ServiceAccount), with every request it makes counted by verb, resource
//! and status code in `rollwise_kube_requests_total`: what the operator costs
//! the API server, read off its own `/metrics` (the fleet benchmark reports
//! it per Rollout and while idle).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use kube::client::{Body, ClientBuilder};
use prometheus::IntCounterVec;
use tower::{Layer, Service};

/// A client for the cluster `kube::Config::infer` finds, counting requests
/// in `requests`.
pub async fn counted_client(requests: IntCounterVec) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountRequests { requests })
        .build())
}

/// Counts each request once its response head has arrived (for a watch:
/// when the watch starts).
#[derive(Clone)]
pub struct CountRequests {
    requests: IntCounterVec,
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            requests: self.requests.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    requests: IntCounterVec,
}

impl<S, B> Service<Request<Body>> for Counted<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query());
        let requests = self.requests.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(r) => status_label(r.status().as_u16()),
                Err(_) => "error",
            };
            requests.with_label_values(&[verb, &resource, code]).inc();
            result
        })
    }
}

/// A fixed label for a status code (bounded cardinality).
fn status_label(code: u16) -> &'static str {
    match code {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        410 => "410",
        422 => "422",
        429 => "429",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The Kubernetes verb and resource (`deployments`, `rollouts/status`) of a
/// request, from its method and path.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        // A namespaced resource (but not the Namespace object itself).
        ["namespaces", _ns, resource, more @ ..] => {
            let mut r = vec![*resource];
            r.extend_from_slice(more);
            r
        }
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
    });
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        let cases = [
            (
                Method::GET,
                "/apis/rollwise.io/v1alpha1/namespaces/shop/rollouts/checkout",
                None,
                "get",
                "rollouts",
            ),
            (
                Method::GET,
                "/apis/rollwise.io/v1alpha1/rollouts",
                Some("limit=1"),
                "list",
                "rollouts",
            ),
            (
                Method::GET,
                "/apis/rollwise.io/v1alpha1/rollouts",
                Some("watch=true&resourceVersion=5"),
                "watch",
                "rollouts",
            ),
            (
                Method::PATCH,
                "/apis/rollwise.io/v1alpha1/namespaces/shop/rollouts/checkout/status",
                None,
                "patch",
                "rollouts/status",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/shop/deployments/checkout-v2",
                None,
                "get",
                "deployments",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/services/checkout-v1",
                None,
                "get",
                "services",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                None,
                "create",
                "events",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/rw/leases/rollwise-leader",
                None,
                "update",
                "leases",
            ),
            (
                Method::DELETE,
                "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/x-canary",
                None,
                "delete",
                "ingresses",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop",
                None,
                "get",
                "namespaces",
            ),
            (Method::GET, "/version", None, "list", "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(
                classify(&method, path, query),
                (verb, resource.to_string()),
                "{method} {path}"
            );
        }
    }
}
