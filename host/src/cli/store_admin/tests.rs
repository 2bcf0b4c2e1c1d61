//! `store status` and `store migrate` on a throwaway PostgreSQL database
//! (the SQLite paths are tested through the binary, in
//! `tests/integration/store_admin.rs`).

use super::*;
use crate::store::postgres::testdb;

fn location(url: &str) -> Location {
    Location::Postgres(PostgresUrl::parse(url).unwrap())
}

fn json(outcome: &Outcome) -> serde_json::Value {
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {outcome:?}"))
}

#[test]
fn postgres_status_then_migrate_twice_then_status_reports_each_step() {
    let Some(url) = testdb::database() else {
        return;
    };
    let db = location(&url);
    let supported = postgres::schema_version();

    let before = status(&db, Format::Json);
    assert_eq!(before.code, exit::NOT_CURRENT, "{before:?}");
    let value = json(&before);
    assert_eq!(value["backend"], "postgres");
    assert_eq!(value["state"], "pending");
    assert_eq!(value["schema"]["found"], 0);
    assert_eq!(value["schema"]["pending_migrations"], supported);
    assert!(value.get("events").is_none(), "no counts before migrating");
    let text = status(&db, Format::Text);
    assert!(
        text.stdout.contains(&format!(
            "{supported} migrations pending: run mailplug store migrate"
        )),
        "{text:?}"
    );

    // Status changed nothing: the database still has no schema table.
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "status created tables");

    let first = migrate(&db);
    assert_eq!(first.code, exit::OK, "{first:?}");
    assert!(
        first
            .stdout
            .contains(&format!("migrated from version 0 to {supported}")),
        "{first:?}"
    );
    let again = migrate(&db);
    assert_eq!(again.code, exit::OK, "{again:?}");
    assert!(
        again
            .stdout
            .contains(&format!("already current (version {supported})")),
        "{again:?}"
    );

    client
        .batch_execute(
            "INSERT INTO suppressions (workspace, address_key, address, reason, created_at) \
             VALUES ('w', 'a@example.com', 'a@example.com', 'manual', 0)",
        )
        .unwrap();
    let after = status(&db, Format::Json);
    assert_eq!(after.code, exit::OK, "{after:?}");
    let value = json(&after);
    assert_eq!(value["state"], "current");
    assert_eq!(value["schema"]["found"], supported);
    assert_eq!(value["events"], 0);
    assert_eq!(value["suppressions"], 1);
    assert_eq!(value["pending_deliveries"], serde_json::json!([]));
    let text = status(&db, Format::Text);
    assert!(text.stdout.contains(": current\n"), "{text:?}");
    let target = PostgresUrl::parse(&url).unwrap().target();
    assert!(target.starts_with("127.0.0.1:"), "{target}");
    assert!(
        text.stdout
            .contains(&format!("location:           {target}\n")),
        "{text:?}"
    );
}

#[test]
fn a_postgres_schema_newer_than_this_binary_is_reported_and_not_migrated() {
    let Some(url) = testdb::database() else {
        return;
    };
    let db = location(&url);
    assert_eq!(migrate(&db).code, exit::OK);
    let newer = postgres::schema_version() + 1;
    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    client
        .execute(
            "INSERT INTO mailplug_schema (version) VALUES ($1)",
            &[&newer],
        )
        .unwrap();

    let found = status(&db, Format::Text);
    assert_eq!(found.code, exit::CANTCREAT, "{found:?}");
    assert!(
        found.stdout.contains(&format!(
            "version {newer} (this binary: {}): newer than this binary: upgrade mailplug",
            newer - 1
        )),
        "{found:?}"
    );
    let refused = migrate(&db);
    assert_eq!(refused.code, exit::CANTCREAT, "{refused:?}");
    assert!(
        refused.stderr.contains("newer than this binary"),
        "{refused:?}"
    );
    let versions: i64 = client
        .query_one("SELECT max(version) FROM mailplug_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, newer, "the refused migration changed nothing");
}

#[test]
fn an_unreachable_postgres_store_exits_73_naming_it_without_the_password() {
    let (_reserved, port) = crate::store::postgres::testdb::refused_port();
    let db = location(&format!(
        "postgres://app:hunter2@127.0.0.1:{port}/mail?connect_timeout=2"
    ));
    for outcome in [status(&db, Format::Json), migrate(&db)] {
        assert_eq!(outcome.code, exit::CANTCREAT, "{outcome:?}");
        assert!(
            outcome.stderr.contains(&format!("127.0.0.1:{port}/mail")),
            "{outcome:?}"
        );
        assert!(!outcome.stderr.contains("hunter2"), "{outcome:?}");
        assert!(outcome.stdout.is_empty(), "{outcome:?}");
    }
}
