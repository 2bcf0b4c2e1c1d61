//! Webhook ingest end to end against the release binary on 127.0.0.1 with
//! its embedded SQLite store: signed 100-event SendGrid batches (HTTP →
//! verify → parse → durable commit → 2xx) from 8 keep-alive senders, the
//! same batches parsed natively in Rust (no HTTP, no store, no sandbox) as
//! the reference, single-event requests from 64 concurrent senders (requests/s,
//! p50/p99 latency), and resident memory plus store size after 1,000,000
//! stored events. The load generator runs on the same machine and shares its
//! cores with the daemon. Run with `cargo bench --bench webhooks`
//! (`WEBHOOK_BENCH_EVENTS=N` changes the 1,000,000).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

#[path = "common/webhook_load.rs"]
mod webhook_load;
use webhook_load::{Signed, batch, load, percentile, sign, signer, start_daemon};

const BATCH: usize = 100;
const BATCH_SENDERS: usize = 8;
const SINGLE_SENDERS: usize = 64;
const SINGLE_REQUESTS: usize = 20_000;

/// The native reference: the same batches into unified events with serde.
#[derive(Deserialize)]
struct SgEvent<'a> {
    email: &'a str,
    timestamp: i64,
    event: &'a str,
    sg_event_id: Option<&'a str>,
    sg_message_id: Option<&'a str>,
    reason: Option<&'a str>,
    response: Option<&'a str>,
    status: Option<&'a str>,
}

fn parse_natively(body: &[u8]) -> Vec<mailplug::event::NormalizedEvent> {
    use mailplug::event::{BounceClass, EventKind, NormalizedEvent, format_unix_seconds};
    let events: Vec<SgEvent<'_>> = serde_json::from_slice(body).unwrap();
    events
        .into_iter()
        .filter_map(|e| {
            let (kind, class) = match e.event {
                "delivered" => (EventKind::Delivered, None),
                "open" => (EventKind::Opened, None),
                "click" => (EventKind::Clicked, None),
                "bounce" => (EventKind::Bounced, Some(BounceClass::Hard)),
                _ => return None,
            };
            let text = e.reason.or(e.response);
            Some(NormalizedEvent {
                kind,
                bounce_class: class,
                recipient: e.email.to_owned(),
                occurred_at: format_unix_seconds(e.timestamp)?,
                provider: "sendgrid".to_owned(),
                provider_event_id: e.sg_event_id.map(str::to_owned),
                provider_message_id: e.sg_message_id.map(str::to_owned),
                message_id: None,
                smtp_status: text.and_then(|t| t.get(..3)).map(str::to_owned),
                enhanced_status: e.status.map(str::to_owned),
                diagnostic: text.map(str::to_owned),
            })
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let total: usize = std::env::var("WEBHOOK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batches = total.div_ceil(BATCH);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; daemon and load generator share them");

    let key = signer();
    eprintln!("signing {batches} batches of {BATCH} events ...");
    let signed: Vec<Signed> = (0..batches)
        .map(|b| sign(&key, batch(&format!("b{b}"), BATCH)))
        .collect();
    let singles: Vec<Signed> = (0..SINGLE_REQUESTS)
        .map(|i| sign(&key, batch(&format!("s{i}"), 1)))
        .collect();

    // Native reference over the same bodies.
    let start = Instant::now();
    let mut native_events = 0;
    for s in &signed {
        native_events += std::hint::black_box(parse_natively(&s.body)).len();
    }
    let native = native_events as f64 / start.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), None);
    let url = vec![format!("{}/webhooks/sg", d.public)];
    eprintln!("posting {total} events ...");
    let (took, latencies) = load(&url, Arc::new(signed), BATCH_SENDERS);
    let end_to_end = (batches * BATCH) as f64 / took.as_secs_f64();
    println!(
        "end to end, {BATCH}-event SendGrid batches, {BATCH_SENDERS} senders: {:.0} events/s ({} requests in {:.1} s; p50 {:.1} ms, p99 {:.1} ms)",
        end_to_end,
        batches,
        took.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "native Rust parse of the same batches (no HTTP, no store, no sandbox): {native:.0} events/s"
    );
    println!("end to end / native: {:.3}", end_to_end / native);

    let (took, latencies) = load(&url, Arc::new(singles), SINGLE_SENDERS);
    println!(
        "single-event requests, {SINGLE_SENDERS} concurrent senders: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        SINGLE_REQUESTS as f64 / took.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );

    let metrics = ureq::get(format!("{}/metrics", d.admin))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let commits = value("mailplug_store_commit_requests_count ");
    println!(
        "group commit: {commits:.0} commits, {:.1} requests and {:.0} events per commit on average; server-side ingest mean {:.1} ms",
        value("mailplug_store_commit_requests_sum ") / commits.max(1.0),
        value("mailplug_store_commit_events_sum ") / commits.max(1.0),
        value("mailplug_webhook_ingest_seconds_sum ") * 1e3
            / value("mailplug_webhook_ingest_seconds_count ").max(1.0),
    );
    let stored = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("mailplug_events_stored_total{connection=\"sg\",provider=\"sendgrid\"} ")
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let rss = rss_kib(d.child.id());
    let size: u64 = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("mailplug.db"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "after {stored:.0} stored events: resident memory {:.1} MiB; store on disk {:.1} MiB = {:.0} bytes/event (database + WAL)",
        rss as f64 / 1024.0,
        size as f64 / (1 << 20) as f64,
        size as f64 / stored.max(1.0)
    );
}
