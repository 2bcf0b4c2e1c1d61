//! Webhook ingest with the store on PostgreSQL, one and two replicas, each
//! against the embedded SQLite store of one process in the same run: signed
//! 100-event SendGrid batches from 8 keep-alive senders (events/s, p99 per
//! request), then single-event requests from 64 senders (requests/s, p99).
//! With two replicas the senders alternate between them, as behind a load
//! balancer. Every setup gets a fresh store (a new data dir, a new
//! database). CPU seconds used by mailplug and by PostgreSQL during each
//! setup are read from /proc, to say where the time goes.
//!
//! Needs PostgreSQL's server binaries (as the tests do: `MAILPLUG_PG_BIN`,
//! `pg_config --bindir` or `/usr/lib/postgresql/*/bin`); the server is
//! started on a loopback port in a temporary directory and removed after.
//! Run with `cargo bench --bench replicas` (`REPLICAS_BENCH_EVENTS=N`,
//! default 200,000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::sync::Arc;

#[path = "common/webhook_load.rs"]
mod webhook_load;
use webhook_load::{Daemon, Signed, batch, load, percentile, sign, signer, start_daemon};

#[path = "../../tests/integration/replicas/pg.rs"]
#[allow(dead_code, reason = "the restart half is for the tests")]
mod pg;

const BATCH: usize = 100;
const BATCH_SENDERS: usize = 8;
const SINGLE_SENDERS: usize = 64;
const SINGLE_REQUESTS: usize = 10_000;

/// User + system CPU seconds of a process and its children so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime, cstime are fields 14-17 (1-based), here 11-14.
    (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0
}

/// CPU seconds of every PostgreSQL server process now running.
fn postgres_cpu() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += cpu_seconds(pid);
        }
    }
    total
}

struct Figures {
    events_per_s: f64,
    batch_p99_ms: f64,
    singles_per_s: f64,
    single_p99_ms: f64,
    mailplug_cpu: f64,
    postgres_cpu: f64,
    wall: f64,
}

fn run(daemons: &[Daemon], batches: &Arc<Vec<Signed>>, singles: &Arc<Vec<Signed>>) -> Figures {
    let urls: Vec<String> = daemons
        .iter()
        .map(|d| format!("{}/webhooks/sg", d.public))
        .collect();
    let cpu = |d: &[Daemon]| d.iter().map(|d| cpu_seconds(d.child.id())).sum::<f64>();
    let (m0, p0) = (cpu(daemons), postgres_cpu());
    let (took, latencies) = load(&urls, batches.clone(), BATCH_SENDERS);
    let (took_singles, single_latencies) = load(&urls, singles.clone(), SINGLE_SENDERS);
    let (m1, p1) = (cpu(daemons), postgres_cpu());
    Figures {
        events_per_s: (batches.len() * BATCH) as f64 / took.as_secs_f64(),
        batch_p99_ms: percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        singles_per_s: singles.len() as f64 / took_singles.as_secs_f64(),
        single_p99_ms: percentile(&single_latencies, 0.99).as_secs_f64() * 1e3,
        mailplug_cpu: m1 - m0,
        postgres_cpu: p1 - p0,
        wall: (took + took_singles).as_secs_f64(),
    }
}

fn main() {
    let total: usize = std::env::var("REPLICAS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; daemons, PostgreSQL and the load generator share them");
    let Some(server) = pg::start() else {
        println!("replicas bench: skipped (MAILPLUG_SKIP_POSTGRES=1)");
        return;
    };
    let key = signer();
    eprintln!(
        "signing {} batches of {BATCH} events ...",
        total.div_ceil(BATCH)
    );
    let batches: Arc<Vec<Signed>> = Arc::new(
        (0..total.div_ceil(BATCH))
            .map(|b| sign(&key, batch(&format!("b{b}"), BATCH)))
            .collect(),
    );
    let singles: Arc<Vec<Signed>> = Arc::new(
        (0..SINGLE_REQUESTS)
            .map(|i| sign(&key, batch(&format!("s{i}"), 1)))
            .collect(),
    );
    let mut rows = Vec::new();
    for (name, replicas, postgres) in [
        ("SQLite, 1 process", 1, false),
        ("PostgreSQL, 1 replica", 1, true),
        ("PostgreSQL, 2 replicas", 2, true),
    ] {
        eprintln!("{name} ...");
        let dir = tempfile::tempdir().unwrap();
        let url = postgres.then(|| server.database(&format!("bench_{}", rows.len())));
        let daemons: Vec<Daemon> = (0..replicas)
            .map(|r| {
                let d = dir.path().join(format!("replica{r}"));
                start_daemon(&d, url.as_deref())
            })
            .collect();
        let f = run(&daemons, &batches, &singles);
        drop(daemons);
        rows.push((name, f));
    }
    let base = rows[0].1.events_per_s;
    let base_singles = rows[0].1.singles_per_s;
    println!(
        "| setup | events/s ({BATCH}-event batches, {BATCH_SENDERS} senders) | vs SQLite | p99 per batch | single-event requests/s ({SINGLE_SENDERS} senders) | vs SQLite | p99 single | CPU s mailplug | CPU s PostgreSQL | CPU used of {cores} cores |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.1} ms | {:.0} | {:.2} | {:.1} ms | {:.1} | {:.1} | {:.0} % |",
            f.events_per_s,
            f.events_per_s / base,
            f.batch_p99_ms,
            f.singles_per_s,
            f.singles_per_s / base_singles,
            f.single_p99_ms,
            f.mailplug_cpu,
            f.postgres_cpu,
            100.0 * (f.mailplug_cpu + f.postgres_cpu) / (f.wall * cores as f64),
        );
    }
}
