//! The send lease of a rate-limited connection (one process sends through
//! it at a time): the daemon stands by while another holder's lease runs in
//! the store, sends nothing meanwhile, and takes over once it is free.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{FAST, config, rcpt};
use crate::daemon::Daemon;
use crate::smtp::harness::{server, spooled_for};

fn lease_of(q: &Value, connection: &str) -> String {
    q["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["connection"] == connection))
        .map(|c| c["lease"].as_str().unwrap_or("none").to_owned())
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn a_rate_limited_connection_sends_only_while_this_process_holds_its_lease() {
    let s = server();
    let dir = config(&[
        ("leased", s.plain, 100, "limits: { per_second: 20 }\n"),
        ("free", s.plain, 200, ""),
    ]);
    let d = Daemon::start(dir.path(), FAST);
    d.wait_for("/v1/queue", "the lease to be held", |_, q| {
        lease_of(q, "leased") == "held"
    });
    // A connection without limits needs no lease.
    let q = d.get_json("/v1/queue").1;
    assert_eq!(lease_of(&q, "free"), "not_needed", "{q}");
    assert_eq!(
        d.metric("mailplug_queue_lease_held{connection=\"leased\"}"),
        1.0
    );

    // Another process (as a replica on a shared store would) takes it.
    let db_path = dir
        .path()
        .parent()
        .unwrap()
        .join(format!(
            "data-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        ))
        .join("mailplug.db");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed = db
        .execute(
            "UPDATE send_leases SET holder = 'another-replica', until_ms = ?1 WHERE connection = 'leased'",
            [now_ms() + 3_600_000],
        )
        .unwrap();
    assert_eq!(changed, 1, "the daemon's lease row is not in the store");
    // It notices at its next renewal (within 5 s of the last one).
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let q = d.get_json("/v1/queue").1;
        if lease_of(&q, "leased") == "standby" {
            break;
        }
        assert!(Instant::now() < deadline, "never stood by: {q}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        d.metric("mailplug_queue_lease_held{connection=\"leased\"}"),
        0.0
    );

    let to = rcpt("leased");
    let (status, body) = d.post_body(
        "/v1/messages",
        &json!({ "connection": "leased", "to": [to], "subject": "s", "text": "t" }).to_string(),
    );
    assert_eq!(status, 202, "{body}");
    // Nothing goes out while the other holder's lease runs (the lane asks
    // again every 2 s; 3 s covers more than one ask).
    std::thread::sleep(Duration::from_secs(3));
    assert!(spooled_for(&to).is_empty(), "sent without the lease");

    // The other holder releases it: this process takes over and sends.
    db.execute(
        "DELETE FROM send_leases WHERE connection = 'leased' AND holder = 'another-replica'",
        [],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while spooled_for(&to).is_empty() {
        assert!(
            Instant::now() < deadline,
            "never sent after the lease was freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(spooled_for(&to).len(), 1);
    let q = d.get_json("/v1/queue").1;
    assert_eq!(lease_of(&q, "leased"), "held", "{q}");
}
