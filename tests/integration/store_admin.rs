//! `mailplug store status` and `mailplug store migrate` on the SQLite store
//! through the binary (PostgreSQL: the lib tests of `cli/store_admin.rs`,
//! which have the throwaway server).

use std::path::Path;

use serde_json::Value;

use crate::daemon::Daemon;
use crate::support::{Run, connection, mailplug};

/// `mailplug store <args> --data-dir <data>`, without a store URL from the
/// environment.
fn store(data: &Path, args: &[&str]) -> Run {
    mailplug()
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("MAILPLUG_STORE_URL")
        .output()
        .expect("spawn mailplug store")
        .into()
}

fn status_json(data: &Path) -> (i32, Value) {
    let out = store(data, &["status", "--json"]);
    let value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", out.stdout, out.stderr));
    (out.code, value)
}

/// The schema version this binary's migrations end at, as status reports it.
fn supported(data: &Path) -> i64 {
    status_json(data).1["schema"]["supported"].as_i64().unwrap()
}

#[test]
fn status_on_a_fresh_data_dir_says_no_store_yet_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let out = store(&data, &["status"]);
    assert_eq!(out.code, 1, "{} / {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("backend:            sqlite\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no store yet"), "{}", out.stdout);
    let (code, value) = status_json(&data);
    assert_eq!(code, 1);
    assert_eq!(value["state"], "no_store", "{value}");
    assert!(!data.exists(), "status created the data dir");

    // An empty file (touched, or left by a failed start) is no store either,
    // and stays empty.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("mailplug.db"), b"").unwrap();
    let (code, value) = status_json(&data);
    assert_eq!(code, 1);
    assert_eq!(value["state"], "no_store", "{value}");
    assert_eq!(
        std::fs::metadata(data.join("mailplug.db")).unwrap().len(),
        0
    );
}

#[test]
fn migrate_creates_the_store_then_is_idempotent_and_status_says_current() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let version = supported(&data);

    let first = store(&data, &["migrate"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains(&format!("migrated from version 0 to {version}")),
        "{}",
        first.stdout
    );
    assert!(data.join("mailplug.db").is_file());
    let again = store(&data, &["migrate"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains(&format!("already current (version {version})")),
        "{}",
        again.stdout
    );

    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files();
    let out = store(&data, &["status"]);
    assert_eq!(out.code, 0, "{} / {}", out.stdout, out.stderr);
    assert_eq!(files(), before, "status left files behind");
    assert!(
        out.stdout.contains(&format!(
            "version {version} (this binary: {version}): current"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("pending deliveries: none"),
        "{}",
        out.stdout
    );
    let (code, value) = status_json(&data);
    assert_eq!(code, 0);
    assert_eq!(value["state"], "current", "{value}");
    assert_eq!(value["events"], 0, "{value}");
    assert_eq!(value["suppressions"], 0, "{value}");
}

#[test]
fn status_reads_the_store_a_daemon_made_while_it_runs_and_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), connection("a")).unwrap();
    // Where `Daemon::start` puts the data dir of `conf`.
    let data = tmp.path().join("data-conf");
    let daemon = Daemon::start(&dir, &[]);
    let (status, _) = daemon.post_body(
        "/v1/suppressions",
        r#"{"workspace":"default","address":"x@example.com"}"#,
    );
    assert!(status < 300, "suppression not added: {status}");

    let (code, running) = status_json(&data);
    assert_eq!(code, 0, "{running}");
    assert_eq!(running["state"], "current", "{running}");
    assert_eq!(running["suppressions"], 1, "{running}");
    drop(daemon);

    let (code, stopped) = status_json(&data);
    assert_eq!(code, 0, "{stopped}");
    assert_eq!(stopped["suppressions"], 1, "{stopped}");
}

#[test]
fn a_sqlite_schema_newer_than_this_binary_exits_73_and_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert_eq!(store(&data, &["migrate"]).code, 0);
    let newer = supported(&data) + 1;
    rusqlite::Connection::open(data.join("mailplug.db"))
        .unwrap()
        .execute("INSERT INTO mailplug_schema (version) VALUES (?1)", [newer])
        .unwrap();

    let out = store(&data, &["status"]);
    assert_eq!(out.code, 73, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("newer than this binary: upgrade mailplug"),
        "{}",
        out.stdout
    );
    let out = store(&data, &["migrate"]);
    assert_eq!(out.code, 73, "{}", out.stdout);
    assert!(
        out.stderr.contains("newer than this binary"),
        "{}",
        out.stderr
    );
    let (_, value) = status_json(&data);
    assert_eq!(value["schema"]["found"], newer, "{value}");
}

#[test]
fn a_bad_store_url_exits_78_and_an_unreachable_one_73_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let with_url = |args: &[&str], url: &str| -> Run {
        mailplug()
            .arg("store")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("MAILPLUG_STORE_URL", url)
            .output()
            .unwrap()
            .into()
    };
    let out = with_url(&["status"], "mysql://app:hunter2@db.invalid/mail");
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/mail?connect_timeout=2");
    for command in ["status", "migrate"] {
        let out = with_url(&[command], &url);
        assert_eq!(out.code, 73, "{command}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("127.0.0.1:{port}/mail")),
            "{command}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("hunter2"), "{command}: {}", out.stderr);
        assert!(!out.stdout.contains("hunter2"), "{command}: {}", out.stdout);
    }
    assert!(!data.exists(), "no SQLite store was made instead");
}

#[test]
fn status_on_an_unmigrated_sqlite_file_counts_the_pending_migrations() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    rusqlite::Connection::open(data.join("mailplug.db"))
        .unwrap()
        .execute_batch("CREATE TABLE unrelated (x INTEGER)")
        .unwrap();
    let version = supported(&data);

    let out = store(&data, &["status"]);
    assert_eq!(out.code, 1, "{} / {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "version 0 (this binary: {version}): {version} migrations pending: run mailplug store migrate"
        )),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("events:"), "{}", out.stdout);
    let (_, value) = status_json(&data);
    assert_eq!(value["state"], "pending", "{value}");
    assert_eq!(value["schema"]["pending_migrations"], version, "{value}");

    let out = store(&data, &["migrate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("migrated from version 0 to {version}")),
        "{}",
        out.stdout
    );
    assert_eq!(status_json(&data).0, 0);
}
