//! The password never appears in logs (at trace level, including the SMTP
//! dialogue), reports, errors, `Debug` or CLI output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mailplug::mail::{Class, ProbeOptions, Security, probe, test_send};

use super::harness::{PASSWORD, USER, server, target};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form the password could leak in.
fn forms() -> Vec<String> {
    vec![
        PASSWORD.to_owned(),
        B64.encode(PASSWORD),
        B64.encode(format!("\0{USER}\0{PASSWORD}")),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for f in forms() {
        assert!(
            !text.contains(&f),
            "{what} contains the password (as {f:?}):\n{text}"
        );
    }
}

#[tokio::test]
async fn password_never_appears_in_trace_logs_reports_or_debug() {
    let s = server();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut outputs = Vec::new();
    // AUTH PLAIN (probe), AUTH LOGIN (probe), lettre's AUTH (test-send),
    // a rejected password, and the implicit-TLS path.
    let starttls = target("secret-starttls", s.submission, Security::Starttls);
    let r = probe(&starttls, ProbeOptions::default()).await;
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    outputs.push(format!("{r:?} {}", serde_json::to_string(&r).unwrap()));

    let mut login = target("secret-login", s.login, Security::None);
    login.allow_insecure_auth = true;
    let r = probe(&login, ProbeOptions::default()).await;
    assert_eq!(r.classification.class, Class::Accepted, "{r:#?}");
    assert_eq!(
        r.stages
            .iter()
            .find(|s| s.stage == mailplug::mail::Stage::Auth)
            .and_then(|s| s.detail.clone())
            .as_deref(),
        Some("LOGIN accepted")
    );
    outputs.push(format!("{r:?}"));

    let sent = test_send(&starttls, "secret@example.test").await.unwrap();
    assert_eq!(sent.classification.class, Class::Accepted, "{sent:#?}");
    outputs.push(format!(
        "{sent:?} {}",
        serde_json::to_string(&sent).unwrap()
    ));

    let sent = test_send(&login, "secret@example.test").await.unwrap();
    assert_eq!(sent.classification.class, Class::Accepted, "{sent:#?}");

    let mut wrong = starttls.clone();
    wrong.password = Some(mailplug::mail::Secret::new(format!("{PASSWORD}-typo")));
    let r = probe(&wrong, ProbeOptions::default()).await;
    assert_eq!(r.classification.class, Class::AuthFailed);
    outputs.push(format!("{r:?} {}", r.classification));

    outputs.push(format!("{starttls:?} {login:?}"));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("AUTH PLAIN <redacted>"),
        "the trace must show the redacted AUTH line:\n{logs}"
    );
    assert!(logs.contains("<redacted password>"), "{logs}");
    assert!(
        logs.contains("S: 235"),
        "the trace must show the dialogue:\n{logs}"
    );
    assert_clean("trace log", &logs);
    for o in &outputs {
        assert_clean("report", o);
    }
}

#[test]
fn cli_output_at_trace_level_never_contains_the_password() {
    let s = server();
    let dir = super::cli::config_dir(&[("sub", s.submission, "starttls", true)]);
    for args in [
        vec!["check", "sub", "--rcpt", "a@example.test"],
        vec!["check", "sub", "--format", "json"],
        vec!["test-send", "sub", "--to", "cli-secret@example.test"],
    ] {
        let out = crate::support::mailplug()
            .args(&args)
            .arg("--config")
            .arg(dir.path())
            .env("MAILPLUG_LOG", "trace")
            .env("SMTP_TEST_PW", PASSWORD)
            .output()
            .unwrap();
        let all = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{all}");
        assert!(
            all.contains("C: AUTH PLAIN <redacted>") || args[0] == "test-send",
            "{all}"
        );
        assert_clean(&format!("mailplug {args:?}"), &all);
    }
}

#[tokio::test]
async fn disabled_verification_is_logged_as_a_warning_at_every_use() {
    let s = server();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut t = target("noverify-log", s.smtps, Security::Tls);
    t.ca_file = None;
    t.verify_tls = false;
    assert_eq!(
        probe(&t, ProbeOptions::default())
            .await
            .classification
            .class,
        Class::Accepted
    );
    let sent = test_send(&t, "noverify@example.test").await.unwrap();
    assert_eq!(sent.classification.class, Class::Accepted, "{sent:#?}");
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let warnings = logs.matches("tls.verify: false").count();
    assert_eq!(warnings, 2, "one warning per TLS session:\n{logs}");
    assert!(logs.contains("WARN"), "{logs}");
}
