//! Validation throughput on 1,000 generated connection files: in-process
//! `config::load` (schema + semantic checks) and the whole `mailplug validate`
//! process, each the median of 5 runs. Run with
//! `cargo bench --bench validate_throughput`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::PathBuf;
use std::time::Instant;

use mailplug::config::{self, LoadOptions, NoPlugins};

#[path = "common/mod.rs"]
mod common;
use common::{FILES, generate, median};

const RUNS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let paths = vec![dir.path().to_path_buf()];

    let mut in_process = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let loaded = config::load(&paths, &LoadOptions::default(), &NoPlugins);
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
