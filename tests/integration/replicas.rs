//! Several `mailplug serve` replicas sharing one real PostgreSQL (started by
//! the test, see `replicas/pg.rs`), each with its own copy of the config
//! and its own data dir, as replicas behind a load balancer run: one
//! webhook posted to both is one event, a queue drains through both with
//! each message delivered once, a killed replica's work is finished by the
//! other, a rate limit holds for the pair, and a PostgreSQL restart is
//! answered with 503 and then recovered from without restarting them.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::smtp::harness::{arrivals, server};
use crate::webhooks::{NOW, SIGNED_AT, SW_SECRET, all_events, post_raw, sw_event, sw_sign};

mod forwarding;
mod pg;
mod pool_metrics;

/// Two config dirs (`a/conf`, `b/conf`) holding the same files.
fn configs(files: &[(&str, String)]) -> (tempfile::TempDir, [std::path::PathBuf; 2]) {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = ["a", "b"].map(|r| {
        let dir = tmp.path().join(r).join("conf");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, yaml) in files {
            std::fs::write(dir.join(name), yaml).unwrap();
        }
        dir
    });
    (tmp, dirs)
}

fn replica(dir: &Path, url: &str, extra: &[&str]) -> Daemon {
    Daemon::start_env(
        dir,
        extra,
        &[
            ("MAILPLUG_STORE_URL", url),
            ("MAILPLUG_FIXED_NOW", NOW),
            ("SMTP_PASSWORD", "pw"),
        ],
    )
}

/// A connection to the test SMTP server's `port` (no TLS, no AUTH).
fn smtp_connection(name: &str, port: u16, extra: &str) -> String {
    format!(
        "api_version: mailplug/v1\nkind: Connection\nname: {name}\nsmtp:\n  host: 127.0.0.1\n  port: {port}\n  security: none\n  helo_name: replicas.mailplug.test\nfrom:\n  email: sender@example.test\nworkspaces: [acme]\n{extra}"
    )
}

/// A unique recipient tag per test run.
fn tag(what: &str) -> String {
    format!("{what}-{}-{}", std::process::id(), ulid_like())
}

fn ulid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Queues one message per recipient through `d`, in batches of 500.
fn enqueue(d: &Daemon, connection: &str, recipients: &[String]) {
    for chunk in recipients.chunks(500) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|r| json!({ "connection": connection, "to": [r], "subject": "s", "text": "t" }))
            .collect();
        let (status, body) = d.post_body(
            "/v1/messages:batch",
            &json!({ "messages": messages }).to_string(),
        );
        assert_eq!(status, 202, "{body}");
    }
}

/// `mailplug_queue_sends_total` of `connection` with outcome `sent`.
fn sent(d: &Daemon, connection: &str) -> f64 {
    let (_, text) = d.get("/metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("mailplug_queue_sends_total{")
                && l.contains(&format!("connection=\"{connection}\""))
                && l.contains("outcome=\"sent\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_drained(d: &Daemon, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, q) = d.get_json("/v1/queue");
        if status == 200 && q["total_pending"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "queue not drained: {q}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn lease_of(d: &Daemon, connection: &str) -> String {
    let q = d.get_json("/v1/queue").1;
    q["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["connection"] == connection))
        .and_then(|c| c["lease"].as_str())
        .unwrap_or("none")
        .to_owned()
}

fn webhook_connection() -> String {
    format!(
        "{}workspaces: [acme]\nwebhook:\n  secret: {SW_SECRET}\n",
        crate::support::connection("sw")
    )
}

#[test]
fn one_webhook_posted_to_both_replicas_is_stored_once() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("webhooks");
    let (_tmp, [a_dir, b_dir]) = configs(&[("sw.yaml", webhook_connection())]);
    let (a, b) = (replica(&a_dir, &url, &[]), replica(&b_dir, &url, &[]));
    // Twenty provider deliveries, each landing on both replicas at once
    // (a retry the load balancer sent to the other one).
    for i in 0..20 {
        let body = sw_event("delivered", &format!("r{i}@example.org"), "");
        let headers = sw_sign(&format!("msg_{i}"), SIGNED_AT, &body);
        let (pa, pb) = (a.public.clone(), b.public.clone());
        let (h2, b2) = (headers.clone(), body.clone());
        let other = std::thread::spawn(move || post_raw(&pb, "/webhooks/sw", &h2, &b2));
        let (status, _, json) = post_raw(&pa, "/webhooks/sw", &headers, &body);
        assert!((200..300).contains(&status), "{status} {json}");
        let (status, _, json) = other.join().unwrap();
        assert!((200..300).contains(&status), "{status} {json}");
    }
    for d in [&a, &b] {
        let events = all_events(d, "");
        assert_eq!(events.len(), 20, "{events:?}");
    }
    let stored = |d: &Daemon| {
        d.metric("mailplug_events_stored_total{connection=\"sw\",provider=\"custom-smtp\"}")
    };
    let dup = |d: &Daemon| {
        d.metric("mailplug_events_duplicate_total{connection=\"sw\",provider=\"custom-smtp\"}")
    };
    assert_eq!(stored(&a) + stored(&b), 20.0);
    assert_eq!(dup(&a) + dup(&b), 20.0);
}

#[test]
fn a_queue_drains_through_both_replicas_with_each_message_delivered_once() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("drain");
    let s = server();
    let (_tmp, [a_dir, b_dir]) = configs(&[(
        "plain.yaml",
        smtp_connection("plain", s.plain, "limits: { max_connections: 4 }\n"),
    )]);
    let a = replica(&a_dir, &url, &[]);
    let b = replica(&b_dir, &url, &[]);
    let tag = tag("drain");
    let recipients: Vec<String> = (0..10_000)
        .map(|i| format!("d{i}-{tag}@example.org"))
        .collect();
    enqueue(&a, "plain", &recipients);
    wait_drained(&a, Duration::from_secs(300));
    wait_drained(&b, Duration::from_secs(30));
    let got = arrivals(&tag);
    for r in &recipients {
        let n = got.get(r).map_or(0, Vec::len);
        assert_eq!(n, 1, "{r} arrived {n} times");
    }
    let (sa, sb) = (sent(&a, "plain"), sent(&b, "plain"));
    assert_eq!(sa + sb, 10_000.0);
    assert!(
        sa > 0.0 && sb > 0.0,
        "one replica sent everything: {sa} / {sb}"
    );
}

#[test]
fn a_replica_killed_mid_drain_loses_nothing_and_the_other_finishes() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("killed");
    let s = server();
    // The slow port answers the end of DATA 300 ms after spooling, so the
    // kill lands while deliveries are accepted but not yet recorded.
    let (_tmp, [a_dir, b_dir]) = configs(&[(
        "slow.yaml",
        smtp_connection("slow", s.slow, "limits: { max_connections: 8 }\n"),
    )]);
    let lease = ["--delivery-lease", "10s"];
    let a = replica(&a_dir, &url, &lease);
    let b = replica(&b_dir, &url, &lease);
    let tag = tag("killed");
    let recipients: Vec<String> = (0..300)
        .map(|i| format!("k{i}-{tag}@example.org"))
        .collect();
    enqueue(&a, "slow", &recipients);
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals(&tag).len() < 30 {
        assert!(Instant::now() < deadline, "nothing was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.signal("KILL");
    drop(a);
    // Deliveries leased at the kill: A's (attempted, accepted but not yet
    // recorded, or claimed ahead and waiting for a session) and B's.
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let leased: i64 = db
        .query_one(
            "SELECT count(*) FROM deliveries WHERE state = 'sending'",
            &[],
        )
        .unwrap()
        .get(0);
    // B sends the rest, and what A had claimed once its leases lapse.
    wait_drained(&b, Duration::from_secs(120));
    let got = arrivals(&tag);
    let mut duplicates = 0;
    for r in &recipients {
        let n = got.get(r).map_or(0, Vec::len);
        assert!(n >= 1, "{r} was accepted but never delivered");
        duplicates += n - 1;
    }
    // Only a delivery leased at the kill can arrive twice (accepted by the
    // server, not yet recorded by A): the duplicate window.
    assert!(leased >= 1, "nothing was in flight at the kill");
    assert!(
        duplicates as i64 <= leased,
        "{duplicates} duplicates but only {leased} deliveries were leased at the kill"
    );
}

#[test]
fn a_per_second_limit_holds_for_both_replicas_together() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("paced");
    let s = server();
    let (_tmp, [a_dir, b_dir]) = configs(&[(
        "paced.yaml",
        smtp_connection(
            "paced",
            s.plain,
            "limits: { per_second: 5, max_connections: 4 }\n",
        ),
    )]);
    let a = replica(&a_dir, &url, &[]);
    let b = replica(&b_dir, &url, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut leases;
    loop {
        leases = [lease_of(&a, "paced"), lease_of(&b, "paced")];
        leases.sort();
        if leases == ["held", "standby"] {
            break;
        }
        assert!(Instant::now() < deadline, "leases: {leases:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tag = tag("paced");
    let recipients: Vec<String> = (0..30).map(|i| format!("p{i}-{tag}@example.org")).collect();
    // Queued through both, as a load balancer would spread them.
    enqueue(&a, "paced", &recipients[..15]);
    enqueue(&b, "paced", &recipients[15..]);
    wait_drained(&a, Duration::from_secs(30));
    let got = arrivals(&tag);
    let mut times: Vec<f64> = recipients
        .iter()
        .map(|r| {
            let t = got.get(r).unwrap_or_else(|| panic!("{r} never arrived"));
            assert_eq!(t.len(), 1, "{r} arrived {} times", t.len());
            t[0]
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let span = times.last().unwrap() - times[0];
    // 30 evenly spaced at 5/s: 29 gaps of 0.2 s = 5.8 s; within 10 %.
    assert!(span >= 5.8 * 0.9, "arrivals spanned {span:.2} s");
    assert!(span <= 5.8 * 1.1 + 0.5, "arrivals spanned {span:.2} s");
    for w in times.windows(7) {
        assert!(w[6] - w[0] >= 1.0, "7 arrivals within one second: {w:?}");
    }
    // One replica sent them all: the lease holder.
    let (sa, sb) = (sent(&a, "paced"), sent(&b, "paced"));
    assert_eq!(sa + sb, 30.0);
    assert!(sa == 0.0 || sb == 0.0, "both replicas sent: {sa} / {sb}");
}

#[test]
fn replicas_answer_503_while_postgresql_is_down_and_recover_without_a_restart() {
    let Some(pg) = pg::start() else { return };
    let url = pg.database("restart");
    let s = server();
    let (_tmp, [a_dir, b_dir]) = configs(&[
        ("sw.yaml", webhook_connection()),
        (
            "slow.yaml",
            smtp_connection("slow", s.slow, "limits: { max_connections: 4 }\n"),
        ),
    ]);
    let a = replica(&a_dir, &url, &[]);
    let b = replica(&b_dir, &url, &[]);
    let tag = tag("restart");
    let recipients: Vec<String> = (0..100)
        .map(|i| format!("x{i}-{tag}@example.org"))
        .collect();
    enqueue(&a, "slow", &recipients);
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals(&tag).len() < 10 {
        assert!(Instant::now() < deadline, "nothing was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.down();
    let body = sw_event("delivered", &format!("down-{tag}@example.org"), "");
    let headers = sw_sign("msg_down", SIGNED_AT, &body);
    for d in [&a, &b] {
        let (status, text) = d.get("/readyz");
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("store"), "{text}");
        assert_eq!(d.metric("mailplug_store_up"), 0.0);
        let (status, _, json) = post_raw(&d.public, "/webhooks/sw", &headers, &body);
        assert_eq!(status, 503, "{json}");
        // Each check drops a client whose connection broke; once none is
        // left, the next one fails to connect, and the pool counts it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.metric("mailplug_store_pool_connect_errors_total") < 1.0 {
            assert!(Instant::now() < deadline, "no failed connect counted");
            d.get("/readyz");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    pg.up();
    for d in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.get("/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "not ready again");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(d.metric("mailplug_store_up"), 1.0);
    }
    // The refused webhook, retried by its provider, is stored now.
    let (status, _, json) = post_raw(&b.public, "/webhooks/sw", &headers, &body);
    assert!((200..300).contains(&status), "{status} {json}");
    assert_eq!(
        all_events(&a, &format!("&recipient=down-{tag}@example.org")).len(),
        1
    );
    // And the queue drains: every message arrives.
    wait_drained(&a, Duration::from_secs(120));
    let got = arrivals(&tag);
    for r in &recipients {
        assert!(got.contains_key(r), "{r} never arrived");
    }
}
