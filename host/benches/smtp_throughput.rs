//! SMTP throughput: mailplug's pooled sender vs Postfix `smtp-source`, both
//! against the same Postfix `smtp-sink` on loopback, in the same run.
//!
//! Run with `host/benches/smtp.sh` (installs Postfix if needed) or
//! `cargo bench --bench smtp_throughput`. Knobs (environment):
//! `BENCH_MESSAGES` (5000), `BENCH_SIZE` (2048 body bytes), `BENCH_POOLS`
//! (`1,8,32`), `BENCH_REPEATS` (5, the median is reported),
//! `BENCH_STALL_MESSAGES` (200, for the lettre-default reference),
//! `BENCH_RUNTIME` (`multi`, or `current` for a single-threaded runtime).
//!
//! smtp-source does not pipeline; mailplug pipelines MAIL/RCPT/DATA when
//! the server offers PIPELINING, so a second sink started with `-p` (no
//! PIPELINING) gives the like-for-like column.
//!
//! The lettre-default column sends through lettre's own pooled
//! `AsyncSmtpTransport` as configured by default (no `TCP_NODELAY`): it
//! shows the Nagle / delayed-ACK stall mailplug's own sockets avoid.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness: fail loudly"
)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailplug::mail::{Mailer, OutgoingMessage, Security, SmtpTarget};

const SINK: &str = "/usr/sbin/smtp-sink";
const SOURCE: &str = "/usr/sbin/smtp-source";
const FROM: &str = "bench@example.test";
const TO: &str = "sink@example.test";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink(port: u16, pipelining: bool) -> Sink {
    let mut cmd = Command::new(SINK);
    if !pipelining {
        cmd.arg("-p");
    }
    // smtp-sink refuses to run as root without a user to switch to.
    if is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let sink = Sink(
        cmd.args(["-m", "512", &format!("127.0.0.1:{port}"), "1024"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{SINK}: {e}; run host/benches/smtp.sh to install Postfix")),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sink;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("smtp-sink did not start on port {port}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn message(size: usize) -> (Message, OutgoingMessage) {
    let line = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
    let body: String = line.repeat(size / line.len() + 1)[..size].to_owned();
    let m = Message::builder()
        .from(FROM.parse().unwrap())
        .to(TO.parse().unwrap())
        .subject("bench")
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .unwrap();
    let out = OutgoingMessage::from_message(&m, "<bench@example.test>".to_owned());
    (m, out)
}

fn target(port: u16, pool: usize) -> SmtpTarget {
    SmtpTarget {
        connection: "bench".into(),
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        username_is_secret: false,
        password: None,
        ca_file: None,
        verify_tls: true,
        helo_name: "bench.mailplug.test".into(),
        allow_insecure_auth: false,
        extra_headers: Vec::new(),
        from_name: None,
        from_email: FROM.into(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(30),
        max_connections: pool,
    }
}

/// messages/s of `smtp-source` with `sessions` reused sessions.
fn smtp_source(port: u16, sessions: usize, messages: usize, size: usize) -> f64 {
    let start = Instant::now();
    let status = Command::new(SOURCE)
        .args([
            "-d",
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
        ])
        .args([
            "-l",
            &size.to_string(),
            "-f",
            FROM,
            "-t",
            TO,
            "-M",
            "bench.mailplug.test",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .status()
        .unwrap_or_else(|e| panic!("{SOURCE}: {e}"));
    assert!(status.success(), "smtp-source failed");
    messages as f64 / start.elapsed().as_secs_f64()
}

/// messages/s of mailplug's pooled `Mailer` with `pool` sessions
/// (one sending task per session).
async fn mailplug(port: u16, pool: usize, messages: usize, msg: &OutgoingMessage) -> f64 {
    let mailer = Mailer::new(target(port, pool)).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pool {
        let (mailer, next, msg) = (mailer.clone(), next.clone(), msg.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                mailer.send(&msg).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = messages as f64 / start.elapsed().as_secs_f64();
    mailer.close().await;
    rate
}

/// messages/s of lettre's own pooled transport, default configuration.
async fn lettre_default(port: u16, pool: usize, messages: usize, msg: &Message) -> f64 {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(pool as u32))
        .build();
    let transport = Arc::new(transport);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pool {
        let (transport, next, msg) = (transport.clone(), next.clone(), msg.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                transport.send(msg.clone()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let messages: usize = env_or("BENCH_MESSAGES", 5000);
    let size: usize = env_or("BENCH_SIZE", 2048);
    let repeats: usize = env_or("BENCH_REPEATS", 5);
    let stall_messages: usize = env_or("BENCH_STALL_MESSAGES", 200);
    let pools: Vec<usize> = std::env::var("BENCH_POOLS")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let port = free_port();
    let _sink = start_sink(port, true);
    let plain_port = free_port();
    let _plain_sink = start_sink(plain_port, false);
    let (lettre_msg, msg) = message(size);
    // The daemon runs a multi-threaded runtime; BENCH_RUNTIME=current
    // measures the single-threaded one.
    let rt = if std::env::var("BENCH_RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };

    println!(
        "SMTP throughput: {messages} messages of {size} body bytes to smtp-sink on 127.0.0.1:{port}, \
         reused sessions, median of {repeats} runs (nproc={})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>8} {:>14} {:>12} {:>7} {:>19} {:>7} {:>14}",
        "sessions",
        "smtp-source/s",
        "mailplug/s",
        "ratio",
        "mailplug no-pipe/s",
        "ratio",
        "lettre dflt/s"
    );
    for &pool in &pools {
        let (mut src, mut ours, mut nopipe) = (Vec::new(), Vec::new(), Vec::new());
        // Interleave so background load hits every side alike.
        for _ in 0..repeats {
            src.push(smtp_source(port, pool, messages, size));
            ours.push(rt.block_on(mailplug(port, pool, messages, &msg)));
            nopipe.push(rt.block_on(mailplug(plain_port, pool, messages, &msg)));
        }
        let stall = rt.block_on(lettre_default(
            port,
            pool,
            stall_messages.max(pool),
            &lettre_msg,
        ));
        let (s, m, n) = (median(src), median(ours), median(nopipe));
        println!(
            "{pool:>8} {s:>14.0} {m:>12.0} {:>6.1}% {n:>19.0} {:>6.1}% {stall:>14.0}",
            100.0 * m / s,
            100.0 * n / s
        );
    }
}
