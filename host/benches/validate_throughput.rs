//! Validation throughput on 1,000 generated connection files: in-process
//! `config::load` (schema + semantic checks) and the whole `mailplug validate`
//! process, each the median of 5 runs. Run with
//! `cargo bench --bench validate_throughput`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailplug::config::{self, LoadOptions};

const FILES: usize = 1_000;
const RUNS: usize = 5;

fn generate(dir: &std::path::Path) {
    for i in 0..FILES {
        let (port, security) = [(587, "starttls"), (465, "tls"), (2525, "starttls")][i % 3];
        let text = format!(
            "# yaml-language-server: $schema=../schemas/connection.schema.json\n\
             api_version: mailplug/v1\nkind: Connection\nname: conn-{i:04}\n\
             display_name: Generated connection {i}\n\
             smtp:\n  host: smtp{i}.example.com\n  port: {port}\n  security: {security}\n\
             \x20 username: user{i}@example.com\n  password: {{ env: SMTP_PASSWORD_{i} }}\n\
             from:\n  name: Sender {i}\n  email: sender{i}@example.com\n\
             workspaces: [ws-{a}, ws-{b}]\n\
             webhook:\n  secret: {{ env: WEBHOOK_SECRET_{i} }}\n\
             limits: {{ max_connections: 4, per_second: 10, timeout_seconds: 30 }}\n",
            a = i % 7,
            b = i % 11,
        );
        let sub = dir.join(format!("team-{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("conn-{i:04}.yaml")), text).unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let paths = vec![dir.path().to_path_buf()];

    let mut in_process = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let loaded = config::load(&paths, &LoadOptions::default(), None);
        in_process.push(start.elapsed());
        let valid = loaded.connections().count();
        assert_eq!(valid, FILES, "generated files must all be valid");
    }
    let m = median(in_process);
    println!(
        "config::load, {FILES} files: median {:.1} ms = {:.0} documents/s (runs: {RUNS})",
        m.as_secs_f64() * 1e3,
        FILES as f64 / m.as_secs_f64()
    );

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mailplug"));
    let mut process = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = std::process::Command::new(&bin)
            .arg("validate")
            .arg(dir.path())
            .output()
            .unwrap();
        process.push(start.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let m = median(process);
    println!(
        "`mailplug validate` process, {FILES} files: median {:.1} ms wall = {:.0} documents/s (runs: {RUNS})",
        m.as_secs_f64() * 1e3,
        FILES as f64 / m.as_secs_f64()
    );
}
