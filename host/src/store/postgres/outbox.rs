//! The PostgreSQL side of the forwarding outbox: rows queued inside the
//! events transaction, and the claim/settle calls of [`Outbox`]. A claim
//! locks its candidates `FOR UPDATE SKIP LOCKED` and leases them in the
//! same short transaction, so processes sharing the database never claim
//! the same row; a row another process is leasing right now is skipped,
//! not waited for.

use std::time::Duration;

use super::sql::Tx;
use super::{Args, EVENT_COLUMNS, Postgres, decode_cursor, encode_cursor, row_event};
use crate::store::outbox::{
    Claimed, ForwarderStats, Outbox, OutboxEntry, OutboxQuery, OutboxState, Outcome, Requeue,
    Settlement,
};
use crate::store::{NewEvent, Order, Page, StoreError, address_key, format_ms, now_ms};

/// Queues one row per forwarder of a newly stored event.
pub(super) fn enqueue(
    tx: &mut Tx<'_, '_>,
    events: &[(&str, &NewEvent)],
    next_id: &mut dyn FnMut() -> String,
) -> Result<(), StoreError> {
    let (mut ids, mut forwarders, mut event_ids, mut keys) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (event_id, new) in events {
        for forwarder in &new.forward_to {
            ids.push(next_id());
            forwarders.push(forwarder.as_str());
            event_ids.push(*event_id);
            keys.push(address_key(&new.event.recipient));
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO outbox (id, forwarder, event_id, recipient_key, state, attempts, enqueued_at, next_attempt_at) \
         SELECT id, forwarder, event_id, recipient_key, 'pending', 0, $5, $5 \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
           AS u(id, forwarder, event_id, recipient_key, n) \
         ORDER BY n ON CONFLICT (forwarder, event_id) DO NOTHING",
        &[&ids, &forwarders, &event_ids, &keys, &now_ms()],
    )?;
    Ok(())
}

impl Outbox for Postgres {
    fn claim(
        &self,
        forwarder: &str,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let token = ulid::Ulid::new().to_string();
        let until = crate::store::ms_after(now_ms, lease);
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        self.with_tx(|tx| {
            // Only the head (oldest pending row) of each recipient's queue is
            // a candidate, as in SQLite. Rows locked by another claim are
            // skipped; a row leased by a claim that committed meanwhile is
            // re-checked against the lease condition when locked.
            let rows = tx.query(
                "WITH picked AS ( \
                   SELECT o.id FROM outbox o \
                   WHERE o.forwarder = $1 AND o.state = 'pending' AND o.next_attempt_at <= $2 \
                     AND (o.lease_until IS NULL OR o.lease_until <= $2) \
                     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.forwarder = o.forwarder \
                       AND p.recipient_key = o.recipient_key AND p.state = 'pending' AND p.id < o.id) \
                   ORDER BY o.next_attempt_at, o.id LIMIT $3 \
                   FOR UPDATE OF o SKIP LOCKED) \
                 UPDATE outbox SET lease = $4, lease_until = $5 FROM picked \
                 WHERE outbox.id = picked.id \
                 RETURNING outbox.id, outbox.attempts, outbox.enqueued_at, outbox.event_id",
                &[&forwarder, &now_ms, &limit, &token, &until],
            )?;
            let event = format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1"
            );
            let mut claimed = Vec::with_capacity(rows.len());
            for r in &rows {
                let event_id: String = r.try_get(3)?;
                let Some(event) = tx.query_opt(&event, &[&event_id])? else {
                    continue;
                };
                claimed.push(Claimed {
                    id: r.try_get(0)?,
                    forwarder: forwarder.to_owned(),
                    lease: token.clone(),
                    attempts: u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(u32::MAX),
                    enqueued_at_ms: r.try_get(2)?,
                    event: row_event(&event)?,
                });
            }
            // RETURNING yields rows in no promised order.
            claimed.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(claimed)
        })
    }

    fn settle(&self, settlements: &[Settlement]) -> Result<(), StoreError> {
        if settlements.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.with_tx(|tx| {
            for s in settlements {
                match &s.outcome {
                    Outcome::Delivered => tx.execute(
                        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, \
                         last_attempt_at = $1, delivered_at = $2, lease = NULL, lease_until = NULL \
                         WHERE id = $3 AND lease = $4 AND state = 'pending'",
                        &[&s.attempted_at_ms, &now, &s.id, &s.lease],
                    )?,
                    Outcome::Retry {
                        next_attempt_at_ms,
                        error,
                    } => tx.execute(
                        "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = $1, \
                         last_error = $2, next_attempt_at = $3, lease = NULL, lease_until = NULL \
                         WHERE id = $4 AND lease = $5 AND state = 'pending'",
                        &[
                            &s.attempted_at_ms,
                            error,
                            next_attempt_at_ms,
                            &s.id,
                            &s.lease,
                        ],
                    )?,
                    Outcome::Dead { error } => tx.execute(
                        "UPDATE outbox SET state = 'dead', attempts = attempts + 1, \
                         last_attempt_at = $1, last_error = $2, lease = NULL, lease_until = NULL \
                         WHERE id = $3 AND lease = $4 AND state = 'pending'",
                        &[&s.attempted_at_ms, error, &s.id, &s.lease],
                    )?,
                };
            }
            Ok(())
        })
    }

    fn outbox(&self, q: &OutboxQuery) -> Result<Page<OutboxEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT o.id, o.forwarder, o.event_id, e.kind, e.recipient, o.state, o.attempts, \
             o.enqueued_at, o.next_attempt_at, o.last_attempt_at, o.last_error, o.delivered_at \
             FROM outbox o JOIN events e ON e.id = o.event_id WHERE true",
        );
        let mut args = Args::default();
        if let Some(f) = &q.forwarder {
            sql.push_str(&format!(" AND o.forwarder = {}", args.push(f.clone())));
        }
        if let Some(state) = q.state {
            sql.push_str(&format!(
                " AND o.state = {}",
                args.push(state.as_str().to_owned())
            ));
        }
        if let Some(c) = &q.cursor {
            let (order, id) = decode_cursor(c)?;
            if order != Order::Asc {
                return Err(StoreError::BadCursor);
            }
            sql.push_str(&format!(" AND o.id > {}", args.push(id)));
        }
        let limit = q.limit.clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY o.id LIMIT {}", limit + 1));
        let rows = self.with_client(|c| c.query_uncached(&sql, &args.refs()))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let state: String = r.try_get(5)?;
            let state = OutboxState::parse(&state).unwrap_or(OutboxState::Pending);
            let at = |i: usize| r.try_get::<_, Option<i64>>(i).map(|t| t.map(format_ms));
            items.push(OutboxEntry {
                id: r.try_get(0)?,
                forwarder: r.try_get(1)?,
                event_id: r.try_get(2)?,
                kind: r.try_get(3)?,
                recipient: r.try_get(4)?,
                state,
                attempts: u32::try_from(r.try_get::<_, i64>(6)?).unwrap_or(u32::MAX),
                enqueued_at: format_ms(r.try_get(7)?),
                next_attempt_at: if state == OutboxState::Pending {
                    at(8)?
                } else {
                    None
                },
                last_attempt_at: at(9)?,
                last_error: r.try_get(10)?,
                delivered_at: at(11)?,
            });
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| encode_cursor(Order::Asc, &e.id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    fn outbox_stats(&self) -> Result<Vec<ForwarderStats>, StoreError> {
        self.with_client(|c| {
            let mut out: Vec<ForwarderStats> = Vec::new();
            let rows = c.query(
                "SELECT forwarder, state, count(*) FROM outbox GROUP BY forwarder, state ORDER BY forwarder",
                &[],
            )?;
            for r in &rows {
                let forwarder: String = r.try_get(0)?;
                let state: String = r.try_get(1)?;
                let n = u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0);
                if out.last().is_none_or(|s| s.forwarder != forwarder) {
                    out.push(ForwarderStats {
                        forwarder: forwarder.clone(),
                        ..ForwarderStats::default()
                    });
                }
                if let Some(stats) = out.last_mut() {
                    match OutboxState::parse(&state) {
                        Some(OutboxState::Pending) => stats.pending = n,
                        Some(OutboxState::Delivered) => stats.delivered = n,
                        Some(OutboxState::Dead) => stats.dead = n,
                        None => {}
                    }
                }
            }
            let next = "SELECT min(next_attempt_at) FROM outbox WHERE forwarder = $1 AND state = 'pending'";
            // The latest failure among rows not delivered: what is wrong now.
            let error = "SELECT last_error, last_attempt_at FROM outbox \
                 WHERE forwarder = $1 AND state IN ('pending', 'dead') AND last_error IS NOT NULL \
                 ORDER BY last_attempt_at DESC LIMIT 1";
            for stats in &mut out {
                let at: Option<i64> = c.query_one(next, &[&stats.forwarder])?.try_get(0)?;
                stats.next_attempt_at = at.map(format_ms);
                if let Some(r) = c.query_opt(error, &[&stats.forwarder])? {
                    stats.last_error = Some(r.try_get(0)?);
                    stats.last_error_at = r.try_get::<_, Option<i64>>(1)?.map(format_ms);
                }
            }
            Ok(out)
        })
    }

    fn prune_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                 WHERE state = 'delivered' AND delivered_at < $1 ORDER BY id LIMIT $2 \
                 FOR UPDATE SKIP LOCKED)",
                &[&before_ms, &limit],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn requeue(&self, id: &str, now_ms: i64) -> Result<Requeue, StoreError> {
        self.with_tx(|tx| {
            let Some(row) = tx.query_opt("SELECT state FROM outbox WHERE id = $1 FOR UPDATE", &[&id])?
            else {
                return Ok(Requeue::Missing);
            };
            let state: String = row.try_get(0)?;
            match OutboxState::parse(&state) {
                Some(OutboxState::Dead) => {
                    tx.execute(
                        "UPDATE outbox SET state = 'pending', enqueued_at = $1, next_attempt_at = $1, \
                         lease = NULL, lease_until = NULL WHERE id = $2",
                        &[&now_ms, &id],
                    )?;
                    Ok(Requeue::Requeued)
                }
                Some(other) => Ok(Requeue::NotDead(other)),
                None => Ok(Requeue::NotDead(OutboxState::Pending)),
            }
        })
    }
}
