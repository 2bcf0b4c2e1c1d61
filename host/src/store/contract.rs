//! Tests of what [`Backend`] promises, run against every backend: each test
//! is a function of `&dyn Backend`, instantiated by [`on_every_backend!`]
//! once for SQLite (a temporary file) and once for PostgreSQL (a fresh
//! database on the test server, see `postgres/testdb.rs`).

use std::ops::Deref;

use super::postgres::{Postgres, PostgresOptions, PostgresUrl};
use super::sqlite::{Sqlite, SqliteOptions};
use super::{Backend, NewEvent, SoftBouncePolicy, dedupe_key};
use crate::event::{BounceClass, EventKind, NormalizedEvent, PluginStamp};

/// A backend opened for one test, with what it needs kept alive.
pub(crate) struct Opened {
    backend: Box<dyn Backend>,
    _dir: Option<tempfile::TempDir>,
}

impl Deref for Opened {
    type Target = dyn Backend;

    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

/// A new SQLite store in a temporary directory.
pub(crate) fn sqlite() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let backend = Sqlite::open(&SqliteOptions {
        path: dir.path().join("store.db"),
        max_size: None,
        soft_bounces: SoftBouncePolicy::default(),
    })
    .unwrap();
    Opened {
        backend: Box::new(backend),
        _dir: Some(dir),
    }
}

/// A PostgreSQL store in a new database, or `None` when skipped.
pub(crate) fn postgres() -> Option<Opened> {
    let url = super::postgres::testdb::database()?;
    Some(Opened {
        backend: Box::new(open_postgres(&url)),
        _dir: None,
    })
}

/// Opens (and migrates) the PostgreSQL store at `url`.
pub(crate) fn open_postgres(url: &str) -> Postgres {
    Postgres::open(&PostgresOptions {
        url: PostgresUrl::parse(url).unwrap(),
        max_connections: 4,
        soft_bounces: SoftBouncePolicy::default(),
    })
    .unwrap()
}

/// Instantiates test functions `fn(&dyn Backend)` as `sqlite::name` and
/// `postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&*crate::store::contract::sqlite());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(db) = crate::store::contract::postgres() {
                        super::$name(&*db);
                    }
                }
            )*
        }
    };
}

mod events;
mod outbox;
mod queue;

/// An event to `Rcpt@Example.org` in workspaces `w1` and `w2`.
pub(crate) fn new_event(
    id: &str,
    kind: EventKind,
    class: Option<BounceClass>,
    at: i64,
) -> NewEvent {
    event_to(id, "Rcpt@Example.org", kind, class, at, &[])
}

/// A delivered-or-other event of connection `c`, forwarded to `forward_to`.
pub(crate) fn event_to(
    id: &str,
    recipient: &str,
    kind: EventKind,
    class: Option<BounceClass>,
    at: i64,
    forward_to: &[&str],
) -> NewEvent {
    let event = NormalizedEvent {
        kind,
        bounce_class: class,
        recipient: recipient.into(),
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
        dedupe_key: dedupe_key("c", &event),
        event,
        forward_to: forward_to.iter().map(|f| (*f).to_owned()).collect(),
        soft_bounce_rules: Vec::new(),
    }
}

/// Ids as the store's writer makes them.
pub(crate) fn ids() -> impl FnMut() -> String {
    let mut g = ulid::Generator::new();
    move || g.generate().unwrap().to_string()
}
