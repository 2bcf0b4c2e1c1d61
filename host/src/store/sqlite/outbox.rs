//! The SQLite side of the forwarding outbox: rows queued inside the events
//! transaction, and the claim/settle calls of [`Outbox`], each one short
//! transaction on the writer connection (a claim never spans an attempt).

use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension as _, params, params_from_iter};

use super::{EVENT_COLUMNS, Sqlite, backend_error, decode_cursor, encode_cursor, row_event};
use crate::store::outbox::{
    Claimed, ForwarderStats, Outbox, OutboxEntry, OutboxQuery, OutboxState, Outcome, Requeue,
    Settlement,
};
use crate::store::{NewEvent, Order, Page, StoreError, address_key, format_ms, now_ms};

/// Queues one row per forwarder of a newly stored event (called by
/// `insert_events` inside the group-commit transaction, after the event row).
pub(super) fn enqueue(
    tx: &rusqlite::Connection,
    event_id: &str,
    new: &NewEvent,
    next_id: &mut dyn FnMut() -> String,
) -> rusqlite::Result<()> {
    if new.forward_to.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let key = address_key(&new.event.recipient);
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (id, forwarder, event_id, recipient_key, state, attempts, enqueued_at, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5) ON CONFLICT (forwarder, event_id) DO NOTHING",
    )?;
    for forwarder in &new.forward_to {
        insert.execute(params![next_id(), forwarder, event_id, key, now])?;
    }
    Ok(())
}

impl Sqlite {
    pub(super) fn with_writer<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError::Backend("writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(|e| backend_error(&e))?;
        let out = work(&tx).map_err(|e| backend_error(&e))?;
        tx.commit().map_err(|e| backend_error(&e))?;
        Ok(out)
    }
}

impl Outbox for Sqlite {
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
        // Only the head (oldest pending row) of each recipient's queue is a
        // candidate, so a row is never attempted while an earlier one of the
        // same recipient waits, even if that one is not due. Candidates are
        // found on a reader (the scan is as long as the backlog and must not
        // hold up ingest commits); the writer then leases each one whose
        // row is still a free head, re-checked in the UPDATE.
        let candidates: Vec<String> = self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT o.id FROM outbox o JOIN ( \
                   SELECT min(id) AS id FROM outbox \
                   WHERE forwarder = ?1 AND state = 'pending' GROUP BY recipient_key \
                 ) heads ON heads.id = o.id \
                 WHERE o.next_attempt_at <= ?2 AND (o.lease_until IS NULL OR o.lease_until <= ?2) \
                 ORDER BY o.next_attempt_at, o.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![forwarder, now_ms, limit], |r| r.get(0))?;
            rows.collect()
        })?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        self.with_writer(|tx| {
            let mut lease_row = tx.prepare_cached(
                "UPDATE outbox SET lease = ?1, lease_until = ?2 \
                 WHERE id = ?3 AND state = 'pending' \
                   AND (lease_until IS NULL OR lease_until <= ?4) \
                   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.forwarder = outbox.forwarder \
                     AND p.recipient_key = outbox.recipient_key AND p.state = 'pending' \
                     AND p.id < outbox.id) \
                 RETURNING id, attempts, enqueued_at, event_id",
            )?;
            let mut rows: Vec<(String, i64, i64, String)> = Vec::with_capacity(candidates.len());
            for id in &candidates {
                if let Some(row) = lease_row
                    .query_row(params![token, until, id, now_ms], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?
                {
                    rows.push(row);
                }
            }
            let mut event = tx.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1"
            ))?;
            let mut claimed = Vec::with_capacity(rows.len());
            for (id, attempts, enqueued_at_ms, event_id) in rows {
                let Some(event) = event.query_row([&event_id], row_event).optional()? else {
                    continue;
                };
                claimed.push(Claimed {
                    id,
                    forwarder: forwarder.to_owned(),
                    lease: token.clone(),
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    enqueued_at_ms,
                    event,
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
        self.with_writer(|tx| {
            for s in settlements {
                match &s.outcome {
                    Outcome::Delivered => tx
                        .prepare_cached(
                            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, \
                             last_attempt_at = ?1, delivered_at = ?2, lease = NULL, lease_until = NULL \
                             WHERE id = ?3 AND lease = ?4 AND state = 'pending'",
                        )?
                        .execute(params![s.attempted_at_ms, now, s.id, s.lease])?,
                    Outcome::Retry {
                        next_attempt_at_ms,
                        error,
                    } => tx
                        .prepare_cached(
                            "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?1, \
                             last_error = ?2, next_attempt_at = ?3, lease = NULL, lease_until = NULL \
                             WHERE id = ?4 AND lease = ?5 AND state = 'pending'",
                        )?
                        .execute(params![
                            s.attempted_at_ms,
                            error,
                            next_attempt_at_ms,
                            s.id,
                            s.lease
                        ])?,
                    Outcome::Dead { error } => tx
                        .prepare_cached(
                            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, \
                             last_attempt_at = ?1, last_error = ?2, lease = NULL, lease_until = NULL \
                             WHERE id = ?3 AND lease = ?4 AND state = 'pending'",
                        )?
                        .execute(params![s.attempted_at_ms, error, s.id, s.lease])?,
                };
            }
            Ok(())
        })
    }

    fn outbox(&self, q: &OutboxQuery) -> Result<Page<OutboxEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT o.id, o.forwarder, o.event_id, e.kind, e.recipient, o.state, o.attempts, \
             o.enqueued_at, o.next_attempt_at, o.last_attempt_at, o.last_error, o.delivered_at \
             FROM outbox o JOIN events e ON e.id = o.event_id WHERE 1 = 1",
        );
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(f) = &q.forwarder {
            args.push(f.clone().into());
            sql.push_str(&format!(" AND o.forwarder = ?{}", args.len()));
        }
        if let Some(state) = q.state {
            args.push(state.as_str().to_owned().into());
            sql.push_str(&format!(" AND o.state = ?{}", args.len()));
        }
        if let Some(c) = &q.cursor {
            let (order, id) = decode_cursor(c)?;
            if order != Order::Asc {
                return Err(StoreError::BadCursor);
            }
            args.push(id.into());
            sql.push_str(&format!(" AND o.id > ?{}", args.len()));
        }
        let limit = q.limit.clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY o.id LIMIT {}", limit + 1));
        let mut items = self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                let state: String = r.get(5)?;
                let state = OutboxState::parse(&state).unwrap_or(OutboxState::Pending);
                let at = |i: usize| r.get::<_, Option<i64>>(i).map(|t| t.map(format_ms));
                Ok(OutboxEntry {
                    id: r.get(0)?,
                    forwarder: r.get(1)?,
                    event_id: r.get(2)?,
                    kind: r.get(3)?,
                    recipient: r.get(4)?,
                    state,
                    attempts: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
                    enqueued_at: format_ms(r.get(7)?),
                    next_attempt_at: if state == OutboxState::Pending {
                        at(8)?
                    } else {
                        None
                    },
                    last_attempt_at: at(9)?,
                    last_error: r.get(10)?,
                    delivered_at: at(11)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| encode_cursor(Order::Asc, &e.id))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    fn outbox_stats(&self) -> Result<Vec<ForwarderStats>, StoreError> {
        self.with_reader(|c| {
            let mut out: Vec<ForwarderStats> = Vec::new();
            let mut counts = c.prepare_cached(
                "SELECT forwarder, state, count(*) FROM outbox GROUP BY forwarder, state ORDER BY forwarder",
            )?;
            let rows = counts.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (forwarder, state, n) = row?;
                if out.last().is_none_or(|s| s.forwarder != forwarder) {
                    out.push(ForwarderStats {
                        forwarder: forwarder.clone(),
                        ..ForwarderStats::default()
                    });
                }
                let n = u64::try_from(n).unwrap_or(0);
                if let Some(stats) = out.last_mut() {
                    match OutboxState::parse(&state) {
                        Some(OutboxState::Pending) => stats.pending = n,
                        Some(OutboxState::Delivered) => stats.delivered = n,
                        Some(OutboxState::Dead) => stats.dead = n,
                        None => {}
                    }
                }
            }
            let mut next = c.prepare_cached(
                "SELECT min(next_attempt_at) FROM outbox WHERE forwarder = ?1 AND state = 'pending'",
            )?;
            // The latest failure among rows not delivered: what is wrong now.
            let mut error = c.prepare_cached(
                "SELECT last_error, last_attempt_at FROM outbox \
                 WHERE forwarder = ?1 AND state IN ('pending', 'dead') AND last_error IS NOT NULL \
                 ORDER BY last_attempt_at DESC LIMIT 1",
            )?;
            for stats in &mut out {
                let at: Option<i64> = next.query_row([&stats.forwarder], |r| r.get(0))?;
                stats.next_attempt_at = at.map(format_ms);
                if let Some((message, at)) = error
                    .query_row([&stats.forwarder], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                    })
                    .optional()?
                {
                    stats.last_error = Some(message);
                    stats.last_error_at = at.map(format_ms);
                }
            }
            Ok(out)
        })
    }

    fn prune_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_writer(|tx| {
            tx.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                 WHERE state = 'delivered' AND delivered_at < ?1 ORDER BY id LIMIT ?2)",
                params![before_ms, limit],
            )
        })
    }

    fn requeue(&self, id: &str, now_ms: i64) -> Result<Requeue, StoreError> {
        self.with_writer(|tx| {
            let state: Option<String> = tx
                .query_row("SELECT state FROM outbox WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            let Some(state) = state else {
                return Ok(Requeue::Missing);
            };
            match OutboxState::parse(&state) {
                Some(OutboxState::Dead) => {
                    tx.execute(
                        "UPDATE outbox SET state = 'pending', enqueued_at = ?1, next_attempt_at = ?1, \
                         lease = NULL, lease_until = NULL WHERE id = ?2",
                        params![now_ms, id],
                    )?;
                    Ok(Requeue::Requeued)
                }
                Some(other) => Ok(Requeue::NotDead(other)),
                None => Ok(Requeue::NotDead(OutboxState::Pending)),
            }
        })
    }
}
