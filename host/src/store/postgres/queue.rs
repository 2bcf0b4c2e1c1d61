//! The PostgreSQL side of the sending queue: messages queued inside the
//! group-commit transaction, and the claim/settle calls of [`Queue`]. Due
//! deliveries are locked `FOR UPDATE SKIP LOCKED` and leased in the same
//! transaction, so two processes never claim the same delivery. Status
//! reads are in `queue/status.rs`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use postgres::types::ToSql;

use super::Postgres;
use super::sql::Tx;
use crate::store::Page;
use crate::store::StoreError;
use crate::store::address_key;
use crate::store::queue::{
    Cancel, ClaimedDelivery, ConnectionQueue, DeliverySettlement, Enqueued, MessageQuery,
    MessageStatus, MessageSummary, NewMessage, Queue,
};

mod status;

pub(super) use status::queue_totals;

use crate::store::queue::{LEASE_SQL, RELEASE_SQL};

/// States a delivery waits in.
const PENDING: &str = "state IN ('queued', 'deferred')";

/// Queues messages (called by `apply` inside the group-commit transaction).
/// A repeated idempotency key returns the first message's id and queues
/// nothing, also when both arrive in the same commit, and when another
/// process stores the same key at the same time: the insert waits for that
/// transaction and, if it committed, this message is its duplicate.
pub(super) fn enqueue(
    tx: &mut Tx<'_, '_>,
    messages: &[NewMessage],
    now_ms: i64,
    next_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut out = Vec::with_capacity(messages.len());
    let find = "SELECT id FROM messages WHERE idempotency_scope = $1 AND idempotency_key = $2";
    let message = "INSERT INTO messages (id, workspace, pinned_connection, idempotency_scope, idempotency_key, \
         from_email, subject, message_id_header, raw, size, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11) \
         ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING";
    let delivery = "INSERT INTO deliveries (message, recipient, recipient_key, field, workspace, connection, \
         state, queued_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)";
    for m in messages {
        let scope = m.idempotency_scope();
        if let Some(key) = &m.idempotency_key
            && let Some(row) = tx.query_opt(find, &[&scope, key])?
        {
            out.push(Enqueued {
                id: row.try_get(0)?,
                duplicate: true,
            });
            continue;
        }
        let id = next_id();
        let size = i64::try_from(m.raw.len()).unwrap_or(i64::MAX);
        let inserted = tx.execute(
            message,
            &[
                &id,
                &m.workspace,
                &m.pinned_connection,
                &scope,
                &m.idempotency_key,
                &m.from_email,
                &m.subject,
                &m.message_id_header,
                &m.raw,
                &size,
                &now_ms,
            ],
        )?;
        if inserted == 0
            && let Some(key) = &m.idempotency_key
        {
            // Committed by another process since the lookup above.
            let row = tx.query_one(find, &[&scope, key])?;
            out.push(Enqueued {
                id: row.try_get(0)?,
                duplicate: true,
            });
            continue;
        }
        for (address, field) in &m.recipients {
            tx.execute(
                delivery,
                &[
                    &id,
                    address,
                    &address_key(address),
                    &field.as_str(),
                    &m.workspace,
                    &m.connection,
                    &now_ms,
                ],
            )?;
        }
        out.push(Enqueued {
            id,
            duplicate: false,
        });
    }
    Ok(out)
}

/// Recomputes a message's status from its deliveries.
fn refresh_status(tx: &mut Tx<'_, '_>, message: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE messages SET status = (SELECT CASE \
           WHEN count(*) FILTER (WHERE state IN ('queued', 'sending', 'deferred')) > 0 THEN 'pending' \
           WHEN count(*) FILTER (WHERE state = 'sent') = count(*) THEN 'sent' \
           WHEN count(*) FILTER (WHERE state = 'sent') > 0 THEN 'partial' \
           WHEN count(*) FILTER (WHERE state = 'cancelled') = count(*) THEN 'cancelled' \
           ELSE 'failed' END FROM deliveries WHERE message = $1) WHERE id = $1",
        &[&message],
    )?;
    Ok(())
}

/// A new suppression ends the pending deliveries of that recipient in that
/// workspace (messages without one are caught at their next claim).
pub(super) fn suppressed(
    tx: &mut Tx<'_, '_>,
    workspace: &str,
    key: &str,
    reason: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    let result = serde_json::json!({ "suppressed": reason }).to_string();
    let rows = tx.query(
        &format!(
            "UPDATE deliveries SET state = 'suppressed', done_at = $3, result = $4 \
             WHERE recipient_key = $1 AND workspace = $2 AND {PENDING} RETURNING message"
        ),
        &[&key, &workspace, &at_ms, &result],
    )?;
    let mut messages = BTreeSet::new();
    for r in &rows {
        messages.insert(r.try_get::<_, String>(0)?);
    }
    for m in &messages {
        refresh_status(tx, m)?;
    }
    Ok(())
}

/// Records a provider event on the deliveries it is about: same recipient,
/// and the message's Message-ID or the queue id the server returned.
pub(super) fn correlate(
    tx: &mut Tx<'_, '_>,
    event: &crate::event::NormalizedEvent,
    event_id: &str,
    occurred_at: i64,
) -> Result<(), StoreError> {
    let header = event
        .message_id
        .as_deref()
        .map(|m| m.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|m| !m.is_empty());
    let queue_id = event
        .provider_message_id
        .as_deref()
        .filter(|m| !m.is_empty());
    if header.is_none() && queue_id.is_none() {
        return Ok(());
    }
    tx.execute(
        "UPDATE deliveries SET event_kind = $1, event_id = $2, event_at = $3 \
         WHERE recipient_key = $4 AND state = 'sent' AND ( \
           ($5::text IS NOT NULL AND message IN (SELECT id FROM messages WHERE message_id_header = $5::text)) \
           OR ($6::text IS NOT NULL AND queue_id = $6::text))",
        &[
            &event.kind.as_str(),
            &event_id,
            &occurred_at,
            &address_key(&event.recipient),
            &header,
            &queue_id,
        ],
    )?;
    Ok(())
}

/// What a claim needs of a message: pinned connection, From, Message-ID, bytes.
type MessageRow = (Option<String>, String, String, Arc<Vec<u8>>);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Queue for Postgres {
    fn claim_deliveries(
        &self,
        connection: &str,
        scope: &[String],
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let token = ulid::Ulid::new().to_string();
        let until = now_ms.saturating_add(millis(lease));
        let scope = scope.to_vec();
        self.with_tx(|tx| {
            // Lapsed leases: the attempt's worker is gone or stuck past any
            // SMTP timeout; the delivery goes back to the queue.
            tx.execute(
                "UPDATE deliveries SET state = 'deferred', lease = NULL, lease_until = NULL \
                 WHERE connection = $1 AND state = 'sending' AND lease_until < $2",
                &[&connection, &now_ms],
            )?;
            let workspaces = tx.query(
                &format!(
                    "SELECT DISTINCT workspace FROM deliveries WHERE connection = $1 AND {PENDING} \
                     ORDER BY workspace"
                ),
                &[&connection],
            )?;
            // Due rows of each workspace, locked; rows another claim holds
            // are skipped. Rows locked here but not chosen stay queued.
            let due = format!(
                "SELECT id, recipient_key, workspace FROM deliveries \
                 WHERE connection = $1 AND workspace = $2 AND {PENDING} AND next_attempt_at <= $3 \
                 ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED"
            );
            let mut per_workspace: Vec<VecDeque<(i64, String, String)>> = Vec::new();
            for w in &workspaces {
                let ws: String = w.try_get(0)?;
                let mut rows = VecDeque::new();
                for r in tx.query(&due, &[&connection, &ws, &now_ms, &(limit as i64)])? {
                    rows.push_back((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
                }
                if !rows.is_empty() {
                    per_workspace.push(rows);
                }
            }
            // Round robin over the workspaces: each gets its turn.
            let mut chosen = Vec::with_capacity(limit);
            while chosen.len() < limit && per_workspace.iter().any(|q| !q.is_empty()) {
                for q in &mut per_workspace {
                    if chosen.len() < limit
                        && let Some(row) = q.pop_front()
                    {
                        chosen.push(row);
                    }
                }
            }
            let is_suppressed = "SELECT reason FROM suppressions WHERE address_key = $1 AND ( \
                   workspace = $2 OR ($2 = '' AND workspace = ANY($3))) LIMIT 1";
            let suppress = format!(
                "UPDATE deliveries SET state = 'suppressed', done_at = $2, result = $3, \
                   attempts = attempts + 1, last_attempt_at = $2 \
                 WHERE id = $1 AND {PENDING} RETURNING message, attempts"
            );
            let attempt = "INSERT INTO delivery_attempts (delivery, n, at, connection, outcome, result) \
                 VALUES ($1, $2, $3, $4, $5, $6)";
            let take = format!(
                "UPDATE deliveries SET state = 'sending', lease = $2, lease_until = $3 \
                 WHERE id = $1 AND {PENDING} \
                 RETURNING message, recipient, workspace, attempts, queued_at"
            );
            let message = "SELECT pinned_connection, from_email, message_id_header, raw FROM messages WHERE id = $1";
            let mut raws: HashMap<String, MessageRow> = HashMap::new();
            let mut touched = BTreeSet::new();
            let mut out = Vec::with_capacity(chosen.len());
            for (id, key, ws) in chosen {
                if let Some(r) = tx.query_opt(is_suppressed, &[&key, &ws, &scope])? {
                    let reason: String = r.try_get(0)?;
                    let result = serde_json::json!({ "suppressed": reason }).to_string();
                    if let Some(r) = tx.query_opt(&suppress, &[&id, &now_ms, &result])? {
                        let m: String = r.try_get(0)?;
                        let n: i64 = r.try_get(1)?;
                        let args: [&(dyn ToSql + Sync); 6] =
                            [&id, &n, &now_ms, &connection, &"suppressed", &result];
                        tx.execute(attempt, &args)?;
                        touched.insert(m);
                    }
                    continue;
                }
                let Some(r) = tx.query_opt(&take, &[&id, &token, &until])? else {
                    continue;
                };
                let m: String = r.try_get(0)?;
                if !raws.contains_key(&m) {
                    let row = tx.query_one(message, &[&m])?;
                    raws.insert(
                        m.clone(),
                        (
                            row.try_get(0)?,
                            row.try_get(1)?,
                            row.try_get(2)?,
                            Arc::new(row.try_get(3)?),
                        ),
                    );
                }
                let Some((pinned, from, header, raw)) = raws.get(&m).cloned() else {
                    continue;
                };
                out.push(ClaimedDelivery {
                    id,
                    message: m,
                    lease: token.clone(),
                    recipient: r.try_get(1)?,
                    workspace: r.try_get(2)?,
                    pinned_connection: pinned,
                    attempts: u32::try_from(r.try_get::<_, i64>(3)?).unwrap_or(u32::MAX),
                    queued_at_ms: r.try_get(4)?,
                    from_email: from,
                    message_id_header: header,
                    raw,
                });
            }
            for m in &touched {
                refresh_status(tx, m)?;
            }
            Ok(out)
        })
    }

    fn settle_deliveries(&self, settlements: &[DeliverySettlement]) -> Result<(), StoreError> {
        if settlements.is_empty() {
            return Ok(());
        }
        self.with_tx(|tx| {
            let mut touched = BTreeSet::new();
            for s in settlements {
                if let Some(message) = status::settle_one(tx, s)? {
                    touched.insert(message);
                }
            }
            for m in &touched {
                refresh_status(tx, m)?;
            }
            Ok(())
        })
    }

    /// Other processes may be sending right now: only deliveries whose
    /// lease has lapsed (their process died or stalled) go back to the
    /// queue; send leases are left to lapse on their own.
    fn recover_in_flight(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, \
                 lease = NULL, lease_until = NULL, next_attempt_at = $1 \
                 WHERE state = 'sending' AND lease_until < $1",
                &[&now_ms],
            )
        })
    }

    fn sent_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.with_client(|c| status::sent_since(c, since_ms))
    }

    fn message(&self, id: &str) -> Result<Option<MessageStatus>, StoreError> {
        self.with_client(|c| status::message(c, id))
    }

    fn messages(&self, query: &MessageQuery) -> Result<Page<MessageSummary>, StoreError> {
        self.with_client(|c| status::messages(c, query))
    }

    fn cancel(&self, id: &str, now_ms: i64) -> Result<Cancel, StoreError> {
        self.with_tx(|tx| {
            if tx
                .query_opt("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", &[&id])?
                .is_none()
            {
                return Ok(Cancel::Missing);
            }
            let cancelled = tx.execute(
                &format!(
                    "UPDATE deliveries SET state = 'cancelled', done_at = $2 WHERE message = $1 AND {PENDING}"
                ),
                &[&id, &now_ms],
            )?;
            let in_flight: i64 = tx
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE message = $1 AND state = 'sending'",
                    &[&id],
                )?
                .try_get(0)?;
            if cancelled > 0 {
                tx.execute(
                    "UPDATE messages SET cancelled_at = coalesce(cancelled_at, $2) WHERE id = $1",
                    &[&id, &now_ms],
                )?;
            }
            refresh_status(tx, id)?;
            Ok(Cancel::Cancelled {
                cancelled: u32::try_from(cancelled).unwrap_or(u32::MAX),
                in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
            })
        })
    }

    fn queue_totals(&self) -> Result<Vec<ConnectionQueue>, StoreError> {
        self.with_client(status::queue_totals)
    }

    fn lease_connection(
        &self,
        connection: &str,
        holder: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let until = now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.with_client(|c| {
            Ok(
                c.query_opt(LEASE_SQL, &[&connection, &holder, &until, &now_ms])?
                    .is_some(),
            )
        })
    }

    fn release_connection(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        self.with_client(|c| c.execute(RELEASE_SQL, &[&connection, &holder]).map(drop))
    }
}
