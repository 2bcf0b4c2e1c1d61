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
    Applied, Backend, Counts, Cursor, EventQuery, NewEvent, Order, Page, SoftBouncePolicy,
    StoreError, Suppression, SuppressionQuery, SuppressionReason, Write, address_key, format_ms,
    now_ms,
};
use crate::event::{
    BounceClass, DeliveryEvent, EVENT_SCHEMA_VERSION, EventKind, NormalizedEvent, PluginStamp,
};

/// Versioned migrations, applied in order at open; the index + 1 is the
/// version a migration brings the schema to.
const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/0001_events_suppressions.sql"),
    include_str!("sqlite/0002_event_sequence.sql"),
    include_str!("sqlite/0003_outbox.sql"),
];

mod outbox;

/// The newest schema version this binary knows.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The page size of a new database. Small pages keep the WAL small: an
/// index keyed by a hash (the dedupe key) or an address changes one page at
/// a random place per event, and each commit writes every page it changed.
const PAGE_SIZE: i64 = 1024;

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
        if let Some(dir) = options.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(&options.path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", options.path.display())))?;
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
        let result = read(&conn).map_err(|e| backend_error(&e));
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 8
        {
            pool.push(conn);
        }
        result
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
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
    Ok(())
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
        let tx = conn.transaction().map_err(|e| backend_error(&e))?;
        let mut out = Vec::with_capacity(writes.len());
        for write in writes {
            let applied = match write {
                Write::Events(events) => insert_events(&tx, events, next_id, self.soft_bounces),
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
        self.with_reader(|c| {
            let events: i64 = c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
            let suppressions: i64 =
                c.query_row("SELECT count(*) FROM suppressions", [], |r| r.get(0))?;
            Ok(Counts {
                events: events.max(0) as u64,
                suppressions: suppressions.max(0) as u64,
            })
        })
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

/// The SQL of an event listing, its arguments and the page size.
fn event_listing(q: &EventQuery) -> Result<(String, Vec<SqlValue>, usize), StoreError> {
    // A workspace without a recipient walks that workspace's rows in
    // order; otherwise the recipient index (the most selective) or the
    // connection or kind index leads and the workspace is a lookup.
    let by_workspace = q.workspace.is_some() && q.recipient.is_none();
    let (from, seq) = if by_workspace {
        ("event_workspaces w CROSS JOIN events e ON e.seq = w.seq", "w.seq")
    } else {
        ("events e", "e.seq")
    };
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM {from} WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: SqlValue| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(c) = &q.connection {
        arg(&mut sql, " AND e.connection = ?", c.clone().into());
    }
    if let Some(w) = &q.workspace {
        let clause = if by_workspace {
            " AND w.workspace = ?"
        } else {
            " AND EXISTS (SELECT 1 FROM event_workspaces x WHERE x.workspace = ? AND x.seq = e.seq)"
        };
        arg(&mut sql, clause, w.clone().into());
    }
    if let Some(k) = q.kind {
        arg(&mut sql, " AND e.kind = ?", k.as_str().to_owned().into());
    }
    if let Some(r) = &q.recipient {
        arg(&mut sql, " AND e.recipient_key = ?", address_key(r).into());
    }
    if let Some(t) = q.since {
        arg(&mut sql, " AND e.occurred_at >= ?", t.into());
    }
    if let Some(t) = q.until {
        arg(&mut sql, " AND e.occurred_at < ?", t.into());
    }
    if let Some(a) = &q.after {
        // The newest event at or before that id (ids grow with seq), so
        // an id that is not stored still positions the tail.
        arg(
            &mut sql,
            &format!(" AND {seq} > coalesce((SELECT seq FROM events WHERE id <= ? ORDER BY id DESC LIMIT 1), 0)"),
            a.clone().into(),
        );
    }
    if let Some(c) = &q.cursor {
        let (order, at) = decode_cursor(c)?;
        let at: i64 = at.parse().map_err(|_| StoreError::BadCursor)?;
        if order != q.order {
            return Err(StoreError::BadCursor);
        }
        let op = if order == Order::Asc { ">" } else { "<" };
        arg(&mut sql, &format!(" AND {seq} {op} ?"), at.into());
    }
    let limit = q.limit.clamp(1, 1000);
    let dir = match q.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    sql.push_str(&format!(" ORDER BY {seq} {dir} LIMIT {}", limit + 1));
    Ok((sql, args, limit))
}

const EVENT_COLUMNS: &str = "e.id, e.connection, e.workspaces, e.received_at, e.kind, e.bounce_class, \
     e.recipient, e.occurred_at, e.provider, e.provider_event_id, e.provider_message_id, \
     e.message_id, e.smtp_status, e.enhanced_status, e.diagnostic, e.plugin_id, \
     e.plugin_version, e.plugin_sha256, e.seq";

/// The index of `e.seq` in [`EVENT_COLUMNS`].
const SEQ_COLUMN: usize = 18;

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryEvent> {
    let workspaces: String = r.get(2)?;
    let kind: String = r.get(4)?;
    let bounce: Option<String> = r.get(5)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored {what} is invalid").into(),
        )
    };
    Ok(DeliveryEvent {
        schema_version: EVENT_SCHEMA_VERSION,
        id: r.get(0)?,
        connection: r.get(1)?,
        workspaces: serde_json::from_str(&workspaces).map_err(|_| bad("workspaces"))?,
        received_at: format_ms(r.get(3)?),
        event: NormalizedEvent {
            kind: EventKind::parse(&kind).ok_or_else(|| bad("kind"))?,
            bounce_class: match bounce.as_deref() {
                None => None,
                Some(b) => Some(BounceClass::parse(b).ok_or_else(|| bad("bounce class"))?),
            },
            recipient: r.get(6)?,
            occurred_at: crate::event::format_unix_seconds(r.get(7)?)
                .ok_or_else(|| bad("occurred_at"))?,
            provider: r.get(8)?,
            provider_event_id: r.get(9)?,
            provider_message_id: r.get(10)?,
            message_id: r.get(11)?,
            smtp_status: r.get(12)?,
            enhanced_status: r.get(13)?,
            diagnostic: r.get(14)?,
        },
        plugin: PluginStamp {
            id: r.get(15)?,
            version: r.get(16)?,
            sha256: r.get(17)?,
        },
    })
}

fn insert_events(
    tx: &rusqlite::Transaction<'_>,
    events: &[NewEvent],
    next_id: &mut dyn FnMut() -> String,
    policy: SoftBouncePolicy,
) -> rusqlite::Result<Applied> {
    let mut stored = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (id, dedupe_key, connection, workspaces, received_at, kind, \
         bounce_class, recipient, recipient_key, occurred_at, provider, provider_event_id, \
         provider_message_id, message_id, smtp_status, enhanced_status, diagnostic, plugin_id, \
         plugin_version, plugin_sha256) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
         ON CONFLICT (recipient_key, dedupe_key) DO NOTHING",
    )?;
    let mut workspace = tx.prepare_cached(
        "INSERT INTO event_workspaces (workspace, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for new in events {
        let id = next_id();
        let e = &new.event;
        let workspaces = serde_json::to_string(&new.workspaces).unwrap_or_else(|_| "[]".into());
        let bounce = e.bounce_class.map(BounceClass::as_str);
        let key = address_key(&e.recipient);
        let n = insert.execute(params![
            id,
            &new.dedupe_key[..],
            new.connection,
            workspaces,
            new.received_at_ms,
            e.kind.as_str(),
            bounce,
            e.recipient,
            key,
            new.occurred_at,
            e.provider,
            e.provider_event_id,
            e.provider_message_id,
            e.message_id,
            e.smtp_status,
            e.enhanced_status,
            e.diagnostic,
            new.plugin.id,
            new.plugin.version,
            new.plugin.sha256,
        ])?;
        if n == 0 {
            duplicates += 1;
            continue;
        }
        let seq = tx.last_insert_rowid();
        for w in &new.workspaces {
            workspace.execute(params![w, seq])?;
        }
        apply_suppressions(tx, new, &id, policy)?;
        outbox::enqueue(tx, &id, new, next_id)?;
        stored.push(id);
    }
    Ok(Applied::Events { stored, duplicates })
}

/// Hard bounces and complaints suppress at once; soft bounces (and bounces
/// of unknown class) once `policy.threshold` of them fall within the window.
fn apply_suppressions(
    tx: &rusqlite::Transaction<'_>,
    new: &NewEvent,
    id: &str,
    policy: SoftBouncePolicy,
) -> rusqlite::Result<()> {
    let e = &new.event;
    let reason = match (e.kind, e.bounce_class) {
        (EventKind::Complained, _) => SuppressionReason::Complaint,
        (EventKind::Bounced, Some(BounceClass::Hard)) => SuppressionReason::HardBounce,
        (EventKind::Bounced, _) => SuppressionReason::SoftBounces,
        _ => return Ok(()),
    };
    let key = address_key(&e.recipient);
    for w in &new.workspaces {
        if reason == SuppressionReason::SoftBounces {
            tx.prepare_cached(
                "INSERT INTO soft_bounces (workspace, address_key, event_id, occurred_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![w, key, id, new.occurred_at])?;
            let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
            let count: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM soft_bounces WHERE workspace = ?1 AND address_key = ?2 AND occurred_at > ?3 AND occurred_at <= ?4",
                )?
                .query_row(
                    params![w, key, new.occurred_at.saturating_sub(window), new.occurred_at],
                    |r| r.get(0),
                )?;
            if count < i64::from(policy.threshold) {
                continue;
            }
        }
        suppress(
            tx,
            w,
            &e.recipient,
            reason,
            Some(id),
            None,
            new.received_at_ms,
        )?;
    }
    Ok(())
}

fn suppress(
    tx: &rusqlite::Transaction<'_>,
    workspace: &str,
    address: &str,
    reason: SuppressionReason,
    event_id: Option<&str>,
    note: Option<&str>,
    at_ms: i64,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO suppressions (workspace, address_key, address, reason, event_id, note, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (workspace, address_key) DO NOTHING",
        )?
        .execute(params![
            workspace,
            address_key(address),
            address.trim(),
            reason.as_str(),
            event_id,
            note,
            at_ms
        ])?;
    Ok(n > 0)
}

fn encode_cursor(order: Order, key: &str) -> Cursor {
    let tag = if order == Order::Asc { 'a' } else { 'd' };
    Cursor(URL_SAFE_NO_PAD.encode(format!("1{tag}{key}")))
}

fn decode_cursor(c: &Cursor) -> Result<(Order, String), StoreError> {
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
mod tests {
    use super::*;

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
        }
    }

    fn ids() -> impl FnMut() -> String {
        let mut g = ulid::Generator::new();
        move || g.generate().unwrap().to_string()
    }

    #[test]
    fn stores_once_pages_by_cursor_and_suppresses() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
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
            .apply(&[Write::Events(batch.clone())], &mut next)
            .unwrap();
        let Applied::Events { stored, duplicates } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((stored.len(), *duplicates), (5, 0));
        let again = db.apply(&[Write::Events(batch)], &mut next).unwrap();
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

        let hard = new_event(
            "h",
            EventKind::Bounced,
            Some(BounceClass::Hard),
            1_767_268_900,
        );
        db.apply(&[Write::Events(vec![hard])], &mut next).unwrap();
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
    }

    #[test]
    fn soft_bounces_suppress_at_the_threshold_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
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
            db.apply(&[Write::Events(vec![e])], &mut next).unwrap();
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
            db.apply(&[Write::Events(vec![e])], &mut next).unwrap();
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
        let again = db.apply(&[Write::Events(vec![e])], &mut ids()).unwrap();
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
            max_size: Some(64 * 1024),
            soft_bounces: SoftBouncePolicy::default(),
        })
        .unwrap();
        let mut next = ids();
        let batch: Vec<_> = (0..2000)
            .map(|i| new_event(&format!("e{i}"), EventKind::Delivered, None, 1_767_268_800))
            .collect();
        let err = db.apply(&[Write::Events(batch)], &mut next).unwrap_err();
        assert!(matches!(err, StoreError::Full(_)), "{err}");
        assert_eq!(db.counts().unwrap().events, 0, "nothing half-applied");
    }
}
