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

/// Renders the plugin runtime's per-plugin, per-export counters (kept in
/// atomics on the call path) in the OpenMetrics text format.
pub fn render_plugins(runtime: &crate::runtime::Runtime) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;

    use crate::runtime::Export;
    use crate::runtime::metrics::LATENCY_BUCKETS_US;

    let mut calls = String::new();
    let mut failures = String::new();
    let mut rejections = String::new();
    let mut latency = String::new();
    for plugin in runtime.plugins() {
        let id = &plugin.info().id;
        for export in Export::ALL {
            let m = plugin.metrics().export(export);
            let labels = format!("plugin=\"{id}\",export=\"{}\"", export.name());
            let count = m.calls.load(Relaxed);
            let _ = writeln!(calls, "mailplug_plugin_calls_total{{{labels}}} {count}");
            let _ = writeln!(
                failures,
                "mailplug_plugin_failures_total{{{labels}}} {}",
                m.failures.load(Relaxed)
            );
            let _ = writeln!(
                rejections,
                "mailplug_plugin_rejections_total{{{labels}}} {}",
                m.rejections.load(Relaxed)
            );
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
                cumulative += m.latency_buckets[i].load(Relaxed);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(
                    latency,
                    "mailplug_plugin_call_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                latency,
                "mailplug_plugin_call_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let sum = m.latency_ns_sum.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(
                latency,
                "mailplug_plugin_call_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                latency,
                "mailplug_plugin_call_seconds_count{{{labels}}} {count}"
            );
        }
    }
    format!(
        "# HELP mailplug_plugin_calls Plugin calls by plugin and export.\n# TYPE mailplug_plugin_calls counter\n{calls}\
         # HELP mailplug_plugin_failures Plugin calls that failed on the host side (trap, deadline, memory cap, invalid output).\n# TYPE mailplug_plugin_failures counter\n{failures}\
         # HELP mailplug_plugin_rejections Plugin calls where the plugin returned its own error.\n# TYPE mailplug_plugin_rejections counter\n{rejections}\
         # HELP mailplug_plugin_call_seconds Plugin call latency, instantiation included.\n# TYPE mailplug_plugin_call_seconds histogram\n{latency}"
    )
}
