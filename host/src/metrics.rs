//! Prometheus metrics: one registry for the daemon plus the plugin
//! runtime's call counters, rendered together at `/metrics` as one
//! OpenMetrics document.
//!
//! The plugin counters stay plain atomics on the call path (see
//! [`crate::runtime::metrics`]); a [`Collector`] reads them while a scrape
//! is encoded, so calls never lock or touch a registry.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::metrics::{ExportMetrics, LATENCY_BUCKETS_US, PluginMetrics};
use crate::runtime::{Export, Runtime};
use crate::store::PoolStats;

mod pool;

/// Prefix of every metric name.
const PREFIX: &str = "mailplug";

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
    /// Requests refused before routing, by listener and reason.
    pub http_denied: Family<Labels, Counter>,
    /// Connections being served, by listener.
    pub http_open_connections: Family<Labels, Gauge>,
    /// Connections closed at accept because the listener was at its cap.
    pub http_refused: Family<Labels, Counter>,
    /// Events parsed from accepted webhook requests, by connection and provider.
    pub events_received: Family<Labels, Counter>,
    /// Events newly stored, by connection and provider.
    pub events_stored: Family<Labels, Counter>,
    /// Events skipped as already stored (provider retries), by connection and provider.
    pub events_duplicate: Family<Labels, Counter>,
    /// Webhook requests refused, by connection, provider and reason.
    pub webhooks_rejected: Family<Labels, Counter>,
    /// Seconds from request start to the durable commit of an accepted webhook.
    pub ingest_seconds: Histogram,
    /// Requests per group commit.
    pub commit_requests: Histogram,
    /// Events per group commit.
    pub commit_events: Histogram,
    /// Group commits by result (`ok`, `error`).
    pub commits: Family<Labels, Counter>,
    /// 1 while the config directory is polled instead of watched natively.
    pub config_watch_polling: Gauge,
    /// Forwarding attempts by forwarder and result (`delivered`, `retry`, `dead`).
    pub forward_deliveries: Family<Labels, Counter>,
    /// Seconds one forwarding attempt took, by forwarder.
    pub forward_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Outbox rows waiting, by forwarder (set when scraped).
    pub outbox_pending: Family<Labels, Gauge>,
    /// Dead letters, by forwarder (set when scraped).
    pub outbox_dead: Family<Labels, Gauge>,
    /// Send attempts by connection, outcome and class.
    pub queue_sends: Family<Labels, Counter>,
    /// Deliveries found in flight at start (possibly sent twice).
    pub queue_recovered: Counter,
    /// Pending deliveries by connection (set when scraped).
    pub queue_pending: Family<Labels, Gauge>,
    /// Age of the oldest pending delivery by connection (set when scraped).
    pub queue_oldest_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Effective messages per second by connection; -1 when unlimited.
    pub queue_rate: Family<Labels, Gauge<f64, AtomicU64>>,
    /// 1 while a connection's adaptive rate is below its ceiling.
    pub queue_throttled: Family<Labels, Gauge>,
    /// 1 while a connection's circuit is open or half-open.
    pub queue_circuit_open: Family<Labels, Gauge>,
    /// 1 while this process holds a rate-limited connection's send lease.
    pub queue_lease_held: Family<Labels, Gauge>,
    /// 1 when the store answered its last check (`/readyz`, a scrape).
    pub store_up: Gauge,
}

fn forward_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
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
        let http_denied = Family::<Labels, Counter>::default();
        registry.register(
            "http_denied",
            "Requests refused before routing (token, host, origin, content type) by listener and reason",
            http_denied.clone(),
        );
        let http_open_connections = Family::<Labels, Gauge>::default();
        registry.register(
            "http_open_connections",
            "Connections being served by listener",
            http_open_connections.clone(),
        );
        let http_refused = Family::<Labels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "Connections closed at accept because the listener was at its connection cap",
            http_refused.clone(),
        );
        let events_received = Family::<Labels, Counter>::default();
        registry.register(
            "events_received",
            "Events parsed from accepted webhook requests, by connection and provider",
            events_received.clone(),
        );
        let events_stored = Family::<Labels, Counter>::default();
        registry.register(
            "events_stored",
            "Events newly stored, by connection and provider",
            events_stored.clone(),
        );
        let events_duplicate = Family::<Labels, Counter>::default();
        registry.register(
            "events_duplicate",
            "Events skipped because they were already stored (provider retries), by connection and provider",
            events_duplicate.clone(),
        );
        let webhooks_rejected = Family::<Labels, Counter>::default();
        registry.register(
            "webhooks_rejected",
            "Webhook requests refused (nothing stored), by connection, provider and reason",
            webhooks_rejected.clone(),
        );
        let ingest_seconds = Histogram::new([
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ]);
        registry.register(
            "webhook_ingest_seconds",
            "Time from request start to durable commit of accepted webhook requests",
            ingest_seconds.clone(),
        );
        let commit_requests = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "store_commit_requests",
            "Requests applied per group commit",
            commit_requests.clone(),
        );
        let commit_events = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register(
            "store_commit_events",
            "Events applied per group commit",
            commit_events.clone(),
        );
        let commits = Family::<Labels, Counter>::default();
        registry.register("store_commits", "Group commits by result", commits.clone());
        let config_watch_polling = Gauge::default();
        registry.register(
            "config_watch_polling",
            "1 while the config directory is polled (--watch poll, or native watching unavailable), else 0",
            config_watch_polling.clone(),
        );
        let forward_deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "forward_deliveries",
            "Forwarding attempts by forwarder and result (delivered, retry: failed and rescheduled, dead: failed at max_age)",
            forward_deliveries.clone(),
        );
        let forward_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(forward_histogram);
        registry.register(
            "forward_attempt_seconds",
            "Duration of forwarding attempts (request and response, or write and sync), by forwarder",
            forward_seconds.clone(),
        );
        let outbox_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "outbox_pending",
            "Outbox rows not delivered yet, by forwarder (including forwarders no longer configured)",
            outbox_pending.clone(),
        );
        let outbox_dead = Family::<Labels, Gauge>::default();
        registry.register(
            "outbox_dead",
            "Dead letters (gave up after max_age) by forwarder",
            outbox_dead.clone(),
        );
        let queue_sends = Family::<Labels, Counter>::default();
        registry.register(
            "queue_sends",
            "Send attempts by connection, outcome (sent, deferred, failed, suppressed, moved) and class",
            queue_sends.clone(),
        );
        let queue_recovered = Counter::default();
        registry.register(
            "queue_recovered_in_flight",
            "Deliveries found in flight at start and sent again (the server may have accepted them before the stop)",
            queue_recovered.clone(),
        );
        let queue_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_pending",
            "Deliveries not sent yet (queued, sending, deferred) by connection",
            queue_pending.clone(),
        );
        let queue_oldest_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest pending delivery by connection",
            queue_oldest_seconds.clone(),
        );
        let queue_rate = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queue_rate_per_second",
            "Messages per second a connection may start now (adaptive); -1 when unlimited",
            queue_rate.clone(),
        );
        let queue_throttled = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_throttled",
            "1 while the connection's adaptive rate is below its configured ceiling",
            queue_throttled.clone(),
        );
        let queue_circuit_open = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_circuit_open",
            "1 while the connection's circuit breaker is open or half-open (paused)",
            queue_circuit_open.clone(),
        );
        let queue_lease_held = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_lease_held",
            "1 while this process holds the connection's send lease (it sends through a rate-limited connection), 0 while another process does",
            queue_lease_held.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 when the store answered the last check (readyz or a scrape), 0 when it did not",
            store_up.clone(),
        );
        Self {
            registry,
            queue_lease_held,
            store_up,
            queue_sends,
            queue_recovered,
            queue_pending,
            queue_oldest_seconds,
            queue_rate,
            queue_throttled,
            queue_circuit_open,
            forward_deliveries,
            forward_seconds,
            outbox_pending,
            outbox_dead,
            events_received,
            events_stored,
            events_duplicate,
            webhooks_rejected,
            ingest_seconds,
            commit_requests,
            commit_events,
            commits,
            reloads,
            config_errors,
            config_generation,
            connections,
            http_requests,
            smtp_outcomes,
            http_denied,
            http_open_connections,
            http_refused,
            config_watch_polling,
        }
    }

    /// The OpenMetrics exposition of every daemon metric, of the plugins
    /// loaded in `runtime` and of the store's pool (`None`: the backend
    /// has none), ending in the one `# EOF`.
    pub fn render(&self, runtime: &Runtime, pool: Option<PoolStats>) -> String {
        // Plugins change on reload and the runtime belongs to the current
        // snapshot, which this registry outlives, so no collector registered
        // here at startup could follow them. Instead each scrape builds a
        // registry holding a collector over the current plugins' counters:
        // it shares their atomics (an `Arc` per plugin, no numbers copied
        // yet) and reads them while encoding, and it is dropped with the
        // scrape, so a reloaded-away plugin is never reported again.
        // The pool's figures are read the same way, as they are now.
        let mut scraped = Registry::with_prefix(PREFIX);
        scraped.register_collector(Box::new(PluginCollector::new(runtime)));
        if let Some(pool) = pool {
            scraped.register_collector(Box::new(pool::PoolCollector(pool)));
        }
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &scraped))
            .and_then(|()| encode_eof(&mut out));
        if let Err(error) = encoded {
            // Writing to a String cannot fail, so this is an encoder bug;
            // a scrape must still get a well-formed (empty) document.
            tracing::error!(%error, "encoding /metrics failed");
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }
}

impl Metrics {
    /// Counts an accepted webhook request.
    pub fn observe_ingest(
        &self,
        connection: &str,
        provider: &str,
        receipt: &crate::ingest::Receipt,
        took: std::time::Duration,
    ) {
        let labels = vec![
            ("connection", connection.to_owned()),
            ("provider", provider.to_owned()),
        ];
        self.events_received
            .get_or_create(&labels)
            .inc_by(receipt.received as u64);
        self.events_stored
            .get_or_create(&labels)
            .inc_by(receipt.stored.len() as u64);
        self.events_duplicate
            .get_or_create(&labels)
            .inc_by(receipt.duplicates as u64);
        self.ingest_seconds.observe(took.as_secs_f64());
    }

    /// Counts a refused webhook request. `connection` is empty for names
    /// that match no connection (so strangers cannot grow the label set).
    pub fn observe_rejection(&self, connection: &str, provider: &str, reason: &'static str) {
        self.webhooks_rejected
            .get_or_create(&vec![
                ("connection", connection.to_owned()),
                ("provider", provider.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// Counts one forwarding attempt.
    pub fn observe_forward(
        &self,
        forwarder: &str,
        result: &'static str,
        took: std::time::Duration,
    ) {
        self.forward_deliveries
            .get_or_create(&vec![
                ("forwarder", forwarder.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
        self.forward_seconds
            .get_or_create(&vec![("forwarder", forwarder.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// Sets the outbox gauges to the store's current totals (forwarders
    /// whose rows are all gone drop out).
    pub fn set_outbox(&self, stats: &[crate::store::outbox::ForwarderStats]) {
        self.outbox_pending.clear();
        self.outbox_dead.clear();
        for s in stats {
            let labels = vec![("forwarder", s.forwarder.clone())];
            self.outbox_pending
                .get_or_create(&labels)
                .set(i64::try_from(s.pending).unwrap_or(i64::MAX));
            self.outbox_dead
                .get_or_create(&labels)
                .set(i64::try_from(s.dead).unwrap_or(i64::MAX));
        }
    }

    /// Records one group commit.
    pub fn observe_commit(&self, requests: usize, events: usize, ok: bool) {
        self.commit_requests.observe(requests as f64);
        self.commit_events.observe(events as f64);
        self.commits
            .get_or_create(&vec![(
                "result",
                if ok { "ok" } else { "error" }.to_owned(),
            )])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The plugin runtime's per-plugin, per-export counters and latency
/// histogram, read from their atomics when encoded.
#[derive(Debug)]
struct PluginCollector {
    plugins: Vec<(String, Arc<PluginMetrics>)>,
}

impl PluginCollector {
    fn new(runtime: &Runtime) -> Self {
        Self {
            plugins: runtime
                .plugins()
                .map(|p| (p.info().id.clone(), Arc::clone(p.metrics())))
                .collect(),
        }
    }

    /// Every (plugin, export) series with its `plugin` and `export` labels.
    fn series(&self) -> impl Iterator<Item = ([(&'static str, &str); 2], &ExportMetrics)> {
        self.plugins.iter().flat_map(|(id, metrics)| {
            Export::ALL.into_iter().map(move |export| {
                (
                    [("plugin", id.as_str()), ("export", export.name())],
                    metrics.export(export),
                )
            })
        })
    }

    /// One counter family with a series per plugin and export.
    fn counter(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&ExportMetrics) -> &AtomicU64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, metrics) in self.series() {
            ConstCounter::new(value(metrics).load(Relaxed))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.counter(
            &mut encoder,
            "plugin_calls",
            "Plugin calls by plugin and export.",
            |m| &m.calls,
        )?;
        self.counter(
            &mut encoder,
            "plugin_failures",
            "Plugin calls that failed on the host side (trap, deadline, memory cap, invalid output).",
            |m| &m.failures,
        )?;
        self.counter(
            &mut encoder,
            "plugin_rejections",
            "Plugin calls where the plugin returned its own error.",
            |m| &m.rejections,
        )?;
        let mut family = encoder.encode_descriptor(
            "plugin_call_seconds",
            "Plugin call latency, instantiation included.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, metrics) in self.series() {
            // Per-bucket counts (the encoder accumulates them), the last one
            // unbounded. `_count` is their sum rather than `calls`, read at
            // another instant, so it always equals the `+Inf` bucket.
            let buckets: Vec<(f64, u64)> = metrics
                .latency_buckets
                .iter()
                .zip(
                    LATENCY_BUCKETS_US
                        .iter()
                        .map(|&us| us as f64 / 1e6)
                        .chain([f64::INFINITY]),
                )
                .map(|(n, le)| (le, n.load(Relaxed)))
                .collect();
            let count = buckets.iter().map(|&(_, n)| n).sum();
            let sum = metrics.latency_ns_sum.load(Relaxed) as f64 / 1e9;
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
