//! The daemon's SMTP endpoints against the real test server: check and test
//! through the admin API, recorded outcomes and metrics, and shutdown
//! draining an in-flight check.

use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::smtp::harness::{PASSWORD, server, spooled};

fn config(conns: &[(&str, u16, &str, bool)]) -> tempfile::TempDir {
    crate::smtp::cli::config_dir(conns)
}

#[test]
fn check_and_test_through_the_admin_api_are_classified_and_recorded() {
    let s = server();
    let dir = config(&[
        ("sub", s.submission, "starttls", true),
        ("plain", s.plain, "none", false),
    ]);
    let d = Daemon::start_env(dir.path(), &[], &[("SMTP_TEST_PW", PASSWORD)]);

    let (status, report) = d.post("/v1/connections/sub/check");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["classification"]["class"], "accepted", "{report}");
    assert!(report["stages"].as_array().unwrap().len() >= 6, "{report}");

    let (status, report) = d.post_body(
        "/v1/connections/sub/test",
        r#"{"to": "someone@example.org"}"#,
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["classification"]["class"], "accepted", "{report}");
    let message_id = report["message_id"].as_str().unwrap().to_owned();
    let spooled = spooled(&message_id);
    assert!(
        spooled["subject"]
            .as_str()
            .unwrap_or_default()
            .contains("sub"),
        "{spooled}"
    );

    let (status, report) = d.post_body(
        "/v1/connections/plain/check",
        r#"{"rcpt": "unknown@example.org"}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(
        report["classification"]["class"], "recipient_rejected",
        "{report}"
    );

    let (_, detail) = d.get_json("/v1/connections/sub");
    assert_eq!(
        detail["last_check"]["report"]["classification"]["class"],
        "accepted"
    );
    assert_eq!(
        detail["last_test"]["report"]["message_id"],
        message_id.as_str()
    );
    assert_eq!(
        d.metric("mailplug_smtp_outcomes_total{connection=\"sub\",class=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        d.metric("mailplug_smtp_outcomes_total{connection=\"plain\",class=\"recipient_rejected\"}"),
        1.0
    );

    let (_, everything) = d.get("/metrics");
    let (_, status_body) = d.get("/v1/status");
    for text in [&everything, &status_body, &detail.to_string()] {
        assert!(!text.contains(PASSWORD), "password leaked");
    }
}

#[test]
fn smtp_endpoints_reject_bad_requests() {
    let s = server();
    let dir = config(&[("sub", s.submission, "starttls", true)]);
    let d = Daemon::start_env(dir.path(), &[], &[("SMTP_TEST_PW", PASSWORD)]);
    assert_eq!(d.post("/v1/connections/nope/check").0, 404);
    assert_eq!(
        d.post("/v1/connections/sub/test").0,
        400,
        "missing recipient"
    );
    assert_eq!(
        d.post_body("/v1/connections/sub/test", r#"{"to": "not an address"}"#)
            .0,
        400
    );
    assert_eq!(d.post_body("/v1/connections/sub/check", "{not json").0, 400);
    assert_eq!(
        d.post_body(
            "/v1/connections/sub/check",
            r#"{"rcpt": "a@b.c", "extra": 1}"#
        )
        .0,
        400
    );
}

#[test]
fn unresolvable_secret_is_a_422_not_a_delivery_failure() {
    let s = server();
    let dir = config(&[("sub", s.submission, "starttls", true)]);
    let d = Daemon::start_env(dir.path(), &[], &[]);
    let (status, body) = d.post("/v1/connections/sub/check");
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("SMTP_TEST_PW"),
        "{body}"
    );
}

#[test]
fn sigterm_lets_an_in_flight_check_finish_then_exits_zero() {
    // A server that accepts and never greets: the check runs until its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.yaml"),
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: slow\nsmtp: {{ host: 127.0.0.1, port: {port}, security: none }}\nfrom: {{ email: a@example.com }}\nlimits: {{ timeout_seconds: 2 }}\n"
        ),
    )
    .unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let url = format!("{}/v1/connections/slow/check", d.admin);
    let started = Instant::now();
    let client = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .send_empty()
            .expect("in-flight request must complete");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    });
    // Let the check get under way, then ask the daemon to stop.
    let _conn = silent.accept().unwrap();
    d.signal("TERM");
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"class\":\"timeout\""), "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the check really was in flight"
    );
}

#[test]
fn provider_connection_is_adapted_by_its_plugin_then_checked() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    // A SendGrid connection pointed at the test server: the plugin fills in
    // what is not overridden (security from the port, the password source).
    std::fs::write(
        dir.path().join("sg.yaml"),
        format!(
            "api_version: mailplug/v1\nkind: Connection\nname: sg\nprovider: sendgrid\nsmtp:\n  host: localhost\n  port: {}\n  username: tester\n  password: {{ env: SMTP_TEST_PW }}\n  tls: {{ ca_file: {} }}\nfrom: {{ email: sender@example.test }}\nlimits: {{ timeout_seconds: 5 }}\n",
            s.submission,
            s.ca_file.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_env(dir.path(), &[], &[("SMTP_TEST_PW", PASSWORD)]);
    let (status, report) = d.post("/v1/connections/sg/check");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["security"], "starttls", "{report}");
    assert_eq!(report["classification"]["class"], "accepted", "{report}");
    assert!(
        d.metric("mailplug_plugin_calls_total{plugin=\"sendgrid\",export=\"adapt-connection\"}")
            >= 1.0
    );

    // Without a password the plugin's field error is a validation error.
    std::fs::write(
        dir.path().join("sg.yaml"),
        "api_version: mailplug/v1\nkind: Connection\nname: sg\nprovider: sendgrid\nfrom: { email: sender@example.test }\n",
    )
    .unwrap();
    let run = crate::support::run_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 78, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("./sg.yaml:1:1: error: /smtp/password: provider `sendgrid`:"),
        "{}",
        run.stdout
    );
}
