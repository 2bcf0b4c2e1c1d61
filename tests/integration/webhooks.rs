//! The webhook ingest pipeline end to end: the real daemon on 127.0.0.1:0,
//! real SQLite in its data dir, provider fixtures posted over HTTP and read
//! back through `/v1/events` and `/v1/suppressions`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::daemon::Daemon;
use crate::support::connection;

/// The fixtures' signing time plus 30 s (see tests/fixtures/webhooks/README.md).
pub(crate) const NOW: &str = "1767268830";
pub(crate) const SIGNED_AT: i64 = 1_767_268_800;
pub(crate) const SW_SECRET: &str = "whsec_b6o9cjOxW7gNB+wD3OHJIK6jrmph6jGr4ZMmyKZmoWA=";
const SW_PUBLIC_KEY: &str = "whpk_HK1j7pkNn9MD5P57q95CBcHlTCfhawCIjG4j67I7GtU=";
const SG_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEITo5nIXhAdcsmjpIOE7HH6RCUZZmDDKUqj9f12HbYH7XApERotJxdo8yKEXz4F1d/OMriXBzm6eCoajRITBxMA==";

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/webhooks")
}

/// `sw` (custom-smtp, Standard Webhooks: a symmetric secret and a public
/// key, either may verify) and `sg` (SendGrid, its inline public key).
fn config(dir: &Path) {
    let sw = format!(
        "{}workspaces: [marketing, product]\nwebhook:\n  secret:\n    - {SW_SECRET}\n    - {SW_PUBLIC_KEY}\n",
        connection("sw")
    );
    let sg = format!(
        "api_version: mailplug/v1\nkind: Connection\nname: sg\nprovider: sendgrid\nsmtp:\n  password: {{ env: SMTP_PASSWORD }}\nfrom:\n  email: news@example.com\nworkspaces: [marketing]\nwebhook:\n  secret: {SG_PUBLIC_KEY}\n"
    );
    std::fs::write(dir.join("sw.yaml"), sw).unwrap();
    std::fs::write(dir.join("sg.yaml"), sg).unwrap();
}

pub(crate) fn start(extra: &[&str]) -> (tempfile::TempDir, PathBuf, Daemon) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    config(&dir);
    let d = Daemon::start_env(
        &dir,
        extra,
        &[("MAILPLUG_FIXED_NOW", NOW), ("SMTP_PASSWORD", "pw")],
    );
    (tmp, dir, d)
}

/// A raw HTTP/1.1 POST to the public listener: `(status, headers, body)`.
pub(crate) fn post_raw(
    public: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String, Value) {
    let addr = public.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    read_response(s)
}

fn read_response(mut s: TcpStream) -> (u16, String, Value) {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (
        status,
        head.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Request headers as (name, value) pairs.
type Headers = Vec<(String, String)>;

pub(crate) fn fixture_headers(path: &Path) -> Headers {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// Posts `<provider>/<case>` to a connection.
fn post_fixture(d: &Daemon, connection: &str, dir: &str, case: &str) -> (u16, Value) {
    let base = fixtures().join(dir);
    let body = std::fs::read(base.join(format!("{case}.json"))).unwrap();
    let headers = fixture_headers(&base.join(format!("{case}.headers.json")));
    let (status, _, json) = post_raw(
        &d.public,
        &format!("/webhooks/{connection}"),
        &headers,
        &body,
    );
    (status, json)
}

/// Standard Webhooks headers signing `body` as message `id` at `at`.
pub(crate) fn sw_sign(id: &str, at: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SW_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{at}.").as_bytes());
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), at.to_string()),
        ("webhook-signature".into(), format!("v1,{sig}")),
    ]
}

pub(crate) fn sw_event(kind: &str, recipient: &str, bounce: &str) -> Vec<u8> {
    json!({
        "type": format!("email.{kind}"),
        "timestamp": "2026-01-01T11:58:21Z",
        "data": {
            "recipient": recipient,
            "message_id": "m-1",
            "bounce_type": bounce,
            "smtp": { "code": 450, "enhanced": "4.2.2", "text": "450 4.2.2 mailbox full" }
        }
    })
    .to_string()
    .into_bytes()
}

/// Every stored event, oldest first, following cursors.
pub(crate) fn all_events(d: &Daemon, filter: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = d.get_json(&format!("/v1/events?order=asc&limit=7{filter}{cursor}"));
        assert_eq!(status, 200, "{page}");
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

pub(crate) fn suppressions(d: &Daemon, query: &str) -> Vec<Value> {
    let (status, body) = d.get_json(&format!("/v1/suppressions?{query}"));
    assert_eq!(status, 200, "{body}");
    body["suppressions"].as_array().unwrap().clone()
}

/// The stored event reduced to the fields an expected.json names.
pub(crate) fn project(event: &Value, expected: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in expected.as_object().unwrap().keys() {
        out.insert(key.clone(), event[key].clone());
    }
    Value::Object(out)
}

#[test]
fn every_sample_fixture_is_stored_exactly_once_even_when_posted_twice() {
    let (_tmp, _dir, d) = start(&[]);
    let cases = [
        ("sg", "sendgrid", "hard_bounce"),
        ("sg", "sendgrid", "batch_mixed"),
        ("sw", "standard_webhooks", "hard_bounce_v1"),
        ("sw", "standard_webhooks", "complaint_rotated_keys"),
    ];
    let mut expected_total = 0;
    for (conn, dir, case) in cases {
        let expected: Vec<Value> = serde_json::from_slice(
            &std::fs::read(fixtures().join(dir).join(format!("{case}.expected.json"))).unwrap(),
        )
        .unwrap();
        let before = all_events(&d, &format!("&connection={conn}")).len();
        let (status, body) = post_fixture(&d, conn, dir, case);
        assert_eq!(status, 200, "{case}: {body}");
        assert_eq!(body["stored"], expected.len(), "{case}: {body}");
        let stored = all_events(&d, &format!("&connection={conn}"));
        let new = &stored[before..];
        assert_eq!(new.len(), expected.len(), "{case}");
        for (got, want) in new.iter().zip(&expected) {
            assert_eq!(&project(got, want), want, "{case}");
            assert_eq!(got["connection"], conn);
            assert_eq!(got["schema_version"], 1);
            assert_eq!(
                got["plugin"]["id"],
                if conn == "sg" {
                    "sendgrid"
                } else {
                    "custom-smtp"
                }
            );
            // Each event is also reachable by its id.
            let (status, one) = d.get_json(&format!("/v1/events/{}", got["id"].as_str().unwrap()));
            assert_eq!((status, &one), (200, got));
        }
        // The provider retries: 2xx again, nothing new stored.
        let (status, again) = post_fixture(&d, conn, dir, case);
        assert_eq!(status, 200, "{case}: {again}");
        assert_eq!(again["stored"], 0, "{case}: {again}");
        assert_eq!(again["duplicates"], expected.len(), "{case}: {again}");
        expected_total += expected.len();
    }
    assert_eq!(all_events(&d, "").len(), expected_total);
    let status = d.get_json("/v1/status").1;
    assert_eq!(status["store"]["backend"], "sqlite", "{status}");
    assert_eq!(status["store"]["events"], expected_total, "{status}");
    // Ids sort in commit order.
    let ids: Vec<String> = all_events(&d, "")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    // Newest first by default.
    let (_, page) = d.get_json("/v1/events?limit=1");
    assert_eq!(
        page["events"][0]["id"].as_str(),
        ids.last().map(String::as_str)
    );
    assert!(
        d.metric("mailplug_events_duplicate_total{connection=\"sg\",provider=\"sendgrid\"}") >= 1.0
    );

    // The hard bounces and the complaint suppressed their recipients in
    // every workspace of their connection.
    let marketing = suppressions(&d, "workspace=marketing");
    let product = suppressions(&d, "workspace=product");
    assert!(
        product.iter().all(|s| s["workspace"] == "product"),
        "{product:?}"
    );
    let sw_hard = "no-such-user@example.com";
    for list in [&marketing, &product] {
        assert!(
            list.iter()
                .any(|s| s["address"] == sw_hard && s["reason"] == "hard_bounce"),
            "{list:?}"
        );
    }
    assert!(
        marketing.iter().any(|s| s["reason"] == "complaint"),
        "{marketing:?}"
    );
}

#[test]
fn refused_requests_store_nothing_and_get_the_documented_status() {
    let (_tmp, _dir, d) = start(&["--log-format", "json"]);
    let bad = fixtures().join("_bad");
    for case in [
        "sendgrid__tampered_body",
        "sendgrid__replayed_old_timestamp",
        "sendgrid__truncated_json",
    ] {
        let expect: Value = serde_json::from_slice(
            &std::fs::read(bad.join(format!("{case}.expect.json"))).unwrap(),
        )
        .unwrap();
        let body = std::fs::read(bad.join(format!("{case}.json"))).unwrap();
        let headers = fixture_headers(&bad.join(format!("{case}.headers.json")));
        let (status, _, json) = post_raw(&d.public, "/webhooks/sg", &headers, &body);
        assert_eq!(
            u64::from(status),
            expect["status"].as_u64().unwrap(),
            "{case}: {json}"
        );
        assert!(json["error"].is_string(), "{case}: {json}");
    }

    let good = sw_event("bounced", "x@example.org", "hard");
    let signed = |body: &[u8]| sw_sign("msg_bad", SIGNED_AT, body);
    let strip = |headers: Vec<(String, String)>, name: &str| -> Vec<(String, String)> {
        headers.into_iter().filter(|(k, _)| k != name).collect()
    };
    let with = |mut headers: Vec<(String, String)>, name: &str, value: &str| {
        headers.retain(|(k, _)| k != name);
        headers.push((name.into(), value.into()));
        headers
    };
    let mut deep = b"[".repeat(5000);
    deep.extend(b"]".repeat(5000));
    let cases: Vec<(&str, Headers, Vec<u8>, u16)> = vec![
        (
            "truncated json",
            signed(&good[..good.len() / 2]),
            good[..good.len() / 2].to_vec(),
            400,
        ),
        (
            "wrong types",
            signed(br#"{"type": 5, "data": []}"#),
            br#"{"type": 5, "data": []}"#.to_vec(),
            400,
        ),
        ("5,000-level nesting", signed(&deep), deep.clone(), 400),
        (
            "invalid UTF-8",
            signed(b"{\"type\": \"\xff\xfe\"}"),
            b"{\"type\": \"\xff\xfe\"}".to_vec(),
            400,
        ),
        (
            "tampered body",
            signed(&good),
            sw_event("bounced", "y@example.org", "hard"),
            401,
        ),
        (
            "stale timestamp",
            sw_sign("msg_bad", SIGNED_AT - 7200, &good),
            good.clone(),
            401,
        ),
        (
            "future timestamp",
            sw_sign("msg_bad", SIGNED_AT + 3600, &good),
            good.clone(),
            401,
        ),
        (
            "missing signature",
            strip(signed(&good), "webhook-signature"),
            good.clone(),
            401,
        ),
        (
            "garbage signature",
            with(signed(&good), "webhook-signature", "v1,@@@ not base64"),
            good.clone(),
            401,
        ),
        (
            "wrong content type",
            with(signed(&good), "Content-Type", "application/xml"),
            good.clone(),
            415,
        ),
    ];
    for (what, headers, body, want) in &cases {
        let (status, _, json) = post_raw(&d.public, "/webhooks/sw", headers, body);
        assert_eq!(status, *want, "{what}: {json}");
        assert!(json["error"].is_string(), "{what}: {json}");
    }
    let (status, _, json) = post_raw(&d.public, "/webhooks/nobody", &signed(&good), &good);
    assert_eq!(status, 404, "{json}");

    // Oversize: refused from Content-Length, and while streaming a chunked
    // body that declares no length.
    let big = vec![b' '; 5 << 20];
    let (status, _, json) = post_raw(&d.public, "/webhooks/sw", &signed(&big), &big);
    assert_eq!(status, 413, "{json}");
    assert_eq!(post_chunked(&d, "/webhooks/sw", 5 << 20), 413);

    assert!(all_events(&d, "").is_empty(), "nothing stored");
    assert!(suppressions(&d, "").is_empty(), "no suppression change");
    assert!(d.metric("mailplug_webhooks_rejected_total{connection=\"sw\",provider=\"custom-smtp\",reason=\"unauthorized\"}") >= 5.0);
    assert!(d.metric("mailplug_webhooks_rejected_total{connection=\"sw\",provider=\"custom-smtp\",reason=\"malformed\"}") >= 4.0);
    assert!(d.metric("mailplug_webhooks_rejected_total{connection=\"\",provider=\"\",reason=\"unknown_connection\"}") >= 1.0);

    // The last refusals of each connection, newest first, with the status and
    // the error each request got.
    let (status, page) = d.get_json("/v1/connections/sw/refusals");
    assert_eq!(status, 200, "{page}");
    let listed: Vec<(u64, &str)> = page["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    let mut expected: Vec<(u64, &str)> = cases
        .iter()
        .map(|(_, _, _, want)| {
            let reason = match want {
                400 => "malformed",
                401 => "unauthorized",
                _ => "content_type",
            };
            (u64::from(*want), reason)
        })
        .chain([(413, "too_large"), (413, "too_large")])
        .collect();
    expected.reverse();
    assert_eq!(listed, expected, "{page}");
    let newest = &page["refusals"][0];
    assert!(
        newest["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit"),
        "{page}"
    );
    assert!(newest["at"].as_str().unwrap().ends_with('Z'), "{page}");
    let (status, page) = d.get_json("/v1/connections/sg/refusals");
    assert_eq!(
        (status, page["refusals"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{page}"
    );
    let (status, page) = d.get_json("/v1/connections/nobody/refusals");
    assert_eq!(status, 404, "{page}");

    // The same good request is accepted afterwards.
    let (status, _, json) = post_raw(&d.public, "/webhooks/sw", &signed(&good), &good);
    assert_eq!((status, &json["stored"]), (200, &json!(1)), "{json}");
}

/// Streams `total` bytes as a chunked body; the status the daemon answers.
fn post_chunked(d: &Daemon, path: &str, total: usize) -> u16 {
    let addr = d.public.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if s.write_all(&frame).is_err() {
            break; // the daemon answered and closed early: what we want
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n");
    read_response(s).0
}

#[test]
fn soft_bounces_suppress_at_the_threshold_and_manual_entries_follow_the_case_rules() {
    let (_tmp, _dir, d) = start(&["--soft-bounce-threshold", "3"]);
    for i in 0..3 {
        let body = sw_event("bounced", "Full@Example.NET", "soft");
        let (status, _, json) = post_raw(
            &d.public,
            "/webhooks/sw",
            &sw_sign(&format!("soft-{i}"), SIGNED_AT, &body),
            &body,
        );
        assert_eq!(status, 200, "{json}");
        let listed = suppressions(&d, "workspace=marketing&address=Full@example.net");
        assert_eq!(
            listed.len(),
            usize::from(i == 2),
            "after {} soft bounces: {listed:?}",
            i + 1
        );
    }
    let listed = suppressions(&d, "workspace=product&address=Full@EXAMPLE.net");
    assert_eq!(listed[0]["reason"], "soft_bounces");
    assert!(listed[0]["event_id"].is_string());
    // The local part keeps its case (RFC 5321): `full@` is another mailbox.
    assert!(suppressions(&d, "address=full@example.net").is_empty());

    let (status, body) = d.post_body(
        "/v1/suppressions",
        r#"{"workspace":"marketing","address":"Ops@Example.com","note":"asked by phone"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = d.post_body(
        "/v1/suppressions",
        r#"{"workspace":"marketing","address":"Ops@EXAMPLE.COM"}"#,
    );
    assert_eq!((status, &body["added"]), (200, &json!(false)), "{body}");
    for bad in [
        r#"{"workspace":"marketing","address":"not an address"}"#,
        r#"{"workspace":"-bad","address":"a@example.com"}"#,
        r#"{"workspace":"marketing"}"#,
        r#"{"workspace":"marketing","address":"a@example.com","extra":1}"#,
    ] {
        let (status, body) = d.post_body("/v1/suppressions", bad);
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let delete = |path: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .delete(format!("{}{path}", d.admin))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        delete("/v1/suppressions/marketing/ops@example.com"),
        404,
        "local part case differs"
    );
    assert_eq!(delete("/v1/suppressions/marketing/Ops@example.COM"), 204);
    assert_eq!(delete("/v1/suppressions/marketing/Ops@example.COM"), 404);
    assert!(suppressions(&d, "address=Ops@example.com").is_empty());

    for (query, want) in [
        ("kind=exploded", 400),
        ("limit=0", 400),
        ("since=yesterday", 400),
        ("cursor=garbage", 400),
        ("colour=blue", 400),
    ] {
        let (status, body) = d.get_json(&format!("/v1/events?{query}"));
        assert_eq!(status, want, "{query}: {body}");
    }
}

#[test]
fn a_full_store_answers_503_with_retry_after_and_nothing_is_lost_once_fixed() {
    let (tmp, dir, d) = start(&["--store-max-size", "256KiB"]);
    let mut refused = None;
    let mut accepted = 0;
    for i in 0..400 {
        let body = sw_event("delivered", &format!("r{i}@example.org"), "");
        let headers = sw_sign(&format!("fill-{i}"), SIGNED_AT, &body);
        let (status, head, json) = post_raw(&d.public, "/webhooks/sw", &headers, &body);
        match status {
            200 => accepted += 1,
            503 => {
                assert!(
                    head.to_ascii_lowercase().contains("retry-after: 5"),
                    "{head}"
                );
                assert!(json["error"].as_str().unwrap().contains("full"), "{json}");
                refused = Some((headers, body));
                break;
            }
            other => panic!("unexpected {other}: {json}"),
        }
    }
    let (headers, body) = refused.expect("the store filled up");
    assert_eq!(
        all_events(&d, "").len(),
        accepted,
        "exactly the 2xx requests are stored"
    );
    drop(d);
    // The operator raises the limit; the provider's retry now succeeds.
    let d = Daemon::start_env(
        &dir,
        &["--store-max-size", "16MiB"],
        &[("MAILPLUG_FIXED_NOW", NOW), ("SMTP_PASSWORD", "pw")],
    );
    let (status, _, json) = post_raw(&d.public, "/webhooks/sw", &headers, &body);
    assert_eq!((status, &json["stored"]), (200, &json!(1)), "{json}");
    assert_eq!(all_events(&d, "").len(), accepted + 1);
    drop(tmp);
}

/// Four senders posting signed single-event webhooks with unique ids until
/// stopped or the daemon goes away; each remembers the ids answered 200.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(public: &str, tag: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..4)
            .map(|w| {
                let (public, stop, tag) = (public.to_owned(), stop.clone(), tag.to_owned());
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..2000 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let id = format!("{tag}-{w}-{i}");
                        let body = sw_event("delivered", &format!("{id}@example.org"), "");
                        let headers = sw_sign(&id, SIGNED_AT, &body);
                        let Ok((status, _, _)) = std::panic::catch_unwind(|| {
                            post_raw(&public, "/webhooks/sw", &headers, &body)
                        }) else {
                            break; // the daemon is gone
                        };
                        if status == 200 {
                            acked.push(id);
                        }
                    }
                    acked
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the senders; every id answered 200.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    }
}

#[test]
fn after_sigkill_under_load_every_acknowledged_event_is_stored_exactly_once() {
    let (_tmp, dir, d) = start(&[]);
    let load = Load::start(&d.public, "kill");
    std::thread::sleep(Duration::from_millis(1500));
    d.signal("KILL");
    let acked = load.stop();
    assert!(
        acked.len() > 10,
        "the load ran ({} acknowledged)",
        acked.len()
    );
    drop(d);

    let d = Daemon::start_env(
        &dir,
        &[],
        &[("MAILPLUG_FIXED_NOW", NOW), ("SMTP_PASSWORD", "pw")],
    );
    let mut seen = std::collections::HashMap::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = d.get_json(&format!("/v1/events?order=asc&limit=1000{cursor}"));
        for e in page["events"].as_array().unwrap() {
            *seen
                .entry(e["provider_event_id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert!(seen.values().all(|n| *n == 1), "an event stored twice");
    for id in &acked {
        assert_eq!(seen.get(id), Some(&1), "{id} got a 2xx but is not stored");
    }
}

#[test]
fn the_events_and_suppressions_commands_talk_to_the_daemon() {
    use std::io::BufRead as _;
    let (_tmp, dir, d) = start(&[]);
    let admin = ["--admin-url", d.admin.as_str()];
    let run = |args: &[&str]| crate::support::run_in(&dir, &[args, &admin[..]].concat());

    let listed = run(&["events", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("no events"), "{}", listed.stdout);

    // `tail` follows: start it, then store an event.
    let mut tail = crate::support::mailplug()
        .args(["events", "tail", "--format", "json", "--interval", "100ms"])
        .args(admin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let body = sw_event("bounced", "Gone@Example.org", "hard");
    let (status, _, json) = post_raw(
        &d.public,
        "/webhooks/sw",
        &sw_sign("tail-1", SIGNED_AT, &body),
        &body,
    );
    assert_eq!(status, 200, "{json}");
    let mut line = String::new();
    std::io::BufReader::new(tail.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = tail.kill();
    let _ = tail.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["provider_event_id"], "tail-1");

    let listed = run(&["events", "list", "--kind", "bounced", "--format", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let page: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(page["events"][0]["provider_event_id"], "tail-1");
    let bad = run(&["events", "list", "--kind", "exploded"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("`kind` must be one of"),
        "{}",
        bad.stderr
    );

    let added = run(&[
        "suppressions",
        "add",
        "product",
        "Ops@Example.com",
        "--note",
        "by hand",
    ]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let listed = run(&["suppressions", "list", "--workspace", "product"]);
    assert!(
        listed.stdout.contains("Ops@Example.com") && listed.stdout.contains("by hand"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("Gone@Example.org") && listed.stdout.contains("hard_bounce"),
        "{}",
        listed.stdout
    );
    let removed = run(&["suppressions", "remove", "product", "Ops@example.com"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let again = run(&["suppressions", "remove", "product", "Ops@example.com"]);
    assert_eq!(again.code, 1, "{}", again.stderr);

    let unreachable = crate::support::run_in(
        &dir,
        &["events", "list", "--admin-url", "http://127.0.0.1:1"],
    );
    assert_eq!(unreachable.code, 75, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("cannot reach the daemon"),
        "{}",
        unreachable.stderr
    );
}

/// `wasm` with a custom section appended: the same plugin, another sha256.
fn rebuild(wasm: &[u8], build: u32) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"mailplug-test-build";
    let payload = build.to_le_bytes();
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend(name);
    content.extend(payload);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend(content);
    out
}

#[test]
fn plugin_hot_swaps_under_load_fail_no_request_and_split_none() {
    const SECRET: &str = "example-test-secret";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let original = std::fs::read(crate::plugins::guest("example_provider")).unwrap();
    let register = |build: u32| -> String {
        let bytes = rebuild(&original, build);
        let path = tmp.path().join(format!("example-{build}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        let sha = mailplug::digest::sha256_hex(&bytes);
        let doc = format!(
            // A generous deadline: this test is about swaps, and on a
            // loaded 2-core machine the default 100 ms can pass while the
            // call waits for a core.
            "api_version: mailplug/v1\nkind: Plugin\nid: example\npath: {}\nsha256: {sha}\nlimits: {{ deadline_ms: 5000 }}\n",
            path.display()
        );
        let staged = tmp.path().join("plugins.yaml.tmp");
        std::fs::write(&staged, doc).unwrap();
        std::fs::rename(&staged, dir.join("plugins.yaml")).unwrap();
        sha
    };
    let mut shas = vec![register(0)];
    std::fs::write(
        dir.join("ex.yaml"),
        format!("api_version: mailplug/v1\nkind: Connection\nname: ex\nprovider: example\nsmtp: {{ password: {{ env: SMTP_PASSWORD }} }}\nfrom: {{ email: a@example.com }}\nwebhook:\n  secret: {SECRET}\n"),
    )
    .unwrap();
    let d = Daemon::start_env(
        &dir,
        &[],
        &[("MAILPLUG_FIXED_NOW", NOW), ("SMTP_PASSWORD", "pw")],
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let public = d.public.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut failed = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                    i += 1;
                    let id = format!("swap-{w}-{i}");
                    let body = json!([
                        { "event": "delivered", "email": "a@example.org", "time": "2026-01-01T11:00:00Z", "id": format!("{id}-a") },
                        { "event": "delivered", "email": "b@example.org", "time": "2026-01-01T11:00:00Z", "id": format!("{id}-b") },
                    ])
                    .to_string();
                    let ts = SIGNED_AT.to_string();
                    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                    mac.update(ts.as_bytes());
                    mac.update(body.as_bytes());
                    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
                    let headers = vec![
                        ("Content-Type".to_owned(), "application/json".to_owned()),
                        ("X-Example-Timestamp".to_owned(), ts),
                        ("X-Example-Signature".to_owned(), sig),
                    ];
                    let (status, _, json) = post_raw(&public, "/webhooks/ex", &headers, body.as_bytes());
                    if status == 200 {
                        acked.push(id);
                    } else {
                        failed.push(format!("{status} {json}"));
                    }
                }
                (acked, failed)
            })
        })
        .collect();

    for build in 1..=20 {
        let generation = d.get_json("/v1/status").1["generation"].as_u64().unwrap();
        shas.push(register(build));
        d.wait_for("/v1/status", "the swapped plugin", |_, b| {
            b["generation"].as_u64().unwrap_or(0) > generation && b["last_reload"]["result"] == "ok"
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        let (a, failed) = w.join().unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during swaps: {:?}",
            &failed[..failed.len().min(5)]
        );
        acked.extend(a);
    }
    assert!(acked.len() >= 20, "the load ran ({} requests)", acked.len());

    let events = all_events(&d, "&connection=ex");
    let mut by_request: std::collections::HashMap<String, Vec<String>> = Default::default();
    for e in &events {
        let sha = e["plugin"]["sha256"].as_str().unwrap().to_owned();
        assert!(shas.contains(&sha), "unknown build {sha}");
        let id = e["provider_event_id"].as_str().unwrap();
        let request = id.rsplit_once('-').unwrap().0.to_owned();
        by_request.entry(request).or_default().push(sha);
    }
    for id in &acked {
        let builds = by_request
            .get(id)
            .unwrap_or_else(|| panic!("{id} got a 2xx but is not stored"));
        assert_eq!(builds.len(), 2, "{id}: both events stored");
        assert_eq!(
            builds[0], builds[1],
            "{id} was handled by two plugin builds"
        );
    }
    let distinct: std::collections::HashSet<&String> = by_request.values().map(|b| &b[0]).collect();
    assert!(
        distinct.len() >= 2,
        "the load spanned swaps ({} builds seen)",
        distinct.len()
    );
}

#[test]
fn sigterm_finishes_in_flight_commits_and_closes_the_store_cleanly() {
    let (tmp, dir, mut d) = start(&[]);
    // Requests in flight while SIGTERM arrives: each is either answered 200
    // (and then stored) or refused/unanswered (and then not stored).
    let load = Load::start(&d.public, "term");
    std::thread::sleep(Duration::from_millis(700));
    d.signal("TERM");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    let acked = load.stop();
    assert!(!acked.is_empty(), "the load ran");
    // A clean stop folds the WAL back into the database.
    let data = tmp.path().join("data-conf");
    let wal = std::fs::metadata(data.join("mailplug.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "WAL checkpointed at shutdown");

    let d = Daemon::start_env(
        &dir,
        &[],
        &[("MAILPLUG_FIXED_NOW", NOW), ("SMTP_PASSWORD", "pw")],
    );
    let stored: std::collections::HashSet<String> = all_events(&d, "&limit=1000")
        .iter()
        .map(|e| e["provider_event_id"].as_str().unwrap().to_owned())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "{id} got a 2xx but is not stored");
    }
}

#[test]
fn a_misbehaving_plugin_gets_500_stores_nothing_and_the_next_request_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let wasm = crate::plugins::guest("hostile");
    let sha = mailplug::digest::sha256_hex(&std::fs::read(&wasm).unwrap());
    std::fs::write(
        dir.join("plugins.yaml"),
        format!(
            "api_version: mailplug/v1\nkind: Plugin\nid: hostile\npath: {}\nsha256: {sha}\nlimits: {{ memory_mib: 16, deadline_ms: 200 }}\n",
            wasm.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("h.yaml"),
        "api_version: mailplug/v1\nkind: Connection\nname: h\nprovider: hostile\nsmtp: { host: smtp.example.com }\nfrom: { email: a@example.com }\nworkspaces: [w]\nwebhook:\n  secret: { env: SMTP_PASSWORD }\n",
    )
    .unwrap();
    let d = Daemon::start_env(&dir, &[], &[("SMTP_PASSWORD", "pw")]);
    assert_eq!(
        d.get("/v1/connections/h").0,
        200,
        "{}",
        d.get("/v1/status").1
    );
    let json_type = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    for body in [
        "loop",
        "grow",
        "panic",
        "recurse",
        "invalid:empty-recipient",
        "invalid:span-out-of-bounds",
    ] {
        let (status, _, json) = post_raw(&d.public, "/webhooks/h", &json_type, body.as_bytes());
        assert_eq!(status, 500, "{body}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains("plugin"),
            "{body}: {json}"
        );
    }
    assert!(all_events(&d, "").is_empty(), "nothing stored");
    assert!(suppressions(&d, "").is_empty());
    // The instance that failed was discarded; the next request is served.
    let (status, _, json) = post_raw(&d.public, "/webhooks/h", &json_type, b"fine");
    assert_eq!((status, &json["stored"]), (200, &json!(1)), "{json}");
    assert!(d.metric("mailplug_webhooks_rejected_total{connection=\"h\",provider=\"hostile\",reason=\"plugin_failed\"}") >= 6.0);
}
