//! Settling one delivery, and the status reads of the queue (messages,
//! quota history, totals).

use super::super::sql::{Db, Sql, Tx};
use super::super::{Args, decode_cursor, encode_cursor};
use crate::store::queue::{
    Attempt, ConnectionQueue, CorrelatedEvent, DeliveryOutcome, DeliverySettlement, MessageQuery,
    MessageStatus, MessageSummary, RecipientStatus, parse_field,
};
use crate::store::{Order, Page, StoreError, format_ms, now_ms};
use postgres::GenericClient;
use postgres::types::ToSql;

fn json(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

/// Applies settlements of accepted deliveries whose lease is still the
/// delivery's, and records their attempts: two statements for all.
pub(super) fn settle_sent(
    tx: &mut Tx<'_, '_>,
    sent: &[&DeliverySettlement],
    touched: &mut std::collections::BTreeSet<String>,
) -> Result<(), StoreError> {
    if sent.is_empty() {
        return Ok(());
    }
    let n = sent.len();
    let (mut ids, mut leases, mut ats, mut results, mut queue_ids, mut connections) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in sent {
        let DeliveryOutcome::Sent { queue_id, result } = &s.outcome else {
            continue;
        };
        ids.push(s.id);
        leases.push(s.lease.as_str());
        ats.push(s.at_ms);
        results.push(result.to_string());
        queue_ids.push(queue_id.as_deref());
        connections.push(s.connection.as_str());
    }
    let rows = tx.query(
        "UPDATE deliveries AS d SET state = 'sent', lease = NULL, lease_until = NULL, \
           attempts = d.attempts + 1, last_attempt_at = u.at, done_at = $7, result = u.result, \
           queue_id = u.queue_id, connection = u.connection \
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) \
           AS u(id, lease, at, result, queue_id, connection) \
         WHERE d.id = u.id AND d.lease = u.lease \
         RETURNING d.id, d.message, d.attempts, u.at, u.connection, u.result, u.queue_id",
        &[
            &ids,
            &leases,
            &ats,
            &results,
            &queue_ids,
            &connections,
            &now_ms(),
        ],
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let (mut a_ids, mut a_n, mut a_at, mut a_conn, mut a_result, mut a_queue) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for r in &rows {
        a_ids.push(r.try_get::<_, i64>(0)?);
        touched.insert(r.try_get::<_, String>(1)?);
        a_n.push(r.try_get::<_, i64>(2)?);
        a_at.push(r.try_get::<_, i64>(3)?);
        a_conn.push(r.try_get::<_, String>(4)?);
        a_result.push(r.try_get::<_, String>(5)?);
        a_queue.push(r.try_get::<_, Option<String>>(6)?);
    }
    tx.execute(
        "INSERT INTO delivery_attempts (delivery, n, at, connection, outcome, result, queue_id) \
         SELECT id, n, at, connection, 'sent', result, queue_id FROM unnest( \
           $1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[]) \
           AS u(id, n, at, connection, result, queue_id)",
        &[&a_ids, &a_n, &a_at, &a_conn, &a_result, &a_queue],
    )?;
    Ok(())
}

/// Applies one settlement if its lease is still the delivery's, records
/// the attempt, and returns the message to refresh (none if ignored).
pub(super) fn settle_one(
    tx: &mut Tx<'_, '_>,
    s: &DeliverySettlement,
) -> Result<Option<String>, StoreError> {
    let done = now_ms();
    let head: [&(dyn ToSql + Sync); 3] = [&s.id, &s.lease, &s.at_ms];
    let rows = match &s.outcome {
        DeliveryOutcome::Sent { queue_id, result } => tx.query(
            "UPDATE deliveries SET state = 'sent', lease = NULL, lease_until = NULL, \
             attempts = attempts + 1, last_attempt_at = $3, done_at = $4, result = $5, \
             queue_id = $6, connection = $7 \
             WHERE id = $1 AND lease = $2 RETURNING message, attempts",
            &[
                head[0],
                head[1],
                head[2],
                &done,
                &result.to_string(),
                queue_id,
                &s.connection,
            ],
        )?,
        DeliveryOutcome::Deferred {
            next_attempt_at_ms,
            result,
        } => tx.query(
            "UPDATE deliveries SET state = 'deferred', lease = NULL, lease_until = NULL, \
             attempts = attempts + 1, last_attempt_at = $3, next_attempt_at = $4, \
             result = $5 WHERE id = $1 AND lease = $2 RETURNING message, attempts",
            &[
                head[0],
                head[1],
                head[2],
                next_attempt_at_ms,
                &result.to_string(),
            ],
        )?,
        DeliveryOutcome::Failed { result } => tx.query(
            "UPDATE deliveries SET state = 'failed', lease = NULL, lease_until = NULL, \
             attempts = attempts + 1, last_attempt_at = $3, done_at = $4, result = $5 \
             WHERE id = $1 AND lease = $2 RETURNING message, attempts",
            &[head[0], head[1], head[2], &done, &result.to_string()],
        )?,
        DeliveryOutcome::Suppressed { reason } => tx.query(
            "UPDATE deliveries SET state = 'suppressed', lease = NULL, lease_until = NULL, \
             attempts = attempts + 1, last_attempt_at = $3, done_at = $4, result = $5 \
             WHERE id = $1 AND lease = $2 RETURNING message, attempts",
            &[
                head[0],
                head[1],
                head[2],
                &done,
                &serde_json::json!({ "suppressed": reason }).to_string(),
            ],
        )?,
        DeliveryOutcome::Moved { to, result } => tx.query(
            "UPDATE deliveries SET state = 'queued', lease = NULL, lease_until = NULL, \
             attempts = attempts + 1, last_attempt_at = $3, next_attempt_at = $3, \
             connection = $4, result = coalesce($5, result) \
             WHERE id = $1 AND lease = $2 RETURNING message, attempts",
            &[
                head[0],
                head[1],
                head[2],
                to,
                &result.as_ref().map(ToString::to_string),
            ],
        )?,
        DeliveryOutcome::Released { next_attempt_at_ms } => tx.query(
            "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, \
             lease = NULL, lease_until = NULL, next_attempt_at = GREATEST($3::bigint, $4::bigint) \
             WHERE id = $1 AND lease = $2 RETURNING message, 0::bigint",
            &[head[0], head[1], head[2], next_attempt_at_ms],
        )?,
    };
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let message: String = row.try_get(0)?;
    let n: i64 = row.try_get(1)?;
    let (outcome, result, queue_id) = match &s.outcome {
        DeliveryOutcome::Sent { queue_id, result } => {
            ("sent", Some(result.to_string()), queue_id.clone())
        }
        DeliveryOutcome::Deferred { result, .. } => ("deferred", Some(result.to_string()), None),
        DeliveryOutcome::Failed { result } => ("failed", Some(result.to_string()), None),
        DeliveryOutcome::Suppressed { reason } => (
            "suppressed",
            Some(serde_json::json!({ "suppressed": reason }).to_string()),
            None,
        ),
        DeliveryOutcome::Moved { to, result } => (
            "moved",
            Some(serde_json::json!({ "moved_to": to, "result": result }).to_string()),
            None,
        ),
        DeliveryOutcome::Released { .. } => return Ok(Some(message)),
    };
    tx.execute(
        "INSERT INTO delivery_attempts (delivery, n, at, connection, outcome, result, queue_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &s.id,
            &n,
            &s.at_ms,
            &s.connection,
            &outcome,
            &result,
            &queue_id,
        ],
    )?;
    Ok(Some(message))
}

/// One message with its recipients and attempts.
pub(super) fn message<C: GenericClient>(
    c: &mut Sql<'_, C>,
    id: &str,
) -> Result<Option<MessageStatus>, StoreError> {
    let Some(r) = c.query_opt(
        "SELECT id, status, workspace, pinned_connection, from_email, subject, \
         message_id_header, size, idempotency_key, created_at, cancelled_at \
         FROM messages WHERE id = $1",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let workspace: String = r.try_get(2)?;
    let mut status = MessageStatus {
        id: r.try_get(0)?,
        status: r.try_get(1)?,
        workspace: (!workspace.is_empty()).then_some(workspace),
        connection: r.try_get(3)?,
        from: r.try_get(4)?,
        subject: r.try_get(5)?,
        message_id: format!("<{}>", r.try_get::<_, String>(6)?),
        size: r.try_get::<_, i64>(7)?.try_into().unwrap_or(0),
        idempotency_key: r.try_get(8)?,
        created_at: format_ms(r.try_get(9)?),
        cancelled_at: r.try_get::<_, Option<i64>>(10)?.map(format_ms),
        recipients: Vec::new(),
    };
    let history = "SELECT n, at, connection, outcome, result, queue_id FROM delivery_attempts \
         WHERE delivery = $1 ORDER BY n";
    let rows = c.query(
        "SELECT id, recipient, field, state, connection, attempts, next_attempt_at, result, \
         queue_id, done_at, event_kind, event_id, event_at FROM deliveries \
         WHERE message = $1 ORDER BY id",
        &[&id],
    )?;
    for r in &rows {
        let delivery: i64 = r.try_get(0)?;
        let state: String = r.try_get(3)?;
        let event_kind: Option<String> = r.try_get(10)?;
        let shown = match event_kind.as_deref() {
            Some(k @ ("bounced" | "complained")) if state == "sent" => k.to_owned(),
            _ => state.clone(),
        };
        let event = match (event_kind, r.try_get::<_, Option<String>>(11)?) {
            (Some(kind), Some(id)) => Some(CorrelatedEvent {
                kind,
                id,
                occurred_at: r
                    .try_get::<_, Option<i64>>(12)?
                    .and_then(crate::event::format_unix_seconds)
                    .unwrap_or_default(),
            }),
            _ => None,
        };
        let waiting = matches!(state.as_str(), "queued" | "deferred");
        let mut attempts_history = Vec::new();
        for h in c.query(history, &[&delivery])? {
            attempts_history.push(Attempt {
                n: h.try_get::<_, i64>(0)?.try_into().unwrap_or(0),
                at: format_ms(h.try_get(1)?),
                connection: h.try_get(2)?,
                outcome: h.try_get(3)?,
                result: json(h.try_get(4)?),
                queue_id: h.try_get(5)?,
            });
        }
        status.recipients.push(RecipientStatus {
            address: r.try_get(1)?,
            field: parse_field(&r.try_get::<_, String>(2)?),
            status: shown,
            connection: r.try_get(4)?,
            attempts: r.try_get::<_, i64>(5)?.try_into().unwrap_or(0),
            next_attempt_at: if waiting {
                Some(format_ms(r.try_get(6)?))
            } else {
                None
            },
            last_result: json(r.try_get(7)?),
            queue_id: r.try_get(8)?,
            done_at: r.try_get::<_, Option<i64>>(9)?.map(format_ms),
            event,
            attempts_history,
        });
    }
    Ok(Some(status))
}

/// One page of messages, newest first.
pub(super) fn messages(
    c: &mut Db<'_>,
    query: &MessageQuery,
) -> Result<Page<MessageSummary>, StoreError> {
    let limit = query.limit.clamp(1, 1000);
    let mut sql = String::from(
        "SELECT m.id, m.status, m.workspace, m.subject, m.from_email, \
         (SELECT count(*) FROM deliveries d WHERE d.message = m.id), m.created_at \
         FROM messages m WHERE true",
    );
    let mut args = Args::default();
    if let Some(s) = &query.status {
        sql.push_str(&format!(" AND m.status = {}", args.push(s.clone())));
    }
    if let Some(w) = &query.workspace {
        sql.push_str(&format!(" AND m.workspace = {}", args.push(w.clone())));
    }
    if let Some(conn) = &query.connection {
        let p = args.push(conn.clone());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message = m.id AND d.connection = {p})"
        ));
    }
    if let Some(cursor) = &query.cursor {
        let after = decode_cursor(cursor)?.1;
        sql.push_str(&format!(" AND m.id < {}", args.push(after)));
    }
    sql.push_str(&format!(" ORDER BY m.id DESC LIMIT {}", limit + 1));
    let rows = c.query_uncached(&sql, &args.refs())?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let workspace: String = r.try_get(2)?;
        items.push(MessageSummary {
            id: r.try_get(0)?,
            status: r.try_get(1)?,
            workspace: (!workspace.is_empty()).then_some(workspace),
            subject: r.try_get(3)?,
            from: r.try_get(4)?,
            recipients: r.try_get::<_, i64>(5)?.try_into().unwrap_or(0),
            created_at: format_ms(r.try_get(6)?),
        });
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|m| encode_cursor(Order::Desc, &m.id))
    } else {
        None
    };
    Ok(Page { items, next })
}

/// Sends accepted per connection at or after `since_ms`.
pub(super) fn sent_since(c: &mut Db<'_>, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = c.query(
        "SELECT connection, at FROM delivery_attempts WHERE outcome = 'sent' AND at >= $1",
        &[&since_ms],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push((r.try_get(0)?, r.try_get(1)?));
    }
    Ok(out)
}

/// Pending totals per connection that has pending deliveries.
pub(in crate::store::postgres) fn queue_totals(
    c: &mut Db<'_>,
) -> Result<Vec<ConnectionQueue>, StoreError> {
    let rows = c.query(
        "SELECT connection, count(*) FILTER (WHERE state = 'queued'), \
         count(*) FILTER (WHERE state = 'sending'), count(*) FILTER (WHERE state = 'deferred'), \
         count(*), min(queued_at) FROM deliveries \
         WHERE state IN ('queued', 'sending', 'deferred') GROUP BY connection ORDER BY connection",
        &[],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let n = |i: usize| {
            r.try_get::<_, i64>(i)
                .map(|v| u64::try_from(v).unwrap_or(0))
        };
        out.push(ConnectionQueue {
            connection: r.try_get(0)?,
            queued: n(1)?,
            sending: n(2)?,
            deferred: n(3)?,
            pending: n(4)?,
            oldest_queued_at_ms: r.try_get(5)?,
        });
    }
    Ok(out)
}
