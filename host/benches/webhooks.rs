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

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde::Deserialize;

const SIGNED_AT: i64 = 1_767_268_800;
const BATCH: usize = 100;
const BATCH_SENDERS: usize = 8;
const SINGLE_SENDERS: usize = 64;
const SINGLE_REQUESTS: usize = 20_000;

struct Daemon {
    child: Child,
    admin: String,
    public: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(dir: &Path) -> Daemon {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let key = std::fs::read_to_string(fixture("public_key.txt")).unwrap();
    std::fs::write(
        conf.join("sg.yaml"),
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: sg\nprovider: sendgrid\nsmtp:\n  password: bench\nfrom:\n  email: news@example.com\nworkspaces: [bench]\nwebhook:\n  secret: {}\n",
            key.trim()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailplug"))
        .args([
            "serve",
            "--listen-admin",
            "127.0.0.1:0",
            "--listen-public",
            "127.0.0.1:0",
            "--max-connections-public",
            "256",
        ])
        .arg("--config")
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("MAILPLUG_FIXED_NOW", (SIGNED_AT + 30).to_string())
        .env("MAILPLUG_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut admin = String::new();
    let mut public = String::new();
    for part in line.trim().split(' ') {
        if let Some(a) = part.strip_prefix("admin=") {
            admin = a.to_owned();
        } else if let Some(p) = part.strip_prefix("public=") {
            public = p.to_owned();
        }
    }
    assert!(!public.is_empty(), "no ready line: {line:?}");
    Daemon {
        child,
        admin,
        public,
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/webhooks/sendgrid")
        .join(name)
}

/// One signed request: body and the two SendGrid headers.
struct Signed {
    body: Vec<u8>,
    signature: String,
}

fn signer() -> p256::ecdsa::SigningKey {
    let pem = std::fs::read_to_string(fixture("TEST_ONLY_ecdsa_p256_private_key.pem")).unwrap();
    p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).unwrap()
}

fn sign(key: &p256::ecdsa::SigningKey, body: Vec<u8>) -> Signed {
    let mut message = SIGNED_AT.to_string().into_bytes();
    message.extend_from_slice(&body);
    let signature: p256::ecdsa::Signature = key.sign(&message);
    Signed {
        body,
        signature: base64::engine::general_purpose::STANDARD.encode(signature.to_der()),
    }
}

/// A SendGrid batch of `n` events with unique ids and recipients (as from
/// a large send: every event a different address, so the recipient and
/// suppression indexes take random inserts), a realistic mix of kinds.
fn batch(tag: &str, n: usize) -> Vec<u8> {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            let email = format!("u{i}.{tag}@example.com");
            match i % 4 {
                0 => serde_json::json!({"email": email, "timestamp": SIGNED_AT - 60, "smtp-id": "<x@example.test>", "event": "delivered", "sg_event_id": id, "sg_message_id": format!("msg-{tag}.0"), "response": "250 2.0.0 OK", "tls": 1, "ip": "203.0.113.10"}),
                1 => serde_json::json!({"email": email, "timestamp": SIGNED_AT - 50, "event": "open", "sg_machine_open": false, "sg_event_id": id, "sg_message_id": format!("msg-{tag}.0"), "useragent": "Mozilla/5.0", "ip": "192.0.2.77"}),
                2 => serde_json::json!({"email": email, "timestamp": SIGNED_AT - 40, "event": "bounce", "type": "bounce", "bounce_classification": "Invalid Address", "sg_event_id": id, "sg_message_id": format!("msg-{tag}.0"), "reason": "550 5.1.1 The email account that you tried to reach does not exist", "status": "5.1.1"}),
                _ => serde_json::json!({"email": email, "timestamp": SIGNED_AT - 30, "event": "click", "sg_event_id": id, "sg_message_id": format!("msg-{tag}.0"), "url": "https://shop.example.test/a", "useragent": "Mozilla/5.0", "ip": "192.0.2.77"}),
            }
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(4)
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, signed: &Signed) -> Result<u16, String> {
    agent
        .post(url)
        .header("Content-Type", "application/json")
        .header(
            "X-Twilio-Email-Event-Webhook-Timestamp",
            SIGNED_AT.to_string(),
        )
        .header("X-Twilio-Email-Event-Webhook-Signature", &signed.signature)
        .send(&signed.body[..])
        .map_err(|e| e.to_string())
        .and_then(|mut r| match r.status().as_u16() {
            200 => Ok(200),
            other => Err(format!(
                "{other} {}",
                r.body_mut().read_to_string().unwrap_or_default()
            )),
        })
}

/// Posts every request from `senders` threads; (wall time, latencies).
fn load(url: &str, requests: Arc<Vec<Signed>>, senders: usize) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..senders)
        .map(|_| {
            let (url, requests, next) = (url.to_owned(), requests.clone(), next.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(signed) = requests.get(i) else {
                        return latencies;
                    };
                    let t = Instant::now();
                    let status = post(&agent, &url, signed);
                    assert_eq!(status, Ok(200), "request {i}");
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let took = start.elapsed();
    latencies.sort();
    (took, latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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
    let d = start_daemon(dir.path());
    let url = format!("{}/webhooks/sg", d.public);
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
