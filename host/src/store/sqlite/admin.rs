//! The SQLite store seen by an operator's command rather than the daemon:
//! its schema read without changing the file, and migrations applied
//! without starting the backend.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{backend_error, counts, migrate, open_writer, queue, schema_version};
use crate::store::StoreError;
use crate::store::status::{Contents, Migrated, SchemaStatus};

/// The schema of the database at `path`, read without writing; `None` when
/// there is no store yet (no file, or an empty one), which is left as it
/// is: `status` must not be what creates a store.
pub fn schema_status(path: &Path) -> Result<Option<SchemaStatus>, StoreError> {
    let exists = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(exists(e)),
        Ok(m) if m.len() == 0 => return Ok(None),
        Ok(_) => {}
    }
    // Read-write without create, but `query_only`: a read-only connection
    // cannot remove the `-wal` and `-shm` files it makes, whereas the last
    // connection of a writable one checkpoints and removes them, leaving a
    // stopped daemon's data dir as it was.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| backend_error(&e))?;
    let read = || -> rusqlite::Result<SchemaStatus> {
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'mailplug_schema'",
            [],
            |r| r.get(0),
        )?;
        let found: Option<i64> = if tables == 0 {
            None
        } else {
            conn.query_row("SELECT max(version) FROM mailplug_schema", [], |r| r.get(0))?
        };
        let found = found.unwrap_or(0);
        let supported = schema_version();
        let contents = if found == supported {
            let counts = counts(&conn)?;
            Some(Contents {
                events: counts.events,
                suppressions: counts.suppressions,
                pending: queue::queue_totals(&conn)?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            })
        } else {
            None
        };
        Ok(SchemaStatus {
            found,
            supported,
            contents,
        })
    };
    read().map(Some).map_err(|e| backend_error(&e))
}

/// Creates the database at `path` if needed and applies the pending
/// migrations, as the daemon does when it opens the store. Refuses a
/// schema newer than this binary's.
pub fn migrate_file(path: &Path) -> Result<Migrated, StoreError> {
    let conn = open_writer(path)?;
    migrate(&conn)
}
