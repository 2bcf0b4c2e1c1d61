//! Claiming due deliveries in a few set-based statements, whatever the
//! size of the claim: the due rows of each workspace are locked
//! `FOR UPDATE SKIP LOCKED` (one statement per workspace), then the
//! suppressed among them are found, ended and recorded, the rest are
//! leased, and their messages read, each step one statement over arrays.
//! A round trip per row would cost more than the row itself.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::super::sql::Tx;
use super::{PENDING, refresh_statuses};
use crate::store::StoreError;
use crate::store::queue::ClaimedDelivery;

/// What one claim asks for.
pub(super) struct Claim<'a> {
    pub connection: &'a str,
    /// The connection's workspaces: a message without one is checked
    /// against the suppressions of each.
    pub scope: &'a [String],
    pub now_ms: i64,
    /// The lease token and until when it holds (Unix milliseconds).
    pub token: &'a str,
    pub until: i64,
    pub limit: usize,
}

/// A due row: delivery id, recipient key, workspace.
type Due = (i64, String, String);

/// What a claimed delivery needs of its message: pinned connection,
/// envelope sender, Message-ID, the formatted bytes.
type MessageRow = (Option<String>, String, String, Arc<Vec<u8>>);

pub(super) fn claim(
    tx: &mut Tx<'_, '_>,
    c: &Claim<'_>,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    // Lapsed leases: the attempt's worker is gone or stuck past any SMTP
    // timeout; the delivery goes back to the queue.
    tx.execute(
        "UPDATE deliveries SET state = 'deferred', lease = NULL, lease_until = NULL \
         WHERE connection = $1 AND state = 'sending' AND lease_until < $2",
        &[&c.connection, &c.now_ms],
    )?;
    let chosen = due_round_robin(tx, c)?;
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let mut touched = BTreeSet::new();
    let suppressed = suppress(tx, c, &chosen, &mut touched)?;
    let take: Vec<i64> = chosen
        .iter()
        .map(|d| d.0)
        .filter(|id| !suppressed.contains(id))
        .collect();
    let mut leased: HashMap<i64, postgres::Row> = HashMap::with_capacity(take.len());
    if !take.is_empty() {
        let rows = tx.query(
            &format!(
                "UPDATE deliveries SET state = 'sending', lease = $2, lease_until = $3 \
                 WHERE id = ANY($1) AND {PENDING} \
                 RETURNING id, message, recipient, workspace, attempts, queued_at"
            ),
            &[&take, &c.token, &c.until],
        )?;
        for r in rows {
            leased.insert(r.try_get(0)?, r);
        }
    }
    let messages: Vec<String> = leased
        .values()
        .map(|r| r.try_get::<_, String>(1))
        .collect::<Result<BTreeSet<_>, _>>()?
        .into_iter()
        .collect();
    let mut raws: HashMap<String, MessageRow> = HashMap::with_capacity(messages.len());
    if !messages.is_empty() {
        for r in tx.query(
            "SELECT id, pinned_connection, from_email, message_id_header, raw \
             FROM messages WHERE id = ANY($1)",
            &[&messages],
        )? {
            raws.insert(
                r.try_get(0)?,
                (
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    Arc::new(r.try_get(4)?),
                ),
            );
        }
    }
    // In the order chosen (round robin over the workspaces).
    let mut out = Vec::with_capacity(take.len());
    for id in take {
        let Some(r) = leased.get(&id) else { continue };
        let message: String = r.try_get(1)?;
        let Some((pinned, from, header, raw)) = raws.get(&message).cloned() else {
            continue;
        };
        out.push(ClaimedDelivery {
            id,
            message,
            lease: c.token.to_owned(),
            recipient: r.try_get(2)?,
            workspace: r.try_get(3)?,
            pinned_connection: pinned,
            attempts: u32::try_from(r.try_get::<_, i64>(4)?).unwrap_or(u32::MAX),
            queued_at_ms: r.try_get(5)?,
            from_email: from,
            message_id_header: header,
            raw,
        });
    }
    refresh_statuses(tx, &touched)?;
    Ok(out)
}

/// Due rows of each workspace, locked, oldest due first, then taken in
/// turns so each workspace gets its share. Rows another claim holds are
/// skipped; rows locked here but not chosen stay queued.
fn due_round_robin(tx: &mut Tx<'_, '_>, c: &Claim<'_>) -> Result<Vec<Due>, StoreError> {
    let limit = i64::try_from(c.limit).unwrap_or(i64::MAX);
    let workspaces = tx.query(
        &format!(
            "SELECT DISTINCT workspace FROM deliveries WHERE connection = $1 AND {PENDING} \
             ORDER BY workspace"
        ),
        &[&c.connection],
    )?;
    let due = format!(
        "SELECT id, recipient_key, workspace FROM deliveries \
         WHERE connection = $1 AND workspace = $2 AND {PENDING} AND next_attempt_at <= $3 \
         ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED"
    );
    let mut per_workspace: Vec<VecDeque<Due>> = Vec::new();
    for w in &workspaces {
        let ws: String = w.try_get(0)?;
        let mut rows = VecDeque::new();
        for r in tx.query(&due, &[&c.connection, &ws, &c.now_ms, &limit])? {
            rows.push_back((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
        }
        if !rows.is_empty() {
            per_workspace.push(rows);
        }
    }
    let mut chosen = Vec::with_capacity(c.limit);
    while chosen.len() < c.limit && per_workspace.iter().any(|q| !q.is_empty()) {
        for q in &mut per_workspace {
            if chosen.len() < c.limit
                && let Some(row) = q.pop_front()
            {
                chosen.push(row);
            }
        }
    }
    Ok(chosen)
}

/// Ends the chosen deliveries whose recipient is suppressed in their
/// workspace (or, for a message without one, in any of the connection's),
/// records the decision as an attempt, and returns their ids.
fn suppress(
    tx: &mut Tx<'_, '_>,
    c: &Claim<'_>,
    chosen: &[Due],
    touched: &mut BTreeSet<String>,
) -> Result<BTreeSet<i64>, StoreError> {
    let ids: Vec<i64> = chosen.iter().map(|d| d.0).collect();
    let keys: Vec<&str> = chosen.iter().map(|d| d.1.as_str()).collect();
    let workspaces: Vec<&str> = chosen.iter().map(|d| d.2.as_str()).collect();
    let hits = tx.query(
        "SELECT c.id, s.reason FROM unnest($1::bigint[], $2::text[], $3::text[]) AS c(id, key, ws) \
         CROSS JOIN LATERAL (SELECT reason FROM suppressions WHERE address_key = c.key AND \
           (workspace = c.ws OR (c.ws = '' AND workspace = ANY($4))) LIMIT 1) AS s",
        &[&ids, &keys, &workspaces, &c.scope],
    )?;
    if hits.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut ids = Vec::with_capacity(hits.len());
    let mut results = Vec::with_capacity(hits.len());
    for h in &hits {
        ids.push(h.try_get::<_, i64>(0)?);
        let reason: String = h.try_get(1)?;
        results.push(serde_json::json!({ "suppressed": reason }).to_string());
    }
    let ended = tx.query(
        &format!(
            "UPDATE deliveries AS d SET state = 'suppressed', done_at = $3, result = u.result, \
               attempts = d.attempts + 1, last_attempt_at = $3 \
             FROM unnest($1::bigint[], $2::text[]) AS u(id, result) \
             WHERE d.id = u.id AND d.{PENDING} RETURNING d.id, d.message, d.attempts, u.result"
        ),
        &[&ids, &results, &c.now_ms],
    )?;
    let mut done = BTreeSet::new();
    let (mut a_ids, mut a_n, mut a_results) = (Vec::new(), Vec::new(), Vec::new());
    for r in &ended {
        let id: i64 = r.try_get(0)?;
        done.insert(id);
        touched.insert(r.try_get::<_, String>(1)?);
        a_ids.push(id);
        a_n.push(r.try_get::<_, i64>(2)?);
        a_results.push(r.try_get::<_, String>(3)?);
    }
    tx.execute(
        "INSERT INTO delivery_attempts (delivery, n, at, connection, outcome, result) \
         SELECT u.id, u.n, $4, $5, 'suppressed', u.result \
         FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(id, n, result)",
        &[&a_ids, &a_n, &a_results, &c.now_ms, &c.connection],
    )?;
    // A suppressed row another writer ended first is skipped all the same.
    debug_assert!(done.iter().all(|id| ids.contains(id)));
    Ok(ids.into_iter().collect())
}
