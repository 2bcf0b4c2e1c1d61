//! Per-provider parse throughput: each first-party plugin's largest sample
//! batch through the sandbox (reused instance, memory cap and deadline on,
//! the host's output checks included) against the same plugin code compiled
//! natively (`plugins/bench-native`), in interleaved rounds of one run.
//!
//! Run it with `bash host/benches/providers.sh`, which builds the native
//! program and passes it in `MAILPLUG_NATIVE_BENCH`. Prints one line per
//! plugin: case, events, wasm and native events/s (median over rounds) and
//! the ratio.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark set-up fails loudly and prints its table"
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailplug::runtime::{Runtime, RuntimeOptions, WebhookRequest};

/// Rounds; each times every plugin natively and then in the sandbox.
const ROUNDS: usize = 9;
/// Time per plugin and round on each side.
const MILLIS: u64 = 150;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One plugin's benchmark request.
struct Case {
    plugin: String,
    name: String,
    body: PathBuf,
    headers: Option<PathBuf>,
    events: usize,
}

/// The case of `dirs` whose golden output is the longest event array
/// (ties: the larger body).
fn largest(plugin: &str, dirs: &[PathBuf]) -> Option<Case> {
    let mut best: Option<(usize, u64, Case)> = None;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().into_string().unwrap_or_default();
            let Some(case) = name.strip_suffix(".expected.json") else {
                continue;
            };
            let Ok(golden) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(serde_json::Value::Array(events)) = serde_json::from_slice(&golden) else {
                continue;
            };
            let body = ["json", "form"]
                .iter()
                .map(|ext| dir.join(format!("{case}.{ext}")))
                .find(|p| p.is_file());
            let Some(body) = body else { continue };
            let size = std::fs::metadata(&body).map_or(0, |m| m.len());
            let key = (events.len(), size);
            if best.as_ref().is_none_or(|(n, s, _)| key > (*n, *s)) {
                let headers = dir.join(format!("{case}.headers.json"));
                best = Some((
                    events.len(),
                    size,
                    Case {
                        plugin: plugin.to_owned(),
                        name: format!(
                            "{}/{case}",
                            dir.file_name().unwrap_or_default().to_string_lossy()
                        ),
                        body,
                        headers: headers.is_file().then_some(headers),
                        events: events.len(),
                    },
                ));
            }
        }
    }
    best.map(|(_, _, case)| case)
}

fn request(case: &Case) -> WebhookRequest {
    let headers = match &case.headers {
        None => Vec::new(),
        Some(path) => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            map.into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        }
    };
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers,
        body: std::fs::read(&case.body).unwrap(),
    }
}

/// Nanoseconds per native call of each case, from one run of the native program.
fn native_round(program: &Path, cases: &[Case]) -> Vec<f64> {
    let mut cmd = std::process::Command::new(program);
    cmd.arg(MILLIS.to_string());
    for case in cases {
        let mut spec = format!("{}={}", case.plugin, case.body.display());
        if let Some(h) = &case.headers {
            spec.push('=');
            spec.push_str(&h.display().to_string());
        }
        cmd.arg(spec);
    }
    let out = cmd.output().expect("running the native benchmark program");
    assert!(
        out.status.success(),
        "native program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    lines
        .iter()
        .zip(cases)
        .map(|(line, case)| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields[0], case.plugin, "{line}");
            assert_eq!(
                fields[2].parse::<usize>().unwrap(),
                case.events,
                "{}: the native build disagrees on the event count",
                case.name
            );
            fields[1].parse().unwrap()
        })
        .collect()
}

/// Nanoseconds per sandboxed call, reused instance.
fn wasm_round(runtime: &Runtime, case: &Case, request: &WebhookRequest) -> f64 {
    let plugin = runtime.plugin(&case.plugin).unwrap();
    let mut instance = plugin.instance();
    let events = instance.parse_webhook(request).unwrap().unwrap().len();
    assert_eq!(events, case.events, "{}", case.name);
    let budget = Duration::from_millis(MILLIS);
    let start = Instant::now();
    let mut calls: u32 = 0;
    while start.elapsed() < budget {
        for _ in 0..16 {
            black_box(instance.parse_webhook(black_box(request)).unwrap().unwrap());
        }
        calls += 16;
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let Ok(program) = std::env::var("MAILPLUG_NATIVE_BENCH") else {
        println!(
            "providers bench: MAILPLUG_NATIVE_BENCH is not set; run `bash host/benches/providers.sh`"
        );
        return;
    };
    let program = PathBuf::from(program);
    let runtime = Runtime::with_builtins(RuntimeOptions::default()).unwrap();
    let fixtures = repo().join("tests/fixtures");
    // One plugin only (profiling): `MAILPLUG_BENCH_ONLY=postmark`.
    let only = std::env::var("MAILPLUG_BENCH_ONLY").ok();
    let cases: Vec<Case> = mailplug::runtime::builtin::BUILTINS
        .iter()
        .filter(|b| only.as_deref().is_none_or(|o| o == b.id))
        .filter_map(|b| {
            let own = fixtures.join("plugins").join(b.id);
            let dirs = [
                fixtures.join("webhooks").join(b.id.replace('-', "_")),
                own.clone(),
            ];
            let case = if b.id == "custom-smtp" {
                largest(b.id, &[own.parent().unwrap().to_path_buf()])
            } else {
                largest(b.id, &dirs)
            };
            if case.is_none() {
                println!("{}: no sample batch found", b.id);
            }
            case
        })
        .collect();
    let requests: Vec<WebhookRequest> = cases.iter().map(request).collect();
    let mut native: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut wasm: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        eprint!("\rround {}/{ROUNDS}", round + 1);
        for (i, ns) in native_round(&program, &cases).into_iter().enumerate() {
            native[i].push(ns);
        }
        for (i, (case, request)) in cases.iter().zip(&requests).enumerate() {
            wasm[i].push(wasm_round(&runtime, case, request));
        }
    }
    eprintln!();
    println!(
        "| plugin | largest sample batch | events | bytes | sandboxed events/s | native events/s | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (i, case) in cases.iter().enumerate() {
        let (w, n) = (median(wasm[i].clone()), median(native[i].clone()));
        let rate = |ns: f64| case.events as f64 * 1e9 / ns;
        println!(
            "| `{}` | {} | {} | {} | {:.0} | {:.0} | {:.1} % |",
            case.plugin,
            case.name,
            case.events,
            requests[i].body.len(),
            rate(w),
            rate(n),
            100.0 * n / w
        );
    }
}
