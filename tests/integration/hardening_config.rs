//! Hostile and inconsistent configuration through the real `mailplug
//! validate`: alias amplification within a memory bound, output that a file
//! cannot forge or inflate, and every refusal of the SMTP runtime reported
//! by `validate` first, at its field.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{mailplug, run_in, tree};

const CONFIG_ERROR: i32 = 78;

/// Peak resident memory (VmHWM, kB) of a running process, if readable.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` to completion, sampling its peak RSS until it exits; returns
/// the exit code and the last (largest) VmHWM seen. Bounded: a child still
/// running after a minute is killed and the test fails.
fn run_measuring_peak(mut cmd: Command) -> (i32, u64) {
    let mut child = cmd.spawn().expect("spawn mailplug");
    let pid = child.id();
    let mut peak = 0;
    for _ in 0..12_000 {
        // VmHWM only grows, and is gone once the child has exited (its
        // memory is released before it is reaped), so keep the largest.
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            return (status.code().unwrap_or(-1), peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("mailplug validate still running after a minute");
}

#[test]
fn a_large_scalar_aliased_twenty_thousand_times_is_refused_within_100_mb() {
    // 100 KB referenced 20,000 times: 160 KB of text, 2 GB if expanded.
    let mut text = format!(
        "api_version: mailplug/v1\nkind: Connection\nname: bomb\nfrom: {{ email: a@example.com }}\nsmtp: {{ host: h }}\noptions:\n  big: &b \"{}\"\n  list: [",
        "x".repeat(100_000)
    );
    for i in 0..20_000 {
        text.push_str(if i == 0 { "*b" } else { ",*b" });
    }
    text.push_str("]\n");
    assert!(text.len() < 170_000, "{}", text.len());
    let dir = tree(&[("bomb.yaml", text.as_bytes())]);
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = mailplug();
    cmd.current_dir(dir.path())
        .args(["validate", "bomb.yaml"])
        .stdout(out)
        .stderr(Stdio::null());
    let (code, peak_kb) = run_measuring_peak(cmd);
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(code, CONFIG_ERROR, "{stdout}");
    assert!(
        stdout.starts_with("bomb.yaml:8:")
            && stdout.contains(
                ": error: /: document expands to more than 4194304 bytes with its aliases"
            ),
        "{stdout}"
    );
    assert!(peak_kb > 0, "no VmHWM sample was taken");
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} kB");
}

/// Every stdout line of a text run is a diagnostic of `file` or the summary.
fn assert_one_line_per_diagnostic(dir: &Path, file: &str) -> String {
    let text = run_in(dir, &["validate", file]);
    let json = run_in(dir, &["validate", "--format", "json", file]);
    assert_eq!(text.code, CONFIG_ERROR, "{}", text.stdout);
    let items: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert!(!items.is_empty());
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), items.len() + 1, "{}", text.stdout);
    let prefix = format!("{file}:");
    for line in &lines[..items.len()] {
        assert!(line.starts_with(&prefix), "{line:?}");
    }
    assert!(lines[items.len()].starts_with("1 file,"), "{}", text.stdout);
    assert!(!text.stdout.contains('\u{1b}'), "{:?}", text.stdout);
    assert!(!text.stdout.contains('\r'), "{:?}", text.stdout);
    json.stdout
}

#[test]
fn control_characters_in_values_cannot_forge_diagnostic_lines() {
    // `\e` is ESC in a YAML double-quoted scalar.
    let forged = r#"\r\n./other.yaml:1:1: error: forged\e[2K\e]0;title\a"#;
    let doc = format!(
        "api_version: mailplug/v1\nkind: Connection\nname: c\nfrom: {{ email: a@example.com }}\nsmtp:\n  host: h\n  security: \"starttls{forged}\"\n  \"port{forged}\": 1\n"
    );
    let dir = tree(&[("c.yaml", doc.as_bytes())]);
    let json = assert_one_line_per_diagnostic(dir.path(), "c.yaml");
    let text = run_in(dir.path(), &["validate", "c.yaml"]).stdout;
    assert!(
        text.contains(r"c.yaml:7:13: error: /smtp/security: `starttls\r\n./other.yaml:1:1: error: forged\x1b[2K\x1b]0;title\x07` is not one of"),
        "{text}"
    );
    assert!(
        text.contains(r"unknown field `port\r\n./other.yaml"),
        "{text}"
    );
    // JSON keeps the characters, JSON-escaped.
    assert!(
        json.contains(r"starttls\r\n./other.yaml:1:1: error: forged\u001b[2K"),
        "{json}"
    );
}

#[test]
fn a_300_kb_bad_value_produces_a_few_hundred_bytes_of_output() {
    let huge = "q".repeat(300_000);
    let doc = format!(
        "api_version: mailplug/v1\nkind: Connection\nname: c\nfrom: {{ email: a@example.com }}\nsmtp:\n  host: h\n  security: \"{huge}\"\n  ? {huge}\n  : 1\n"
    );
    // Explicit keys: an implicit key is limited to 1024 characters.
    let dup = format!("? {huge}\n: 1\n? {huge}\n: 2\n");
    let kind = format!("kind: \"{huge}\"\n");
    let dir = tree(&[
        ("c.yaml", doc.as_bytes()),
        ("dup.yaml", dup.as_bytes()),
        ("kind.yaml", kind.as_bytes()),
    ]);
    assert_one_line_per_diagnostic(dir.path(), "c.yaml");
    for format in ["text", "json"] {
        let run = run_in(dir.path(), &["validate", "--format", format, "."]);
        assert_eq!(run.code, CONFIG_ERROR, "{}", run.stdout);
        assert!(run.stdout.contains("qqq…`"), "{}", run.stdout);
        assert!(
            run.stdout.len() + run.stderr.len() < 4096,
            "{format}: {} bytes of output",
            run.stdout.len() + run.stderr.len()
        );
    }
}

/// One connection whose `smtp:` section (and more) is `smtp`.
fn connection_with(smtp: &str, rest: &str) -> String {
    format!(
        "api_version: mailplug/v1\nkind: Connection\nname: c\nfrom:\n  email: a@example.com\nsmtp:\n  host: mx.example.com\n{smtp}{rest}"
    )
}

#[test]
fn every_runtime_refusal_is_a_located_validate_error() {
    // One file per rule of `SmtpTarget::validate`, with where `validate`
    // must report it. Each is a connection `test-send` would refuse.
    let cases = [
        (
            "helo-crlf",
            connection_with(
                "  helo_name: \"helo.test\\r\\nMAIL FROM:<x@example.com>\"\n",
                "",
            ),
            "c.yaml:8:14: error: /smtp/helo_name: `helo_name` must be a single host name",
        ),
        (
            "helo-space",
            connection_with("  helo_name: a b\n", ""),
            "c.yaml:8:14: error: /smtp/helo_name:",
        ),
        (
            "username-only",
            connection_with("  username: u\n", ""),
            "c.yaml:8:13: error: /smtp/username: `username` without `password`",
        ),
        (
            "password-only",
            connection_with("  password: { env: P }\n", ""),
            "c.yaml:8:13: error: /smtp/password: `password` without `username`",
        ),
        (
            "from-injection",
            connection_with("", "").replace(
                "a@example.com",
                "\"a@example.com>\\r\\nRCPT TO:<x@example.com\"",
            ),
            "c.yaml:5:10: error: /from/email:",
        ),
        (
            "plaintext-credentials",
            connection_with(
                "  security: none\n  username: u\n  password: { env: P }\n",
                "",
            ),
            "c.yaml:10:13: error: /smtp/password: credentials with `security: none` would be sent unencrypted",
        ),
        (
            "no-connections",
            connection_with("", "limits:\n  max_connections: 0\n"),
            "c.yaml:9:20: error: /limits/max_connections: must be at least 1",
        ),
        (
            "host-not-a-tls-name",
            connection_with("", "").replace("mx.example.com", "\"mx example.com\""),
            "c.yaml:7:9: error: /smtp/host: `mx example.com` is not a valid host name or IP address for TLS",
        ),
        (
            "empty-password",
            connection_with("  username: u\n  password: \"\"\n", ""),
            "c.yaml:9:13: error: /smtp/password: secret is empty",
        ),
    ];
    for (what, doc, want) in cases {
        let dir = tree(&[("c.yaml", doc.as_bytes())]);
        let run = run_in(dir.path(), &["validate", "c.yaml"]);
        assert_eq!(run.code, CONFIG_ERROR, "{what}: {}", run.stdout);
        assert!(
            run.stdout.lines().any(|l| l.starts_with(want)),
            "{what}: missing {want:?} in\n{}",
            run.stdout
        );
    }
}
