//! Single-use tokens (`replay.use-token`): recorded in the transaction that
//! stores the request's events, so a refused request records nothing.

use rusqlite::{Connection, params};

use crate::store::ReplayToken;

/// Expired tokens deleted per request that records one: the table stays
/// bounded by the tokens of one expiry window without a sweeper.
const PRUNE_PER_WRITE: i64 = 64;

/// Records every token; false when one is already recorded, not expired,
/// for another body (a replay), in which case the caller rolls the request
/// back. The same body again is the provider retrying: accepted.
pub(super) fn record(tx: &Connection, tokens: &[ReplayToken]) -> rusqlite::Result<bool> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO replay_tokens (connection, token, body_sha256, expires_at) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (connection, token) DO UPDATE SET \
           body_sha256 = excluded.body_sha256, expires_at = excluded.expires_at \
         WHERE replay_tokens.expires_at <= ?5",
    )?;
    let mut same_body = tx.prepare_cached(
        "SELECT 1 FROM replay_tokens WHERE connection = ?1 AND token = ?2 AND body_sha256 = ?3",
    )?;
    for t in tokens {
        let args = params![
            t.connection,
            t.token,
            &t.body_sha256[..],
            t.expires_at,
            t.used_at
        ];
        if insert.execute(args)? == 0
            && !same_body.exists(params![t.connection, t.token, &t.body_sha256[..]])?
        {
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
