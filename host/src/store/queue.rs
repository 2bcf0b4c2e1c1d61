//! The sending queue: accepted messages and one delivery per recipient,
//! queued by a group-commit [`super::Write::Enqueue`], then claimed,
//! attempted and settled by the send workers (`crate::send`).
//!
//! Claims work like the forwarding outbox's: a delivery is *leased* (token
//! and expiry) for one attempt, and a settlement must present the lease it
//! was claimed under, so a worker whose lease lapsed cannot overwrite the
//! outcome of the claim that followed. A process that stops mid-send leaves
//! its deliveries `sending`; the next start puts them back in the queue
//! ([`Queue::recover_in_flight`]), which is the one place a message can go
//! out twice (the server accepted it, the process died before recording
//! that).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Cursor, Page, StoreError};

/// Which header a recipient came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `To`.
    To,
    /// `Cc`.
    Cc,
    /// `Bcc` (in no header of the message).
    Bcc,
}

impl Field {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::To => "to",
            Self::Cc => "cc",
            Self::Bcc => "bcc",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "cc" => Self::Cc,
            "bcc" => Self::Bcc,
            _ => Self::To,
        }
    }
}

/// A message to enqueue, already validated and formatted.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The workspace it is sent for; empty when only a connection was named.
    pub workspace: String,
    /// The connection the request named (no failover), if any.
    pub pinned_connection: Option<String>,
    /// The connection its deliveries start on.
    pub connection: String,
    /// The idempotency key, if the request had one.
    pub idempotency_key: Option<String>,
    /// Envelope sender and From address.
    pub from_email: String,
    /// Subject, for listings.
    pub subject: String,
    /// Message-ID header value without angle brackets.
    pub message_id_header: String,
    /// The formatted message (no Bcc header, no provider headers).
    pub raw: Vec<u8>,
    /// Recipients, each delivered and tracked on its own.
    pub recipients: Vec<(String, Field)>,
}

impl NewMessage {
    /// The scope an idempotency key is unique in.
    pub fn idempotency_scope(&self) -> String {
        match &self.pinned_connection {
            Some(c) if self.workspace.is_empty() => format!("c:{c}"),
            _ => format!("w:{}", self.workspace),
        }
    }
}

/// What enqueueing one message did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The message id (the original one for a repeated idempotency key).
    pub id: String,
    /// Whether the idempotency key was seen before: nothing was queued.
    pub duplicate: bool,
}

/// One delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Delivery id.
    pub id: i64,
    /// The message it belongs to.
    pub message: String,
    /// The lease of this claim; the settlement must present it.
    pub lease: String,
    /// Recipient address.
    pub recipient: String,
    /// Workspace of the message ('' for none).
    pub workspace: String,
    /// The connection the request pinned, if any.
    pub pinned_connection: Option<String>,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When it was queued, Unix milliseconds.
    pub queued_at_ms: i64,
    /// Envelope sender.
    pub from_email: String,
    /// Message-ID header value without angle brackets.
    pub message_id_header: String,
    /// The formatted message, shared by the deliveries of one claim.
    pub raw: Arc<Vec<u8>>,
}

/// What one attempt (or a decision without one) led to.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// The server accepted it.
    Sent {
        /// Queue id from the final DATA reply.
        queue_id: Option<String>,
        /// The classification (`accepted`), as JSON.
        result: serde_json::Value,
    },
    /// A temporary failure: try again then, on the same connection.
    Deferred {
        /// Unix milliseconds.
        next_attempt_at_ms: i64,
        /// The classification.
        result: serde_json::Value,
    },
    /// A permanent failure, or temporary ones past the max age.
    Failed {
        /// The classification.
        result: serde_json::Value,
    },
    /// The recipient is suppressed in the workspace: not sent.
    Suppressed {
        /// Why (the suppression's reason).
        reason: String,
    },
    /// A connection-level failure (or a paused connection): try at once on
    /// another connection of the workspace.
    Moved {
        /// The connection to use next.
        to: String,
        /// What went wrong on the old one, if an attempt was made.
        result: Option<serde_json::Value>,
    },
    /// Not attempted (shutdown, connection removed): back in the queue as it
    /// was, due at this time, no attempt counted.
    Released {
        /// Unix milliseconds.
        next_attempt_at_ms: i64,
    },
}

impl DeliveryOutcome {
    /// The state the delivery ends up in.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Deferred { .. } => "deferred",
            Self::Failed { .. } => "failed",
            Self::Suppressed { .. } => "suppressed",
            Self::Moved { .. } | Self::Released { .. } => "queued",
        }
    }
}

/// One outcome for the delivery and lease it was claimed under.
#[derive(Debug, Clone)]
pub struct DeliverySettlement {
    /// Delivery id.
    pub id: i64,
    /// The claim's lease.
    pub lease: String,
    /// The connection the attempt used.
    pub connection: String,
    /// When the attempt started, Unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub outcome: DeliveryOutcome,
}

/// One attempt in a delivery's history.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// 1-based.
    pub n: u32,
    /// When it started, RFC 3339 UTC.
    pub at: String,
    /// The connection used.
    pub connection: String,
    /// `sent`, `deferred`, `failed`, `suppressed` or `moved`.
    pub outcome: String,
    /// The classification (or suppression reason).
    pub result: Option<serde_json::Value>,
    /// Queue id of an accepted attempt.
    pub queue_id: Option<String>,
}

/// A provider event correlated to a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelatedEvent {
    /// The event's kind (`bounced`, `complained`, `delivered`, ...).
    pub kind: String,
    /// The stored event's id.
    pub id: String,
    /// When it occurred, RFC 3339 UTC.
    pub occurred_at: String,
}

/// One recipient's status.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientStatus {
    /// Address.
    pub address: String,
    /// `to`, `cc` or `bcc`.
    pub field: Field,
    /// queued, sending, deferred, sent, failed, suppressed, cancelled, or
    /// bounced / complained once such a provider event arrived.
    pub status: String,
    /// The connection it is assigned to (or was sent through).
    pub connection: String,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt (queued and deferred only), RFC 3339 UTC.
    pub next_attempt_at: Option<String>,
    /// The last classification.
    pub last_result: Option<serde_json::Value>,
    /// The server's queue id (sent only).
    pub queue_id: Option<String>,
    /// When it was sent, failed, suppressed or cancelled.
    pub done_at: Option<String>,
    /// The last provider event about it.
    pub event: Option<CorrelatedEvent>,
    /// Every attempt, oldest first.
    pub attempts_history: Vec<Attempt>,
}

/// A message as `GET /v1/messages/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageStatus {
    /// Message id.
    pub id: String,
    /// pending, sent, partial, failed or cancelled.
    pub status: String,
    /// Workspace ('' when only a connection was named: then `null`).
    pub workspace: Option<String>,
    /// The pinned connection, if the request named one.
    pub connection: Option<String>,
    /// From address.
    pub from: String,
    /// Subject.
    pub subject: String,
    /// Message-ID header (with angle brackets).
    pub message_id: String,
    /// Size of the formatted message in bytes.
    pub size: u64,
    /// The idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// When it was accepted, RFC 3339 UTC.
    pub created_at: String,
    /// When it was cancelled.
    pub cancelled_at: Option<String>,
    /// Per recipient.
    pub recipients: Vec<RecipientStatus>,
}

/// A message in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    /// Message id.
    pub id: String,
    /// pending, sent, partial, failed or cancelled.
    pub status: String,
    /// Workspace, if any.
    pub workspace: Option<String>,
    /// Subject.
    pub subject: String,
    /// From address.
    pub from: String,
    /// Recipients.
    pub recipients: u32,
    /// When it was accepted.
    pub created_at: String,
}

/// Filters of a message listing (newest first).
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    /// Only messages in this status.
    pub status: Option<String>,
    /// Only messages with a delivery on this connection.
    pub connection: Option<String>,
    /// Only this workspace.
    pub workspace: Option<String>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<Cursor>,
}

/// What cancelling found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// This many deliveries were cancelled (those not sent or in flight).
    Cancelled {
        /// Deliveries cancelled.
        cancelled: u32,
        /// Deliveries being sent right now (not cancelled: too late).
        in_flight: u32,
    },
    /// No such message.
    Missing,
}

/// Queue totals of one connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionQueue {
    /// Connection name (configured or not: rows outlive their connection).
    pub connection: String,
    /// Waiting for a first attempt.
    pub queued: u64,
    /// In an attempt now.
    pub sending: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// queued + sending + deferred.
    pub pending: u64,
    /// When the oldest pending delivery was queued, Unix milliseconds.
    pub oldest_queued_at_ms: Option<i64>,
}

/// Takes a free or lapsed send lease, or renews one's own; returns a row
/// only when `$2` holds it afterwards. The same text runs on
/// SQLite and PostgreSQL (`$n` parameters, numbered in order of use).
pub(crate) const LEASE_SQL: &str = "INSERT INTO send_leases (connection, holder, until_ms) \
     VALUES ($1, $2, $3) \
     ON CONFLICT (connection) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
     WHERE send_leases.holder = excluded.holder OR send_leases.until_ms < $4 \
     RETURNING holder";

/// Gives up one's own send lease.
pub(crate) const RELEASE_SQL: &str =
    "DELETE FROM send_leases WHERE connection = $1 AND holder = $2";

/// Queue operations of a backend (a supertrait of [`super::Backend`]).
/// Messages are queued by [`super::Backend::apply`]; these calls block.
pub trait Queue {
    /// Claims up to `limit` due deliveries of `connection`, taken in turn
    /// from each workspace that has some (fair share), oldest due first
    /// within a workspace, and leases them until `now_ms + lease`. Leases
    /// that lapsed first go back to the queue. Due deliveries whose
    /// recipient is suppressed in their workspace (or, without one, in any
    /// of `scope`) end `suppressed` here and are not returned.
    fn claim_deliveries(
        &self,
        connection: &str,
        scope: &[String],
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;
    /// Records outcomes in one transaction; a settlement whose lease is no
    /// longer the delivery's is ignored.
    fn settle_deliveries(&self, settlements: &[DeliverySettlement]) -> Result<(), StoreError>;
    /// Puts every delivery left `sending` back in the queue, due now; for
    /// a single process at start, when no attempt can be running. Returns
    /// how many there were (each may have been accepted already: the
    /// duplicate window). A backend that only one process opens (SQLite)
    /// also drops every send lease here; a shared one must not.
    fn recover_in_flight(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Sends accepted per connection at or after `since_ms` (quota history),
    /// as (connection, Unix milliseconds).
    fn sent_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError>;
    /// One message with its recipients and attempts.
    fn message(&self, id: &str) -> Result<Option<MessageStatus>, StoreError>;
    /// One page of messages, newest first.
    fn messages(&self, query: &MessageQuery) -> Result<Page<MessageSummary>, StoreError>;
    /// Cancels every delivery of the message that is not sent or in flight.
    fn cancel(&self, id: &str, now_ms: i64) -> Result<Cancel, StoreError>;
    /// Pending totals per connection that has pending deliveries.
    fn queue_totals(&self) -> Result<Vec<ConnectionQueue>, StoreError>;
    /// Takes or renews `holder`'s lease on sending through `connection`
    /// until `now_ms + ttl`. True when `holder` holds it afterwards (it was
    /// free, lapsed, or already `holder`'s); false while another holder's
    /// lease runs. One process per rate-limited connection sends at a time,
    /// so its limits hold for every process sharing the store.
    fn lease_connection(
        &self,
        connection: &str,
        holder: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives up `holder`'s lease on `connection` (shutdown), so another
    /// process takes over at once; another holder's lease is left alone.
    fn release_connection(&self, connection: &str, holder: &str) -> Result<(), StoreError>;
}

pub(crate) fn parse_field(s: &str) -> Field {
    Field::parse(s)
}

/// What a provider event is matched to sent deliveries by: the Message-ID
/// it echoes (without angle brackets) and the queue id the server returned
/// at DATA (the provider's message id); `None` when it has neither.
pub(crate) fn correlation_keys(
    event: &crate::event::NormalizedEvent,
) -> Option<(Option<&str>, Option<&str>)> {
    let header = event
        .message_id
        .as_deref()
        .map(|m| m.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|m| !m.is_empty());
    let queue_id = event
        .provider_message_id
        .as_deref()
        .filter(|m| !m.is_empty());
    (header.is_some() || queue_id.is_some()).then_some((header, queue_id))
}
