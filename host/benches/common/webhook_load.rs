//! What the webhook benchmarks share: a release daemon with one SendGrid
//! connection, signed SendGrid batches, and a load generator of keep-alive
//! senders recording each request's latency.

#![allow(dead_code, reason = "each benchmark uses part of it")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;

pub const SIGNED_AT: i64 = 1_767_268_800;

pub struct Daemon {
    pub child: Child,
    pub admin: String,
    pub public: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mailplug serve` on `dir/conf` with data in `dir/data`; `store` is a
/// `--store` URL (PostgreSQL) or `None` (SQLite in the data dir).
pub fn start_daemon(dir: &Path, store: Option<&str>) -> Daemon {
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
    // MAILPLUG_BIN compares another build of the daemon under the same load.
    let bin =
        std::env::var_os("MAILPLUG_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mailplug").into());
    let mut child = Command::new(bin)
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
        .envs(store.map(|s| ("MAILPLUG_STORE_URL", s)))
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

pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/webhooks/sendgrid")
        .join(name)
}

/// One signed request: body and the two SendGrid headers.
pub struct Signed {
    pub body: Vec<u8>,
    pub signature: String,
}

pub fn signer() -> p256::ecdsa::SigningKey {
    let pem = std::fs::read_to_string(fixture("TEST_ONLY_ecdsa_p256_private_key.pem")).unwrap();
    p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).unwrap()
}

pub fn sign(key: &p256::ecdsa::SigningKey, body: Vec<u8>) -> Signed {
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
pub fn batch(tag: &str, n: usize) -> Vec<u8> {
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

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(4)
        .build()
        .into()
}

pub fn post(agent: &ureq::Agent, url: &str, signed: &Signed) -> Result<u16, String> {
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

/// Posts every request from `senders` threads, sender `i` to
/// `urls[i % urls.len()]`; (wall time, latencies).
pub fn load(
    urls: &[String],
    requests: Arc<Vec<Signed>>,
    senders: usize,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..senders)
        .map(|s| {
            let (url, requests, next) =
                (urls[s % urls.len()].clone(), requests.clone(), next.clone());
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

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
