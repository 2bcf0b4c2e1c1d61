//! The PostgreSQL store seen by an operator's command rather than the
//! daemon: one client, its schema read without changing anything, and
//! migrations applied by the daemon's own code under its advisory lock.

use super::pool::Pool;
use super::sql::Db;
use super::{PostgresUrl, counts, migrate_on, queue, schema_version, url};
use crate::store::StoreError;
use crate::store::status::{Contents, Migrated, SchemaStatus};

/// A pool of one client of the database `url` names (connection errors
/// then name `host:port/database` as the daemon's do).
fn single(url: &PostgresUrl) -> Result<Pool, StoreError> {
    let config = url.config().map_err(StoreError::Backend)?;
    let target = url::target(&config);
    Ok(Pool::new(config, url.connector(), target, 1))
}

/// The schema of the database, read by `SELECT`s alone: an empty database
/// (no `mailplug_schema` table) is version 0, and stays empty.
pub fn schema_status(url: &PostgresUrl) -> Result<SchemaStatus, StoreError> {
    let pool = single(url)?;
    let mut conn = pool.get()?;
    read(&mut conn.sql()).map_err(|e| match e {
        StoreError::Backend(m) => StoreError::Backend(format!("{}: {m}", pool.target())),
        other => other,
    })
}

fn read(client: &mut Db<'_>) -> Result<SchemaStatus, StoreError> {
    let has_table: bool = client
        .query_one("SELECT to_regclass('mailplug_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    let found: Option<i64> = if has_table {
        client
            .query_one("SELECT max(version) FROM mailplug_schema", &[])?
            .try_get(0)?
    } else {
        None
    };
    let found = found.unwrap_or(0);
    let supported = schema_version();
    let contents = if found == supported {
        let counts = counts(client)?;
        Some(Contents {
            events: counts.events,
            suppressions: counts.suppressions,
            pending: queue::queue_totals(client)?
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
}

/// Applies the pending migrations as a starting daemon does (one
/// transaction, the same advisory lock). Refuses a schema newer than this
/// binary's.
pub fn migrate_database(url: &PostgresUrl) -> Result<Migrated, StoreError> {
    migrate_on(&single(url)?)
}
