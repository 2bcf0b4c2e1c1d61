//! Events and suppressions, on every backend.

use super::{event_to, ids, new_event};
use crate::event::{BounceClass, EventKind};
use crate::store::{
    Applied, Backend, EventQuery, Order, ReplayToken, StoreError, SuppressionQuery,
    SuppressionReason, Write,
};

on_every_backend!(
    stores_once_pages_by_cursor_and_suppresses,
    soft_bounces_suppress_at_the_threshold_within_the_window,
    a_reused_token_with_another_body_stores_nothing_of_that_request_only,
    manual_suppressions_are_kept_once_and_removed,
    foreign_cursors_are_refused,
    every_event_filter_narrows_the_listing,
    the_same_event_twice_in_one_list_is_stored_once_in_order,
    two_bounces_of_one_address_in_one_list_suppress_it_once_for_the_first,
);

fn two_bounces_of_one_address_in_one_list_suppress_it_once_for_the_first(db: &dyn Backend) {
    let mut next = ids();
    let first = event_to(
        "h1",
        "Twice@example.org",
        EventKind::Bounced,
        Some(BounceClass::Hard),
        1_767_268_800,
        &[],
    );
    let second = event_to(
        "c1",
        "Twice@EXAMPLE.org",
        EventKind::Complained,
        None,
        1_767_268_801,
        &[],
    );
    let out = db
        .apply(&[Write::events(vec![first, second])], &mut next)
        .unwrap();
    let Applied::Events { stored, .. } = &out[0] else {
        panic!("{out:?}")
    };
    let s = db
        .suppressions(&SuppressionQuery {
            limit: 10,
            ..SuppressionQuery::default()
        })
        .unwrap();
    // The key compares the domain case-insensitively: one address, so one
    // suppression per workspace of the connection, each for the hard bounce.
    assert!(!s.items.is_empty(), "{s:?}");
    let workspaces: std::collections::HashSet<&str> =
        s.items.iter().map(|x| x.workspace.as_str()).collect();
    assert_eq!(workspaces.len(), s.items.len(), "{s:?}");
    for x in &s.items {
        assert_eq!(x.reason, SuppressionReason::HardBounce, "{s:?}");
        assert_eq!(x.event_id.as_deref(), Some(stored[0].as_str()), "{s:?}");
    }
}

fn the_same_event_twice_in_one_list_is_stored_once_in_order(db: &dyn Backend) {
    let mut next = ids();
    let a = event_to(
        "a",
        "A@example.org",
        EventKind::Delivered,
        None,
        1_767_268_800,
        &["f"],
    );
    let b = event_to(
        "b",
        "B@example.org",
        EventKind::Opened,
        None,
        1_767_268_801,
        &["f"],
    );
    let out = db
        .apply(&[Write::events(vec![a.clone(), b, a])], &mut next)
        .unwrap();
    let Applied::Events { stored, duplicates } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((stored.len(), *duplicates), (2, 1), "{out:?}");
    // The first copy is the one stored, and the list order is kept.
    assert!(stored[0] < stored[1], "{stored:?}");
    let page = db
        .events(&EventQuery {
            limit: 10,
            order: Order::Asc,
            ..EventQuery::default()
        })
        .unwrap();
    let listed: Vec<&str> = page.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        listed,
        stored.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(page.items[0].event.provider_event_id.as_deref(), Some("a"));
}

fn stores_once_pages_by_cursor_and_suppresses(db: &dyn Backend) {
    let mut next = ids();
    let batch: Vec<_> = (0..5)
        .map(|i| {
            new_event(
                &format!("e{i}"),
                EventKind::Delivered,
                None,
                1_767_268_800 + i,
            )
        })
        .collect();
    let out = db
        .apply(&[Write::events(batch.clone())], &mut next)
        .unwrap();
    let Applied::Events { stored, duplicates } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((stored.len(), *duplicates), (5, 0));
    let again = db.apply(&[Write::events(batch)], &mut next).unwrap();
    assert_eq!(
        again[0],
        Applied::Events {
            stored: vec![],
            duplicates: 5
        }
    );

    let mut q = EventQuery {
        limit: 2,
        order: Order::Asc,
        ..EventQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = db.events(&q).unwrap();
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(&seen, stored);
    let by_recipient = db
        .events(&EventQuery {
            recipient: Some("Rcpt@EXAMPLE.ORG".into()),
            workspace: Some("w2".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(by_recipient.items.len(), 5);
    assert_eq!(by_recipient.items[0].id, stored[4], "newest first");
    let tail = db
        .events(&EventQuery {
            after: Some(stored[2].clone()),
            order: Order::Asc,
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap();
    let tail: Vec<&str> = tail.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(tail, [stored[3].as_str(), stored[4].as_str()]);
    let one = db.event(&stored[1]).unwrap().unwrap();
    assert_eq!(one.event.provider_event_id.as_deref(), Some("e1"));
    assert_eq!(one.workspaces, ["w1", "w2"]);
    assert!(db.event("01J0000000000000000000000Z").unwrap().is_none());

    let hard = new_event(
        "h",
        EventKind::Bounced,
        Some(BounceClass::Hard),
        1_767_268_900,
    );
    db.apply(&[Write::events(vec![hard])], &mut next).unwrap();
    let s = db
        .suppressions(&SuppressionQuery {
            limit: 10,
            ..SuppressionQuery::default()
        })
        .unwrap();
    assert_eq!(s.items.len(), 2, "one per workspace");
    assert!(
        s.items
            .iter()
            .all(|s| s.reason == SuppressionReason::HardBounce)
    );
    assert_eq!(db.counts().unwrap().events, 6);
    assert_eq!(db.counts().unwrap().suppressions, 2);
}

fn soft_bounces_suppress_at_the_threshold_within_the_window(db: &dyn Backend) {
    let mut next = ids();
    let day = 24 * 3600;
    let t0 = 1_767_268_800;
    // Two soft bounces, then one eight days later: the window holds at most two.
    for (i, at) in [t0, t0 + day, t0 + 9 * day].into_iter().enumerate() {
        let e = new_event(
            &format!("s{i}"),
            EventKind::Bounced,
            Some(BounceClass::Soft),
            at,
        );
        db.apply(&[Write::events(vec![e])], &mut next).unwrap();
    }
    let none = db
        .suppressions(&SuppressionQuery {
            limit: 10,
            ..SuppressionQuery::default()
        })
        .unwrap();
    assert!(none.items.is_empty(), "{:?}", none.items);
    for (i, at) in [t0 + 9 * day + 1, t0 + 9 * day + 2].into_iter().enumerate() {
        let e = new_event(
            &format!("t{i}"),
            EventKind::Bounced,
            Some(BounceClass::Soft),
            at,
        );
        db.apply(&[Write::events(vec![e])], &mut next).unwrap();
    }
    let some = db
        .suppressions(&SuppressionQuery {
            workspace: Some("w1".into()),
            limit: 10,
            ..SuppressionQuery::default()
        })
        .unwrap();
    assert_eq!(some.items.len(), 1);
    assert_eq!(some.items[0].reason, SuppressionReason::SoftBounces);
}

fn a_reused_token_with_another_body_stores_nothing_of_that_request_only(db: &dyn Backend) {
    let mut next = ids();
    let token = |body: u8| ReplayToken {
        connection: "c".into(),
        token: "nonce-1".into(),
        body_sha256: [body; 32],
        used_at: 1_767_268_800,
        expires_at: 1_767_269_100,
    };
    let request = |id: &str, body: u8| Write::Events {
        events: vec![new_event(id, EventKind::Delivered, None, 1_767_268_800)],
        tokens: vec![token(body)],
    };
    let first = db.apply(&[request("a", 1)], &mut next).unwrap();
    assert!(matches!(&first[0], Applied::Events { stored, .. } if stored.len() == 1));
    // In one group commit: a replay (other body) and an unrelated request.
    let out = db
        .apply(
            &[
                request("b", 2),
                Write::events(vec![new_event(
                    "c",
                    EventKind::Delivered,
                    None,
                    1_767_268_801,
                )]),
            ],
            &mut next,
        )
        .unwrap();
    assert_eq!(out[0], Applied::Replayed);
    assert!(matches!(&out[1], Applied::Events { stored, .. } if stored.len() == 1));
    // The provider retrying the same bytes is accepted (a duplicate).
    let retry = db.apply(&[request("a", 1)], &mut next).unwrap();
    assert_eq!(
        retry[0],
        Applied::Events {
            stored: vec![],
            duplicates: 1
        }
    );
    assert_eq!(db.counts().unwrap().events, 2, "a and c, never b");
}

fn manual_suppressions_are_kept_once_and_removed(db: &dyn Backend) {
    let mut next = ids();
    let suppress = |note: &str| Write::Suppress {
        workspace: "w".into(),
        address: " Bob@Example.ORG ".into(),
        note: Some(note.into()),
    };
    let out = db
        .apply(&[suppress("first"), suppress("second")], &mut next)
        .unwrap();
    assert_eq!(out, [Applied::Suppressed(true), Applied::Suppressed(false)]);
    let listed = db
        .suppressions(&SuppressionQuery {
            address: Some("bob@example.org".into()),
            limit: 10,
            ..SuppressionQuery::default()
        })
        .unwrap();
    assert!(listed.items.is_empty(), "the local part keeps its case");
    let listed = db
        .suppressions(&SuppressionQuery {
            address: Some("Bob@EXAMPLE.org".into()),
            limit: 10,
            ..SuppressionQuery::default()
        })
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].address, "Bob@Example.ORG");
    assert_eq!(listed.items[0].note.as_deref(), Some("first"));
    let unsuppress = || Write::Unsuppress {
        workspace: "w".into(),
        address: "Bob@example.org".into(),
    };
    let out = db.apply(&[unsuppress(), unsuppress()], &mut next).unwrap();
    assert_eq!(
        out,
        [Applied::Unsuppressed(true), Applied::Unsuppressed(false)]
    );
    assert_eq!(db.counts().unwrap().suppressions, 0);
}

fn foreign_cursors_are_refused(db: &dyn Backend) {
    let bad = |c: &str| EventQuery {
        limit: 10,
        cursor: Some(crate::store::Cursor(c.into())),
        ..EventQuery::default()
    };
    for cursor in ["not base64!", "eA", ""] {
        let err = db.events(&bad(cursor)).unwrap_err();
        assert!(matches!(err, StoreError::BadCursor), "{cursor}: {err}");
    }
    let mut pages = SuppressionQuery {
        limit: 1,
        cursor: Some(crate::store::Cursor("bm9wZQ".into())),
        ..SuppressionQuery::default()
    };
    assert!(matches!(
        db.suppressions(&pages),
        Err(StoreError::BadCursor)
    ));
    pages.cursor = None;
    assert!(db.suppressions(&pages).unwrap().next.is_none());
}

fn every_event_filter_narrows_the_listing(db: &dyn Backend) {
    let t0 = 1_767_268_800;
    let mut other = event_to("o", "x@y.org", EventKind::Opened, None, t0 + 30, &[]);
    other.connection = "other".into();
    other.workspaces = vec!["w3".into()];
    other.dedupe_key = crate::store::dedupe_key("other", &other.event);
    let batch = vec![
        new_event("d0", EventKind::Delivered, None, t0),
        new_event("d1", EventKind::Delivered, None, t0 + 10),
        new_event("b0", EventKind::Bounced, Some(BounceClass::Soft), t0 + 20),
        other,
    ];
    db.apply(&[Write::events(batch)], &mut ids()).unwrap();
    let ids_of = |q: EventQuery| -> Vec<String> {
        let q = EventQuery { limit: 10, ..q };
        db.events(&q)
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.event.provider_event_id.unwrap_or_default())
            .collect()
    };
    assert_eq!(
        ids_of(EventQuery {
            kind: Some(EventKind::Delivered),
            ..EventQuery::default()
        }),
        ["d1", "d0"]
    );
    assert_eq!(
        ids_of(EventQuery {
            since: Some(t0 + 10),
            until: Some(t0 + 30),
            order: Order::Asc,
            ..EventQuery::default()
        }),
        ["d1", "b0"]
    );
    assert_eq!(
        ids_of(EventQuery {
            connection: Some("other".into()),
            ..EventQuery::default()
        }),
        ["o"]
    );
    assert_eq!(
        ids_of(EventQuery {
            workspace: Some("w3".into()),
            ..EventQuery::default()
        }),
        ["o"]
    );
    assert_eq!(
        ids_of(EventQuery {
            workspace: Some("w1".into()),
            kind: Some(EventKind::Bounced),
            ..EventQuery::default()
        }),
        ["b0"]
    );
    assert!(
        ids_of(EventQuery {
            recipient: Some("x@y.org".into()),
            workspace: Some("w1".into()),
            ..EventQuery::default()
        })
        .is_empty()
    );
    // A cursor of one order does not continue a listing in the other.
    let page = db
        .events(&EventQuery {
            limit: 1,
            ..EventQuery::default()
        })
        .unwrap();
    let err = db
        .events(&EventQuery {
            limit: 1,
            order: Order::Asc,
            cursor: page.next,
            ..EventQuery::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::BadCursor), "{err}");
}
