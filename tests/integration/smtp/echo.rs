//! A server that echoes the credentials in its 535 reply (the `echo` and
//! `echo_login` ports of tests/smtp/server.py): the password, the AUTH PLAIN
//! blob and their base64 forms appear nowhere in `mailplug check` (text and
//! JSON), `mailplug test-send`, the admin API, the stored last outcome or
//! the SMTP trace log.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_NO_PAD};
use serde_json::Value;

use super::cli::config_dir;
use super::harness::{PASSWORD, USER, server};
use crate::support::mailplug;

/// Every form of the credentials a leak could take, computed here rather
/// than by the redactor: the password, its base64, the AUTH PLAIN blob and
/// its base64, and the characters of that blob's base64 that come from the
/// password alone (what a partial echo would show).
fn leaked_forms() -> Vec<String> {
    let blob = format!("\0{USER}\0{PASSWORD}");
    let blob_b64 = B64.encode(&blob);
    let start = (8 * (2 + USER.len())).div_ceil(6);
    let end = 8 * blob.len() / 6;
    vec![
        PASSWORD.to_owned(),
        B64.encode(PASSWORD),
        B64_NO_PAD.encode(PASSWORD),
        blob_b64.clone(),
        B64_NO_PAD.encode(&blob),
        blob_b64[start..end].to_owned(),
        format!("\\0{USER}\\0{PASSWORD}"),
        B64.encode(USER),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for form in leaked_forms() {
        assert!(
            !text.contains(&form),
            "{what} leaks the credentials (as {form:?}):\n{text}"
        );
    }
}

#[test]
fn credentials_echoed_by_the_server_are_redacted_in_cli_output_and_trace() {
    let s = server();
    let dir = config_dir(&[
        ("echo", s.echo, "starttls", true),
        ("echologin", s.echo_login, "starttls", true),
    ]);
    for args in [
        vec!["check", "echo"],
        vec!["check", "echo", "--format", "json"],
        vec!["check", "echologin"],
        vec!["check", "echologin", "--format", "json"],
        vec!["test-send", "echo", "--to", "echo@example.test"],
        vec![
            "test-send",
            "echo",
            "--to",
            "echo@example.test",
            "--format",
            "json",
        ],
        vec!["test-send", "echologin", "--to", "echo@example.test"],
    ] {
        let out = mailplug()
            .args(&args)
            .arg("--config")
            .arg(dir.path())
            .env("MAILPLUG_LOG", "mailplug::smtp=trace")
            .env("SMTP_TEST_PW", PASSWORD)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let all = format!("{stdout}\n{stderr}");
        assert_eq!(out.status.code(), Some(69), "{args:?}:\n{all}");
        assert!(stdout.contains("auth_failed"), "{args:?}:\n{all}");
        // The echo reached the output, with the credentials cut out.
        assert!(
            stdout.contains("raw=<redacted>"),
            "{args:?}: the server's echo is missing:\n{all}"
        );
        if args[0] == "check" {
            assert!(
                stderr.contains("S: 535 5.7.8"),
                "{args:?}: the trace must show the reply:\n{all}"
            );
        }
        assert_clean(&format!("mailplug {args:?}"), &all);
    }
}

/// `mailplug serve` with the SMTP trace on and stderr in a file.
struct Serve {
    child: Child,
    admin: String,
    log: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(config: &std::path::Path) -> Serve {
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("stderr.log");
        let mut child = mailplug()
            .args(["serve", "--config"])
            .arg(config)
            .args([
                "--listen-admin",
                "127.0.0.1:0",
                "--listen-public",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .env("MAILPLUG_LOG", "info,mailplug::smtp=trace")
            .env("SMTP_TEST_PW", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let admin = line
            .split_whitespace()
            .find_map(|p| p.strip_prefix("admin="))
            .unwrap_or_else(|| panic!("no ready line: {line:?}"))
            .to_owned();
        Serve {
            child,
            admin,
            log,
            _data: data,
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// POSTs `body` to an admin path; returns the status and the raw body.
    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut resp = Self::agent()
            .post(format!("{}{path}", self.admin))
            .content_type("application/json")
            .send(body)
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    }

    fn get(&self, path: &str) -> String {
        let mut resp = Self::agent()
            .get(format!("{}{path}", self.admin))
            .call()
            .unwrap();
        resp.body_mut().read_to_string().unwrap()
    }
}

#[test]
fn credentials_echoed_by_the_server_are_redacted_in_the_api_last_outcome_and_daemon_log() {
    let s = server();
    let dir = config_dir(&[
        ("echo", s.echo, "starttls", true),
        ("echologin", s.echo_login, "starttls", true),
    ]);
    let mut d = Serve::start(dir.path());
    let mut bodies = Vec::new();
    for (path, body) in [
        ("/v1/connections/echo/check", ""),
        ("/v1/connections/echologin/check", ""),
        (
            "/v1/connections/echo/test",
            r#"{"to": "api-echo@example.test"}"#,
        ),
        (
            "/v1/connections/echologin/test",
            r#"{"to": "api-echo@example.test"}"#,
        ),
    ] {
        let (status, text) = d.post(path, body);
        assert_eq!(status, 200, "{path}: {text}");
        let report: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            report["classification"]["class"], "auth_failed",
            "{path}: {text}"
        );
        assert!(text.contains("raw=<redacted>"), "{path}: {text}");
        bodies.push((path.to_owned(), text));
    }
    for name in ["echo", "echologin"] {
        let detail = d.get(&format!("/v1/connections/{name}"));
        let v: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(
            v["last_check"]["report"]["classification"]["class"], "auth_failed",
            "{detail}"
        );
        assert_eq!(
            v["last_test"]["report"]["classification"]["class"], "auth_failed",
            "{detail}"
        );
        bodies.push((format!("GET /v1/connections/{name}"), detail));
    }
    bodies.push(("GET /v1/status".into(), d.get("/v1/status")));
    let _ = d.child.kill();
    let _ = d.child.wait();
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("S: 535 5.7.8"),
        "the trace must show the reply:\n{log}"
    );
    assert_clean("daemon log", &log);
    for (what, text) in &bodies {
        assert_clean(what, text);
    }
}
