//! Single-use tokens (`replay.use-token`): recorded in the transaction that
//! stores the request's events, so a refused request records nothing.

use rusqlite::{Connection, params};

use crate::store::ReplayToken;

/// Expired tokens deleted per request that records one: the table stays
/// bounded by the tokens of one expiry window without a sweeper.
const PRUNE_PER_WRITE: i64 = 64;

/// Records every token; false when one is already recorded and not yet
/// expired (a replay), in which case the caller rolls the request back.
pub(super) fn record(tx: &Connection, tokens: &[ReplayToken]) -> rusqlite::Result<bool> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO replay_tokens (connection, token, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (connection, token) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE replay_tokens.expires_at <= ?4",
    )?;
    for t in tokens {
        if insert.execute(params![t.connection, t.token, t.expires_at, t.used_at])? == 0 {
            return Ok(false);
        }
    }
    if let Some(now) = tokens.iter().map(|t| t.used_at).max() {
        tx.prepare_cached(
            "DELETE FROM replay_tokens WHERE (connection, token) IN \
             (SELECT connection, token FROM replay_tokens WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, PRUNE_PER_WRITE])?;
    }
    Ok(true)
}
