//! The SQLite side of the sending queue: messages queued inside the
//! group-commit transaction, and the claim/settle/status calls of [`Queue`],
//! each one short transaction (a claim never spans an attempt).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension as _, params, params_from_iter};

use super::{Sqlite, decode_cursor, encode_cursor};
use crate::store::queue::{
    Attempt, Cancel, ClaimedDelivery, ConnectionQueue, CorrelatedEvent, DeliveryOutcome,
    DeliverySettlement, Enqueued, MessageQuery, MessageStatus, MessageSummary, NewMessage, Queue,
    RecipientStatus, parse_field,
};
use crate::store::queue::{LEASE_SQL, RELEASE_SQL};
use crate::store::{Order, Page, StoreError, address_key, format_ms};

/// States a delivery waits in.
const PENDING: &str = "state IN ('queued', 'deferred')";

/// Queues messages (called by `apply` inside the group-commit transaction).
/// A repeated idempotency key returns the first message's id and queues
/// nothing, also when both arrive in the same commit.
pub(super) fn enqueue(
    tx: &rusqlite::Connection,
    messages: &[NewMessage],
    now_ms: i64,
    next_id: &mut dyn FnMut() -> String,
) -> rusqlite::Result<Vec<Enqueued>> {
    let mut out = Vec::with_capacity(messages.len());
    let mut find = tx.prepare_cached(
        "SELECT id FROM messages WHERE idempotency_scope = ?1 AND idempotency_key = ?2",
    )?;
    let mut body = tx.prepare_cached("INSERT INTO message_bodies (raw) VALUES (?1)")?;
    let mut message = tx.prepare_cached(
        "INSERT INTO messages (id, workspace, pinned_connection, idempotency_scope, idempotency_key, \
         from_email, subject, message_id_header, body, size, status, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11)",
    )?;
    let mut delivery = tx.prepare_cached(
        "INSERT INTO deliveries (message, recipient, recipient_key, field, workspace, connection, \
         state, queued_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?7)",
    )?;
    for m in messages {
        let scope = m.idempotency_scope();
        if let Some(key) = &m.idempotency_key
            && let Some(id) = find
                .query_row(params![scope, key], |r| r.get::<_, String>(0))
                .optional()?
        {
            out.push(Enqueued {
                id,
                duplicate: true,
            });
            continue;
        }
        let id = next_id();
        body.execute([&m.raw])?;
        let body_id = tx.last_insert_rowid();
        message.execute(params![
            id,
            m.workspace,
            m.pinned_connection,
            scope,
            m.idempotency_key,
            m.from_email,
            m.subject,
            m.message_id_header,
            body_id,
            m.raw.len() as i64,
            now_ms,
        ])?;
        for (address, field) in &m.recipients {
            delivery.execute(params![
                id,
                address,
                address_key(address),
                field.as_str(),
                m.workspace,
                m.connection,
                now_ms,
            ])?;
        }
        out.push(Enqueued {
            id,
            duplicate: false,
        });
    }
    Ok(out)
}

/// Recomputes a message's status from its deliveries.
fn refresh_status(tx: &rusqlite::Connection, message: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE messages SET status = (SELECT CASE \
           WHEN sum(state IN ('queued', 'sending', 'deferred')) > 0 THEN 'pending' \
           WHEN sum(state = 'sent') = count(*) THEN 'sent' \
           WHEN sum(state = 'sent') > 0 THEN 'partial' \
           WHEN sum(state = 'cancelled') = count(*) THEN 'cancelled' \
           ELSE 'failed' END FROM deliveries WHERE message = ?1) WHERE id = ?1",
    )?
    .execute([message])?;
    Ok(())
}

/// A new suppression ends the pending deliveries of that recipient in that
/// workspace (and in messages sent without a workspace, whose scope the
/// store does not know; they are caught at their next claim).
pub(super) fn suppressed(
    tx: &rusqlite::Connection,
    workspace: &str,
    key: &str,
    reason: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let result = serde_json::json!({ "suppressed": reason }).to_string();
    let messages: Vec<String> = tx
        .prepare_cached(&format!(
            "UPDATE deliveries SET state = 'suppressed', done_at = ?3, result = ?4 \
             WHERE recipient_key = ?1 AND workspace = ?2 AND {PENDING} RETURNING message"
        ))?
        .query_map(params![key, workspace, at_ms, result], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for m in messages.iter().collect::<BTreeSet<_>>() {
        refresh_status(tx, m)?;
    }
    Ok(())
}

/// Records a provider event on the deliveries it is about: same recipient,
/// and the message's Message-ID or the queue id the server returned.
pub(super) fn correlate(
    tx: &rusqlite::Connection,
    event: &crate::event::NormalizedEvent,
    event_id: &str,
    occurred_at: i64,
) -> rusqlite::Result<()> {
    let Some((header, queue_id)) = crate::store::queue::correlation_keys(event) else {
        return Ok(());
    };
    tx.prepare_cached(
        "UPDATE deliveries SET event_kind = ?1, event_id = ?2, event_at = ?3 \
         WHERE recipient_key = ?4 AND state = 'sent' AND ( \
           (?5 IS NOT NULL AND message IN (SELECT id FROM messages WHERE message_id_header = ?5)) \
           OR (?6 IS NOT NULL AND queue_id = ?6))",
    )?
    .execute(params![
        event.kind.as_str(),
        event_id,
        occurred_at,
        address_key(&event.recipient),
        header,
        queue_id,
    ])?;
    Ok(())
}

/// What a claim needs of a message: pinned connection, From, Message-ID, bytes.
type MessageRow = (Option<String>, String, String, Arc<Vec<u8>>);

fn json(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

impl Queue for Sqlite {
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
        let until = crate::store::ms_after(now_ms, lease);
        let scope_json = serde_json::to_string(scope).unwrap_or_else(|_| "[]".into());
        self.with_writer(|tx| {
            // Lapsed leases: the attempt's worker is gone or stuck past any
            // SMTP timeout; the delivery goes back to the queue.
            tx.prepare_cached(
                "UPDATE deliveries SET state = 'deferred', lease = NULL, lease_until = NULL \
                 WHERE connection = ?1 AND state = 'sending' AND lease_until < ?2",
            )?
            .execute(params![connection, now_ms])?;
            // The workspaces with pending rows, by a skip scan of the index.
            let workspaces: Vec<String> = tx
                .prepare_cached(&format!(
                    "WITH RECURSIVE w(ws) AS ( \
                       SELECT min(workspace) FROM deliveries WHERE connection = ?1 AND {PENDING} \
                       UNION ALL \
                       SELECT (SELECT min(workspace) FROM deliveries \
                               WHERE connection = ?1 AND {PENDING} AND workspace > w.ws) \
                       FROM w WHERE w.ws IS NOT NULL) \
                     SELECT ws FROM w WHERE ws IS NOT NULL"
                ))?
                .query_map([connection], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut per_workspace: Vec<std::collections::VecDeque<(i64, String, String)>> =
                Vec::new();
            {
                let mut due = tx.prepare_cached(&format!(
                    "SELECT d.id, d.recipient_key, d.workspace FROM deliveries d \
                     WHERE d.connection = ?1 AND d.workspace = ?2 AND d.{PENDING} \
                       AND d.next_attempt_at <= ?3 ORDER BY d.next_attempt_at LIMIT ?4"
                ))?;
                for ws in &workspaces {
                    let rows = due
                        .query_map(params![connection, ws, now_ms, limit as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?
                        .collect::<rusqlite::Result<std::collections::VecDeque<_>>>()?;
                    if !rows.is_empty() {
                        per_workspace.push(rows);
                    }
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
            let mut is_suppressed = tx.prepare_cached(
                "SELECT reason FROM suppressions WHERE address_key = ?1 AND ( \
                   workspace = ?2 OR (?2 = '' AND workspace IN (SELECT value FROM json_each(?3)))) \
                 LIMIT 1",
            )?;
            let mut suppress = tx.prepare_cached(&format!(
                "UPDATE deliveries SET state = 'suppressed', done_at = ?2, result = ?3, \
                   attempts = attempts + 1, last_attempt_at = ?2 \
                 WHERE id = ?1 AND {PENDING} RETURNING message, attempts"
            ))?;
            let mut attempt = tx.prepare_cached(
                "INSERT INTO delivery_attempts (delivery, n, at, connection, outcome, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut take = tx.prepare_cached(&format!(
                "UPDATE deliveries SET state = 'sending', lease = ?2, lease_until = ?3 \
                 WHERE id = ?1 AND {PENDING} \
                 RETURNING message, recipient, workspace, attempts, queued_at"
            ))?;
            let mut message = tx.prepare_cached(
                "SELECT m.pinned_connection, m.from_email, m.message_id_header, b.raw \
                 FROM messages m JOIN message_bodies b ON b.id = m.body WHERE m.id = ?1",
            )?;
            let mut raws: HashMap<String, MessageRow> = HashMap::new();
            let mut touched = BTreeSet::new();
            let mut out = Vec::with_capacity(chosen.len());
            for (id, key, ws) in chosen {
                let reason: Option<String> = is_suppressed
                    .query_row(params![key, ws, scope_json], |r| r.get(0))
                    .optional()?;
                if let Some(reason) = reason {
                    let result = serde_json::json!({ "suppressed": reason }).to_string();
                    if let Some((m, n)) = suppress
                        .query_row(params![id, now_ms, result], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                        })
                        .optional()?
                    {
                        attempt.execute(params![
                            id,
                            n,
                            now_ms,
                            connection,
                            "suppressed",
                            result
                        ])?;
                        touched.insert(m);
                    }
                    continue;
                }
                let Some((m, recipient, workspace, attempts, queued_at)) = take
                    .query_row(params![id, token, until], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?
                else {
                    continue;
                };
                if !raws.contains_key(&m) {
                    let row = message.query_row([&m], |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            Arc::new(r.get::<_, Vec<u8>>(3)?),
                        ))
                    })?;
                    raws.insert(m.clone(), row);
                }
                let Some((pinned, from, header, raw)) = raws.get(&m).cloned() else {
                    continue;
                };
                out.push(ClaimedDelivery {
                    id,
                    message: m,
                    lease: token.clone(),
                    recipient,
                    workspace,
                    pinned_connection: pinned,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    queued_at_ms: queued_at,
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
        self.with_writer(|tx| {
            let mut touched = BTreeSet::new();
            let mut attempt = tx.prepare_cached(
                "INSERT INTO delivery_attempts (delivery, n, at, connection, outcome, result, queue_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for s in settlements {
                // The classification as JSON, serialised once for both the
                // delivery row and its attempt.
                let text = match &s.outcome {
                    DeliveryOutcome::Sent { result, .. }
                    | DeliveryOutcome::Deferred { result, .. }
                    | DeliveryOutcome::Failed { result } => Some(result.to_string()),
                    DeliveryOutcome::Suppressed { reason } => {
                        Some(serde_json::json!({ "suppressed": reason }).to_string())
                    }
                    DeliveryOutcome::Moved { result, .. } => result.as_ref().map(|r| r.to_string()),
                    DeliveryOutcome::Released { .. } => None,
                };
                let text_value = || text.clone().map_or(SqlValue::Null, SqlValue::Text);
                let (sql, args): (&str, Vec<SqlValue>) = match &s.outcome {
                    DeliveryOutcome::Sent { queue_id, .. } => (
                        "UPDATE deliveries SET state = 'sent', lease = NULL, lease_until = NULL, \
                         attempts = attempts + 1, last_attempt_at = ?3, done_at = ?4, result = ?5, \
                         queue_id = ?6, connection = ?7 \
                         WHERE id = ?1 AND lease = ?2 RETURNING message, attempts",
                        vec![
                            crate::store::now_ms().into(),
                            text_value(),
                            queue_id.clone().map_or(SqlValue::Null, SqlValue::Text),
                            s.connection.clone().into(),
                        ],
                    ),
                    DeliveryOutcome::Deferred {
                        next_attempt_at_ms, ..
                    } => (
                        "UPDATE deliveries SET state = 'deferred', lease = NULL, lease_until = NULL, \
                         attempts = attempts + 1, last_attempt_at = ?3, next_attempt_at = ?4, \
                         result = ?5 WHERE id = ?1 AND lease = ?2 RETURNING message, attempts",
                        vec![(*next_attempt_at_ms).into(), text_value()],
                    ),
                    DeliveryOutcome::Failed { .. } => (
                        "UPDATE deliveries SET state = 'failed', lease = NULL, lease_until = NULL, \
                         attempts = attempts + 1, last_attempt_at = ?3, done_at = ?4, result = ?5 \
                         WHERE id = ?1 AND lease = ?2 RETURNING message, attempts",
                        vec![crate::store::now_ms().into(), text_value()],
                    ),
                    DeliveryOutcome::Suppressed { .. } => (
                        "UPDATE deliveries SET state = 'suppressed', lease = NULL, lease_until = NULL, \
                         attempts = attempts + 1, last_attempt_at = ?3, done_at = ?4, result = ?5 \
                         WHERE id = ?1 AND lease = ?2 RETURNING message, attempts",
                        vec![crate::store::now_ms().into(), text_value()],
                    ),
                    DeliveryOutcome::Moved { to, .. } => (
                        "UPDATE deliveries SET state = 'queued', lease = NULL, lease_until = NULL, \
                         attempts = attempts + 1, last_attempt_at = ?3, next_attempt_at = ?3, \
                         connection = ?4, result = coalesce(?5, result) \
                         WHERE id = ?1 AND lease = ?2 RETURNING message, attempts",
                        vec![to.clone().into(), text_value()],
                    ),
                    DeliveryOutcome::Released { next_attempt_at_ms } => (
                        "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, \
                         lease = NULL, lease_until = NULL, next_attempt_at = max(?3, ?4) \
                         WHERE id = ?1 AND lease = ?2 RETURNING message, 0",
                        vec![(*next_attempt_at_ms).into()],
                    ),
                };
                let mut values: Vec<SqlValue> =
                    vec![s.id.into(), s.lease.clone().into(), s.at_ms.into()];
                values.extend(args);
                let Some((message, n)) = tx
                    .prepare_cached(sql)?
                    .query_row(params_from_iter(values), |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?
                else {
                    continue;
                };
                let (outcome, result, queue_id) = match &s.outcome {
                    DeliveryOutcome::Sent { queue_id, .. } => ("sent", text, queue_id.clone()),
                    DeliveryOutcome::Deferred { .. } => ("deferred", text, None),
                    DeliveryOutcome::Failed { .. } => ("failed", text, None),
                    DeliveryOutcome::Suppressed { .. } => ("suppressed", text, None),
                    DeliveryOutcome::Moved { to, result } => (
                        "moved",
                        Some(
                            serde_json::json!({ "moved_to": to, "result": result }).to_string(),
                        ),
                        None,
                    ),
                    DeliveryOutcome::Released { .. } => {
                        touched.insert(message);
                        continue;
                    }
                };
                attempt.execute(params![
                    s.id,
                    n,
                    s.at_ms,
                    s.connection,
                    outcome,
                    result,
                    queue_id
                ])?;
                touched.insert(message);
            }
            for m in &touched {
                refresh_status(tx, m)?;
            }
            Ok(())
        })
    }

    fn recover_in_flight(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.with_writer(|tx| {
            let n = tx.execute(
                "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, \
                 lease = NULL, lease_until = NULL, next_attempt_at = ?1 WHERE state = 'sending'",
                [now_ms],
            )?;
            // One process per SQLite file: a send lease left by the last
            // one (killed before it released it) is void, not waited out.
            tx.execute("DELETE FROM send_leases", [])?;
            Ok(n as u64)
        })
    }

    fn sent_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.with_reader(|c| {
            c.prepare_cached(
                "SELECT connection, at FROM delivery_attempts WHERE outcome = 'sent' AND at >= ?1",
            )?
            .query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    fn message(&self, id: &str) -> Result<Option<MessageStatus>, StoreError> {
        self.with_reader(|c| {
            let Some(mut status) = c
                .prepare_cached(
                    "SELECT id, status, workspace, pinned_connection, from_email, subject, \
                     message_id_header, size, idempotency_key, created_at, cancelled_at \
                     FROM messages WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    let workspace: String = r.get(2)?;
                    Ok(MessageStatus {
                        id: r.get(0)?,
                        status: r.get(1)?,
                        workspace: (!workspace.is_empty()).then_some(workspace),
                        connection: r.get(3)?,
                        from: r.get(4)?,
                        subject: r.get(5)?,
                        message_id: format!("<{}>", r.get::<_, String>(6)?),
                        size: r.get::<_, i64>(7)?.try_into().unwrap_or(0),
                        idempotency_key: r.get(8)?,
                        created_at: format_ms(r.get(9)?),
                        cancelled_at: r.get::<_, Option<i64>>(10)?.map(format_ms),
                        recipients: Vec::new(),
                    })
                })
                .optional()?
            else {
                return Ok(None);
            };
            let mut history = c.prepare_cached(
                "SELECT n, at, connection, outcome, result, queue_id FROM delivery_attempts \
                 WHERE delivery = ?1 ORDER BY n",
            )?;
            let rows: Vec<(i64, RecipientStatus)> = c
                .prepare_cached(
                    "SELECT id, recipient, field, state, connection, attempts, next_attempt_at, result, \
                     queue_id, done_at, event_kind, event_id, event_at FROM deliveries \
                     WHERE message = ?1 ORDER BY id",
                )?
                .query_map([id], |r| {
                    let state: String = r.get(3)?;
                    let event_kind: Option<String> = r.get(10)?;
                    let shown = match event_kind.as_deref() {
                        Some(k @ ("bounced" | "complained")) if state == "sent" => k.to_owned(),
                        _ => state.clone(),
                    };
                    let event = match (event_kind, r.get::<_, Option<String>>(11)?) {
                        (Some(kind), Some(id)) => Some(CorrelatedEvent {
                            kind,
                            id,
                            occurred_at: r
                                .get::<_, Option<i64>>(12)?
                                .and_then(crate::event::format_unix_seconds)
                                .unwrap_or_default(),
                        }),
                        _ => None,
                    };
                    let waiting = matches!(state.as_str(), "queued" | "deferred");
                    Ok((
                        r.get(0)?,
                        RecipientStatus {
                            address: r.get(1)?,
                            field: parse_field(&r.get::<_, String>(2)?),
                            status: shown,
                            connection: r.get(4)?,
                            attempts: r.get::<_, i64>(5)?.try_into().unwrap_or(0),
                            next_attempt_at: waiting.then(|| r.get::<_, i64>(6)).transpose()?.map(format_ms),
                            last_result: json(r.get(7)?),
                            queue_id: r.get(8)?,
                            done_at: r.get::<_, Option<i64>>(9)?.map(format_ms),
                            event,
                            attempts_history: Vec::new(),
                        },
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (delivery, mut recipient) in rows {
                recipient.attempts_history = history
                    .query_map([delivery], |r| {
                        Ok(Attempt {
                            n: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                            at: format_ms(r.get(1)?),
                            connection: r.get(2)?,
                            outcome: r.get(3)?,
                            result: json(r.get(4)?),
                            queue_id: r.get(5)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                status.recipients.push(recipient);
            }
            Ok(Some(status))
        })
    }

    fn messages(&self, query: &MessageQuery) -> Result<Page<MessageSummary>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let after = match &query.cursor {
            Some(c) => Some(decode_cursor(c)?.1),
            None => None,
        };
        self.with_reader(|c| {
            let mut sql = String::from(
                "SELECT m.id, m.status, m.workspace, m.subject, m.from_email, \
                 (SELECT count(*) FROM deliveries d WHERE d.message = m.id), m.created_at \
                 FROM messages m WHERE 1 = 1",
            );
            let mut args: Vec<SqlValue> = Vec::new();
            if let Some(s) = &query.status {
                args.push(s.clone().into());
                sql.push_str(&format!(" AND m.status = ?{}", args.len()));
            }
            if let Some(w) = &query.workspace {
                args.push(w.clone().into());
                sql.push_str(&format!(" AND m.workspace = ?{}", args.len()));
            }
            if let Some(conn) = &query.connection {
                args.push(conn.clone().into());
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message = m.id AND d.connection = ?{})",
                    args.len()
                ));
            }
            if let Some(after) = &after {
                args.push(after.clone().into());
                sql.push_str(&format!(" AND m.id < ?{}", args.len()));
            }
            args.push((limit as i64 + 1).into());
            sql.push_str(&format!(" ORDER BY m.id DESC LIMIT ?{}", args.len()));
            let mut items: Vec<MessageSummary> = c
                .prepare(&sql)?
                .query_map(params_from_iter(args), |r| {
                    let workspace: String = r.get(2)?;
                    Ok(MessageSummary {
                        id: r.get(0)?,
                        status: r.get(1)?,
                        workspace: (!workspace.is_empty()).then_some(workspace),
                        subject: r.get(3)?,
                        from: r.get(4)?,
                        recipients: r.get::<_, i64>(5)?.try_into().unwrap_or(0),
                        created_at: format_ms(r.get(6)?),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let next = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|m| encode_cursor(Order::Desc, &m.id))
            } else {
                None
            };
            Ok(Page { items, next })
        })
    }

    fn cancel(&self, id: &str, now_ms: i64) -> Result<Cancel, StoreError> {
        self.with_writer(|tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM messages WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(Cancel::Missing);
            }
            let cancelled = tx.execute(
                &format!(
                    "UPDATE deliveries SET state = 'cancelled', done_at = ?2 WHERE message = ?1 AND {PENDING}"
                ),
                params![id, now_ms],
            )?;
            let in_flight: i64 = tx.query_row(
                "SELECT count(*) FROM deliveries WHERE message = ?1 AND state = 'sending'",
                [id],
                |r| r.get(0),
            )?;
            if cancelled > 0 {
                tx.execute(
                    "UPDATE messages SET cancelled_at = coalesce(cancelled_at, ?2) WHERE id = ?1",
                    params![id, now_ms],
                )?;
            }
            refresh_status(tx, id)?;
            Ok(Cancel::Cancelled {
                cancelled: u32::try_from(cancelled).unwrap_or(u32::MAX),
                in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
            })
        })
    }

    fn lease_connection(
        &self,
        connection: &str,
        holder: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let until = crate::store::ms_after(now_ms, ttl);
        self.with_writer(|tx| {
            tx.prepare_cached(LEASE_SQL)?
                .query_row(params![connection, holder, until, now_ms], |_| Ok(()))
                .optional()
                .map(|held| held.is_some())
        })
    }

    fn release_connection(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        self.with_writer(|tx| {
            tx.prepare_cached(RELEASE_SQL)?
                .execute(params![connection, holder])
                .map(drop)
        })
    }

    fn queue_totals(&self) -> Result<Vec<ConnectionQueue>, StoreError> {
        self.with_reader(queue_totals)
    }
}

const QUEUE_TOTALS: &str = "SELECT connection, sum(state = 'queued'), sum(state = 'sending'), \
     sum(state = 'deferred'), count(*), min(queued_at) FROM deliveries \
     WHERE state IN ('queued', 'sending', 'deferred') GROUP BY connection ORDER BY connection";

/// The query plan of [`queue_totals`] (its test).
#[cfg(test)]
pub(super) fn queue_totals_plan(
    c: &rusqlite::Connection,
    out: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {QUEUE_TOTALS}"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.push(r.get(3)?);
    }
    Ok(())
}

/// Pending totals per connection that has pending deliveries, counted from
/// the `deliveries_pending` index alone (connection, state, queued_at): the
/// table's rows are not read, which matters with a deep queue and a
/// monitor polling it.
pub(super) fn queue_totals(c: &rusqlite::Connection) -> rusqlite::Result<Vec<ConnectionQueue>> {
    c.prepare_cached(QUEUE_TOTALS)?
        .query_map([], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            Ok(ConnectionQueue {
                connection: r.get(0)?,
                queued: n(1)?,
                sending: n(2)?,
                deferred: n(3)?,
                pending: n(4)?,
                oldest_queued_at_ms: r.get(5)?,
            })
        })?
        .collect()
}
