//! Unit tests of the `/metrics` rendering.
use super::*;
use crate::runtime::RuntimeOptions;

/// The value of the one line starting with `series ` in `text`.
fn value(text: &str, series: &str) -> Option<String> {
    let mut found = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '));
    let v = found.next()?.to_owned();
    assert!(found.next().is_none(), "{series} appears twice:\n{text}");
    Some(v)
}

#[test]
fn plugin_counters_and_latency_render_in_one_document() {
    let runtime = Runtime::with_builtins(RuntimeOptions::default()).unwrap();
    let plugin = runtime.plugin("custom-smtp").unwrap();
    plugin.instance().describe().unwrap();
    let describe = plugin.metrics().export(Export::Describe);
    let calls = describe.calls.load(Relaxed);
    assert!(calls >= 1);

    let metrics = Metrics::new();
    metrics.connections.set(3);
    let text = metrics.render(&runtime, None);

    // Exactly one OpenMetrics document: one EOF, at the very end.
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    // The daemon's own registry is still there.
    assert_eq!(value(&text, "mailplug_connections").as_deref(), Some("3"));

    assert!(text.contains("# HELP mailplug_plugin_calls Plugin calls by plugin and export.\n# TYPE mailplug_plugin_calls counter\n"), "{text}");
    let labels = r#"plugin="custom-smtp",export="describe""#;
    assert_eq!(
        value(&text, &format!("mailplug_plugin_calls_total{{{labels}}}")),
        Some(calls.to_string()),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("mailplug_plugin_failures_total{{{labels}}}")
        )
        .as_deref(),
        Some("0")
    );
    assert_eq!(
        value(
            &text,
            &format!("mailplug_plugin_rejections_total{{{labels}}}")
        )
        .as_deref(),
        Some("0")
    );
    // Every export of every plugin has a series, called or not.
    assert_eq!(
        value(
            &text,
            r#"mailplug_plugin_calls_total{plugin="sendgrid",export="parse-webhook"}"#
        )
        .as_deref(),
        Some("0")
    );

    assert!(
        text.contains("# TYPE mailplug_plugin_call_seconds histogram\n"),
        "{text}"
    );
    // prometheus-client puts the bucket's `le` before the family labels.
    assert_eq!(
        value(
            &text,
            &format!(r#"mailplug_plugin_call_seconds_bucket{{le="+Inf",{labels}}}"#)
        ),
        Some(calls.to_string()),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("mailplug_plugin_call_seconds_count{{{labels}}}")
        ),
        Some(calls.to_string())
    );
    let sum: f64 = value(
        &text,
        &format!("mailplug_plugin_call_seconds_sum{{{labels}}}"),
    )
    .unwrap()
    .parse()
    .unwrap();
    let expected = describe.latency_ns_sum.load(Relaxed) as f64 / 1e9;
    assert!((sum - expected).abs() < 1e-9, "{sum} vs {expected}");
    // One finite bucket per bound, cumulative, in seconds.
    let own = format!(",{labels}}} ");
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| l.starts_with("mailplug_plugin_call_seconds_bucket{le=") && l.contains(&own))
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let n = l.rsplit(' ').next().unwrap().parse().unwrap();
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                n,
            )
        })
        .collect();
    assert_eq!(buckets.len(), LATENCY_BUCKETS_US.len() + 1, "{text}");
    for ((le, _), us) in buckets.iter().zip(LATENCY_BUCKETS_US) {
        assert!((le - us as f64 / 1e6).abs() < 1e-12, "{le} vs {us}us");
    }
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
}

#[test]
fn no_plugins_still_render_one_document() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let text = Metrics::new().render(&runtime, None);
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Families without series still describe themselves.
    assert!(
        text.contains("# TYPE mailplug_plugin_calls counter\n"),
        "{text}"
    );
    assert!(!text.contains("mailplug_plugin_calls_total{"), "{text}");
}

#[test]
fn store_pool_figures_render_when_the_backend_has_a_pool() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let pool = PoolStats {
        open: 5,
        idle: 2,
        max: 8,
        waits: 7,
        wait_seconds: 1.5,
        timeouts: 1,
        connect_errors: 3,
    };
    let text = Metrics::new().render(&runtime, Some(pool));
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    for (series, want) in [
        ("mailplug_store_pool_connections{state=\"idle\"}", "2"),
        ("mailplug_store_pool_connections{state=\"in_use\"}", "3"),
        ("mailplug_store_pool_max_connections", "8"),
        ("mailplug_store_pool_waits_total", "7"),
        ("mailplug_store_pool_wait_seconds_total", "1.5"),
        ("mailplug_store_pool_timeouts_total", "1"),
        ("mailplug_store_pool_connect_errors_total", "3"),
    ] {
        assert_eq!(value(&text, series).as_deref(), Some(want), "{text}");
    }
    assert!(
        text.contains("# TYPE mailplug_store_pool_waits counter\n"),
        "{text}"
    );
    // A backend without a pool (SQLite) shows none of them.
    let text = Metrics::new().render(&runtime, None);
    assert!(!text.contains("mailplug_store_pool"), "{text}");
}
