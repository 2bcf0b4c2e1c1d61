//! The forwarding outbox: one row per (forwarder, stored event), queued in
//! the same transaction that stores the event, then claimed, attempted and
//! settled by the forwarding worker.
//!
//! The [`Outbox`] operations are shaped for any backend, one process or
//! several sharing a database: rows are *claimed* under a lease (a token
//! and an expiry) rather than locked for the length of an attempt, and
//! every settlement names the lease it was claimed under, so a worker whose
//! lease ran out (it stalled, or died) cannot overwrite the outcome of the
//! worker that claimed the row after it. SQLite runs the claim as one
//! `UPDATE ... RETURNING`; PostgreSQL locks candidates `FOR UPDATE SKIP LOCKED`.

use std::time::Duration;

use serde::Serialize;

use super::{Cursor, Page, StoreError};
use crate::event::DeliveryEvent;

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Not delivered yet: waiting for its next attempt (or in one).
    Pending,
    /// The receiver answered 2xx (or the line was written and synced).
    Delivered,
    /// Given up after `max_age`: a dead letter, kept until retried.
    Dead,
}

impl OutboxState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// A row claimed for one attempt, with the event to deliver.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Outbox row id (a ULID, in enqueue order); stable across attempts.
    pub id: String,
    /// The forwarder it is queued for.
    pub forwarder: String,
    /// The lease this claim holds; settlements must present it.
    pub lease: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the row was queued, Unix milliseconds.
    pub enqueued_at_ms: i64,
    /// The event, exactly as `GET /v1/events/{id}` returns it.
    pub event: DeliveryEvent,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered: the row is done.
    Delivered,
    /// Failed; try again at this time (Unix milliseconds).
    Retry {
        /// When the next attempt may start.
        next_attempt_at_ms: i64,
        /// What went wrong (no secrets).
        error: String,
    },
    /// Failed, and the row is older than its forwarder's `max_age`.
    Dead {
        /// What went wrong on the last attempt.
        error: String,
    },
}

/// One attempt's outcome, for the row and lease it was claimed under.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Outbox row id.
    pub id: String,
    /// The lease of the claim.
    pub lease: String,
    /// When the attempt started, Unix milliseconds.
    pub attempted_at_ms: i64,
    /// What happened.
    pub outcome: Outcome,
}

/// One outbox row as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    /// Row id: also the Standard Webhooks `webhook-id` (prefixed `msg_`).
    pub id: String,
    /// Forwarder name.
    pub forwarder: String,
    /// The event's id.
    pub event_id: String,
    /// The event's kind.
    pub kind: String,
    /// The event's recipient.
    pub recipient: String,
    /// Where it stands.
    pub state: OutboxState,
    /// Attempts made.
    pub attempts: u32,
    /// When it was queued, RFC 3339 UTC.
    pub enqueued_at: String,
    /// When the next attempt may start (pending rows only), RFC 3339 UTC.
    pub next_attempt_at: Option<String>,
    /// When the last attempt started, RFC 3339 UTC.
    pub last_attempt_at: Option<String>,
    /// What went wrong on the last failed attempt.
    pub last_error: Option<String>,
    /// When it was delivered, RFC 3339 UTC.
    pub delivered_at: Option<String>,
}

/// Filters of an outbox listing.
#[derive(Debug, Clone, Default)]
pub struct OutboxQuery {
    /// Only this forwarder.
    pub forwarder: Option<String>,
    /// Only rows in this state.
    pub state: Option<OutboxState>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Continue after this cursor (oldest first, by row id).
    pub cursor: Option<Cursor>,
}

/// Per-forwarder totals of the outbox.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForwarderStats {
    /// Forwarder name (configured or not: rows outlive their forwarder).
    pub forwarder: String,
    /// Rows waiting.
    pub pending: u64,
    /// Rows delivered.
    pub delivered: u64,
    /// Dead letters.
    pub dead: u64,
    /// Earliest next attempt of a pending row, RFC 3339 UTC.
    pub next_attempt_at: Option<String>,
    /// Error of the most recent failed attempt.
    pub last_error: Option<String>,
    /// When that attempt started, RFC 3339 UTC.
    pub last_error_at: Option<String>,
}

/// What retrying a dead letter found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// The dead letter is pending again.
    Requeued,
    /// The row exists but is not dead.
    NotDead(OutboxState),
    /// No such row.
    Missing,
}

/// Outbox operations of a backend (a supertrait of [`super::Backend`]).
/// Rows are queued by [`super::Backend::apply`] with the events they
/// carry ([`super::NewEvent::forward_to`]); these calls block like every
/// backend call.
pub trait Outbox {
    /// Claims up to `limit` pending rows of `forwarder` that are due at
    /// `now_ms` and not under a live lease, each the oldest pending row of
    /// its recipient (so one recipient's events go one at a time, in
    /// order), oldest due first. Each is leased until `now_ms + lease`.
    fn claim(
        &self,
        forwarder: &str,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Records outcomes in one transaction. A settlement whose lease is no
    /// longer the row's is ignored (another claim owns the row now).
    fn settle(&self, settlements: &[Settlement]) -> Result<(), StoreError>;
    /// One page of rows, oldest first.
    fn outbox(&self, query: &OutboxQuery) -> Result<Page<OutboxEntry>, StoreError>;
    /// Totals per forwarder that has rows.
    fn outbox_stats(&self) -> Result<Vec<ForwarderStats>, StoreError>;
    /// Makes a dead letter pending again, due now, with a fresh `max_age`
    /// (its age counts from `now_ms`).
    fn requeue(&self, id: &str, now_ms: i64) -> Result<Requeue, StoreError>;
    /// Deletes up to `limit` delivered rows delivered before `before_ms`,
    /// oldest first; returns how many it deleted. Pending and dead rows are
    /// never deleted.
    fn prune_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError>;
}
