//! The PostgreSQL side of the sending queue: messages queued inside the
//! group-commit transaction, and the claim/settle calls of [`Queue`]. Due
//! deliveries are locked `FOR UPDATE SKIP LOCKED` and leased in the same
//! transaction, so two processes never claim the same delivery. Status
//! reads are in `queue/status.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Postgres;
use super::sql::Tx;
use crate::store::Page;
use crate::store::StoreError;
use crate::store::address_key;
use crate::store::queue::{
    Cancel, ClaimedDelivery, ConnectionQueue, DeliveryOutcome, DeliverySettlement, MessageQuery,
    MessageStatus, MessageSummary, Queue,
};

mod claim;
mod enqueue;
mod status;

pub(super) use enqueue::enqueue;

pub(super) use status::queue_totals;

use crate::store::queue::{LEASE_SQL, RELEASE_SQL};

/// States a delivery waits in.
const PENDING: &str = "state IN ('queued', 'deferred')";

/// Recomputes the status of each message from its deliveries. The rows
/// are locked in id order first, so two processes refreshing overlapping
/// sets wait for each other instead of deadlocking.
pub(super) fn refresh_statuses(
    tx: &mut Tx<'_, '_>,
    messages: &BTreeSet<String>,
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = messages.iter().map(String::as_str).collect();
    tx.execute(
        "SELECT 1 FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )?;
    tx.execute(
        "UPDATE messages AS m SET status = s.status FROM ( \
           SELECT message, CASE \
             WHEN count(*) FILTER (WHERE state IN ('queued', 'sending', 'deferred')) > 0 THEN 'pending' \
             WHEN count(*) FILTER (WHERE state = 'sent') = count(*) THEN 'sent' \
             WHEN count(*) FILTER (WHERE state = 'sent') > 0 THEN 'partial' \
             WHEN count(*) FILTER (WHERE state = 'cancelled') = count(*) THEN 'cancelled' \
             ELSE 'failed' END AS status \
           FROM deliveries WHERE message = ANY($1) GROUP BY message) AS s \
         WHERE m.id = s.message",
        &[&ids],
    )?;
    Ok(())
}

/// A new suppression ends the pending deliveries of that recipient in that
/// workspace (messages without one are caught at their next claim).
/// `new` lists (workspace, address key, reason, Unix milliseconds), each
/// pair once.
pub(super) fn suppressed(
    tx: &mut Tx<'_, '_>,
    new: &[(&str, &str, &str, i64)],
) -> Result<(), StoreError> {
    if new.is_empty() {
        return Ok(());
    }
    let workspaces: Vec<&str> = new.iter().map(|s| s.0).collect();
    let keys: Vec<&str> = new.iter().map(|s| s.1).collect();
    let results: Vec<String> = new
        .iter()
        .map(|s| serde_json::json!({ "suppressed": s.2 }).to_string())
        .collect();
    let ats: Vec<i64> = new.iter().map(|s| s.3).collect();
    let rows = tx.query(
        &format!(
            "UPDATE deliveries AS d SET state = 'suppressed', done_at = u.at, result = u.result \
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS u(ws, key, at, result) \
             WHERE d.recipient_key = u.key AND d.workspace = u.ws AND d.{PENDING} RETURNING d.message"
        ),
        &[&workspaces, &keys, &ats, &results],
    )?;
    let mut messages = BTreeSet::new();
    for r in &rows {
        messages.insert(r.try_get::<_, String>(0)?);
    }
    refresh_statuses(tx, &messages)
}

/// Records a provider event on the deliveries it is about: same recipient,
/// and the message's Message-ID or the queue id the server returned.
pub(super) fn correlate(
    tx: &mut Tx<'_, '_>,
    events: &[(&str, &crate::store::NewEvent)],
) -> Result<(), StoreError> {
    let (mut kinds, mut ids, mut ats, mut keys, mut headers, mut queue_ids) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (id, new) in events {
        let event = &new.event;
        let Some((header, queue_id)) = crate::store::queue::correlation_keys(event) else {
            continue;
        };
        kinds.push(event.kind.as_str());
        ids.push(*id);
        ats.push(new.occurred_at);
        keys.push(address_key(&event.recipient));
        headers.push(header);
        queue_ids.push(queue_id);
    }
    if ids.is_empty() {
        return Ok(());
    }
    // Several events about one delivery in one list: the last one counts,
    // as if they had been applied one after the other.
    tx.execute(
        "UPDATE deliveries AS d SET event_kind = x.kind, event_id = x.event_id, event_at = x.at \
         FROM (SELECT DISTINCT ON (t.id) t.id AS delivery, u.kind, u.event_id, u.at \
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) \
             WITH ORDINALITY AS u(kind, event_id, at, key, header, queue_id, n) \
           JOIN deliveries AS t ON t.recipient_key = u.key AND t.state = 'sent' AND ( \
             (u.header IS NOT NULL AND t.message IN \
               (SELECT id FROM messages WHERE message_id_header = u.header)) \
             OR (u.queue_id IS NOT NULL AND t.queue_id = u.queue_id)) \
           ORDER BY t.id, u.n DESC) AS x \
         WHERE d.id = x.delivery",
        &[&kinds, &ids, &ats, &keys, &headers, &queue_ids],
    )?;
    Ok(())
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
        let token = ulid::Ulid::new().to_string();
        let claim = claim::Claim {
            connection,
            scope,
            now_ms,
            token: &token,
            until: crate::store::ms_after(now_ms, lease),
            limit: limit.clamp(1, 1000),
        };
        self.with_tx(|tx| claim::claim(tx, &claim))
    }

    fn settle_deliveries(&self, settlements: &[DeliverySettlement]) -> Result<(), StoreError> {
        if settlements.is_empty() {
            return Ok(());
        }
        self.with_tx(|tx| {
            let mut touched = BTreeSet::new();
            // The common case, accepted by the server, in two statements;
            // the others one by one.
            let (sent, others): (Vec<&DeliverySettlement>, Vec<&DeliverySettlement>) = settlements
                .iter()
                .partition(|s| matches!(s.outcome, DeliveryOutcome::Sent { .. }));
            status::settle_sent(tx, &sent, &mut touched)?;
            for s in others {
                if let Some(message) = status::settle_one(tx, s)? {
                    touched.insert(message);
                }
            }
            refresh_statuses(tx, &touched)
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
        // One snapshot for the message and its deliveries: under the
        // default READ COMMITTED each statement would see its own.
        self.with_tx(|tx| {
            tx.execute(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                &[],
            )?;
            status::message(tx, id)
        })
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
            refresh_statuses(tx, &BTreeSet::from([id.to_owned()]))?;
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
        let until = crate::store::ms_after(now_ms, ttl);
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
