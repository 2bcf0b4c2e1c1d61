//! Forwarding end to end: the real daemon posts stored events to a real
//! HTTP receiver on 127.0.0.1 that checks every Standard Webhooks signature
//! itself, and appends them to an NDJSON file; the receiver goes down, the
//! daemon restarts, events expire into dead letters.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

pub(crate) mod receiver;

use receiver::{Hit, Receiver};

use crate::daemon::Daemon;
use crate::support::connection;
use crate::webhooks::{NOW, SIGNED_AT, SW_SECRET, post_raw, sw_event, sw_sign};

/// The forwarders' signing secret, as the receiver knows it.
pub(crate) const FWD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(crate) fn key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(FWD_SECRET.trim_start_matches("whsec_"))
        .unwrap()
}

pub(crate) fn forwarder(name: &str, workspace: &str, dest: &str, extra: &str) -> String {
    let dest = if dest.starts_with('/') {
        format!("file: {dest}\n")
    } else {
        format!("url: {dest}\nsecret: {{ env: FWD_SECRET }}\n")
    };
    format!(
        "---\napi_version: mailplug/v1\nkind: Forwarder\nname: {name}\nworkspace: {workspace}\n{dest}retry: {{ initial_delay: 50ms, max_delay: 300ms }}\n{extra}"
    )
}

/// The `sw` connection (Standard Webhooks, workspaces marketing and
/// product) and the given forwarder documents.
fn setup(forwarders: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("sw.yaml"),
        format!(
            "{}workspaces: [marketing, product]\nwebhook:\n  secret: {SW_SECRET}\n",
            connection("sw")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("forwarders.yaml"), forwarders).unwrap();
    (tmp, dir)
}

fn start(dir: &Path) -> Daemon {
    Daemon::start_env(
        dir,
        &[],
        &[
            ("MAILPLUG_FIXED_NOW", NOW),
            ("SMTP_PASSWORD", "pw"),
            ("FWD_SECRET", FWD_SECRET),
        ],
    )
}

/// Posts one signed event; returns its stored id.
fn post(d: &Daemon, webhook_id: &str, kind: &str, recipient: &str) -> String {
    let body = sw_event(kind, recipient, "soft");
    let (status, _, json) = post_raw(
        &d.public,
        "/webhooks/sw",
        &sw_sign(webhook_id, SIGNED_AT, &body),
        &body,
    );
    assert_eq!(status, 200, "{json}");
    let (_, page) = d.get_json("/v1/events?limit=1");
    let event = &page["events"][0];
    assert_eq!(event["provider_event_id"], webhook_id, "{page}");
    event["id"].as_str().unwrap().to_owned()
}

fn forwarders(d: &Daemon) -> HashMap<String, Value> {
    let (status, body) = d.get_json("/v1/forwarders");
    assert_eq!(status, 200, "{body}");
    body["forwarders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

/// Event ids of `hits` per recipient, in arrival order.
fn by_recipient(hits: &[Hit]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for h in hits {
        out.entry(h.body["recipient"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(h.body["id"].as_str().unwrap_or("").to_owned());
    }
    out
}

/// Every attempt for a recipient is for an event no older than the one
/// before it: nothing overtakes an earlier event still pending.
fn assert_in_order(hits: &[Hit]) {
    for (recipient, ids) in by_recipient(hits) {
        assert!(
            ids.windows(2).all(|w| w[0] <= w[1]),
            "{recipient}: attempted out of order: {ids:?}"
        );
    }
}

#[test]
fn events_are_forwarded_signed_filtered_by_kind_and_in_order_per_recipient() {
    let receiver = Receiver::start(0);
    // The first attempt of every `opened` event fails: the events behind
    // it (same recipient) must wait for its retry.
    *receiver.flaky.lock().unwrap() = Some("opened".to_owned());
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("events.ndjson");
    let docs = [
        forwarder("app", "marketing", &receiver.url("/app"), ""),
        forwarder(
            "bounces",
            "product",
            &receiver.url("/bounces"),
            "kinds: [bounced, complained]\n",
        ),
        forwarder("log", "marketing", log.to_str().unwrap(), ""),
        forwarder("elsewhere", "sales", &receiver.url("/elsewhere"), ""),
    ]
    .concat();
    let (_tmp, dir) = setup(&docs);
    let d = start(&dir);

    let kinds = [
        "delivered",
        "opened",
        "bounced",
        "clicked",
        "opened",
        "deferred",
    ];
    let mut stored = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        for r in ["r1@example.org", "r2@example.org"] {
            stored.push(post(&d, &format!("fw-{i}-{r}"), kind, r));
        }
    }
    receiver.wait_for("every event at /app", |h| {
        h.iter()
            .filter(|h| h.path == "/app" && h.status == 200)
            .count()
            == stored.len()
    });
    receiver.wait_for("the bounces at /bounces", |h| {
        h.iter().filter(|h| h.path == "/bounces").count() >= 2
    });

    let hits = receiver.hits();
    assert!(
        hits.iter().all(|h| h.signature_ok),
        "a bad signature: {hits:?}"
    );
    assert!(hits.iter().all(|h| h.content_type == "application/json"));
    assert!(hits.iter().all(|h| h.id.starts_with("msg_")));
    assert!(
        hits.iter().all(|h| h.path != "/elsewhere"),
        "wrong workspace"
    );
    let app: Vec<Hit> = hits.iter().filter(|h| h.path == "/app").cloned().collect();
    assert!(
        app.iter().filter(|h| h.status == 500).count() >= 4,
        "the flaky first attempts happened"
    );
    assert_in_order(&app);
    // Each event is delivered once, with the JSON `GET /v1/events/{id}` returns.
    let delivered = receiver.delivered("/app");
    let ids: HashSet<&str> = delivered
        .iter()
        .map(|h| h.body["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, stored.iter().map(String::as_str).collect());
    for h in &delivered[..3] {
        let (_, event) = d.get_json(&format!("/v1/events/{}", h.body["id"].as_str().unwrap()));
        assert_eq!(h.body, event);
    }
    // A retry carries the same webhook-id as the failed attempt.
    let failed: HashSet<&str> = app
        .iter()
        .filter(|h| h.status == 500)
        .map(|h| h.id.as_str())
        .collect();
    assert!(
        failed
            .iter()
            .all(|id| delivered.iter().any(|h| h.id == *id))
    );
    // The kind filter.
    let bounces = receiver.delivered("/bounces");
    assert_eq!(bounces.len(), 2, "{bounces:?}");
    assert!(bounces.iter().all(|h| h.body["kind"] == "bounced"));

    // The NDJSON sink got every event, one per line, in order per recipient.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= stored.len() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let logged: Vec<String> = lines
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        logged.iter().collect::<HashSet<_>>(),
        stored.iter().collect::<HashSet<_>>()
    );
    assert_eq!(logged.len(), stored.len(), "no line twice");

    // The receiver saw the last request a moment before the daemon recorded it.
    let n = stored.len();
    d.wait_for("/v1/forwarders", "every outcome recorded", |_, b| {
        let f = b["forwarders"].as_array().cloned().unwrap_or_default();
        let delivered = |name: &str| {
            f.iter()
                .find(|f| f["name"] == name)
                .and_then(|f| f["delivered"].as_u64())
        };
        delivered("app") == Some(n as u64)
            && delivered("log") == Some(n as u64)
            && delivered("bounces") == Some(2)
    });
    let f = forwarders(&d);
    assert_eq!(f["app"]["delivered"], stored.len());
    assert_eq!(f["app"]["pending"], 0);
    assert_eq!(f["app"]["dead"], 0);
    assert_eq!(f["bounces"]["delivered"], 2);
    assert_eq!(f["log"]["delivered"], stored.len());
    assert_eq!(f["elsewhere"]["delivered"], 0);
    assert_eq!(f["app"]["secret"], "<redacted: env:FWD_SECRET>");
    assert_eq!(
        d.metric("mailplug_forward_deliveries_total{forwarder=\"app\",result=\"delivered\"}"),
        stored.len() as f64
    );
    assert!(
        d.metric("mailplug_forward_deliveries_total{forwarder=\"app\",result=\"retry\"}") >= 4.0
    );

    // A provider's redelivery is a duplicate: nothing more is forwarded.
    let before = receiver.hits().len();
    let body = sw_event("delivered", "r1@example.org", "soft");
    let (status, _, json) = post_raw(
        &d.public,
        "/webhooks/sw",
        &sw_sign("fw-0-r1@example.org", SIGNED_AT, &body),
        &body,
    );
    assert_eq!(
        (status, &json["duplicates"]),
        (200, &Value::from(1)),
        "{json}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.hits().len(), before);
}

#[test]
fn a_receiver_that_is_down_gets_every_event_once_it_is_back_even_across_a_restart() {
    // A port nobody listens on: connection refused until the receiver starts.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/app");
    let (_tmp, dir) = setup(&forwarder("app", "marketing", &url, "max_age: 1h\n"));
    let mut d = start(&dir);
    let mut stored = Vec::new();
    for i in 0..9 {
        let r = format!("r{}@example.org", i % 3);
        stored.push(post(&d, &format!("down-{i}"), "delivered", &r));
    }
    // Retried with backoff while the receiver is down.
    d.wait_for("/v1/outbox?forwarder=app", "repeated attempts", |_, b| {
        b["outbox"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["attempts"].as_u64() >= Some(3)))
    });
    let f = forwarders(&d);
    assert_eq!(f["app"]["pending"], 9, "{:?}", f["app"]);
    assert!(
        f["app"]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{:?}",
        f["app"]
    );
    assert!(f["app"]["next_attempt_at"].is_string());

    d.signal("TERM");
    assert!(d.child.wait().unwrap().success(), "clean stop");
    drop(d);

    let d = start(&dir);
    assert_eq!(
        forwarders(&d)["app"]["pending"],
        9,
        "nothing lost over the restart"
    );
    let receiver = Receiver::start(port);
    receiver.wait_for("every event", |h| {
        h.iter()
            .filter(|h| h.status == 200)
            .map(|h| h.id.clone())
            .collect::<HashSet<_>>()
            .len()
            == stored.len()
    });
    let delivered = receiver.delivered("/app");
    assert!(delivered.iter().all(|h| h.signature_ok));
    // Deduplicated by webhook-id, each event arrived exactly once.
    let mut per_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for h in &delivered {
        per_id
            .entry(&h.id)
            .or_default()
            .push(h.body["id"].as_str().unwrap());
    }
    assert_eq!(per_id.len(), stored.len());
    let events: HashSet<&str> = per_id.values().map(|ids| ids[0]).collect();
    assert_eq!(events, stored.iter().map(String::as_str).collect());
    assert!(
        per_id.values().all(|ids| ids.iter().all(|i| *i == ids[0])),
        "one id, one event"
    );
    assert_in_order(&delivered);
    d.wait_for("/v1/forwarders", "the outcomes", |_, b| {
        b["forwarders"][0]["delivered"] == 9 && b["forwarders"][0]["pending"] == 0
    });
}

#[test]
fn an_undeliverable_event_becomes_a_dead_letter_after_max_age_and_can_be_retried() {
    let receiver = Receiver::start(0);
    receiver.status.store(503, Ordering::Relaxed);
    let (_tmp, dir) = setup(&forwarder(
        "app",
        "marketing",
        &receiver.url("/app"),
        "max_age: 1s\n",
    ));
    let d = start(&dir);
    let first = post(&d, "dead-1", "bounced", "gone@example.org");
    let second = post(&d, "dead-2", "bounced", "gone@example.org");
    let body = d.wait_for("/v1/forwarders", "two dead letters", |_, b| {
        b["forwarders"][0]["dead"] == 2
    });
    let app = &body["forwarders"][0];
    assert_eq!(app["pending"], 0);
    assert_eq!(app["last_error"], "HTTP 503 Service Unavailable", "{app}");
    let (_, dead) = d.get_json("/v1/outbox?forwarder=app&state=dead");
    let rows = dead["outbox"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{dead}");
    assert_eq!(rows[0]["event_id"], first.as_str());
    assert_eq!(rows[1]["event_id"], second.as_str());
    assert!(
        rows[0]["attempts"].as_u64().unwrap() >= 2,
        "retried before giving up"
    );
    assert_eq!(rows[0]["state"], "dead");
    assert_eq!(rows[0]["last_error"], "HTTP 503 Service Unavailable");
    assert!(rows[0]["next_attempt_at"].is_null());
    assert_eq!(d.metric("mailplug_outbox_dead{forwarder=\"app\"}"), 2.0);
    assert_eq!(
        d.metric("mailplug_forward_deliveries_total{forwarder=\"app\",result=\"dead\"}"),
        2.0
    );
    let (_, status) = d.get_json("/v1/status");
    assert_eq!(status["forwarding"]["dead"], 2, "{status}");
    assert!(receiver.hits().iter().all(|h| h.signature_ok));

    // Fixed: an operator retries one dead letter.
    receiver.status.store(200, Ordering::Relaxed);
    let id = rows[0]["id"].as_str().unwrap();
    let (code, body) = d.post(&format!("/v1/outbox/{id}/retry"));
    assert_eq!(
        (code, &body["state"]),
        (200, &Value::from("pending")),
        "{body}"
    );
    receiver.wait_for("the retried event", |h| h.iter().any(|h| h.status == 200));
    assert_eq!(receiver.delivered("/app")[0].body["id"], first.as_str());
    d.wait_for("/v1/forwarders", "one delivered", |_, b| {
        b["forwarders"][0]["delivered"] == 1 && b["forwarders"][0]["dead"] == 1
    });
    let (code, body) = d.post(&format!("/v1/outbox/{id}/retry"));
    assert_eq!(code, 409, "{body}");
    let (code, _) = d.post("/v1/outbox/nope/retry");
    assert_eq!(code, 404);
    let (code, body) = d.get_json("/v1/outbox?state=lost");
    assert_eq!(code, 400, "{body}");
}

#[test]
fn a_removed_forwarder_keeps_its_queue_and_resumes_when_it_returns() {
    let receiver = Receiver::start(0);
    receiver.status.store(503, Ordering::Relaxed);
    let doc = forwarder("app", "marketing", &receiver.url("/app"), "max_age: 1h\n");
    let (_tmp, dir) = setup(&doc);
    let d = start(&dir);
    let id = post(&d, "orphan-1", "delivered", "o@example.org");
    receiver.wait_for("a failed attempt", |h| !h.is_empty());

    let generation = d.get_json("/v1/status").1["generation"].as_u64().unwrap();
    std::fs::remove_file(dir.join("forwarders.yaml")).unwrap();
    d.wait_for("/v1/status", "the removal", |_, b| {
        b["generation"].as_u64().unwrap_or(0) > generation
    });
    // An attempt claimed just before the reload may still be on its way.
    std::thread::sleep(Duration::from_millis(300));
    receiver.status.store(200, Ordering::Relaxed);
    let f = forwarders(&d);
    assert_eq!(f["app"]["configured"], false, "{:?}", f["app"]);
    assert_eq!(f["app"]["pending"], 1);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        receiver.delivered("/app").is_empty(),
        "nothing sent while removed"
    );

    std::fs::write(dir.join("forwarders.yaml"), &doc).unwrap();
    receiver.wait_for("the resumed event", |h| h.iter().any(|h| h.status == 200));
    assert_eq!(receiver.delivered("/app")[0].body["id"], id.as_str());
}

#[test]
fn bad_forwarder_documents_are_refused_with_their_location() {
    let doc = "api_version: mailplug/v1\nkind: Forwarder\nname: app\nworkspace: marketing\nurl: ftp://example.com/x\nkinds: [bounced, exploded]\nmax_age: soon\ncolour: red\n---\napi_version: mailplug/v1\nkind: Forwarder\nname: both\nworkspace: w\nurl: https://example.com/x\nfile: /var/log/x.ndjson\nsecret: { env: S }\n---\napi_version: mailplug/v1\nkind: Forwarder\nname: unsigned\nworkspace: w\nurl: https://example.com/x\n---\napi_version: mailplug/v1\nkind: Forwarder\nname: relative\nworkspace: w\nfile: events.ndjson\ntimeout: 1h\n";
    let dup = "api_version: mailplug/v1\nkind: Forwarder\nname: app\nworkspace: marketing\nfile: /var/log/app.ndjson\n";
    let dir = crate::support::tree(&[("bad.yaml", doc.as_bytes())]);
    let out = crate::support::run_in(dir.path(), &["validate", "."]);
    assert_eq!(out.code, 78, "{}", out.stdout);
    for expected in [
        "bad.yaml:5:6: error: /url: scheme `ftp` is not supported",
        "bad.yaml:6:18: error: /kinds/1: `exploded` is not one of",
        "bad.yaml:7:10: error: /max_age: `soon` is not a duration",
        "bad.yaml:8:1: error: /colour: unknown field `colour`",
        "bad.yaml:15:7: error: /file: `url` and `file` are both set",
        "bad.yaml:18:1: error: /: missing `secret`",
        "bad.yaml:28:7: error: /file: `file` must be an absolute path",
        "bad.yaml:29:10: error: /timeout: must be between 100ms and 5m",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stdout
        );
    }

    // The same name in two valid files: both places are named.
    let dir = crate::support::tree(&[("a.yaml", dup.as_bytes()), ("b.yaml", dup.as_bytes())]);
    let out = crate::support::run_in(dir.path(), &["validate", "."]);
    assert_eq!(out.code, 78, "{}", out.stdout);
    assert!(
        out.stdout.contains("a.yaml:3:7: error: /name: duplicate forwarder name `app` (hint: also defined at ./b.yaml:3:7)"),
        "{}",
        out.stdout
    );

    let good = "api_version: mailplug/v1\nkind: Forwarder\nname: app\nworkspace: marketing\nurl: https://app.example.com/hooks/mailplug\nsecret: { env: APP_WEBHOOK_SECRET }\nkinds: [bounced, complained]\nmax_age: 6h\ntimeout: 5s\nconcurrency: 8\nretry: { initial_delay: 2s, max_delay: 5m }\n";
    let dir = crate::support::tree(&[("ok.yaml", good.as_bytes())]);
    let out = crate::support::run_in(dir.path(), &["validate", "--deny-warnings", "."]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    // With --check-secrets the referenced secret must be a whsec_ key.
    let out = crate::support::mailplug()
        .current_dir(dir.path())
        .args(["validate", "--check-secrets", "."])
        .env("APP_WEBHOOK_SECRET", "plain-text")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(
        stdout.contains("ok.yaml:6:9: error: /secret: the resolved secret is unusable"),
        "{stdout}"
    );
}
