//! `mailplug check` / `mailplug test-send` through the real binary: output
//! shape, JSON, and exit codes (0, 69, 75, 78).

use super::harness::{server, spooled};
use crate::support::mailplug;

/// A config directory with one connection per `(name, port, security,
/// with_auth)`, trusting the test CA; the password comes from
/// `SMTP_TEST_PW`.
pub fn config_dir(conns: &[(&str, u16, &str, bool)]) -> tempfile::TempDir {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    for (name, port, security, auth) in conns {
        let auth = if *auth {
            "  username: tester\n  password: { env: SMTP_TEST_PW }\n"
        } else {
            ""
        };
        let yaml = format!(
            "api_version: mailplug/v1\nkind: Connection\nname: {name}\nsmtp:\n  host: localhost\n  port: {port}\n  security: {security}\n{auth}  tls: {{ ca_file: {ca} }}\n  helo_name: cli.mailplug.test\nfrom:\n  name: CLI Tests\n  email: sender@example.test\nlimits: {{ max_connections: 1, timeout_seconds: 5 }}\n",
            ca = s.ca_file.display()
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), yaml).unwrap();
    }
    dir
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(dir: &tempfile::TempDir, password: &str, args: &[&str]) -> Out {
    let out = mailplug()
        .args(args)
        .arg("--config")
        .arg(dir.path())
        .env("SMTP_TEST_PW", password)
        .output()
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_prints_one_line_per_stage_and_exits_0() {
    let s = server();
    let dir = config_dir(&[("sub", s.submission, "starttls", true)]);
    let o = run(
        &dir,
        super::harness::PASSWORD,
        &["check", "sub", "--rcpt", "a@example.test"],
    );
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    for stage in [
        "DNS",
        "TCP connect",
        "banner",
        "EHLO",
        "TLS",
        "AUTH",
        "MAIL FROM",
        "RCPT TO",
        "RSET/QUIT",
    ] {
        assert!(
            o.stdout
                .lines()
                .any(|l| l.trim_start().starts_with("✓") && l.contains(stage) && l.contains(" ms")),
            "no ✓ line for {stage}:\n{}",
            o.stdout
        );
    }
    assert!(o.stdout.contains("result: accepted"), "{}", o.stdout);
}

#[test]
fn check_json_and_failure_exit_codes() {
    let s = server();
    let dir = config_dir(&[
        ("sub", s.submission, "starttls", true),
        ("throttled", s.throttle, "none", false),
    ]);
    let o = run(&dir, "wrong", &["check", "sub", "--format", "json"]);
    assert_eq!(
        o.code,
        Some(69),
        "permanent failure: {}\n{}",
        o.stdout,
        o.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["classification"]["class"], "auth_failed");
    assert_eq!(v["classification"]["stage"], "auth");
    assert_eq!(v["classification"]["reply_code"], 535);
    assert_eq!(v["classification"]["enhanced_status"], "5.7.8");
    assert_eq!(v["classification"]["temporary"], false);
    assert!(
        v["classification"]["hint"]
            .as_str()
            .unwrap()
            .contains("username")
    );
    assert_eq!(
        v["stages"].as_array().unwrap().last().unwrap()["status"],
        "failed"
    );

    let o = run(&dir, "", &["check", "throttled"]);
    assert_eq!(
        o.code,
        Some(75),
        "temporary failure: {}\n{}",
        o.stdout,
        o.stderr
    );
    assert!(o.stdout.contains("✗ MAIL FROM"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("result: throttled at MAIL FROM (temporary): 451 4.7.1"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("hint: "), "{}", o.stdout);

    let o = run(&dir, "", &["check", "no-such-connection"]);
    assert_eq!(o.code, Some(78), "config error: {}", o.stderr);
    assert!(
        o.stderr.contains("sub") && o.stderr.contains("throttled"),
        "{}",
        o.stderr
    );
}

#[test]
fn unresolvable_password_is_a_config_error() {
    let s = server();
    let dir = config_dir(&[("sub", s.submission, "starttls", true)]);
    let o = mailplug()
        .args(["check", "sub", "--config"])
        .arg(dir.path())
        .env_remove("SMTP_TEST_PW")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("SMTP_TEST_PW"));
}

#[test]
fn test_send_prints_the_queue_id_and_the_mail_arrives() {
    let s = server();
    let dir = config_dir(&[("sub", s.submission, "starttls", true)]);
    let o = run(
        &dir,
        super::harness::PASSWORD,
        &[
            "test-send",
            "sub",
            "--to",
            "cli@example.test",
            "--format",
            "json",
        ],
    );
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["classification"]["class"], "accepted");
    let m = spooled(v["message_id"].as_str().unwrap());
    assert_eq!(m["queue_id"], v["queue_id"]);
    assert_eq!(m["to"], "cli@example.test");
    assert_eq!(m["subject"], "mailplug test email for connection \"sub\"");

    let o = run(
        &dir,
        super::harness::PASSWORD,
        &["test-send", "sub", "--to", "unknown@example.test"],
    );
    assert_eq!(o.code, Some(69), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("result: recipient_rejected at RCPT TO (permanent): 550 5.1.1"),
        "{}",
        o.stdout
    );

    let o = run(
        &dir,
        super::harness::PASSWORD,
        &["test-send", "sub", "--to", "not an address"],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
}

#[test]
fn credentials_over_plaintext_without_opt_in_are_a_config_error() {
    let s = server();
    let dir = config_dir(&[("clear", s.plain, "none", true)]);
    let o = run(&dir, super::harness::PASSWORD, &["check", "clear"]);
    assert_eq!(o.code, Some(78), "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.is_empty(), "nothing may be probed: {}", o.stdout);
}

/// Relays 127.0.0.1:465 to the test server's implicit-TLS port, so a
/// connection can name port 465 itself. Fails the test (never skips) when
/// 465 cannot be bound: these tests run as root on a machine of their own.
fn relay_port_465(to: u16) {
    use std::net::{TcpListener, TcpStream};
    static RELAY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    RELAY.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:465")
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:465 for the port-465 test: {e}"));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    });
}

#[test]
fn port_465_without_security_validates_and_checks_as_implicit_tls() {
    let s = server();
    relay_port_465(s.smtps);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "api_version: mailplug/v1\nkind: Connection\nname: smtps\nsmtp:\n  host: localhost\n  port: 465\n  username: tester\n  password: {{ env: SMTP_TEST_PW }}\n  tls: {{ ca_file: {ca} }}\nfrom:\n  email: sender@example.test\nlimits: {{ timeout_seconds: 5 }}\n",
        ca = s.ca_file.display()
    );
    std::fs::write(dir.path().join("smtps.yaml"), yaml).unwrap();
    let v = mailplug()
        .args(["validate", "--deny-warnings"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );

    let o = run(
        &dir,
        super::harness::PASSWORD,
        &["check", "smtps", "--format", "json"],
    );
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["security"], "tls", "{v}");
    assert_eq!(v["classification"]["class"], "accepted", "{v}");
}

#[test]
fn a_providers_extra_headers_arrive_on_the_test_email() {
    // Each plugin asks for its headers from its options; explicit `smtp:`
    // fields point the connection at the test server.
    let s = server();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "postmark",
            "{ message_stream: broadcast }",
            &["X-PM-Message-Stream: broadcast"],
        ),
        (
            "mailgun",
            "{ region: eu, tags: [news, weekly] }",
            &["X-Mailgun-Tag: news", "X-Mailgun-Tag: weekly"],
        ),
        (
            "mailjet",
            "{ campaign: spring, custom_id: tenant-7 }",
            &["X-Mailjet-Campaign: spring", "X-MJ-CustomID: tenant-7"],
        ),
        (
            "sparkpost",
            "{ campaign_id: spring }",
            &[r#"X-MSYS-API: {"campaign_id":"spring"}"#],
        ),
        (
            "mandrill",
            "{ tags: [news, weekly], subaccount: acme-eu }",
            &["X-MC-Tags: news,weekly", "X-MC-Subaccount: acme-eu"],
        ),
        (
            "amazon-ses",
            "{ region: us-east-1, configuration_set: events }",
            &["X-SES-CONFIGURATION-SET: events"],
        ),
        ("brevo", "{ tag: receipts }", &["X-Mailin-Tag: receipts"]),
    ];
    for (provider, options, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let user = if *provider == "brevo" {
            super::harness::ADDRESS_USER
        } else {
            super::harness::USER
        };
        let yaml = format!(
            "api_version: mailplug/v1\nkind: Connection\nname: conn\nprovider: {provider}\nsmtp:\n  host: localhost\n  port: {port}\n  security: starttls\n  username: {user}\n  password: {{ env: SMTP_TEST_PW }}\n  tls: {{ ca_file: {ca} }}\noptions: {options}\nfrom:\n  email: sender@example.test\n",
            port = s.submission,
            ca = s.ca_file.display()
        );
        std::fs::write(dir.path().join("conn.yaml"), yaml).unwrap();
        let o = run(
            &dir,
            super::harness::PASSWORD,
            &[
                "test-send",
                "conn",
                "--to",
                "stream@example.test",
                "--format",
                "json",
            ],
        );
        assert_eq!(o.code, Some(0), "{provider}: {}\n{}", o.stdout, o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let m = spooled(v["message_id"].as_str().unwrap());
        let raw = std::fs::read_to_string(
            s.spool
                .join(format!("{}.eml", m["queue_id"].as_str().unwrap())),
        )
        .unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap_or("");
        for line in *want {
            assert!(
                head.lines().any(|l| l == *line),
                "{provider}: {line}\n{head}"
            );
        }
    }
}
