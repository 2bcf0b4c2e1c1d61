//! Files a configuration names besides itself — `tls.ca_file` and a
//! `kind: Plugin` component — get the same guarded read as configuration
//! files: a FIFO is refused with an error naming it instead of blocking
//! `validate`, `check`, `plugin test` or the daemon forever.
//!
//! Nothing ever opens the FIFOs for writing, so a blocking open or read
//! would never return; `exits_within` turns that into a failure instead of
//! a hung test run.

use std::process::Stdio;

use crate::daemon::Daemon;
use crate::support::{exits_within, mailplug, mkfifo};

const ZERO_SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A connection trusting `ca.pem` beside it, towards a port nothing listens
/// on (the CA file is read before any connection is made).
fn tls_connection() -> &'static str {
    "api_version: mailplug/v1\nkind: Connection\nname: pinned\nsmtp:\n  host: localhost\n  port: 9\n  security: tls\n  tls: { ca_file: ca.pem }\nfrom: { email: a@example.com }\nlimits: { timeout_seconds: 2 }\n"
}

fn plugin_registration() -> String {
    format!(
        "api_version: mailplug/v1\nkind: Plugin\nid: piped\npath: piped.wasm\nsha256: \"{ZERO_SHA}\"\n"
    )
}

fn run(args: &[&str], dir: &std::path::Path, what: &str) -> crate::support::Run {
    let child = mailplug()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exits_within(child, what)
}

#[test]
fn validate_check_secrets_refuses_a_fifo_ca_file_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.yaml"), tls_connection()).unwrap();
    mkfifo(&tmp.path().join("ca.pem"));
    let r = run(
        &["validate", "--check-secrets", "c.yaml"],
        tmp.path(),
        "validate --check-secrets with a FIFO ca_file",
    );
    assert_eq!(r.code, 78, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("ca.pem") && r.stdout.contains("FIFO"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("/smtp/tls/ca_file") || r.stdout.contains("c.yaml:"));
}

#[test]
fn check_refuses_a_fifo_ca_file_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.yaml"), tls_connection()).unwrap();
    mkfifo(&tmp.path().join("ca.pem"));
    let r = run(
        &["check", "pinned", "--config", "."],
        tmp.path(),
        "check with a FIFO ca_file",
    );
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains("ca.pem") && out.contains("FIFO"),
        "the error names the file and what it is: {out}"
    );
}

#[test]
fn validate_refuses_a_fifo_plugin_file_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("plugin.yaml"), plugin_registration()).unwrap();
    mkfifo(&tmp.path().join("piped.wasm"));
    let r = run(
        &["validate", "plugin.yaml"],
        tmp.path(),
        "validate with a FIFO plugin path",
    );
    assert_eq!(r.code, 78, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("piped.wasm") && r.stdout.contains("FIFO"),
        "{}",
        r.stdout
    );
}

#[test]
fn plugin_test_refuses_a_fifo_component_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    mkfifo(&tmp.path().join("piped.wasm"));
    std::fs::write(tmp.path().join("body.json"), "{}").unwrap();
    let r = run(
        &[
            "plugin",
            "test",
            "./piped.wasm",
            "--body",
            "body.json",
            "--data-dir",
            "data",
        ],
        tmp.path(),
        "plugin test on a FIFO",
    );
    assert_eq!(r.code, 78, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("piped.wasm") && r.stderr.contains("FIFO"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_daemon_starts_and_reports_a_fifo_plugin_file_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("plugin.yaml"), plugin_registration()).unwrap();
    std::fs::write(dir.join("c.yaml"), tls_connection()).unwrap();
    std::fs::write(dir.join("ca.pem"), "").unwrap();
    mkfifo(&dir.join("piped.wasm"));
    // `start` waits for the ready line: a load blocked on the FIFO never
    // gets there and fails the test at its deadline.
    let d = Daemon::start(&dir, &[]);
    let (status, body) = d.get_json("/v1/status");
    assert_eq!(status, 200);
    let errors = body["errors"].to_string();
    assert!(
        errors.contains("piped.wasm") && errors.contains("FIFO"),
        "{body}"
    );
}
