//! Unit tests of what only the SQLite backend has: migrations from its
//! older schemas, query plans, the file's size limit. What every backend
//! promises is tested on each in `store/contract/`.

use super::*;
use crate::event::{BounceClass, EventKind, NormalizedEvent, PluginStamp};
use crate::store::NewEvent;

fn open(dir: &Path) -> Sqlite {
    Sqlite::open(&SqliteOptions {
        path: dir.join("store.db"),
        max_size: None,
        soft_bounces: SoftBouncePolicy::default(),
    })
    .unwrap()
}

fn new_event(id: &str, kind: EventKind, class: Option<BounceClass>, at: i64) -> NewEvent {
    let event = NormalizedEvent {
        kind,
        bounce_class: class,
        recipient: "Rcpt@Example.org".into(),
        occurred_at: crate::event::format_unix_seconds(at).unwrap(),
        provider: "sendgrid".into(),
        provider_event_id: Some(id.into()),
        provider_message_id: None,
        message_id: None,
        smtp_status: None,
        enhanced_status: None,
        diagnostic: None,
    };
    NewEvent {
        connection: "c".into(),
        workspaces: vec!["w1".into(), "w2".into()],
        plugin: PluginStamp {
            id: "sendgrid".into(),
            version: "1".into(),
            sha256: "00".into(),
        },
        received_at_ms: at * 1000,
        occurred_at: at,
        dedupe_key: super::super::dedupe_key("c", &event),
        event,
        forward_to: Vec::new(),
        soft_bounce_rules: Vec::new(),
    }
}

fn ids() -> impl FnMut() -> String {
    let mut g = ulid::Generator::new();
    move || g.generate().unwrap().to_string()
}

#[test]
fn migrating_from_version_1_keeps_ids_dedupe_and_workspaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let e = new_event("old", EventKind::Delivered, None, 1_767_268_800);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE mailplug_schema (version INTEGER NOT NULL); \
             INSERT INTO mailplug_schema VALUES (1); {}",
            MIGRATIONS[0]
        ))
        .unwrap();
        // Version 1 stored the whole SHA-256; its first half is today's key.
        let mut v1_key = e.dedupe_key.to_vec();
        v1_key.extend([0xAB; 16]);
        conn.execute(
            "INSERT INTO events (id, dedupe_key, connection, workspaces, received_at, kind, \
             recipient, recipient_key, occurred_at, provider, provider_event_id, plugin_id, \
             plugin_version, plugin_sha256) VALUES ('01KOLD0000000000000000000A', ?1, 'c', \
             '[\"w1\",\"w2\"]', 1767268800000, 'delivered', 'Rcpt@Example.org', \
             'Rcpt@example.org', 1767268800, 'sendgrid', 'old', 'sendgrid', '1', '00')",
            [v1_key],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO event_workspaces VALUES ('w1', '01KOLD0000000000000000000A'), \
             ('w2', '01KOLD0000000000000000000A')",
        )
        .unwrap();
    }
    let db = open(dir.path());
    let old = db.event("01KOLD0000000000000000000A").unwrap().unwrap();
    assert_eq!(old.event.provider_event_id.as_deref(), Some("old"));
    let again = db.apply(&[Write::events(vec![e])], &mut ids()).unwrap();
    assert_eq!(
        again[0],
        Applied::Events {
            stored: vec![],
            duplicates: 1
        },
        "an event stored before the migration is still a duplicate"
    );
    let in_w2 = db
        .events(&EventQuery {
            workspace: Some("w2".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap();
    assert_eq!(in_w2.items.len(), 1);
}

#[test]
fn every_event_filter_is_answered_from_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let conn = db.writer.lock().unwrap();
    let query = |f: fn(&mut EventQuery)| {
        let mut q = EventQuery {
            limit: 50,
            cursor: Some(encode_cursor(Order::Desc, "1000")),
            ..EventQuery::default()
        };
        f(&mut q);
        q
    };
    let cases: [(EventQuery, &str); 5] = [
        (
            query(|q| q.recipient = Some("a@b".into())),
            "SEARCH e USING INDEX events_by_recipient",
        ),
        (
            query(|q| q.connection = Some("c".into())),
            "SEARCH e USING INDEX events_by_connection",
        ),
        (
            query(|q| q.kind = Some(EventKind::Bounced)),
            "SEARCH e USING INDEX events_by_kind",
        ),
        (
            query(|q| q.workspace = Some("w".into())),
            "SEARCH w USING PRIMARY KEY (workspace=? AND seq<?)",
        ),
        (
            query(|q| {
                q.workspace = Some("w".into());
                q.recipient = Some("a@b".into());
            }),
            "SEARCH e USING INDEX events_by_recipient",
        ),
    ];
    for (q, expected) in cases {
        let (sql, args, _) = event_listing(&q).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.starts_with(expected)),
            "{q:?}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN")),
            "{q:?}: {plan:?}"
        );
    }
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let conn = Connection::open(dir.path().join("store.db")).unwrap();
    conn.execute("INSERT INTO mailplug_schema (version) VALUES (99)", [])
        .unwrap();
    drop(conn);
    let err = Sqlite::open(&SqliteOptions {
        path: dir.path().join("store.db"),
        max_size: None,
        soft_bounces: SoftBouncePolicy::default(),
    })
    .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_full_store_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(&SqliteOptions {
        path: dir.path().join("store.db"),
        max_size: Some(256 * 1024),
        soft_bounces: SoftBouncePolicy::default(),
    })
    .unwrap();
    let mut next = ids();
    let batch: Vec<_> = (0..2000)
        .map(|i| new_event(&format!("e{i}"), EventKind::Delivered, None, 1_767_268_800))
        .collect();
    let err = db.apply(&[Write::events(batch)], &mut next).unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err}");
    assert_eq!(db.counts().unwrap().events, 0, "nothing half-applied");
}

#[test]
fn recovery_at_start_drops_the_last_processs_send_leases() {
    use crate::store::queue::Queue as _;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let ttl = std::time::Duration::from_secs(15);
    assert!(db.lease_connection("c", "killed", 1_000, ttl).unwrap());
    db.recover_in_flight(2_000).unwrap();
    assert!(db.lease_connection("c", "restarted", 2_000, ttl).unwrap());
}

#[test]
fn migrating_from_version_6_moves_message_bytes_to_their_table_and_they_still_send() {
    use crate::store::queue::Queue as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let raw = b"Subject: before\r\n\r\nqueued by version 6\r\n".to_vec();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE mailplug_schema (version INTEGER NOT NULL)")
            .unwrap();
        for (i, sql) in MIGRATIONS[..6].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO mailplug_schema VALUES (?1)", [i as i64 + 1])
                .unwrap();
        }
        conn.execute(
            "INSERT INTO messages (id, workspace, idempotency_scope, from_email, subject, \
             message_id_header, raw, size, status, created_at) VALUES ('01KOLDMESSAGE0000000000000', \
             'w', 'w:w', 'app@example.org', 'before', 'm1@example.org', ?1, ?2, 'pending', 1000)",
            params![raw, raw.len() as i64],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO deliveries (message, recipient, recipient_key, field, workspace, \
             connection, state, queued_at, next_attempt_at) VALUES ('01KOLDMESSAGE0000000000000', \
             'ann@example.org', 'ann@example.org', 'to', 'w', 'c', 'queued', 1000, 1000)",
        )
        .unwrap();
    }
    let db = open(dir.path());
    let columns: Vec<String> = db
        .writer
        .lock()
        .unwrap()
        .prepare("SELECT name FROM pragma_table_info('messages')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!columns.iter().any(|c| c == "raw"), "{columns:?}");
    let totals = db.queue_totals().unwrap();
    assert_eq!((totals[0].queued, totals[0].pending), (1, 1), "{totals:?}");
    assert_eq!(totals[0].oldest_queued_at_ms, Some(1000));
    let claimed = db
        .claim_deliveries(
            "c",
            &["w".into()],
            2_000,
            std::time::Duration::from_secs(60),
            10,
        )
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        *claimed[0].raw, raw,
        "the bytes queued before the migration"
    );
    assert_eq!(claimed[0].message_id_header, "m1@example.org");
    let totals = db.queue_totals().unwrap();
    assert_eq!((totals[0].queued, totals[0].sending), (0, 1), "{totals:?}");
}

#[test]
fn queue_totals_are_counted_from_the_index_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let conn = db.writer.lock().unwrap();
    let sql = conn
        .prepare("SELECT sql FROM sqlite_master WHERE name = 'deliveries_pending'")
        .unwrap()
        .query_row([], |r| r.get::<_, String>(0))
        .unwrap();
    assert!(sql.contains("(connection, state, queued_at)"), "{sql}");
    drop(conn);
    // The totals' own statement, as the reader pool prepares it.
    let plan: Vec<String> = db
        .with_reader(|c| {
            let mut out = Vec::new();
            queue::queue_totals_plan(c, &mut out)?;
            Ok(out)
        })
        .unwrap();
    assert!(
        plan.iter()
            .any(|s| s.contains("USING COVERING INDEX deliveries_pending")),
        "{plan:?}"
    );
}

#[test]
fn a_read_sees_one_snapshot_even_when_a_commit_lands_between_its_statements() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let count = |c: &Connection| {
        c.query_row("SELECT count(*) FROM suppressions", [], |r| {
            r.get::<_, i64>(0)
        })
    };
    let (before, after) = db
        .with_reader(|c| {
            let before = count(c)?;
            db.with_writer(|tx| {
                tx.execute(
                    "INSERT INTO suppressions (workspace, address_key, address, reason, created_at) \
                     VALUES ('w', 'a@example.org', 'a@example.org', 'manual', 0)",
                    [],
                )
            })
            .unwrap();
            Ok((before, count(c)?))
        })
        .unwrap();
    assert_eq!(
        (before, after),
        (0, 0),
        "the second statement saw the commit"
    );
    assert_eq!(db.with_reader(count).unwrap(), 1, "the next read sees it");
}
