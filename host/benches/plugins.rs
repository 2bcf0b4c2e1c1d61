//! Plugin runtime benchmarks: instantiate + call, per-call boundary cost,
//! 100-event batch throughput against the same parse natively in the host,
//! and start-up with and without the compiled-component cache.
//!
//! `cargo bench --bench plugins` runs the criterion groups, then prints a
//! summary of ratios measured in this one run (interleaved rounds, medians).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark set-up fails loudly"
)]

use std::borrow::Cow;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use mailplug::event::{BounceClass, EventKind, NormalizedEvent, format_unix_seconds};
use mailplug::runtime::{EngineOptions, Runtime, RuntimeOptions, WebhookRequest};
use serde::Deserialize;

const EVENTS: usize = 100;

/// A 100-event batch in the unified format, as custom-smtp receives it.
fn batch() -> Vec<u8> {
    let kinds = ["delivered", "bounced", "deferred", "opened", "complained"];
    let events: Vec<serde_json::Value> = (0..EVENTS)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            serde_json::json!({
                "kind": kind,
                "bounce_class": if kind == "bounced" { Some("hard") } else { None },
                "recipient": format!("user{i}@example.com"),
                "occurred_at": format!("2026-01-01T11:{:02}:{:02}Z", i / 60, i % 60),
                "provider": "corp-relay",
                "provider_event_id": format!("evt-{i:08}"),
                "provider_message_id": format!("msg-{i:08}.example"),
                "smtp_status": if kind == "bounced" { Some("550") } else { None },
                "enhanced_status": if kind == "bounced" { Some("5.1.1") } else { None },
                "diagnostic": if kind == "bounced" { Some("550 5.1.1 user unknown") } else { None },
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

fn request(body: Vec<u8>) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers: vec![],
        body,
    }
}

/// A string borrowed from the input unless escaped (as the plugin does:
/// serde never borrows into a bare `Option<Cow<str>>`).
#[derive(Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// The native baseline: the same input struct, checks and output as the
/// plugin path (typed serde_json with borrowed strings, RFC 3339 parsing,
/// owned `NormalizedEvent`s with formatted timestamps).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    bounce_class: Option<Str<'a>>,
    #[serde(borrow)]
    recipient: Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow)]
    provider: Option<Str<'a>>,
    #[serde(borrow)]
    provider_event_id: Option<Str<'a>>,
    #[serde(borrow)]
    provider_message_id: Option<Str<'a>>,
    #[serde(borrow)]
    smtp_status: Option<Str<'a>>,
    #[serde(borrow)]
    enhanced_status: Option<Str<'a>>,
    #[serde(borrow)]
    diagnostic: Option<Str<'a>>,
}

fn native_parse(body: &[u8]) -> Vec<NormalizedEvent> {
    let items: Vec<Incoming<'_>> = serde_json::from_slice(body).unwrap();
    items
        .into_iter()
        .map(|e| {
            let kind = match &*e.kind {
                "delivered" => EventKind::Delivered,
                "bounced" => EventKind::Bounced,
                "deferred" => EventKind::Deferred,
                "opened" => EventKind::Opened,
                "complained" => EventKind::Complained,
                other => panic!("kind {other}"),
            };
            let bounce_class = e.bounce_class.map(|c| {
                if c.0 == "hard" {
                    BounceClass::Hard
                } else {
                    BounceClass::Soft
                }
            });
            let t = humantime::parse_rfc3339(&e.occurred_at).unwrap();
            let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            NormalizedEvent {
                kind,
                bounce_class,
                recipient: e.recipient.into_owned(),
                occurred_at: format_unix_seconds(secs).unwrap(),
                provider: e
                    .provider
                    .map_or_else(|| "custom-smtp".into(), |s| s.0.into_owned()),
                provider_event_id: e.provider_event_id.map(|s| s.0.into_owned()),
                provider_message_id: e.provider_message_id.map(|s| s.0.into_owned()),
                message_id: None,
                smtp_status: e.smtp_status.map(|s| s.0.into_owned()),
                enhanced_status: e.enhanced_status.map(|s| s.0.into_owned()),
                diagnostic: e.diagnostic.map(|s| s.0.into_owned()),
            }
        })
        .collect()
}

fn options(cache: Option<&Path>) -> RuntimeOptions {
    RuntimeOptions {
        engine: EngineOptions {
            max_instances: 64,
            ..EngineOptions::default()
        },
        cache_dir: cache.map(Path::to_owned),
        ..RuntimeOptions::default()
    }
}

fn benches(c: &mut Criterion, rt: &Runtime, body: &[u8]) {
    let plugin = rt.plugin("custom-smtp").unwrap();
    let empty = request(b"[]".to_vec());
    let full = request(body.to_vec());
    assert_eq!(
        native_parse(body),
        plugin.instance().parse_webhook(&full).unwrap().unwrap()
    );

    let mut g = c.benchmark_group("instantiate");
    g.bench_function("fresh_store_plus_one_call", |b| {
        b.iter(|| {
            plugin
                .instance()
                .parse_webhook(black_box(&empty))
                .unwrap()
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("boundary");
    let mut reused = plugin.instance();
    g.bench_function("reused_instance_empty_call", |b| {
        b.iter(|| reused.parse_webhook(black_box(&empty)).unwrap().unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("batch_100_events");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("native_serde_json", |b| {
        b.iter(|| native_parse(black_box(body)))
    });
    g.bench_function("plugin_reused_instance_limits_on", |b| {
        b.iter(|| reused.parse_webhook(black_box(&full)).unwrap().unwrap())
    });
    g.bench_function("plugin_fresh_instance_limits_on", |b| {
        b.iter(|| {
            plugin
                .instance()
                .parse_webhook(black_box(&full))
                .unwrap()
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("startup");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let warm = tempfile::tempdir().unwrap();
    drop(Runtime::with_builtins(options(Some(warm.path()))).unwrap());
    g.bench_function("all_first_party_from_cache", |b| {
        b.iter(|| Runtime::with_builtins(options(Some(warm.path()))).unwrap())
    });
    g.bench_function("all_first_party_compiling", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| Runtime::with_builtins(options(Some(dir.path()))).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Median of `rounds` timings of `iters` runs of `f`, per run.
fn median(rounds: usize, iters: u32, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

/// Ratios measured in this run: rounds of each variant interleaved so
/// background load hits all of them alike.
fn summary(rt: &Runtime, body: &[u8]) {
    let plugin = rt.plugin("custom-smtp").unwrap();
    let empty = request(b"[]".to_vec());
    let full = request(body.to_vec());
    let mut reused = plugin.instance();
    let (mut native, mut warm, mut fresh, mut call, mut inst) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..21 {
        native.push(median(5, 200, || {
            drop(black_box(native_parse(black_box(body))))
        }));
        warm.push(median(5, 200, || {
            drop(black_box(reused.parse_webhook(&full).unwrap().unwrap()))
        }));
        fresh.push(median(5, 100, || {
            drop(black_box(
                plugin.instance().parse_webhook(&full).unwrap().unwrap(),
            ))
        }));
        call.push(median(5, 2_000, || {
            drop(black_box(reused.parse_webhook(&empty).unwrap().unwrap()))
        }));
        inst.push(median(5, 500, || {
            drop(black_box(
                plugin.instance().parse_webhook(&empty).unwrap().unwrap(),
            ))
        }));
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (native, warm, fresh, call, inst) = (
        med(&mut native),
        med(&mut warm),
        med(&mut fresh),
        med(&mut call),
        med(&mut inst),
    );
    let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!("\n== summary (medians, one run; load average {load}) ==");
    println!(
        "native serde_json, 100-event batch        {:>10.1?}  {:>10.0} events/s",
        native,
        rate(native)
    );
    println!(
        "plugin reused instance, limits on         {:>10.1?}  {:>10.0} events/s  {:>5.1}% of native",
        warm,
        rate(warm),
        100.0 * native.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "plugin fresh instance per batch, limits on {:>9.1?}  {:>10.0} events/s  {:>5.1}% of native",
        fresh,
        rate(fresh),
        100.0 * native.as_secs_f64() / fresh.as_secs_f64()
    );
    println!("instantiate (fresh store) + one call      {:>10.1?}", inst);
    println!(
        "empty call on a reused instance           {:>10.1?}  = {:.2}% of a 100-event batch call",
        call,
        100.0 * call.as_secs_f64() / warm.as_secs_f64()
    );
}

fn main() {
    let body = batch();
    let rt = Runtime::with_builtins(options(None)).unwrap();
    if std::env::var_os("MAILPLUG_BENCH_SUMMARY_ONLY").is_some() {
        summary(&rt, &body);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt, &body);
    c.final_summary();
    summary(&rt, &body);
}
