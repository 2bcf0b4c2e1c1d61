//! The embedded SQLite backend: one database file in the data dir, WAL
//! journal, `synchronous = FULL` (a commit survives power loss once it
//! returns), one writer connection (the group-commit thread) and a small
//! pool of read-only connections.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params, params_from_iter};

mod checkpoint;

use checkpoint::Checkpointer;

use super::{
    Applied, Backend, Counts, Cursor, EventQuery, Order, Page, SoftBouncePolicy, StoreError,
    Suppression, SuppressionQuery, SuppressionReason, Write, address_key, format_ms, now_ms,
};
use crate::event::DeliveryEvent;
use crate::store::status::Migrated;

/// Versioned migrations, applied in order at open; the index + 1 is the
/// version a migration brings the schema to.
const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/0001_events_suppressions.sql"),
    include_str!("sqlite/0002_event_sequence.sql"),
    include_str!("sqlite/0003_outbox.sql"),
    include_str!("sqlite/0004_replay_tokens.sql"),
    include_str!("sqlite/0005_queue.sql"),
    include_str!("sqlite/0006_send_leases.sql"),
    include_str!("sqlite/0007_send_cost.sql"),
];

mod admin;
mod events;
mod outbox;
mod queue;
mod replay;

pub use admin::{migrate_file, schema_status};

use events::{EVENT_COLUMNS, SEQ_COLUMN, event_listing, insert_events, row_event, suppress};

/// The database file's name in the data dir.
pub const FILE_NAME: &str = "mailplug.db";

/// The newest schema version this binary knows.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The page size of a new database (an existing file keeps its own). A
/// queued message (its RFC 5322 bytes, typically 1–2 KB) fits on a 4 KiB
/// page beside others, where 1 KiB pages split every message over a page
/// and an overflow page: sending through the queue took about a fifth less
/// CPU per message, and webhook ingest, whose random-place index inserts
/// were the reason for 1 KiB pages, measured the same (docs/events.md).
const PAGE_SIZE: i64 = 4096;

/// The writer's page cache (negative: KiB), which holds the hot index pages.
const WRITER_CACHE_KIB: i64 = -16384;

/// Options of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// Refuse writes once the file would grow past this many bytes.
    pub max_size: Option<u64>,
    /// When soft bounces suppress.
    pub soft_bounces: SoftBouncePolicy,
}

/// The SQLite backend.
#[derive(Debug)]
pub struct Sqlite {
    path: PathBuf,
    checkpointer: Checkpointer,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    soft_bounces: SoftBouncePolicy,
}

fn backend_error(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

impl Sqlite {
    /// Opens (creating if needed) and migrates the database. Refuses a
    /// schema newer than this binary's.
    pub fn open(options: &SqliteOptions) -> Result<Self, StoreError> {
        let conn = open_writer(&options.path)?;
        migrate(&conn)?;
        if let Some(max) = options.max_size {
            let page_size: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(|e| backend_error(&e))?;
            let pages = (max / page_size.max(512) as u64).max(1);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(|e| backend_error(&e))?;
        }
        let checkpointer = Checkpointer::start(&options.path)?;
        Ok(Self {
            path: options.path.clone(),
            checkpointer,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            soft_bounces: options.soft_bounces,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `read` in one read transaction, so all its statements see the
    /// same snapshot: a message's status and its deliveries, say, are never
    /// read from either side of a commit.
    fn with_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| backend_error(&e))?;
                c.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(|e| backend_error(&e))?;
                c
            }
        };
        let result = conn
            .unchecked_transaction()
            .and_then(|tx| {
                let out = read(&tx)?;
                tx.commit()?;
                Ok(out)
            })
            .map_err(|e| backend_error(&e));
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 8
        {
            pool.push(conn);
        }
        result
    }
}

/// Opens (creating it and its directory if needed) the writer connection
/// of the database at `path`, set up as the daemon writes.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // New databases only (no-op once a table exists): see docs/events.md.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints run on their own thread (checkpoint.rs).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        Ok(())
    };
    setup().map_err(|e| backend_error(&e))?;
    Ok(conn)
}

/// Brings the schema to [`schema_version`], one transaction per migration.
fn migrate(conn: &Connection) -> Result<Migrated, StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS mailplug_schema (version INTEGER NOT NULL)")
        .map_err(|e| backend_error(&e))?;
    let found: Option<i64> = conn
        .query_row("SELECT max(version) FROM mailplug_schema", [], |r| r.get(0))
        .map_err(|e| backend_error(&e))?;
    let found = found.unwrap_or(0);
    let supported = schema_version();
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let apply = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO mailplug_schema (version) VALUES (?1)",
                [version],
            )?;
            tx.commit()
        };
        apply().map_err(|e| StoreError::Backend(format!("migration {version}: {e}")))?;
        tracing::info!(version, "store schema migrated");
    }
    Ok(Migrated {
        from: found,
        to: supported,
    })
}

/// Stored events and suppressions.
fn counts(c: &Connection) -> rusqlite::Result<Counts> {
    let events: i64 = c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let suppressions: i64 = c.query_row("SELECT count(*) FROM suppressions", [], |r| r.get(0))?;
    Ok(Counts {
        events: events.max(0) as u64,
        suppressions: suppressions.max(0) as u64,
    })
}

impl Backend for Sqlite {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn apply(
        &self,
        writes: &[Write],
        next_id: &mut dyn FnMut() -> String,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError::Backend("writer lock poisoned".into()))?;
        let mut tx = conn.transaction().map_err(|e| backend_error(&e))?;
        let mut out = Vec::with_capacity(writes.len());
        for write in writes {
            let applied = match write {
                Write::Events { events, tokens } if tokens.is_empty() => {
                    insert_events(&tx, events, next_id, self.soft_bounces)
                }
                Write::Events { events, tokens } => {
                    // A savepoint per request: a replayed token undoes this
                    // request alone, not the others in the group commit.
                    let sp = tx.savepoint().map_err(|e| backend_error(&e))?;
                    let applied = if replay::record(&sp, tokens).map_err(|e| backend_error(&e))? {
                        insert_events(&sp, events, next_id, self.soft_bounces)
                    } else {
                        Ok(Applied::Replayed)
                    };
                    match applied {
                        Ok(Applied::Replayed) => {
                            let mut sp = sp;
                            sp.rollback()
                                .and_then(|()| sp.commit())
                                .map(|()| Applied::Replayed)
                        }
                        Ok(a) => sp.commit().map(|()| a),
                        Err(e) => Err(e),
                    }
                }
                Write::Suppress {
                    workspace,
                    address,
                    note,
                } => suppress(
                    &tx,
                    workspace,
                    address,
                    SuppressionReason::Manual,
                    None,
                    note.as_deref(),
                    now_ms(),
                )
                .map(Applied::Suppressed),
                Write::Enqueue { messages } => {
                    queue::enqueue(&tx, messages, now_ms(), next_id).map(Applied::Enqueued)
                }
                Write::Unsuppress { workspace, address } => tx
                    .execute(
                        "DELETE FROM suppressions WHERE workspace = ?1 AND address_key = ?2",
                        params![workspace, address_key(address)],
                    )
                    .map(|n| Applied::Unsuppressed(n > 0)),
            }
            .map_err(|e| backend_error(&e))?;
            out.push(applied);
        }
        tx.commit().map_err(|e| backend_error(&e))?;
        self.checkpointer.committed(&conn);
        Ok(out)
    }

    fn events(&self, q: &EventQuery) -> Result<Page<DeliveryEvent>, StoreError> {
        let (sql, args, limit) = event_listing(q)?;
        let mut items = self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, i64>(SEQ_COLUMN)?, row_event(r)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
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
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1");
        self.with_reader(|c| c.query_row(&sql, [id], row_event).optional())
    }

    fn suppressions(&self, q: &SuppressionQuery) -> Result<Page<Suppression>, StoreError> {
        let mut sql = String::from(
            "SELECT workspace, address, reason, event_id, note, created_at, address_key FROM suppressions WHERE 1 = 1",
        );
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(w) = &q.workspace {
            args.push(w.clone().into());
            sql.push_str(&format!(" AND workspace = ?{}", args.len()));
        }
        if let Some(a) = &q.address {
            args.push(address_key(a).into());
            sql.push_str(&format!(" AND address_key = ?{}", args.len()));
        }
        if let Some(c) = &q.cursor {
            let (_, key) = decode_cursor(c)?;
            let Some((w, a)) = key.split_once('\n') else {
                return Err(StoreError::BadCursor);
            };
            args.push(w.to_owned().into());
            args.push(a.to_owned().into());
            sql.push_str(&format!(
                " AND (workspace, address_key) > (?{}, ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        let limit = q.limit.clamp(1, 1000);
        sql.push_str(&format!(
            " ORDER BY workspace, address_key LIMIT {}",
            limit + 1
        ));
        let mut rows = self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                let reason: String = r.get(2)?;
                Ok((
                    Suppression {
                        workspace: r.get(0)?,
                        address: r.get(1)?,
                        reason: SuppressionReason::parse(&reason)
                            .unwrap_or(SuppressionReason::Manual),
                        event_id: r.get(3)?,
                        note: r.get(4)?,
                        created_at: format_ms(r.get(5)?),
                    },
                    r.get::<_, String>(6)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|(s, key)| encode_cursor(Order::Asc, &format!("{}\n{key}", s.workspace)))
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(|(s, _)| s).collect(),
            next,
        })
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.with_reader(counts)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn close(&self) -> Result<(), StoreError> {
        if let Ok(mut readers) = self.readers.lock() {
            readers.clear();
        }
        self.checkpointer.stop();
        let conn = self
            .writer
            .lock()
            .map_err(|_| StoreError::Backend("writer lock poisoned".into()))?;
        // Folds the WAL back into the database file so a clean stop leaves one file.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| backend_error(&e))
    }
}

/// An opaque cursor: order and key (both backends share the format).
pub(crate) fn encode_cursor(order: Order, key: &str) -> Cursor {
    let tag = if order == Order::Asc { 'a' } else { 'd' };
    Cursor(URL_SAFE_NO_PAD.encode(format!("1{tag}{key}")))
}

/// The order and key of a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(c: &Cursor) -> Result<(Order, String), StoreError> {
    let raw = URL_SAFE_NO_PAD
        .decode(c.0.as_bytes())
        .map_err(|_| StoreError::BadCursor)?;
    let s = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
    let mut chars = s.chars();
    let order = match (chars.next(), chars.next()) {
        (Some('1'), Some('a')) => Order::Asc,
        (Some('1'), Some('d')) => Order::Desc,
        _ => return Err(StoreError::BadCursor),
    };
    Ok((order, chars.as_str().to_owned()))
}

#[cfg(test)]
mod tests;
