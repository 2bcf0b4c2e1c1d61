//! The forwarding outbox, on every backend.

use std::time::Duration;

use super::{event_to, ids};
use crate::event::EventKind;
use crate::store::outbox::{OutboxQuery, OutboxState, Outcome, Requeue, Settlement};
use crate::store::{Applied, Backend, NewEvent, Write};

on_every_backend!(
    rows_are_queued_with_new_events_only_and_claimed_one_per_recipient_in_order,
    retries_wait_for_their_time_dead_letters_unblock_the_recipient_and_can_be_requeued,
    outbox_pages_follow_cursors_oldest_first,
);

fn event(id: &str, recipient: &str, forward_to: &[&str]) -> NewEvent {
    event_to(
        id,
        recipient,
        EventKind::Delivered,
        None,
        1_767_268_800,
        forward_to,
    )
}

const LEASE: Duration = Duration::from_secs(30);

fn rows_are_queued_with_new_events_only_and_claimed_one_per_recipient_in_order(db: &dyn Backend) {
    let mut next = ids();
    let batch = vec![
        event("a1", "a@x.org", &["app", "log"]),
        event("b1", "b@x.org", &["app"]),
        event("a2", "a@X.ORG", &["app"]),
        event("n1", "n@x.org", &[]),
    ];
    db.apply(&[Write::events(batch.clone())], &mut next)
        .unwrap();
    // A redelivery of the same events queues nothing more.
    let again = db.apply(&[Write::events(batch)], &mut next).unwrap();
    assert!(matches!(&again[0], Applied::Events { duplicates: 4, .. }));
    let stats = db.outbox_stats().unwrap();
    let pending: Vec<(&str, u64)> = stats
        .iter()
        .map(|s| (s.forwarder.as_str(), s.pending))
        .collect();
    assert_eq!(pending, [("app", 3), ("log", 1)]);

    let now = crate::store::now_ms();
    let first = db.claim("app", now, LEASE, 10).unwrap();
    let got: Vec<&str> = first
        .iter()
        .map(|c| c.event.event.provider_event_id.as_deref().unwrap())
        .collect();
    // a2 waits behind a1 (same recipient, domain case folded).
    assert_eq!(got, ["a1", "b1"]);
    assert!(
        db.claim("app", now, LEASE, 10).unwrap().is_empty(),
        "leased"
    );

    let a1 = &first[0];
    let stale = Settlement {
        id: a1.id.clone(),
        lease: "not-the-lease".into(),
        attempted_at_ms: now,
        outcome: Outcome::Delivered,
    };
    db.settle(&[stale]).unwrap();
    assert!(
        db.claim("app", now, LEASE, 10).unwrap().is_empty(),
        "a foreign lease settles nothing"
    );
    db.settle(&[Settlement {
        id: a1.id.clone(),
        lease: a1.lease.clone(),
        attempted_at_ms: now,
        outcome: Outcome::Delivered,
    }])
    .unwrap();
    let next_claim = db.claim("app", now, LEASE, 10).unwrap();
    assert_eq!(next_claim.len(), 1);
    assert_eq!(
        next_claim[0].event.event.provider_event_id.as_deref(),
        Some("a2")
    );

    // A lapsed lease is claimed again.
    let later = now + 31_000;
    let reclaimed = db.claim("app", later, LEASE, 10).unwrap();
    assert_eq!(reclaimed.len(), 2, "{reclaimed:?}");

    // Pruning takes delivered rows only, and only those delivered before the cut.
    assert_eq!(db.prune_delivered(now - 60_000, 100).unwrap(), 0);
    assert_eq!(
        db.prune_delivered(crate::store::now_ms() + 1, 100).unwrap(),
        1
    );
    let app = db.outbox_stats().unwrap();
    let app = app.iter().find(|s| s.forwarder == "app").unwrap();
    assert_eq!((app.delivered, app.pending), (0, 2));
}

fn retries_wait_for_their_time_dead_letters_unblock_the_recipient_and_can_be_requeued(
    db: &dyn Backend,
) {
    let mut next = ids();
    db.apply(
        &[Write::events(vec![
            event("a1", "a@x.org", &["app"]),
            event("a2", "a@x.org", &["app"]),
        ])],
        &mut next,
    )
    .unwrap();
    let now = crate::store::now_ms();
    let head = db.claim("app", now, LEASE, 10).unwrap().remove(0);
    db.settle(&[Settlement {
        id: head.id.clone(),
        lease: head.lease.clone(),
        attempted_at_ms: now,
        outcome: Outcome::Retry {
            next_attempt_at_ms: now + 5_000,
            error: "HTTP 503".into(),
        },
    }])
    .unwrap();
    assert!(
        db.claim("app", now + 1_000, LEASE, 10).unwrap().is_empty(),
        "not due; a2 waits"
    );
    let stats = &db.outbox_stats().unwrap()[0];
    assert_eq!(stats.last_error.as_deref(), Some("HTTP 503"));
    assert!(stats.next_attempt_at.is_some());

    let head = db.claim("app", now + 5_000, LEASE, 10).unwrap().remove(0);
    assert_eq!(head.attempts, 1);
    db.settle(&[Settlement {
        id: head.id.clone(),
        lease: head.lease,
        attempted_at_ms: now + 5_000,
        outcome: Outcome::Dead {
            error: "HTTP 503".into(),
        },
    }])
    .unwrap();
    let after = db.claim("app", now + 5_000, LEASE, 10).unwrap();
    assert_eq!(
        after[0].event.event.provider_event_id.as_deref(),
        Some("a2")
    );

    let dead = db
        .outbox(&OutboxQuery {
            state: Some(OutboxState::Dead),
            limit: 10,
            ..OutboxQuery::default()
        })
        .unwrap();
    assert_eq!(dead.items.len(), 1);
    assert_eq!(dead.items[0].attempts, 2);
    assert_eq!(dead.items[0].next_attempt_at, None);
    assert_eq!(
        db.requeue(&head.id, now + 6_000).unwrap(),
        Requeue::Requeued
    );
    assert_eq!(
        db.requeue(&head.id, now + 6_000).unwrap(),
        Requeue::NotDead(OutboxState::Pending)
    );
    assert_eq!(db.requeue("nope", now).unwrap(), Requeue::Missing);
    assert_eq!(db.outbox_stats().unwrap()[0].dead, 0);
}

fn outbox_pages_follow_cursors_oldest_first(db: &dyn Backend) {
    let mut next = ids();
    let batch: Vec<_> = (0..5)
        .map(|i| event(&format!("e{i}"), &format!("r{i}@x.org"), &["app"]))
        .collect();
    db.apply(&[Write::events(batch)], &mut next).unwrap();
    let mut q = OutboxQuery {
        forwarder: Some("app".into()),
        limit: 2,
        ..OutboxQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = db.outbox(&q).unwrap();
        seen.extend(page.items.iter().map(|e| e.recipient.clone()));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["r0@x.org", "r1@x.org", "r2@x.org", "r3@x.org", "r4@x.org"]
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}
