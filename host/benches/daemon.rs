//! Daemon benchmarks with 1,000 connection files, against the release binary
//! on 127.0.0.1: startup to ready, idle resident memory, file write → new
//! value served, full reload, and GET latency under `wrk` with and without
//! 100 concurrent reloads (when `wrk` is installed: `apt-get install wrk`).
//! Run with `cargo bench --bench daemon`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{generate, median, write_connection};

const RUNS: usize = 5;
const DEBOUNCE_MS: u64 = 200;

struct Daemon {
    child: Child,
    admin: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, data: &Path) -> (Daemon, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailplug"))
        .args([
            "serve",
            "--listen-admin",
            "127.0.0.1:0",
            "--listen-public",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(dir)
        .arg("--data-dir")
        .arg(data)
        .env("MAILPLUG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let elapsed = started.elapsed();
    let admin = line
        .split(' ')
        .find_map(|p| p.strip_prefix("admin="))
        .expect("ready line")
        .trim()
        .to_owned();
    (Daemon { child, admin }, elapsed)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn wrk(url: &str, seconds: u32) -> Option<String> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wrk_summary(report: &str) -> String {
    let pick = |prefix: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| format!("{prefix} n/a"))
    };
    let failures = report
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{} | {} | {} | failures: {}",
        pick("50%"),
        pick("99%"),
        pick("Requests/sec"),
        if failures.is_empty() {
            "none"
        } else {
            &failures
        }
    )
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    generate(&dir);
    let data = tmp.path().join("data");

    // The first start compiles every first-party plugin into the (empty)
    // cache in the data dir; the following ones load them from it.
    let (d, cold) = start(&dir, &data);
    drop(d);
    let mut startups = Vec::new();
    for _ in 0..RUNS {
        let (d, t) = start(&dir, &data);
        startups.push(t);
        drop(d);
    }
    println!(
        "startup to ready, 1000 connections + first-party plugins: first start (compiling) {:.1} ms, \
         compile cache warm median {:.1} ms",
        cold.as_secs_f64() * 1e3,
        median(startups).as_secs_f64() * 1e3
    );

    let (d, _) = start(&dir, &data);
    let http = agent();
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "resident memory idle, 1000 connections + first-party plugins: {:.1} MiB",
        rss_kib(d.child.id()) as f64 / 1024.0
    );

    let url = format!("{}/v1/connections/conn-0500", d.admin);
    let mut visible = Vec::new();
    for n in 0..11 {
        let host = format!("changed-{n}.example.com");
        write_connection(&dir, 500, &host);
        let t = Instant::now();
        let deadline = t + Duration::from_secs(10);
        loop {
            let body = http
                .get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            if body.contains(&host) {
                break;
            }
            assert!(Instant::now() < deadline, "change never became visible");
            std::thread::sleep(Duration::from_millis(1));
        }
        visible.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let m = median(visible);
    println!(
        "file write -> new value served: median {:.1} ms = debounce {DEBOUNCE_MS} ms + {:.1} ms",
        m.as_secs_f64() * 1e3,
        m.as_secs_f64() * 1e3 - DEBOUNCE_MS as f64
    );

    let reload_url = format!("{}/v1/reload", d.admin);
    let mut round_trips = Vec::new();
    let mut in_daemon = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let body = http
            .post(&reload_url)
            .send_empty()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        round_trips.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        in_daemon.push(Duration::from_secs_f64(
            v["last_reload"]["duration_ms"].as_f64().unwrap() / 1e3,
        ));
    }
    println!(
        "full reload of 1000 files: median {:.1} ms in the daemon, {:.1} ms POST /v1/reload round trip",
        median(in_daemon).as_secs_f64() * 1e3,
        median(round_trips).as_secs_f64() * 1e3
    );

    let list = format!("{}/v1/connections", d.admin);
    let Some(baseline) = wrk(&list, 5) else {
        println!("wrk not installed: skipping the load test (apt-get install wrk)");
        return;
    };
    println!(
        "GET /v1/connections, no reloads:   {}",
        wrk_summary(&baseline)
    );
    let reloader = std::thread::spawn(move || {
        let http = agent();
        let mut failed = 0;
        for _ in 0..100 {
            let status = http
                .post(&reload_url)
                .send_empty()
                .unwrap()
                .status()
                .as_u16();
            if status != 200 {
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        failed
    });
    let during = wrk(&list, 5).unwrap_or_default();
    let failed_reloads = reloader.join().unwrap();
    println!(
        "GET /v1/connections, 100 reloads:  {}",
        wrk_summary(&during)
    );
    println!("reload requests that failed: {failed_reloads}");
}
