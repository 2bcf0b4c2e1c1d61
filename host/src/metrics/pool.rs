//! The store's connection pool at `/metrics`: read from the backend's
//! counters while a scrape is encoded ([`PoolStats`]), never copied into
//! the registry, so a scrape shows the pool as it is at that moment.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::store::PoolStats;

/// One scrape's figures of the store's pool.
#[derive(Debug)]
pub(super) struct PoolCollector(pub(super) PoolStats);

fn gauge(n: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl PoolCollector {
    fn counter(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl EncodeMetric,
    ) -> Result<(), std::fmt::Error> {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        value.encode(family)
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let mut family = encoder.encode_descriptor(
            "store_pool_connections",
            "Store connections open, by state (idle, in_use: checked out or being opened).",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [("idle", s.idle), ("in_use", s.in_use())] {
            gauge(n).encode(family.encode_family(&[("state", state)])?)?;
        }
        let family = encoder.encode_descriptor(
            "store_pool_max_connections",
            "Most store connections this process opens at once.",
            None,
            MetricType::Gauge,
        )?;
        gauge(s.max).encode(family)?;
        Self::counter(
            &mut encoder,
            "store_pool_waits",
            "Store calls that waited for a connection (all in use, the pool at its cap).",
            ConstCounter::new(s.waits),
        )?;
        Self::counter(
            &mut encoder,
            "store_pool_wait_seconds",
            "Seconds store calls waited for a connection, summed.",
            ConstCounter::new(s.wait_seconds),
        )?;
        Self::counter(
            &mut encoder,
            "store_pool_timeouts",
            "Store calls that waited for a connection in vain and failed busy.",
            ConstCounter::new(s.timeouts),
        )?;
        Self::counter(
            &mut encoder,
            "store_pool_connect_errors",
            "Store connections that could not be opened.",
            ConstCounter::new(s.connect_errors),
        )
    }
}
