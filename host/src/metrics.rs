//! Prometheus metrics: one registry for the daemon, rendered at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set: ordered (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reloads by result (`ok`, `partial`).
    pub reloads: Family<Labels, Counter>,
    /// Current configuration errors across all files.
    pub config_errors: Gauge,
    /// Current configuration generation.
    pub config_generation: Gauge,
    /// Live connections.
    pub connections: Gauge,
    /// HTTP requests by listener, route and status.
    pub http_requests: Family<Labels, Counter>,
    /// SMTP check/test outcomes by connection and class.
    pub smtp_outcomes: Family<Labels, Counter>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mailplug");
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        let config_errors = Gauge::default();
        registry.register(
            "config_errors",
            "Configuration errors in the current files",
            config_errors.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the live configuration",
            config_generation.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Live connections", connections.clone());
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by listener, route and status",
            http_requests.clone(),
        );
        let smtp_outcomes = Family::<Labels, Counter>::default();
        registry.register(
            "smtp_outcomes",
            "SMTP check and test-send outcomes by connection and class",
            smtp_outcomes.clone(),
        );
        Self {
            registry,
            reloads,
            config_errors,
            config_generation,
            connections,
            http_requests,
            smtp_outcomes,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
