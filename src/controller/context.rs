use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::analysis::provider::prometheus::PrometheusProvider;
use crate::analysis::{MetricsProvider, ProviderError};
use crate::clock::{Clock, SystemClock};
use crate::events::Events;
use crate::metrics::Metrics;

/// Builds (and caches) the metrics provider for an address. The operator
/// uses [`PrometheusProviders`]; tests and the demo plug in simulated ones.
pub trait ProviderFactory: Send + Sync {
    fn provider(&self, address: &str) -> Result<Arc<dyn MetricsProvider>, ProviderError>;
}

/// One Prometheus client per address, shared by all Rollouts.
pub struct PrometheusProviders {
    timeout: Duration,
    cache: Mutex<HashMap<String, Arc<dyn MetricsProvider>>>,
}

impl PrometheusProviders {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            cache: Mutex::default(),
        }
    }
}

impl ProviderFactory for PrometheusProviders {
    fn provider(&self, address: &str) -> Result<Arc<dyn MetricsProvider>, ProviderError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(address) {
            return Ok(p.clone());
        }
        let p: Arc<dyn MetricsProvider> = Arc::new(PrometheusProvider::new(address, self.timeout)?);
        // A bounded cache: addresses come from Rollout specs.
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(address.to_string(), p.clone());
        Ok(p)
    }
}

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub metrics: Metrics,
    pub events: Events,
    pub clock: Arc<dyn Clock>,
    pub providers: Arc<dyn ProviderFactory>,
    /// Prometheus used by Rollouts whose analysis names none.
    pub default_prometheus: Option<String>,
    /// Webhook notifications (operator-wide and per Rollout).
    pub notifier: Option<crate::notify::Notifier>,
    /// What each Rollout depends on, watched (the operator; `None` in tests
    /// and the demo, which drive reconciles themselves).
    pub watches: Option<Arc<super::Watches>>,
    /// Runs webhook and Job checks (tests plug in a fake).
    pub checks: Arc<dyn super::checks::CheckRunner>,
}

impl Context {
    /// The production context: wall clock, Prometheus providers.
    pub fn new(client: kube::Client, metrics: Metrics, instance: Option<String>) -> Self {
        Context {
            events: Events::new(client.clone(), instance),
            checks: super::checks::cluster(client.clone()),
            client,
            metrics,
            clock: Arc::new(SystemClock),
            providers: Arc::new(PrometheusProviders::new(Duration::from_secs(10))),
            default_prometheus: None,
            notifier: None,
            watches: None,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_default_prometheus(mut self, address: Option<String>) -> Self {
        self.default_prometheus = address;
        self
    }

    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_watches(mut self, watches: Arc<super::Watches>) -> Self {
        self.watches = Some(watches);
        self
    }

    pub fn with_checks(mut self, checks: Arc<dyn super::checks::CheckRunner>) -> Self {
        self.checks = checks;
        self
    }

    pub fn with_providers(mut self, providers: Arc<dyn ProviderFactory>) -> Self {
        self.providers = providers;
        self
    }
}
