//! The PostgreSQL backend: the same tables and semantics as the SQLite
//! one, for one or several mailplug processes sharing a database.
//!
//! What sharing needs, and where it is done:
//! - every [`Backend::apply`] is one transaction (group commit, all or
//!   nothing), and event inserts are `ON CONFLICT DO NOTHING` on the dedupe
//!   key, so two processes storing the same event make one row and both
//!   answer stored-or-duplicate, never an error ([`events`]);
//! - outbox and queue claims lock their candidate rows `FOR UPDATE SKIP
//!   LOCKED` and lease them in the same transaction, so two processes never
//!   claim the same row ([`outbox`], [`queue`]);
//! - migrations run in one transaction under an advisory lock, so replicas
//!   starting together migrate once, and a schema newer than this binary's
//!   is refused ([`migrate`]).
//!
//! Connections are blocking clients of the `postgres` crate, pooled here
//! ([`pool`]), each keeping the statements it prepared ([`sql`]); like
//! every backend call they run off the async runtime.

use postgres::Client;
use postgres::types::ToSql;

use super::{
    Applied, Backend, Counts, EventQuery, Order, Page, PoolStats, SoftBouncePolicy, StoreError,
    Suppression, SuppressionQuery, SuppressionReason, Write, address_key, format_ms, now_ms,
};
use crate::event::DeliveryEvent;
use crate::store::status::Migrated;

mod admin;
mod events;
mod outbox;
mod pool;
mod queue;
mod sql;
mod tls;
mod url;

pub use admin::{migrate_database, schema_status};
pub use url::{PostgresUrl, redact};

use super::sqlite::{decode_cursor, encode_cursor};
use events::{EVENT_COLUMNS, event_listing, insert_events, row_event, suppress};
use pool::Pool;
use sql::{Db, Tx};

/// Versioned migrations, applied in order at open; the index + 1 is the
/// version a migration brings the schema to. PostgreSQL's versions count
/// on their own (SQLite's history of reshaping tables is not repeated).
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/0001_events_suppressions.sql"),
    include_str!("postgres/0002_outbox.sql"),
    include_str!("postgres/0003_replay_tokens.sql"),
    include_str!("postgres/0004_queue.sql"),
    include_str!("postgres/0005_send_leases.sql"),
];

/// Key of the advisory lock migrations hold (any constant that other
/// applications sharing the database are unlikely to use: "mailplug").
const MIGRATION_LOCK: i64 = 0x6d61_696c_706c_7567;

/// How long the health check of a client that failed a call may take.
const HEALTH_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Default most connections one process opens.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// The newest schema version this binary knows.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Options of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The database.
    pub url: PostgresUrl,
    /// Most connections open at once (writer, readers and claims).
    pub max_connections: usize,
    /// When soft bounces suppress.
    pub soft_bounces: SoftBouncePolicy,
}

/// The PostgreSQL backend.
#[derive(Debug)]
pub struct Postgres {
    pool: Pool,
    soft_bounces: SoftBouncePolicy,
}

/// A full disk (SQLSTATE 53100) is [`StoreError::Full`], like SQLite's
/// size limit: the write may succeed once space is made.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if db.code() == &postgres::error::SqlState::DISK_FULL => {
                Self::Full(format!("PostgreSQL: {}", db.message()))
            }
            Some(db) => Self::Backend(format!(
                "PostgreSQL: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            )),
            None => Self::Backend(format!("PostgreSQL: {}", pool::causes(&e))),
        }
    }
}

/// Positional arguments of a query built at run time (`$1`, `$2`, ...).
#[derive(Default)]
pub(crate) struct Args(Vec<Box<dyn ToSql + Sync>>);

impl Args {
    /// Adds an argument; returns its placeholder.
    pub(crate) fn push(&mut self, v: impl ToSql + Sync + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    /// The arguments as the client takes them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect()
    }
}

impl Postgres {
    /// Connects and migrates the database. Refuses a schema newer than
    /// this binary's; a server that cannot be reached is an error naming
    /// `host:port/database` (never the password).
    pub fn open(options: &PostgresOptions) -> Result<Self, StoreError> {
        let config = options.url.config().map_err(StoreError::Backend)?;
        let target = url::target(&config);
        let pool = Pool::new(
            config,
            options.url.connector(),
            target,
            options.max_connections,
        );
        migrate_on(&pool)?;
        Ok(Self {
            pool,
            soft_bounces: options.soft_bounces,
        })
    }

    /// Runs `work` on a pooled client.
    pub(crate) fn with_client<T>(
        &self,
        work: impl FnOnce(&mut Db<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        let out = work(&mut conn.sql());
        // A failure may be the connection's (the server restarted, a proxy
        // hung up) before the client noticed: one cheap query tells, and a
        // broken client is closed rather than handed to the next caller.
        if out.is_err() && conn.client().is_valid(HEALTH_CHECK_TIMEOUT).is_err() {
            tracing::warn!(
                store = self.pool.target(),
                "dropping a broken PostgreSQL connection"
            );
            conn.discard();
        }
        out
    }

    /// Runs `work` in one transaction, committed if it succeeds.
    pub(crate) fn with_tx<T>(
        &self,
        work: impl FnOnce(&mut Tx<'_, '_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_client(|db| db.transaction(work))
    }
}

/// [`migrate`] on a client of `pool`; a failure names the database.
fn migrate_on(pool: &Pool) -> Result<Migrated, StoreError> {
    let mut conn = pool.get()?;
    migrate(conn.client()).map_err(|e| match e {
        StoreError::Backend(m) => StoreError::Backend(format!("{}: {m}", pool.target())),
        other => other,
    })
}

/// Brings the schema to [`schema_version`] in one transaction under an
/// advisory lock: a second process starting at the same time waits, then
/// finds the schema current.
pub(crate) fn migrate(client: &mut Client) -> Result<Migrated, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mailplug_schema ( \
           version bigint PRIMARY KEY, \
           applied_at timestamptz NOT NULL DEFAULT now())",
    )?;
    let found: Option<i64> = tx
        .query_one("SELECT max(version) FROM mailplug_schema", &[])?
        .try_get(0)?;
    let found = found.unwrap_or(0);
    let supported = schema_version();
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql)
            .map_err(|e| StoreError::Backend(format!("migration {version}: {e}")))?;
        tx.execute(
            "INSERT INTO mailplug_schema (version) VALUES ($1)",
            &[&version],
        )?;
        tracing::info!(version, "store schema migrated (PostgreSQL)");
    }
    tx.commit()?;
    Ok(Migrated {
        from: found,
        to: supported,
    })
}

/// Stored events and suppressions.
fn counts(c: &mut Db<'_>) -> Result<Counts, StoreError> {
    let row = c.query_one(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM suppressions)",
        &[],
    )?;
    Ok(Counts {
        events: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
        suppressions: u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
    })
}

impl Backend for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn apply(
        &self,
        writes: &[Write],
        next_id: &mut dyn FnMut() -> String,
    ) -> Result<Vec<Applied>, StoreError> {
        self.with_tx(|tx| {
            let mut out = Vec::with_capacity(writes.len());
            for write in writes {
                let applied = match write {
                    Write::Events { events, tokens } if tokens.is_empty() => {
                        insert_events(tx, events, next_id, self.soft_bounces)?
                    }
                    Write::Events { events, tokens } => {
                        // A savepoint per request: a replayed token undoes
                        // this request alone, not the others in the commit.
                        tx.savepoint(|sp| {
                            if events::record_tokens(sp, tokens)? {
                                insert_events(sp, events, next_id, self.soft_bounces).map(Some)
                            } else {
                                Ok(None)
                            }
                        })?
                        .unwrap_or(Applied::Replayed)
                    }
                    Write::Suppress {
                        workspace,
                        address,
                        note,
                    } => Applied::Suppressed(suppress(
                        tx,
                        workspace,
                        address,
                        SuppressionReason::Manual,
                        None,
                        note.as_deref(),
                        now_ms(),
                    )?),
                    Write::Enqueue { messages } => {
                        Applied::Enqueued(queue::enqueue(tx, messages, now_ms(), next_id)?)
                    }
                    Write::Unsuppress { workspace, address } => {
                        let n = tx.execute(
                            "DELETE FROM suppressions WHERE workspace = $1 AND address_key = $2",
                            &[workspace, &address_key(address)],
                        )?;
                        Applied::Unsuppressed(n > 0)
                    }
                };
                out.push(applied);
            }
            Ok(out)
        })
    }

    fn events(&self, q: &EventQuery) -> Result<Page<DeliveryEvent>, StoreError> {
        let (sql, args, limit) = event_listing(q)?;
        let rows = self.with_client(|c| c.query_uncached(&sql, &args.refs()))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push((r.try_get::<_, i64>("seq")?, row_event(r)?));
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|(seq, _)| encode_cursor(q.order, &seq.to_string()))
        } else {
            None
        };
        Ok(Page {
            items: items.into_iter().map(|(_, e)| e).collect(),
            next,
        })
    }

    fn event(&self, id: &str) -> Result<Option<DeliveryEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1");
        let row = self.with_client(|c| c.query_opt(&sql, &[&id]))?;
        row.as_ref().map(row_event).transpose()
    }

    fn suppressions(&self, q: &SuppressionQuery) -> Result<Page<Suppression>, StoreError> {
        let mut sql = String::from(
            "SELECT workspace, address, reason, event_id, note, created_at, address_key FROM suppressions WHERE true",
        );
        let mut args = Args::default();
        if let Some(w) = &q.workspace {
            sql.push_str(&format!(" AND workspace = {}", args.push(w.clone())));
        }
        if let Some(a) = &q.address {
            sql.push_str(&format!(" AND address_key = {}", args.push(address_key(a))));
        }
        if let Some(c) = &q.cursor {
            let (_, key) = decode_cursor(c)?;
            let Some((w, a)) = key.split_once('\n') else {
                return Err(StoreError::BadCursor);
            };
            let w = args.push(w.to_owned());
            let a = args.push(a.to_owned());
            sql.push_str(&format!(" AND (workspace, address_key) > ({w}, {a})"));
        }
        let limit = q.limit.clamp(1, 1000);
        sql.push_str(&format!(
            " ORDER BY workspace, address_key LIMIT {}",
            limit + 1
        ));
        let rows = self.with_client(|c| c.query_uncached(&sql, &args.refs()))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let reason: String = r.try_get(2)?;
            items.push((
                Suppression {
                    workspace: r.try_get(0)?,
                    address: r.try_get(1)?,
                    reason: SuppressionReason::parse(&reason).unwrap_or(SuppressionReason::Manual),
                    event_id: r.try_get(3)?,
                    note: r.try_get(4)?,
                    created_at: format_ms(r.try_get(5)?),
                },
                r.try_get::<_, String>(6)?,
            ));
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|(s, key)| encode_cursor(Order::Asc, &format!("{}\n{key}", s.workspace)))
        } else {
            None
        };
        Ok(Page {
            items: items.into_iter().map(|(s, _)| s).collect(),
            next,
        })
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.with_client(counts)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_client(|c| c.query_one("SELECT 1", &[]).map(drop))
    }

    fn pool(&self) -> Option<PoolStats> {
        Some(self.pool.stats())
    }

    fn close(&self) -> Result<(), StoreError> {
        // Commits are durable when they return; closing only hangs up.
        self.pool.clear();
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testdb;

#[cfg(test)]
mod tests;
