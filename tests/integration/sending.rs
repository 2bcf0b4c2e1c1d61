//! The sending queue end to end: `POST /v1/messages` on the real daemon,
//! delivered to the real test SMTP server, followed per recipient through
//! `GET /v1/messages/{id}`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::smtp::harness::{arrivals, closed_port, server, spooled_for};

mod lease;

/// A unique recipient local part per test run.
fn rcpt(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}@example.org", std::process::id())
}

/// Connection files: (name, port, priority, extra YAML lines).
fn config(conns: &[(&str, u16, u32, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, port, priority, extra) in conns {
        let yaml = format!(
            "api_version: mailplug/v1\nkind: Connection\nname: {name}\nsmtp:\n  host: 127.0.0.1\n  port: {port}\n  security: none\n  helo_name: queue.mailplug.test\nfrom:\n  name: Queue Tests\n  email: sender@example.test\nworkspaces: [acme]\npriority: {priority}\n{extra}"
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), yaml).unwrap();
    }
    dir
}

const FAST: &[&str] = &[
    "--send-retry-initial",
    "200ms",
    "--send-retry-max",
    "400ms",
    "--circuit-failures",
    "2",
    "--circuit-pause",
    "500ms",
];

fn send(d: &Daemon, body: &Value) -> (u16, Value) {
    d.post_body("/v1/messages", &body.to_string())
}

/// Polls a message until `pred` holds on it (bounded).
fn wait_message(d: &Daemon, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, m) = d.get_json(&format!("/v1/messages/{id}"));
        if status == 200 && pred(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_of<'a>(m: &'a Value, address: &str) -> &'a Value {
    m["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in {m}"))
}

fn spooled_eml(rcpt: &str) -> (Value, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = spooled_for(rcpt).into_iter().next() {
            let eml = std::fs::read_to_string(
                server()
                    .spool
                    .join(format!("{}.eml", v["queue_id"].as_str().unwrap())),
            )
            .unwrap();
            return (v, eml);
        }
        assert!(Instant::now() < deadline, "{rcpt} never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_message_is_delivered_per_recipient_with_its_headers_and_status() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    let (to, cc, bcc) = (rcpt("to"), rcpt("cc"), rcpt("bcc"));
    let (status, body) = send(
        &d,
        &json!({
            "workspace": "acme",
            "to": [to], "cc": [cc], "bcc": [bcc],
            "reply_to": "replies@example.test",
            "subject": "Quarterly report",
            "text": "plain body", "html": "<p>html body</p>",
            "headers": { "X-Campaign": "q3" },
            "attachments": [{ "filename": "r.txt", "content_type": "text/plain", "content": "aGVsbG8=" }],
        }),
    );
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["duplicate"], false);
    let m = wait_message(&d, &id, "all sent", |m| m["status"] == "sent");
    for addr in [&to, &cc, &bcc] {
        let r = status_of(&m, addr);
        assert_eq!(r["status"], "sent", "{m}");
        assert_eq!(r["connection"], "main");
        assert_eq!(r["attempts_history"][0]["outcome"], "sent");
        let (spooled, eml) = spooled_eml(addr);
        // One SMTP transaction per recipient, so each is tracked alone.
        assert_eq!(spooled["rcpt_tos"], json!([addr]), "{spooled}");
        assert_eq!(r["queue_id"], spooled["queue_id"]);
        assert_eq!(spooled["message_id"], m["message_id"], "{spooled}");
        assert!(eml.contains("X-Campaign: q3"), "{eml}");
        assert!(eml.contains("Reply-To: replies@example.test"), "{eml}");
        assert!(eml.contains("r.txt"), "{eml}");
        // Bcc recipients are in no header.
        assert!(!eml.contains(&bcc), "bcc leaked into the message: {eml}");
    }
    assert!(
        d.metric(
            "mailplug_queue_sends_total{connection=\"main\",outcome=\"sent\",class=\"accepted\"}"
        ) >= 3.0
    );
    let (_, list) = d.get_json("/v1/messages?workspace=acme&status=sent");
    assert!(
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{list}"
    );
}

#[test]
fn bodies_have_the_shape_their_parts_need() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    let attachment =
        json!([{ "filename": "r.txt", "content_type": "text/plain", "content": "aGVsbG8=" }]);
    let cases = [
        ("text", json!({ "text": "only text" }), "text/plain", 0),
        (
            "html",
            json!({ "html": "<p>only html</p>" }),
            "text/html",
            0,
        ),
        (
            "both",
            json!({ "text": "t", "html": "<p>h</p>" }),
            "multipart/alternative",
            0,
        ),
        (
            "text-att",
            json!({ "text": "only text", "attachments": attachment }),
            "multipart/mixed",
            1,
        ),
        (
            "both-att",
            json!({ "text": "t", "html": "<p>h</p>", "attachments": attachment }),
            "multipart/mixed",
            1,
        ),
    ];
    for (tag, fields, top, mixed) in cases {
        let to = rcpt(tag);
        let mut body = json!({ "workspace": "acme", "to": [to], "subject": tag });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, answer) = send(&d, &body);
        assert_eq!(status, 202, "{tag}: {answer}");
        let (_, eml) = spooled_eml(&to);
        let content_type = eml
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .unwrap_or_else(|| panic!("{tag}: no Content-Type header: {eml}"));
        assert!(content_type.contains(top), "{tag}: {content_type}");
        // One mixed wrapper at most: the body part sits beside the attachment.
        assert_eq!(
            eml.matches("multipart/mixed").count(),
            mixed,
            "{tag}: {eml}"
        );
        assert_eq!(eml.contains("r.txt"), mixed == 1, "{tag}: {eml}");
    }
}

#[test]
fn permanent_failures_end_with_their_class_and_temporary_ones_are_retried() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    // The server refuses a "tempfail" address once (451 4.3.0), then takes it.
    let tempfail = rcpt("tempfail");
    let (status, body) = send(
        &d,
        &json!({
            "workspace": "acme",
            "to": ["unknown@example.org", "busy@example.org", tempfail],
            "subject": "s", "text": "t",
        }),
    );
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let m = wait_message(&d, id, "a failure and retries", |m| {
        status_of(m, "unknown@example.org")["status"] == "failed"
            && status_of(m, "busy@example.org")["attempts"].as_u64() >= Some(2)
            && status_of(m, &tempfail)["status"] == "sent"
    });
    // 4xx then success: sent on the second attempt, the first one's 451 in
    // the history.
    let retried = status_of(&m, &tempfail);
    assert_eq!(retried["attempts"], 2, "{m}");
    assert_eq!(spooled_for(&tempfail).len(), 1);
    let history = retried["attempts_history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{m}");
    assert_eq!(history[0]["result"]["reply_code"], 451, "{m}");
    assert_eq!(history[0]["result"]["temporary"], true, "{m}");
    assert_eq!(history[1]["outcome"], "sent", "{m}");
    let failed = status_of(&m, "unknown@example.org");
    assert_eq!(failed["last_result"]["class"], "recipient_rejected", "{m}");
    assert_eq!(failed["last_result"]["enhanced_status"], "5.1.1");
    assert_eq!(failed["attempts"], 1);
    let busy = status_of(&m, "busy@example.org");
    assert!(
        matches!(
            busy["status"].as_str(),
            Some("deferred" | "sending" | "queued")
        ),
        "{m}"
    );
    assert_eq!(busy["last_result"]["reply_code"], 450, "{m}");
    assert_eq!(busy["last_result"]["temporary"], true);
    assert_eq!(m["status"], "pending");
    // Cancelling stops the retries of what is left.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .delete(format!("{}/v1/messages/{id}", d.admin))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(
        body["cancelled"].as_u64().unwrap() + body["in_flight"].as_u64().unwrap() >= 1,
        "{body}"
    );
    let m = wait_message(&d, id, "cancelled", |m| {
        status_of(m, "busy@example.org")["status"] == "cancelled"
    });
    // One recipient sent, the others failed or cancelled.
    assert_eq!(m["status"], "partial", "{m}");
}

#[test]
fn a_refusing_first_connection_fails_over_to_the_next_by_priority() {
    let s = server();
    let dir = config(&[("first", s.refuse, 10, ""), ("second", s.plain, 20, "")]);
    let d = Daemon::start(dir.path(), FAST);
    let to = rcpt("failover");
    let (status, body) = send(
        &d,
        &json!({ "workspace": "acme", "to": [to], "subject": "s", "text": "t" }),
    );
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let m = wait_message(&d, id, "sent through second", |m| m["status"] == "sent");
    let r = status_of(&m, &to);
    assert_eq!(r["connection"], "second", "{m}");
    let history = r["attempts_history"].as_array().unwrap();
    assert_eq!(history[0]["connection"], "first", "{m}");
    assert_eq!(history[0]["outcome"], "moved", "{m}");
    assert_eq!(history.last().unwrap()["outcome"], "sent");
    spooled_eml(&to);
    // Recipient-level failures never fail over.
    let (_, body) = send(
        &d,
        &json!({ "connection": "second", "to": ["unknown@example.org"], "subject": "s", "text": "t" }),
    );
    let m = wait_message(&d, body["id"].as_str().unwrap(), "failed", |m| {
        m["status"] == "failed"
    });
    assert_eq!(
        m["recipients"][0]["attempts_history"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{m}"
    );
}

#[test]
fn a_connection_that_keeps_failing_opens_its_circuit_and_is_probed() {
    let dir = config(&[("down", closed_port(), 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    for _ in 0..3 {
        let (status, _) = send(
            &d,
            &json!({ "workspace": "acme", "to": [rcpt("down")], "subject": "s", "text": "t" }),
        );
        assert_eq!(status, 202);
    }
    let q = d.wait_for("/v1/queue", "the circuit to open", |_, q| {
        q["connections"][0]["circuit"]["opened_total"].as_u64() >= Some(1)
    });
    assert_eq!(
        q["connections"][0]["circuit"]["last_failure"], "connection_refused",
        "{q}"
    );
    // The pause is 500 ms: a probe runs, fails, and the pause doubles.
    let q = d.wait_for("/v1/queue", "a failed probe", |_, q| {
        q["connections"][0]["circuit"]["opened_total"].as_u64() >= Some(2)
    });
    assert!(q["connections"][0]["pending"].as_u64() >= Some(3), "{q}");
    assert!(
        q["connections"][0]["circuit"]["pause_ms"].as_i64() >= Some(1000),
        "{q}"
    );
}

#[test]
fn idempotency_keys_return_the_first_message_and_queue_nothing_more() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    let to = rcpt("idem");
    let body = json!({ "workspace": "acme", "to": [to], "subject": "s", "text": "t", "idempotency_key": "order-42" });
    let (_, first) = send(&d, &body);
    let (status, again) = send(&d, &body);
    assert_eq!(status, 202);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    // In one batch too.
    let (status, batch) = d.post_body(
        "/v1/messages:batch",
        &json!({ "messages": [body, body] }).to_string(),
    );
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["ids"], json!([first["id"], first["id"]]));
    wait_message(&d, first["id"].as_str().unwrap(), "sent", |m| {
        m["status"] == "sent"
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(spooled_for(&to).len(), 1);
}

#[test]
fn suppressed_recipients_are_not_sent_to() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    let to = rcpt("suppressed");
    let (status, body) = d.post_body(
        "/v1/suppressions",
        &json!({ "workspace": "acme", "address": to }).to_string(),
    );
    assert!(status == 200 || status == 201, "{body}");
    let (_, body) = send(
        &d,
        &json!({ "workspace": "acme", "to": [to], "subject": "s", "text": "t" }),
    );
    let m = wait_message(&d, body["id"].as_str().unwrap(), "suppressed", |m| {
        m["recipients"][0]["status"] == "suppressed"
    });
    assert_eq!(m["status"], "failed", "{m}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(spooled_for(&to).is_empty());
}

#[test]
fn bad_messages_get_field_errors_and_queue_nothing() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), &["--max-message-size", "1KiB", "--hold-queue"]);
    let ok = json!({ "workspace": "acme", "to": ["a@example.org"], "subject": "s", "text": "t" });
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("workspace", json!("nope")), "/workspace"),
        (with("from", json!("boss@elsewhere.test")), "/from"),
        (with("to", json!(["not an address"])), "/to/0"),
        (
            with("to", json!(["a@example.org\r\nBcc: x@evil.test"])),
            "/to/0",
        ),
        (with("subject", json!("hi\r\nBcc: x@evil.test")), "/subject"),
        (
            with("headers", json!({ "X-Ok": "a\r\nBcc: x@evil.test" })),
            "/headers/X-Ok",
        ),
        (
            with("headers", json!({ "From": "x@evil.test" })),
            "/headers/From",
        ),
        (with("connection", json!("missing")), "/connection"),
        (
            with(
                "attachments",
                json!([{ "filename": "big.bin", "content": "A".repeat(4000) }]),
            ),
            "/attachments",
        ),
        (
            with(
                "attachments",
                json!([{ "filename": "x", "content": "***" }]),
            ),
            "/attachments/0/content",
        ),
    ];
    for (body, field) in &cases {
        let (status, answer) = send(&d, body);
        assert_eq!(status, 422, "{body} -> {answer}");
        assert!(
            answer["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == *field),
            "{field} not in {answer}"
        );
    }
    let (status, answer) = d.post_body("/v1/messages", "{not json");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = send(&d, &with("surprise", json!(1)));
    assert_eq!(status, 400, "{answer}");
    // A batch with one bad message queues none of it.
    let (status, answer) = d.post_body(
        "/v1/messages:batch",
        &json!({ "messages": [ok, with("workspace", json!("nope"))] }).to_string(),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"][0]["index"], 1, "{answer}");
    let (_, list) = d.get_json("/v1/messages");
    assert_eq!(list["messages"], json!([]), "{list}");
    let (_, q) = d.get_json("/v1/queue");
    assert_eq!(q["total_pending"], 0, "{q}");
    // Held: accepted and queued, not sent.
    let (status, _) = send(&d, &ok);
    assert_eq!(status, 202);
    std::thread::sleep(Duration::from_millis(500));
    let (_, q) = d.get_json("/v1/queue");
    assert_eq!(q["total_pending"], 1, "{q}");
    assert_eq!(q["held"], true);
}

#[test]
fn per_second_limits_space_the_arrivals_at_the_server() {
    let s = server();
    let dir = config(&[(
        "paced",
        s.plain,
        100,
        "limits: { per_second: 5, max_connections: 4 }\n",
    )]);
    let d = Daemon::start(dir.path(), FAST);
    let tag = rcpt("paced");
    let recipients: Vec<String> = (0..30).map(|i| format!("n{i}-{tag}")).collect();
    let messages: Vec<Value> = recipients
        .iter()
        .map(|r| json!({ "workspace": "acme", "to": [r], "subject": "s", "text": "t" }))
        .collect();
    let (status, body) = d.post_body(
        "/v1/messages:batch",
        &json!({ "messages": messages }).to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut times: Vec<f64> = Vec::new();
    while Instant::now() < deadline {
        let got = arrivals(&tag);
        times = recipients
            .iter()
            .filter_map(|r| got.get(r).and_then(|t| t.first().copied()))
            .collect();
        if times.len() == recipients.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(times.len(), recipients.len(), "not every message arrived");
    times.sort_by(f64::total_cmp);
    let span = times.last().unwrap() - times[0];
    // 30 evenly spaced at 5/s: 29 gaps of 0.2 s = 5.8 s; within 10 %.
    assert!(span >= 5.8 * 0.9, "arrivals spanned {span:.2} s");
    assert!(span <= 5.8 * 1.1 + 0.5, "arrivals spanned {span:.2} s");
    for w in times.windows(7) {
        assert!(w[6] - w[0] >= 1.0, "7 arrivals within one second: {w:?}");
    }
}

#[test]
fn sigkill_mid_load_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let s = server();
    // The slow port answers the end of DATA 300 ms after it has spooled the
    // message, so the kill lands while deliveries are accepted by the server
    // but not yet recorded: the duplicate window is exercised, not just
    // bounded.
    let dir = config(&[("main", s.slow, 100, "limits: { max_connections: 8 }\n")]);
    let tag = rcpt("crash");
    let recipients: Vec<String> = (0..120).map(|i| format!("k{i}-{tag}")).collect();
    let d = Daemon::start(dir.path(), FAST);
    for chunk in recipients.chunks(40) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|r| json!({ "workspace": "acme", "to": [r], "subject": "s", "text": "t" }))
            .collect();
        let (status, body) = d.post_body(
            "/v1/messages:batch",
            &json!({ "messages": messages }).to_string(),
        );
        // 202: committed, so every one of these must arrive.
        assert_eq!(status, 202, "{body}");
    }
    // Kill it once part of the load is out.
    let deadline = Instant::now() + Duration::from_secs(20);
    while arrivals(&tag).len() < 20 {
        assert!(Instant::now() < deadline, "nothing was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal("KILL");
    drop(d);
    let d = Daemon::start(dir.path(), FAST);
    let q = d.wait_for("/v1/queue", "the queue to drain", |_, q| {
        q["total_pending"] == 0
    });
    let recovered = q["recovered_in_flight"].as_u64().unwrap();
    // Eight sessions each hold a delivery for 300 ms of every ~300 ms.
    assert!(recovered >= 1, "no delivery was in flight at the kill: {q}");
    let got = arrivals(&tag);
    let mut duplicates = 0;
    for r in &recipients {
        let n = got.get(r).map_or(0, Vec::len);
        assert!(n >= 1, "{r} was accepted but never delivered");
        duplicates += n - 1;
    }
    // Only a delivery in flight at the kill (accepted by the server, not yet
    // recorded) can arrive twice.
    assert!(
        duplicates as u64 <= recovered,
        "{duplicates} duplicates but only {recovered} deliveries were in flight"
    );
    assert_eq!(
        d.metric("mailplug_queue_recovered_in_flight_total"),
        recovered as f64
    );
}

#[test]
fn throttling_replies_lower_the_rate_which_then_recovers() {
    let s = server();
    let dir = config(&[("slowdown", s.throttle, 100, "limits: { per_second: 10 }\n")]);
    let d = Daemon::start(dir.path(), FAST);
    let (status, body) = send(
        &d,
        &json!({ "workspace": "acme", "to": [rcpt("throttled")], "subject": "s", "text": "t" }),
    );
    assert_eq!(status, 202, "{body}");
    let q = d.wait_for("/v1/queue", "throttling", |_, q| {
        q["connections"][0]["rate"]["throttle_events"].as_u64() >= Some(1)
    });
    let rate = &q["connections"][0]["rate"];
    assert_eq!(rate["throttled"], true, "{q}");
    let lowered = rate["effective_per_second"].as_f64().unwrap();
    assert!(lowered <= 5.0, "{q}");
    // The limiter reacts at the attempt; the outcome is recorded with the
    // settler's next batch, a few milliseconds later.
    let m = d.wait_for(
        &format!("/v1/messages/{}", body["id"].as_str().unwrap()),
        "the throttled attempt recorded",
        |_, m| !m["recipients"][0]["last_result"].is_null(),
    );
    assert_eq!(
        m["recipients"][0]["last_result"]["class"], "throttled",
        "{m}"
    );
    assert_eq!(
        d.metric("mailplug_queue_throttled{connection=\"slowdown\"}"),
        1.0
    );
    // Without more throttling replies the rate climbs back.
    let (_, _) = d.get_json("/v1/queue");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .delete(format!(
            "{}/v1/messages/{}",
            d.admin,
            body["id"].as_str().unwrap()
        ))
        .call()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, q) = d.get_json("/v1/queue");
        let now = q["connections"][0]["rate"]["effective_per_second"]
            .as_f64()
            .unwrap();
        let events = q["connections"][0]["rate"]["throttle_events"]
            .as_u64()
            .unwrap();
        if now > lowered + 0.9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rate never recovered: {q} ({events} throttles)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_server_rate_limit_below_the_configured_rate_is_found_and_everything_delivered() {
    // The `ratelimited` port takes at most 5 MAIL FROM per sliding second and
    // answers the rest 451 4.7.1; the connection is configured for 20/s.
    let s = server();
    let dir = config(&[(
        "quota",
        s.ratelimited,
        100,
        "limits: { per_second: 20, max_connections: 2 }\n",
    )]);
    let d = Daemon::start(dir.path(), FAST);
    let tag = rcpt("adaptive");
    let recipients: Vec<String> = (0..40).map(|i| format!("a{i}-{tag}")).collect();
    let messages: Vec<Value> = recipients
        .iter()
        .map(|r| json!({ "workspace": "acme", "to": [r], "subject": "s", "text": "t" }))
        .collect();
    let (status, body) = d.post_body(
        "/v1/messages:batch",
        &json!({ "messages": messages }).to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lowest = f64::MAX;
    let q = loop {
        let (_, q) = d.get_json("/v1/queue");
        if let Some(r) = q["connections"][0]["rate"]["effective_per_second"].as_f64() {
            lowest = lowest.min(r);
        }
        if q["total_pending"] == 0 {
            break q;
        }
        assert!(Instant::now() < deadline, "the queue never drained: {q}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Throttled, the rate went down to what the server takes (or below)...
    let rate = &q["connections"][0]["rate"];
    assert!(rate["throttle_events"].as_u64() >= Some(2), "{q}");
    assert!(
        lowest <= 5.0,
        "the rate never came down to 5/s: lowest {lowest}, {q}"
    );
    // ...and every message arrived exactly once.
    let got = arrivals(&tag);
    for r in &recipients {
        assert_eq!(got.get(r).map_or(0, Vec::len), 1, "{r}");
    }
    assert_eq!(
        d.metric(
            "mailplug_queue_sends_total{connection=\"quota\",outcome=\"sent\",class=\"accepted\"}"
        ),
        40.0
    );
}

#[test]
fn mailplug_send_queues_through_the_daemon_and_waits_for_the_outcome() {
    let s = server();
    let dir = config(&[("main", s.plain, 100, "")]);
    let d = Daemon::start(dir.path(), FAST);
    let to = rcpt("cli");
    let out = crate::support::mailplug()
        .args([
            "send",
            "--admin-url",
            &d.admin,
            "--workspace",
            "acme",
            "--to",
            &to,
        ])
        .args([
            "--subject",
            "from the CLI",
            "--text",
            "hi",
            "--header",
            "X-Via: cli",
            "--wait",
            "20s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{to} sent via main")), "{stdout}");
    let (_, eml) = spooled_eml(&to);
    assert!(eml.contains("X-Via: cli"), "{eml}");
    let out = crate::support::mailplug()
        .args([
            "send",
            "--admin-url",
            &d.admin,
            "--workspace",
            "nope",
            "--to",
            &to,
        ])
        .args(["--subject", "s", "--text", "t"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/workspace"), "{stderr}");
}

#[test]
fn the_providers_extra_headers_are_on_every_queued_message() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    // No `username`: Postmark's user is the server token, read from the
    // password's secret at login (`credentials.username-secret`).
    let yaml = format!(
        "api_version: mailplug/v1\nkind: Connection\nname: pm\nprovider: postmark\nsmtp:\n  host: localhost\n  port: {port}\n  security: starttls\n  password: {{ env: SMTP_TEST_PW }}\n  tls: {{ ca_file: {ca} }}\noptions: {{ message_stream: broadcast }}\nfrom:\n  email: sender@example.test\nworkspaces: [acme]\n",
        port = s.submission,
        ca = s.ca_file.display()
    );
    std::fs::write(dir.path().join("pm.yaml"), yaml).unwrap();
    let d = Daemon::start_env(
        dir.path(),
        FAST,
        &[("SMTP_TEST_PW", crate::smtp::harness::PASSWORD)],
    );
    let to = rcpt("stream");
    let (status, body) = send(
        &d,
        &json!({ "workspace": "acme", "to": [to], "subject": "s", "text": "t" }),
    );
    assert_eq!(status, 202, "{body}");
    // A header the plugin owns cannot be set by the request.
    let (status, refused) = send(
        &d,
        &json!({ "workspace": "acme", "to": [to], "subject": "s", "text": "t",
                 "headers": { "X-PM-Message-Stream": "outbound" } }),
    );
    assert_eq!(status, 422, "{refused}");
    let m = wait_message(&d, body["id"].as_str().unwrap(), "sent", |m| {
        m["status"] == "sent"
    });
    let (spooled, eml) = spooled_eml(&to);
    assert_eq!(spooled["tls"], true, "{spooled}");
    assert_eq!(spooled["login"], crate::smtp::harness::PASSWORD);
    // The API names where the user comes from, never its value.
    let (_, conn) = d.get_json("/v1/connections/pm");
    assert_eq!(conn["smtp"]["username"], Value::Null, "{conn}");
    assert_eq!(conn["smtp"]["username_field"], "/smtp/password", "{conn}");
    assert_eq!(
        conn["smtp"]["username_secret"], "<redacted: env:SMTP_TEST_PW>",
        "{conn}"
    );
    assert!(
        !conn.to_string().contains(crate::smtp::harness::PASSWORD),
        "{conn}"
    );
    let head = eml.split("\r\n\r\n").next().unwrap_or("");
    assert!(
        head.lines().any(|l| l == "X-PM-Message-Stream: broadcast"),
        "{head}"
    );
    assert_eq!(status_of(&m, &to)["queue_id"], spooled["queue_id"]);
}
