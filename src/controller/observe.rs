//! Observation: read what the engine needs, on demand (no caches of
//! Deployments or Services, to keep the footprint small).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;

use super::{Result, with_timeout};
use crate::analysis::{
    CompareOutcome, CountsOutcome, MetricOutcome, QueryOutcome, render_query, render_window,
};
use crate::api::RolloutSpec;
use crate::plan::Plan;
use crate::plan::Readiness;

/// A referenced object that does not exist: the field that names it and
/// what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRef {
    pub field: &'static str,
    pub message: String,
}

/// The Services and Deployments the spec names.
pub struct References {
    pub missing: Vec<MissingRef>,
    pub canary: Readiness,
}

/// Whether a Deployment is fully available: its controller has seen the
/// latest spec, every replica is updated and available.
#[cfg(test)]
fn deployment_readiness(name: &str, d: &Deployment) -> Readiness {
    deployment_readiness_with(name, d, false)
}

/// As [`deployment_readiness`]; with `zero_ok` (the replicas router, whose
/// weight *is* the replica count) a Deployment scaled to 0 is ready: the
/// router scales it up with the weight.
pub fn deployment_readiness_with(name: &str, d: &Deployment, zero_ok: bool) -> Readiness {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    if st.observed_generation.unwrap_or(0) < generation {
        return Readiness::NotReady(format!(
            "deployment {name}: the new spec is not rolled out yet"
        ));
    }
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    if want == 0 {
        return if zero_ok {
            Readiness::Ready
        } else {
            Readiness::NotReady(format!("deployment {name} is scaled to 0 replicas"))
        };
    }
    if available < want || updated < want {
        return Readiness::NotReady(format!(
            "deployment {name}: {available}/{want} replicas available, {updated}/{want} updated"
        ));
    }
    Readiness::Ready
}

pub async fn references(client: &kube::Client, ns: &str, spec: &RolloutSpec) -> Result<References> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut missing = Vec::new();
    for (field, name) in [
        ("spec.stable.service", &spec.stable.service),
        ("spec.canary.service", &spec.canary.service),
    ] {
        if with_timeout("get service", services.get_opt(name))
            .await?
            .is_none()
        {
            missing.push(MissingRef {
                field,
                message: format!("Service {ns}/{name} not found"),
            });
        }
    }
    if let Some(name) = &spec.stable.deployment
        && with_timeout("get deployment", deployments.get_opt(name))
            .await?
            .is_none()
    {
        missing.push(MissingRef {
            field: "spec.stable.deployment",
            message: format!("Deployment {ns}/{name} not found"),
        });
    }
    let canary = match &spec.canary.deployment {
        None => Readiness::Ready,
        Some(name) => match with_timeout("get deployment", deployments.get_opt(name)).await? {
            Some(d) => deployment_readiness_with(name, &d, spec.traffic_routing.replicas.is_some()),
            None => {
                missing.push(MissingRef {
                    field: "spec.canary.deployment",
                    message: format!("Deployment {ns}/{name} not found"),
                });
                Readiness::NotReady(format!("deployment {name} not found"))
            }
        },
    };
    Ok(References { missing, canary })
}

/// Run every metric of the plan against the canary Service, concurrently.
pub async fn run_analysis(
    plan: &Plan,
    provider: &dyn crate::analysis::MetricsProvider,
    service: &str,
    namespace: &str,
    rollout: &str,
) -> Vec<MetricOutcome> {
    let futures = plan.metrics.iter().map(|m| {
        let q = render_query(&m.query, service, namespace, rollout);
        async move {
            MetricOutcome {
                name: m.name.clone(),
                outcome: provider.query(&q).await,
            }
        }
    });
    futures::future::join_all(futures).await
}

/// The two Services a comparison runs its queries for.
pub struct Sides<'a> {
    pub canary: &'a str,
    pub stable: &'a str,
    pub namespace: &'a str,
    pub rollout: &'a str,
}

/// Run every comparison: requests and failures, for canary and stable, on
/// the same window, concurrently.
pub async fn run_comparisons(
    plan: &Plan,
    provider: &dyn crate::analysis::MetricsProvider,
    sides: &Sides<'_>,
    window: std::time::Duration,
) -> Vec<CompareOutcome> {
    let side = |service: &str, c: &crate::plan::PlanCompare| {
        let requests = render_window(
            &render_query(&c.requests, service, sides.namespace, sides.rollout),
            window,
        );
        let failures = render_window(
            &render_query(&c.failures, service, sides.namespace, sides.rollout),
            window,
        );
        async move {
            let (r, f) = futures::join!(provider.query(&requests), provider.query(&failures));
            CountsOutcome::from_queries(r, f)
        }
    };
    let futures = plan.compare.iter().map(|c| {
        let canary = side(sides.canary, c);
        // A counted metric judges the canary against a fixed limit: stable
        // is not asked.
        let stable = (!c.tolerance.fixed).then(|| side(sides.stable, c));
        async move {
            let stable = async move {
                match stable {
                    Some(s) => s.await,
                    None => CountsOutcome::Counts(Default::default()),
                }
            };
            let (canary, stable) = futures::join!(canary, stable);
            CompareOutcome {
                name: c.name.clone(),
                canary,
                stable,
            }
        }
    });
    futures::future::join_all(futures).await
}

/// Outcome for every metric and comparison when the provider cannot even
/// be built.
pub fn all_errors(plan: &Plan, message: &str) -> (Vec<MetricOutcome>, Vec<CompareOutcome>) {
    let metrics = plan
        .metrics
        .iter()
        .map(|m| MetricOutcome {
            name: m.name.clone(),
            outcome: QueryOutcome::Error(message.to_string()),
        })
        .collect();
    let comparisons = plan
        .compare
        .iter()
        .map(|c| CompareOutcome {
            name: c.name.clone(),
            canary: CountsOutcome::Error(message.to_string()),
            stable: CountsOutcome::Error(message.to_string()),
        })
        .collect();
    (metrics, comparisons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn dep(
        replicas: i32,
        available: i32,
        updated: i32,
        generation: i64,
        observed: i64,
    ) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(available),
                updated_replicas: Some(updated),
                observed_generation: Some(observed),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deployment_is_ready_only_when_fully_available_and_updated() {
        assert_eq!(
            deployment_readiness("d", &dep(3, 3, 3, 2, 2)),
            Readiness::Ready
        );
        assert!(
            matches!(deployment_readiness("d", &dep(3, 2, 3, 2, 2)), Readiness::NotReady(m) if m.contains("2/3 replicas available"))
        );
        assert!(matches!(
            deployment_readiness("d", &dep(3, 3, 1, 2, 2)),
            Readiness::NotReady(_)
        ));
        assert!(
            matches!(deployment_readiness("d", &dep(3, 3, 3, 3, 2)), Readiness::NotReady(m) if m.contains("not rolled out"))
        );
        assert!(
            matches!(deployment_readiness("d", &dep(0, 0, 0, 1, 1)), Readiness::NotReady(m) if m.contains("scaled to 0"))
        );
    }
}
