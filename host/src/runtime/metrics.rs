//! Per-plugin, per-export call counters, kept in atomics so the hot path
//! never locks; the daemon exports them to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::Export;

/// Upper bounds (inclusive, microseconds) of the latency histogram buckets;
/// a final implicit bucket counts everything slower.
pub const LATENCY_BUCKETS_US: [u64; 10] =
    [10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000, 100_000];

/// Counters of one export of one plugin.
#[derive(Debug, Default)]
pub struct ExportMetrics {
    /// Calls started.
    pub calls: AtomicU64,
    /// Calls that failed on the host side (trap, deadline, memory cap,
    /// instantiation, invalid output): the plugin's fault.
    pub failures: AtomicU64,
    /// Calls where the guest returned its own `err` (bad signature, malformed body...).
    pub rejections: AtomicU64,
    /// Sum of call latencies in nanoseconds (instantiation included).
    pub latency_ns_sum: AtomicU64,
    /// Latency histogram: `LATENCY_BUCKETS_US` buckets plus one overflow bucket.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
}

impl ExportMetrics {
    pub(crate) fn record(&self, elapsed: Duration, outcome: Outcome) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => {}
            Outcome::Rejected => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_ns_sum.fetch_add(ns, Ordering::Relaxed);
        let us = ns / 1_000;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// How a call ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok,
    Rejected,
    Failed,
}

/// Counters of one plugin.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// Instances created (fresh stores).
    pub instantiations: AtomicU64,
    exports: [ExportMetrics; 4],
}

impl PluginMetrics {
    /// Counters of one export.
    pub fn export(&self, export: Export) -> &ExportMetrics {
        &self.exports[export as usize]
    }

    /// Host-side failures over all exports.
    pub fn failures(&self) -> u64 {
        self.exports
            .iter()
            .map(|e| e.failures.load(Ordering::Relaxed))
            .sum()
    }

    /// Calls over all exports.
    pub fn calls(&self) -> u64 {
        self.exports
            .iter()
            .map(|e| e.calls.load(Ordering::Relaxed))
            .sum()
    }
}
