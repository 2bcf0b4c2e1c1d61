//! The store's connection pool at `/metrics`: a replica on PostgreSQL
//! shows it, a daemon on SQLite (no pool) shows none of it.

use super::{configs, pg, replica, webhook_connection};
use crate::daemon::Daemon;
use crate::webhooks::NOW;

/// Every `mailplug_store_pool_*` sample of one scrape, by series text.
fn pool_samples(d: &Daemon) -> Vec<(String, f64)> {
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("mailplug_store_pool_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("{series} missing from {samples:?}"))
}

#[test]
fn a_replica_on_postgresql_reports_its_pool_at_metrics() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("pool");
    let (_tmp, [dir, other]) = configs(&[("sw.yaml", webhook_connection())]);
    let d = replica(&dir, &url, &[]);
    // `pool_size` in the URL sets another replica's cap.
    let small = replica(&other, &format!("{url}?pool_size=3"), &[]);
    let (status, body) = small.get("/v1/events");
    assert_eq!(status, 200, "{body}");
    let small_samples = pool_samples(&small);
    assert_eq!(
        sample(&small_samples, "mailplug_store_pool_max_connections"),
        3.0,
        "{small_samples:?}"
    );
    let (status, body) = d.get("/v1/events");
    assert_eq!(status, 200, "{body}");
    let samples = pool_samples(&d);
    let idle = sample(&samples, "mailplug_store_pool_connections{state=\"idle\"}");
    let in_use = sample(
        &samples,
        "mailplug_store_pool_connections{state=\"in_use\"}",
    );
    let max = sample(&samples, "mailplug_store_pool_max_connections");
    // The default cap (DEFAULT_MAX_CONNECTIONS).
    assert_eq!(max, 8.0, "{samples:?}");
    assert!(idle + in_use >= 1.0, "no connection open: {samples:?}");
    assert!(idle + in_use <= max, "{samples:?}");
    // One request at a time: nobody waited, timed out or failed to connect.
    for counter in [
        "mailplug_store_pool_waits_total",
        "mailplug_store_pool_wait_seconds_total",
        "mailplug_store_pool_timeouts_total",
        "mailplug_store_pool_connect_errors_total",
    ] {
        assert_eq!(sample(&samples, counter), 0.0, "{samples:?}");
    }
}

#[test]
fn a_daemon_on_sqlite_reports_no_pool() {
    let (_tmp, [dir, _]) = configs(&[("sw.yaml", webhook_connection())]);
    let d = Daemon::start_env(&dir, &[], &[("MAILPLUG_FIXED_NOW", NOW)]);
    let (status, body) = d.get("/v1/events");
    assert_eq!(status, 200, "{body}");
    assert_eq!(pool_samples(&d), Vec::new());
    assert_eq!(d.metric("mailplug_store_up"), 1.0);
}
