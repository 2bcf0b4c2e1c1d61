//! The sending queue, on every backend.

use std::time::Duration;

use crate::event::{EventKind, NormalizedEvent, PluginStamp};
use crate::store::queue::{
    Cancel, DeliveryOutcome, DeliverySettlement, Field, MessageQuery, NewMessage,
};
use crate::store::{Applied, Backend, NewEvent, Write, dedupe_key};

on_every_backend!(
    a_repeated_idempotency_key_in_one_commit_queues_one_message,
    claims_take_turns_across_workspaces_and_a_stale_lease_cannot_settle,
    in_flight_deliveries_are_recovered_and_cancel_spares_them,
    a_hard_bounce_suppresses_pending_deliveries_and_correlates_sent_ones,
    every_outcome_settles_to_its_state_with_its_attempt,
    message_pages_follow_cursors_newest_first_within_their_filters,
    one_holder_at_a_time_has_a_connections_send_lease,
);

fn message(workspace: &str, key: Option<&str>, to: &[&str]) -> NewMessage {
    NewMessage {
        workspace: workspace.into(),
        pinned_connection: None,
        connection: "c".into(),
        idempotency_key: key.map(Into::into),
        from_email: "s@example.test".into(),
        subject: "s".into(),
        message_id_header: format!("m{}@example.test", ulid::Ulid::new()),
        raw: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
        recipients: to.iter().map(|a| ((*a).to_owned(), Field::To)).collect(),
    }
}

fn enqueue(db: &dyn Backend, messages: Vec<NewMessage>) -> Vec<(String, bool)> {
    let mut ids = ulid::Generator::new();
    let mut next = || ids.generate().unwrap().to_string();
    match db
        .apply(&[Write::Enqueue { messages }], &mut next)
        .unwrap()
        .remove(0)
    {
        Applied::Enqueued(e) => e.into_iter().map(|e| (e.id, e.duplicate)).collect(),
        other => panic!("{other:?}"),
    }
}

const LEASE: Duration = Duration::from_secs(60);

fn a_repeated_idempotency_key_in_one_commit_queues_one_message(db: &dyn Backend) {
    let got = enqueue(
        db,
        vec![
            message("w", Some("k"), &["a@x.test"]),
            message("w", Some("k"), &["a@x.test"]),
            message("other", Some("k"), &["a@x.test"]),
        ],
    );
    assert_eq!(got[0].0, got[1].0);
    assert_eq!((got[0].1, got[1].1, got[2].1), (false, true, false));
    assert_ne!(got[0].0, got[2].0);
    assert_eq!(db.queue_totals().unwrap()[0].pending, 2);
}

fn claims_take_turns_across_workspaces_and_a_stale_lease_cannot_settle(db: &dyn Backend) {
    let many: Vec<String> = (0..5).map(|i| format!("big{i}@x.test")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    enqueue(
        db,
        vec![
            message("big", None, &many),
            message("small", None, &["s@x.test"]),
        ],
    );
    let now = crate::store::now_ms();
    let claimed = db.claim_deliveries("c", &[], now, LEASE, 2).unwrap();
    let workspaces: Vec<&str> = claimed.iter().map(|d| d.workspace.as_str()).collect();
    assert_eq!(workspaces, ["big", "small"]);
    let d = &claimed[1];
    let settle = |lease: &str| DeliverySettlement {
        id: d.id,
        lease: lease.into(),
        connection: "c".into(),
        at_ms: now,
        outcome: DeliveryOutcome::Sent {
            queue_id: Some("Q1".into()),
            result: serde_json::json!({"class": "accepted"}),
        },
    };
    db.settle_deliveries(&[settle("not-the-lease")]).unwrap();
    let m = db.message(&d.message).unwrap().unwrap();
    assert_eq!(m.recipients[0].status, "sending");
    db.settle_deliveries(&[settle(&d.lease)]).unwrap();
    let m = db.message(&d.message).unwrap().unwrap();
    assert_eq!(
        (m.status.as_str(), m.recipients[0].status.as_str()),
        ("sent", "sent")
    );
    assert_eq!(m.recipients[0].queue_id.as_deref(), Some("Q1"));
    assert_eq!(m.recipients[0].attempts_history.len(), 1);
}

fn in_flight_deliveries_are_recovered_and_cancel_spares_them(db: &dyn Backend) {
    let id = enqueue(db, vec![message("w", None, &["a@x.test", "b@x.test"])])[0]
        .0
        .clone();
    let now = crate::store::now_ms();
    let claimed = db.claim_deliveries("c", &[], now, LEASE, 1).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        db.cancel(&id, now).unwrap(),
        Cancel::Cancelled {
            cancelled: 1,
            in_flight: 1
        }
    );
    // After the lease has lapsed (SQLite, one process per file, recovers
    // every delivery left `sending` at start; PostgreSQL only lapsed ones,
    // since other processes may be sending).
    let later = now + i64::try_from(LEASE.as_millis()).unwrap() + 1;
    assert_eq!(db.recover_in_flight(later).unwrap(), 1);
    assert_eq!(db.recover_in_flight(later).unwrap(), 0);
    let again = db.claim_deliveries("c", &[], later, LEASE, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, claimed[0].id);
    assert_eq!(
        db.cancel("01J0000000000000000000000Z", now).unwrap(),
        Cancel::Missing
    );
}

fn a_hard_bounce_suppresses_pending_deliveries_and_correlates_sent_ones(db: &dyn Backend) {
    let mut m = message("w", None, &["gone@x.test", "later@x.test"]);
    m.message_id_header = "abc@example.test".into();
    let id = enqueue(db, vec![m])[0].0.clone();
    let now = crate::store::now_ms();
    let first = db
        .claim_deliveries("c", &[], now, LEASE, 1)
        .unwrap()
        .remove(0);
    assert_eq!(first.recipient, "gone@x.test");
    db.settle_deliveries(&[DeliverySettlement {
        id: first.id,
        lease: first.lease.clone(),
        connection: "c".into(),
        at_ms: now,
        outcome: DeliveryOutcome::Sent {
            queue_id: None,
            result: serde_json::json!({}),
        },
    }])
    .unwrap();
    let bounce = |recipient: &str, pid: &str| {
        let event = NormalizedEvent {
            kind: EventKind::Bounced,
            bounce_class: Some(crate::event::BounceClass::Hard),
            recipient: recipient.into(),
            occurred_at: "2026-01-01T12:00:00Z".into(),
            provider: "sendgrid".into(),
            provider_event_id: Some(pid.into()),
            provider_message_id: None,
            message_id: Some("<abc@example.test>".into()),
            smtp_status: None,
            enhanced_status: None,
            diagnostic: None,
        };
        NewEvent {
            connection: "c".into(),
            workspaces: vec!["w".into()],
            plugin: PluginStamp {
                id: "sendgrid".into(),
                version: "1".into(),
                sha256: "00".into(),
            },
            received_at_ms: now,
            occurred_at: 1_767_268_800,
            dedupe_key: dedupe_key("c", &event),
            event,
            forward_to: Vec::new(),
            soft_bounce_rules: Vec::new(),
        }
    };
    let mut ids = ulid::Generator::new();
    let mut next = || ids.generate().unwrap().to_string();
    db.apply(
        &[Write::events(vec![
            bounce(&first.recipient, "e1"),
            bounce("later@x.test", "e2"),
        ])],
        &mut next,
    )
    .unwrap();
    let status = db.message(&id).unwrap().unwrap();
    let by = |a: &str| status.recipients.iter().find(|r| r.address == a).unwrap();
    assert_eq!(by(&first.recipient).status, "bounced");
    assert_eq!(by(&first.recipient).event.as_ref().unwrap().kind, "bounced");
    // The still-queued recipient's suppression ended it at once.
    assert_eq!(by("later@x.test").status, "suppressed");
    assert_eq!(status.status, "partial");
    let listed = db
        .messages(&MessageQuery {
            status: Some("partial".into()),
            limit: 10,
            ..MessageQuery::default()
        })
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

fn every_outcome_settles_to_its_state_with_its_attempt(db: &dyn Backend) {
    let to = [
        "sent@x.test",
        "later@x.test",
        "bad@x.test",
        "supp@x.test",
        "moved@x.test",
        "back@x.test",
    ];
    let id = enqueue(db, vec![message("w", None, &to)])[0].0.clone();
    let now = crate::store::now_ms();
    let claimed = db.claim_deliveries("c", &[], now, LEASE, 10).unwrap();
    assert_eq!(claimed.len(), 6);
    let settlement = |recipient: &str, outcome: DeliveryOutcome| {
        let d = claimed.iter().find(|d| d.recipient == recipient).unwrap();
        DeliverySettlement {
            id: d.id,
            lease: d.lease.clone(),
            connection: "c".into(),
            at_ms: now,
            outcome,
        }
    };
    let result = serde_json::json!({"class": "x"});
    db.settle_deliveries(&[
        settlement(
            "sent@x.test",
            DeliveryOutcome::Sent {
                queue_id: Some("Q".into()),
                result: result.clone(),
            },
        ),
        settlement(
            "later@x.test",
            DeliveryOutcome::Deferred {
                next_attempt_at_ms: now + 60_000,
                result: result.clone(),
            },
        ),
        settlement(
            "bad@x.test",
            DeliveryOutcome::Failed {
                result: result.clone(),
            },
        ),
        settlement(
            "supp@x.test",
            DeliveryOutcome::Suppressed {
                reason: "manual".into(),
            },
        ),
        settlement(
            "moved@x.test",
            DeliveryOutcome::Moved {
                to: "d".into(),
                result: Some(result.clone()),
            },
        ),
        settlement(
            "back@x.test",
            DeliveryOutcome::Released {
                next_attempt_at_ms: now - 5,
            },
        ),
    ])
    .unwrap();
    let status = db.message(&id).unwrap().unwrap();
    assert_eq!(status.status, "pending");
    let by = |a: &str| status.recipients.iter().find(|r| r.address == a).unwrap();
    let shown: Vec<(&str, &str, u32, usize)> = to
        .iter()
        .map(|a| {
            let r = by(a);
            (
                r.status.as_str(),
                r.connection.as_str(),
                r.attempts,
                r.attempts_history.len(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("sent", "c", 1, 1),
            ("deferred", "c", 1, 1),
            ("failed", "c", 1, 1),
            ("suppressed", "c", 1, 1),
            ("queued", "d", 1, 1),
            ("queued", "c", 0, 0),
        ]
    );
    assert_eq!(by("moved@x.test").attempts_history[0].outcome, "moved");
    assert_eq!(by("sent@x.test").queue_id.as_deref(), Some("Q"));
    assert!(by("later@x.test").next_attempt_at.is_some());
    assert!(by("sent@x.test").done_at.is_some());
    assert_eq!(db.sent_since(now - 1).unwrap(), [("c".to_owned(), now)]);
    assert!(db.sent_since(now + 1).unwrap().is_empty());
    let totals = db.queue_totals().unwrap();
    let got: Vec<(&str, u64, u64, u64)> = totals
        .iter()
        .map(|t| (t.connection.as_str(), t.queued, t.deferred, t.pending))
        .collect();
    assert_eq!(got, [("c", 1, 1, 2), ("d", 1, 0, 1)]);
    // Released is due at once (at the attempt's start, not before); the
    // moved one waits for connection d's claims.
    let again = db.claim_deliveries("c", &[], now, LEASE, 10).unwrap();
    let again: Vec<&str> = again.iter().map(|d| d.recipient.as_str()).collect();
    assert_eq!(again, ["back@x.test"]);
    let on_d = db.claim_deliveries("d", &[], now, LEASE, 10).unwrap();
    assert_eq!(on_d.len(), 1);
    assert_eq!(on_d[0].attempts, 1);
}

fn message_pages_follow_cursors_newest_first_within_their_filters(db: &dyn Backend) {
    let mut all: Vec<String> = enqueue(
        db,
        (0..5)
            .map(|i| message(if i % 2 == 0 { "even" } else { "odd" }, None, &["a@x.test"]))
            .collect(),
    )
    .into_iter()
    .map(|(id, _)| id)
    .collect();
    all.reverse();
    let mut q = MessageQuery {
        limit: 2,
        ..MessageQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = db.messages(&q).unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|m| m.id));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, all, "newest first, each once");
    let even = db
        .messages(&MessageQuery {
            workspace: Some("even".into()),
            status: Some("pending".into()),
            connection: Some("c".into()),
            limit: 10,
            ..MessageQuery::default()
        })
        .unwrap();
    assert_eq!(even.items.len(), 3);
    assert!(
        even.items
            .iter()
            .all(|m| m.workspace.as_deref() == Some("even"))
    );
    assert_eq!(even.items[0].recipients, 1);
    let none = db
        .messages(&MessageQuery {
            connection: Some("other".into()),
            limit: 10,
            ..MessageQuery::default()
        })
        .unwrap();
    assert!(none.items.is_empty());
}

fn one_holder_at_a_time_has_a_connections_send_lease(db: &dyn Backend) {
    let ttl = Duration::from_secs(15);
    assert!(db.lease_connection("c", "a", 1_000, ttl).unwrap());
    // Another holder waits while it runs; the holder renews it.
    assert!(!db.lease_connection("c", "b", 2_000, ttl).unwrap());
    assert!(db.lease_connection("c", "a", 10_000, ttl).unwrap());
    assert!(!db.lease_connection("c", "b", 20_000, ttl).unwrap());
    // Other connections have their own.
    assert!(db.lease_connection("d", "b", 20_000, ttl).unwrap());
    // Lapsed (renewed at 10 s, runs to 25 s): the next asker takes it.
    assert!(db.lease_connection("c", "b", 25_001, ttl).unwrap());
    assert!(!db.lease_connection("c", "a", 25_002, ttl).unwrap());
    // Releasing someone else's lease does nothing; one's own frees it.
    db.release_connection("c", "a").unwrap();
    assert!(!db.lease_connection("c", "a", 26_000, ttl).unwrap());
    db.release_connection("c", "b").unwrap();
    assert!(db.lease_connection("c", "a", 26_000, ttl).unwrap());
}
