//! The pool's counters (what `/metrics` shows of it) and the statements
//! each pooled client keeps, on the test server.

use std::time::{Duration, Instant};

use super::super::pool::Pool;
use super::super::{Postgres, PostgresUrl, testdb, url};
use crate::store::{Backend as _, PoolStats, StoreError};

/// A pool of at most `max` clients of the database at `url`.
fn pool(url: &str, max: usize) -> Pool {
    let url = PostgresUrl::parse(url).unwrap();
    let config = url.config().unwrap();
    let target = url::target(&config);
    Pool::new(config, url.connector(), target, max)
}

#[test]
fn the_pool_counts_clients_open_idle_and_in_use_under_its_cap() {
    let Some(url) = testdb::database() else {
        return;
    };
    let pool = pool(&url, 4);
    assert_eq!(
        pool.stats(),
        PoolStats {
            max: 4,
            ..PoolStats::default()
        }
    );
    let held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let s = pool.stats();
    assert_eq!((s.open, s.idle, s.in_use(), s.max), (3, 0, 3, 4), "{s:?}");
    drop(held);
    let s = pool.stats();
    assert_eq!((s.open, s.idle, s.in_use()), (3, 3, 0), "{s:?}");
    // Idle clients are reused: no fourth is opened, nobody waited.
    let again = pool.get().unwrap();
    let s = pool.stats();
    assert_eq!((s.open, s.idle, s.in_use(), s.waits), (3, 2, 1, 0), "{s:?}");
    drop(again);
}

#[test]
fn a_checkout_at_the_cap_waits_for_a_returned_client_and_counts_its_wait() {
    let Some(url) = testdb::database() else {
        return;
    };
    let pool = pool(&url, 1);
    let held = pool.get().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.get().map(drop));
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.stats().waits == 0 {
            assert!(
                Instant::now() < deadline,
                "the second checkout never waited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    let s = pool.stats();
    assert_eq!((s.waits, s.timeouts, s.open), (1, 0, 1), "{s:?}");
    assert!(
        (0.2..10.0).contains(&s.wait_seconds),
        "waited {} s",
        s.wait_seconds
    );
}

#[test]
fn a_checkout_that_waits_in_vain_fails_busy_and_is_counted() {
    let Some(url) = testdb::database() else {
        return;
    };
    let pool = pool(&url, 1).with_checkout_timeout(Duration::from_millis(100));
    let held = pool.get().unwrap();
    assert!(matches!(pool.get().map(drop), Err(StoreError::Busy(_))));
    let s = pool.stats();
    assert_eq!(
        (s.waits, s.timeouts, s.open, s.in_use()),
        (1, 1, 1, 1),
        "{s:?}"
    );
    assert!(s.wait_seconds >= 0.1, "waited {} s", s.wait_seconds);
    drop(held);
}

#[test]
fn a_connection_that_cannot_be_opened_is_counted_and_frees_its_place() {
    // Nothing listens on port 1 of the loopback.
    let pool = pool("postgres://mailplug@127.0.0.1:1/none?connect_timeout=2", 2);
    for _ in 0..2 {
        assert!(pool.get().is_err());
    }
    let s = pool.stats();
    assert_eq!((s.connect_errors, s.open, s.idle), (2, 0, 0), "{s:?}");
}

#[test]
fn a_client_prepares_each_statement_once_and_keeps_it() {
    let Some(url) = testdb::database() else {
        return;
    };
    let db = super::super::Postgres::open(&super::options_with(&url, 1)).unwrap();
    for _ in 0..3 {
        db.counts().unwrap();
        db.ping().unwrap();
    }
    let mut conn = db.pool.get().unwrap();
    assert_eq!(conn.kept_statements(), 2);
    // The server holds them too: prepared once, not once per call.
    assert_eq!(prepared_on_server(conn.client()), 2);
}

/// Statements the session of `client` has prepared, besides the one
/// asking (the `postgres` crate prepares a query given as text, then runs
/// it, then closes it).
fn prepared_on_server(client: &mut postgres::Client) -> usize {
    let n: i64 = client
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .unwrap()
        .get(0);
    usize::try_from(n).unwrap() - 1
}

#[test]
fn a_client_keeps_at_most_256_statements() {
    let Some(url) = testdb::database() else {
        return;
    };
    let pool = pool(&url, 1);
    let mut conn = pool.get().unwrap();
    for i in 0..300 {
        let n: i32 = conn
            .sql()
            .query_one(&format!("SELECT {i}::int"), &[])
            .unwrap()
            .get(0);
        assert_eq!(n, i);
    }
    let kept = conn.kept_statements();
    assert!(kept <= 256, "{kept}");
    // Those no longer kept are closed on the server as well.
    assert_eq!(prepared_on_server(conn.client()), kept);
}

/// The first column count of `SELECT * FROM t` run through `db`'s client.
fn columns_of_t(db: &Postgres) -> Result<usize, StoreError> {
    db.with_client(|c| {
        Ok(c.query("SELECT * FROM t", &[])?
            .first()
            .map_or(0, |r| r.len()))
    })
}

#[test]
fn a_statement_made_stale_by_a_schema_change_is_prepared_again() {
    let Some(url) = testdb::database() else {
        return;
    };
    let db = super::super::Postgres::open(&super::options_with(&url, 1)).unwrap();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
        .unwrap();
    assert_eq!(columns_of_t(&db).unwrap(), 1);
    // The kept plan's result type no longer matches ("cached plan must
    // not change result type"): outside a transaction it is prepared and
    // run again, so the caller never sees the error.
    admin
        .batch_execute("ALTER TABLE t ADD COLUMN b int")
        .unwrap();
    assert_eq!(columns_of_t(&db).unwrap(), 2);
    // Inside a transaction the failure aborted it: the error is returned,
    // the statement forgotten, and the client (still healthy) kept.
    admin
        .batch_execute("ALTER TABLE t ADD COLUMN c int")
        .unwrap();
    let in_tx = db.with_tx(|tx| Ok(tx.query("SELECT * FROM t", &[])?.len()));
    assert!(
        matches!(&in_tx, Err(StoreError::Backend(m)) if m.contains("0A000")),
        "{in_tx:?}"
    );
    let s = db.pool.stats();
    assert_eq!((s.open, s.idle), (1, 1), "{s:?}");
    assert_eq!(columns_of_t(&db).unwrap(), 3);
    assert_eq!(
        db.with_tx(|tx| Ok(tx.query("SELECT * FROM t", &[])?.len()))
            .unwrap(),
        1
    );
}
