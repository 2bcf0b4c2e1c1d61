//! Amazon SES through SNS, host side, through the real daemon: the signing
//! certificate fetched once (from a local server standing in for
//! `sns.us-east-1.amazonaws.com` via `MAILPLUG_TEST_SNS_ORIGIN`) and
//! cached, a foreign certificate URL refused without any request, trusted
//! certificate files used without fetching, subscription confirmations
//! opened only when allowed, and a failed fetch answered 503 with nothing
//! stored.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::Daemon;
use crate::webhooks::{NOW, all_events, fixture_headers, fixtures, post_raw};

const TOPIC: &str = "arn:aws:sns:us-east-1:111122223333:ses-events";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000test.pem";
const CERT_PATH: &str = "/SimpleNotificationService-0000000000000000000000test.pem";

/// Stands in for the SNS host: serves the test certificate and answers
/// confirmations; records the path of every request.
struct FakeSns {
    origin: String,
    paths: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSns {
    fn start() -> FakeSns {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let cert =
            std::fs::read(fixtures().join("amazon_ses/TEST_ONLY_sns_signing_cert.pem")).unwrap();
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (paths, stop) = (paths.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        continue;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    paths.lock().unwrap().push(path.clone());
                    let (status, body): (&str, &[u8]) = if path == CERT_PATH {
                        ("200 OK", &cert)
                    } else if path.starts_with("/?Action=ConfirmSubscription&") {
                        ("200 OK", b"<ConfirmSubscriptionResponse/>")
                    } else {
                        ("404 Not Found", b"")
                    };
                    let mut out = stream;
                    let _ = write!(
                        out,
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = out.write_all(body);
                }
            })
        };
        FakeSns {
            origin,
            paths,
            stop,
            thread: Some(thread),
        }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

impl Drop for FakeSns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `amazon-ses` connection document.
fn connection(name: &str, sns: &str) -> String {
    format!(
        "---\napi_version: mailplug/v1\nkind: Connection\nname: {name}\nprovider: amazon-ses\n\
         smtp: {{ username: AKIAEXAMPLESMTPUSER, password: {{ env: SMTP_PASSWORD }} }}\n\
         options: {{ region: us-east-1 }}\n\
         from: {{ email: news@example.com }}\nworkspaces: [marketing]\n\
         webhook:\n  secret: 'sns-hook:ses-test-password-9e2a'\n  sns: {sns}\n"
    )
}

fn start(origin: &str) -> (tempfile::TempDir, Daemon) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let cert = fixtures().join("amazon_ses/TEST_ONLY_sns_signing_cert.pem");
    let config = [
        connection(
            "ses",
            &format!("{{ topics: [{TOPIC}], auto_confirm: true }}"),
        ),
        connection("ses-manual", &format!("{{ topics: [{TOPIC}] }}")),
        connection(
            "ses-trusted",
            &format!(
                "{{ topics: [{TOPIC}], certificates: {{ '{CERT_URL}': '{}' }} }}",
                cert.display()
            ),
        ),
        connection(
            "ses-other-topic",
            "{ topics: ['arn:aws:sns:us-east-1:111122223333:other'], auto_confirm: true }",
        ),
    ]
    .concat();
    std::fs::write(dir.join("ses.yaml"), config).unwrap();
    let d = Daemon::start_env(
        &dir,
        &[],
        &[
            ("MAILPLUG_FIXED_NOW", NOW),
            ("SMTP_PASSWORD", "pw"),
            ("MAILPLUG_TEST_SNS_ORIGIN", origin),
        ],
    );
    (tmp, d)
}

fn post(d: &Daemon, connection: &str, dir: &Path, case: &str) -> (u16, Value) {
    let body = std::fs::read(dir.join(format!("{case}.json"))).unwrap();
    let headers = fixture_headers(&dir.join(format!("{case}.headers.json")));
    let (status, _, json) = post_raw(
        &d.public,
        &format!("/webhooks/{connection}"),
        &headers,
        &body,
    );
    (status, json)
}

fn subscriptions(d: &Daemon) -> Vec<Value> {
    let (status, body) = d.get_json("/v1/status");
    assert_eq!(status, 200, "{body}");
    body["sns_subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_signing_certificate_is_fetched_once_and_foreign_urls_never() {
    let sns = FakeSns::start();
    let (_tmp, d) = start(&sns.origin);
    let shared = fixtures().join("amazon_ses");
    let case = "notification_hard_bounce_two_recipients";

    let (status, body) = post(&d, "ses", &shared, case);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], 2, "one event per bounced recipient: {body}");
    assert_eq!(sns.paths(), vec![CERT_PATH.to_owned()]);

    // A retry: duplicates, and the key comes from the cache.
    let (status, body) = post(&d, "ses", &shared, case);
    assert_eq!(
        (status, &body["duplicates"]),
        (200, &serde_json::json!(2)),
        "{body}"
    );
    assert_eq!(sns.paths().len(), 1, "{:?}", sns.paths());

    // A trusted certificate file is used as is: nothing fetched.
    let (status, body) = post(&d, "ses-trusted", &shared, case);
    assert_eq!(
        (status, &body["stored"]),
        (200, &serde_json::json!(2)),
        "{body}"
    );
    assert_eq!(sns.paths().len(), 1, "{:?}", sns.paths());

    // A certificate URL off the SNS pattern is refused before any request.
    let bad = fixtures().join("_bad");
    for conn in ["ses", "ses-trusted"] {
        let (status, body) = post(&d, conn, &bad, "amazon_ses__foreign_signing_cert_url");
        assert_eq!(status, 401, "{conn}: {body}");
    }
    assert_eq!(sns.paths().len(), 1, "{:?}", sns.paths());

    // A topic the connection does not list is refused.
    let (status, body) = post(&d, "ses-other-topic", &shared, case);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("topic"),
        "{body}"
    );

    // The wrong basic-auth password is refused before the certificate matters.
    let body = std::fs::read(shared.join(format!("{case}.json"))).unwrap();
    let mut headers = fixture_headers(&shared.join(format!("{case}.headers.json")));
    for (name, value) in &mut headers {
        if name.eq_ignore_ascii_case("authorization") {
            // sns-hook:wrong
            *value = "Basic c25zLWhvb2s6d3Jvbmc=".into();
        }
    }
    let (status, _, json) = post_raw(&d.public, "/webhooks/ses-manual", &headers, &body);
    assert_eq!(status, 401, "{json}");

    assert_eq!(all_events(&d, "&connection=ses").len(), 2);
    assert_eq!(all_events(&d, "&connection=ses-trusted").len(), 2);
    assert!(all_events(&d, "&connection=ses-other-topic").is_empty());
    assert!(all_events(&d, "&connection=ses-manual").is_empty());
}

#[test]
fn subscription_confirmations_are_opened_only_when_allowed() {
    let sns = FakeSns::start();
    let (_tmp, d) = start(&sns.origin);
    let shared = fixtures().join("amazon_ses");
    let subscribe_url: String = {
        let body: Value = serde_json::from_slice(
            &std::fs::read(shared.join("subscription_confirmation.json")).unwrap(),
        )
        .unwrap();
        body["SubscribeURL"].as_str().unwrap().to_owned()
    };
    let subscribe_path = subscribe_url
        .strip_prefix("https://sns.us-east-1.amazonaws.com")
        .unwrap()
        .to_owned();

    // auto_confirm off: pending, with the URL to open; nothing opened.
    let (status, body) = post(&d, "ses-manual", &shared, "subscription_confirmation");
    assert_eq!(
        (status, &body["stored"]),
        (200, &serde_json::json!(0)),
        "{body}"
    );
    let pending = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let all = subscriptions(&d);
            if let Some(s) = all.iter().find(|s| s["connection"] == "ses-manual") {
                break s.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pending subscription: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(pending["topic_arn"], TOPIC, "{pending}");
    assert_eq!(
        pending["subscribe_url"],
        subscribe_url.as_str(),
        "{pending}"
    );
    assert!(
        pending["reason"]
            .as_str()
            .unwrap_or("")
            .contains("auto_confirm"),
        "{pending}"
    );
    assert!(
        !sns.paths().contains(&subscribe_path),
        "opened without auto_confirm: {:?}",
        sns.paths()
    );

    // auto_confirm on and the topic listed: opened once, confirmed.
    let (status, body) = post(&d, "ses", &shared, "subscription_confirmation");
    assert_eq!(
        (status, &body["stored"]),
        (200, &serde_json::json!(0)),
        "{body}"
    );
    let confirmed = d.wait_for("/v1/status", "the confirmation", |_, s| {
        s["sns_subscriptions"].as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["connection"] == "ses" && c["state"] == "confirmed")
        })
    });
    assert!(confirmed["sns_subscriptions"].is_array());
    let opened: Vec<String> = sns
        .paths()
        .into_iter()
        .filter(|p| *p == subscribe_path)
        .collect();
    assert_eq!(opened.len(), 1, "{:?}", sns.paths());

    // auto_confirm on but the topic not listed: refused at verify (401),
    // nothing opened, nothing recorded.
    let (status, body) = post(&d, "ses-other-topic", &shared, "subscription_confirmation");
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        sns.paths().iter().filter(|p| **p == subscribe_path).count(),
        1,
        "{:?}",
        sns.paths()
    );
    assert!(
        subscriptions(&d)
            .iter()
            .all(|s| s["connection"] != "ses-other-topic"),
        "{:?}",
        subscriptions(&d)
    );
    assert!(all_events(&d, "").is_empty());
}

#[test]
fn an_unreachable_certificate_host_gets_503_and_nothing_is_stored() {
    // A port nothing listens on: bind, note it, close it.
    let origin = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (_tmp, d) = start(&origin);
    let shared = fixtures().join("amazon_ses");
    let (status, body) = post(
        &d,
        "ses",
        &shared,
        "notification_hard_bounce_two_recipients",
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("certificate"),
        "{body}"
    );
    // The trusted file needs no fetch.
    let (status, body) = post(
        &d,
        "ses-trusted",
        &shared,
        "notification_hard_bounce_two_recipients",
    );
    assert_eq!(status, 200, "{body}");
    assert!(all_events(&d, "&connection=ses").is_empty());
    assert_eq!(
        d.metric("mailplug_webhooks_rejected_total{connection=\"ses\",provider=\"amazon-ses\",reason=\"certificate_unavailable\"}"),
        1.0
    );
}
