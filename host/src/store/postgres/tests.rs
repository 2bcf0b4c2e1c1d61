//! What only a shared PostgreSQL database adds: several processes (here,
//! several backends with pools of their own) migrating, storing and
//! claiming at once. What every backend promises is tested in
//! `store/contract/`.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::*;
use crate::event::EventKind;
use crate::store::contract::{event_to, ids, open_postgres};
use crate::store::outbox::Outbox as _;
use crate::store::queue::{Field, NewMessage, Queue as _};

mod pool;

/// Runs `work(i)` on `n` threads started together; returns their results.
fn together<T: Send + 'static>(
    n: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = work.clone();
            std::thread::spawn(move || {
                barrier.wait();
                work(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn replicas_migrating_one_empty_database_together_end_with_one_schema() {
    let Some(url) = testdb::database() else {
        return;
    };
    let shared = url.clone();
    let opened = together(4, move |_| Postgres::open(&options(&shared)).map(|_| ()));
    for result in &opened {
        assert!(result.is_ok(), "{result:?}");
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: Vec<i64> = c
        .query("SELECT version FROM mailplug_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=schema_version()).collect::<Vec<_>>());
}

fn options(url: &str) -> PostgresOptions {
    options_with(url, 4)
}

/// Options of a store at `url` opening at most `max` connections.
fn options_with(url: &str, max: usize) -> PostgresOptions {
    PostgresOptions {
        url: PostgresUrl::parse(url).unwrap(),
        max_connections: max,
        soft_bounces: SoftBouncePolicy::default(),
    }
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let Some(url) = testdb::database() else {
        return;
    };
    drop(open_postgres(&url));
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.execute("INSERT INTO mailplug_schema (version) VALUES (99)", &[])
        .unwrap();
    let err = Postgres::open(&options(&url)).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, supported } if supported == schema_version()),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_is_named_without_the_password() {
    let (_reserved, port) = crate::store::postgres::testdb::refused_port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/mail?connect_timeout=2");
    let err = Postgres::open(&options(&url)).unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}/mail")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_server_that_accepts_but_never_answers_fails_the_open_within_connect_timeout() {
    // The kernel completes the TCP handshake for the backlog; nothing ever
    // reads the start-up message or answers it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/mail?connect_timeout=1");
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(
            Postgres::open(&options(&url))
                .map(|_| ())
                .unwrap_err()
                .to_string(),
        );
    });
    // A hang fails the test instead of stalling the suite.
    let err = received
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the open returned");
    assert!(err.contains(&format!("127.0.0.1:{port}/mail")), "{err}");
    assert!(
        err.contains("did not complete the connection start-up"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    drop(silent);
}

#[test]
fn the_same_events_stored_by_two_replicas_at_once_are_one_row_each() {
    let Some(url) = testdb::database() else {
        return;
    };
    let replicas: Arc<Vec<Postgres>> = Arc::new(vec![open_postgres(&url), open_postgres(&url)]);
    let events: Vec<_> = (0..40)
        .map(|i| {
            event_to(
                &format!("e{i}"),
                &format!("r{i}@x.org"),
                EventKind::Delivered,
                None,
                1_767_268_800,
                &["app"],
            )
        })
        .collect();
    let outcomes = {
        let replicas = replicas.clone();
        together(2, move |i| {
            let mut next = ids();
            // One event per group commit, so the two transactions interleave.
            events
                .iter()
                .map(|e| replicas[i].apply(&[Write::events(vec![e.clone()])], &mut next))
                .collect::<Vec<_>>()
        })
    };
    let (mut stored, mut duplicates) = (0, 0);
    for result in outcomes.into_iter().flatten() {
        match result.unwrap().remove(0) {
            Applied::Events {
                stored: s,
                duplicates: d,
            } => {
                stored += s.len();
                duplicates += d;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((stored, duplicates), (40, 40));
    assert_eq!(replicas[0].counts().unwrap().events, 40);
    let outbox = replicas[1].outbox_stats().unwrap();
    assert_eq!(outbox[0].pending, 40, "one outbox row per stored event");
}

#[test]
fn two_replicas_claiming_one_queue_and_outbox_never_claim_the_same_row() {
    let Some(url) = testdb::database() else {
        return;
    };
    let replicas: Arc<Vec<Postgres>> = Arc::new(vec![open_postgres(&url), open_postgres(&url)]);
    let recipients: Vec<String> = (0..120).map(|i| format!("r{i}@x.test")).collect();
    let messages: Vec<NewMessage> = ["a", "b", "c"]
        .iter()
        .map(|w| NewMessage {
            workspace: (*w).into(),
            pinned_connection: None,
            connection: "c".into(),
            idempotency_key: None,
            from_email: "s@example.test".into(),
            subject: "s".into(),
            message_id_header: format!("{w}@example.test"),
            raw: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
            recipients: recipients.iter().map(|r| (r.clone(), Field::To)).collect(),
        })
        .collect();
    let events: Vec<_> = recipients
        .iter()
        .map(|r| event_to(r, r, EventKind::Delivered, None, 1_767_268_800, &["app"]))
        .collect();
    replicas[0]
        .apply(
            &[Write::Enqueue { messages }, Write::events(events)],
            &mut ids(),
        )
        .unwrap();
    let claims = {
        let replicas = replicas.clone();
        together(4, move |i| {
            let db = &replicas[i % 2];
            let now = crate::store::now_ms();
            let lease = Duration::from_secs(60);
            let (mut deliveries, mut rows) = (Vec::new(), Vec::new());
            loop {
                let d = db.claim_deliveries("c", &[], now, lease, 7).unwrap();
                let o = db.claim("app", now, lease, 7).unwrap();
                if d.is_empty() && o.is_empty() {
                    return (deliveries, rows);
                }
                deliveries.extend(d.into_iter().map(|d| d.id));
                rows.extend(o.into_iter().map(|o| o.id));
            }
        })
    };
    let mut deliveries = HashSet::new();
    let mut rows = HashSet::new();
    for (d, o) in claims {
        for id in d {
            assert!(deliveries.insert(id), "delivery {id} claimed twice");
        }
        for id in o {
            assert!(rows.insert(id.clone()), "outbox row {id} claimed twice");
        }
    }
    assert_eq!(deliveries.len(), 3 * 120, "every delivery claimed once");
    assert_eq!(rows.len(), 120, "every outbox row claimed once");
}

#[test]
fn connections_the_server_closed_are_replaced() {
    let Some(url) = testdb::database() else {
        return;
    };
    let db = open_postgres(&url);
    // Several idle clients in the pool.
    fill_pool(&db, 3);
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the pool had open clients");
    // A client whose connection died may fail the call it is used for;
    // it is then dropped, and the calls after it get fresh connections.
    let failures = (0..10).filter(|_| db.counts().is_err()).count();
    assert!(
        i64::try_from(failures).unwrap() <= killed,
        "{failures} calls failed for {killed} closed connections"
    );
    for _ in 0..3 {
        assert_eq!(db.counts().unwrap().events, 0);
    }
}

/// Checks out `n` clients of `db` at once, so the pool holds `n` idle after.
fn fill_pool(db: &Postgres, n: usize) {
    let clients: Vec<_> = (0..n).map(|_| db.pool.get().unwrap()).collect();
    assert_eq!(clients.len(), n);
}

#[test]
fn tls_with_the_servers_ca_encrypts_every_connection() {
    let (Some(url), Some(ca)) = (testdb::database(), testdb::ca_file()) else {
        return;
    };
    let url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let db = open_postgres(&url);
    let ssl: bool = db
        .with_client(|c| {
            Ok(c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .try_get(0)?)
        })
        .unwrap();
    assert!(ssl, "the session is encrypted");
    db.apply(
        &[Write::events(vec![event_to(
            "t",
            "t@x.org",
            EventKind::Delivered,
            None,
            1_767_268_800,
            &[],
        )])],
        &mut ids(),
    )
    .unwrap();
    assert_eq!(db.counts().unwrap().events, 1);
}

#[test]
fn tls_refuses_a_server_certificate_it_cannot_verify() {
    let Some(url) = testdb::database() else {
        return;
    };
    // The test CA is not among the webpki roots.
    let err = Postgres::open(&options(&format!("{url}?sslmode=require")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn one_idempotency_key_enqueued_by_two_replicas_at_once_is_one_message() {
    let Some(url) = testdb::database() else {
        return;
    };
    let replicas: Arc<Vec<Postgres>> = Arc::new(vec![open_postgres(&url), open_postgres(&url)]);
    let outcomes = {
        let replicas = replicas.clone();
        together(2, move |i| {
            (0..20)
                .map(|k| {
                    let message = NewMessage {
                        workspace: "w".into(),
                        pinned_connection: None,
                        connection: "c".into(),
                        idempotency_key: Some(format!("key-{k}")),
                        from_email: "s@example.test".into(),
                        subject: "s".into(),
                        message_id_header: format!("{i}.{k}@example.test"),
                        raw: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
                        recipients: vec![("a@x.test".into(), Field::To)],
                    };
                    let write = Write::Enqueue {
                        messages: vec![message],
                    };
                    match replicas[i].apply(&[write], &mut ids()).unwrap().remove(0) {
                        Applied::Enqueued(mut e) => e.remove(0),
                        other => panic!("{other:?}"),
                    }
                })
                .collect::<Vec<_>>()
        })
    };
    for (k, (a, b)) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
        assert_eq!(a.id, b.id, "key-{k}: one message");
        assert!(a.duplicate != b.duplicate, "key-{k}: {a:?} {b:?}");
    }
    let totals = replicas[0].queue_totals().unwrap();
    assert_eq!(totals[0].pending, 20, "one delivery per key");
}

#[test]
fn a_starting_replica_recovers_only_lapsed_leases_not_another_replicas_attempts() {
    let Some(url) = testdb::database() else {
        return;
    };
    let (running, starting) = (open_postgres(&url), open_postgres(&url));
    let message = |w: &str| NewMessage {
        workspace: w.into(),
        pinned_connection: None,
        connection: "c".into(),
        idempotency_key: None,
        from_email: "s@example.test".into(),
        subject: "s".into(),
        message_id_header: format!("{w}@example.test"),
        raw: b"Subject: s\r\n\r\nbody\r\n".to_vec(),
        recipients: vec![("a@x.test".into(), Field::To)],
    };
    running
        .apply(
            &[Write::Enqueue {
                messages: vec![message("w1"), message("w2")],
            }],
            &mut ids(),
        )
        .unwrap();
    let now = crate::store::now_ms();
    // One attempt whose lease runs for 10 minutes, one with a 1 s lease
    // that has lapsed when the other replica starts 2 s later.
    let live = running
        .claim_deliveries("c", &[], now, Duration::from_secs(600), 1)
        .unwrap();
    let dead = running
        .claim_deliveries("c", &[], now, Duration::from_secs(1), 1)
        .unwrap();
    assert_eq!((live.len(), dead.len()), (1, 1));
    let later = now + 2_000;
    assert_eq!(starting.recover_in_flight(later).unwrap(), 1);
    // The running attempt is left alone; the lapsed one is claimable again.
    let again = starting
        .claim_deliveries("c", &[], later, Duration::from_secs(60), 10)
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, dead[0].id);
}

#[test]
fn replicas_asking_for_one_send_lease_at_once_get_one_holder() {
    let Some(url) = testdb::database() else {
        return;
    };
    let replicas: Arc<Vec<Postgres>> = Arc::new((0..4).map(|_| open_postgres(&url)).collect());
    let now = crate::store::now_ms();
    let won = {
        let replicas = replicas.clone();
        together(8, move |i| {
            replicas[i % 4]
                .lease_connection("c", &format!("replica-{i}"), now, Duration::from_secs(15))
                .unwrap()
        })
    };
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}
