//! The durable store: delivery events, suppressions and the forwarding
//! outbox ([`outbox`]), behind one
//! [`Backend`] trait with two backends: embedded SQLite ([`sqlite`], the
//! default) and PostgreSQL ([`postgres`], shared by several processes).
//!
//! What the trait promises, whatever the backend:
//! - **Ids** are strings assigned by the store in commit order (ULIDs:
//!   26 characters, lexicographically sortable, unique across processes).
//! - **Timestamps** cross the trait as Unix seconds / milliseconds (`i64`)
//!   and leave the API as RFC 3339 UTC strings; no backend time type leaks.
//! - **Pagination** is keyset on the id: a [`Cursor`] is opaque, stable under
//!   concurrent inserts, and never an offset.
//! - **Conflicts**: an event whose dedupe key is already stored is counted as
//!   a duplicate, not an error; suppressing an address twice keeps the first.
//! - **Group commit**: [`Store`] queues writes and one writer applies every
//!   waiting request's writes in one transaction ([`Backend::apply`]), then
//!   answers each request. Nothing is acknowledged before that transaction is
//!   durable; if it fails, every request in it gets the error and nothing of
//!   it is stored.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::event::{BounceClass, DeliveryEvent, EventKind, NormalizedEvent, PluginStamp};

pub mod outbox;
mod pool;
pub mod postgres;
pub mod queue;
pub mod sqlite;
pub mod status;

#[cfg(test)]
mod contract;

pub use outbox::Outbox;
pub use pool::PoolStats;
pub use queue::Queue;

/// Most requests applied in one group-commit transaction.
const MAX_BATCH_REQUESTS: usize = 1024;
/// Requests waiting for the writer beyond which new ones are refused as busy.
const QUEUE_CAPACITY: usize = 8192;

/// Why the store could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store refused the write because it reached its size limit.
    #[error("the store is full ({0})")]
    Full(String),
    /// Too many writes are waiting, or no database connection came free
    /// in time (the text says which); retry shortly.
    #[error("the store is busy: {0}")]
    Busy(String),
    /// The store is closed (shutdown).
    #[error("the store is closed")]
    Closed,
    /// The database schema is newer than this binary understands.
    #[error(
        "the store's schema is version {found}, newer than this binary's {supported}: run a newer mailplug (or restore a backup)"
    )]
    SchemaTooNew {
        /// Version found in the store.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
    /// A cursor that this store did not produce.
    #[error("invalid cursor")]
    BadCursor,
    /// Any other backend failure (I/O, corruption, ...).
    #[error("store failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether a client should retry later (the data was not stored, and a
    /// later attempt may succeed).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::SchemaTooNew { .. } | Self::BadCursor)
    }
}

/// An event to store: the normalized event plus what the host knows.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Connection whose webhook received it.
    pub connection: String,
    /// Workspaces that connection serves (suppressions apply to each).
    pub workspaces: Vec<String>,
    /// The plugin build that parsed it.
    pub plugin: PluginStamp,
    /// When the request arrived, Unix milliseconds.
    pub received_at_ms: i64,
    /// `occurred_at` as Unix seconds.
    pub occurred_at: i64,
    /// Identity for de-duplication (see [`dedupe_key`]).
    pub dedupe_key: [u8; 16],
    /// The event as the plugin normalized it.
    pub event: NormalizedEvent,
    /// Forwarders that receive it: one outbox row each is queued in the
    /// transaction that stores the event (none for a duplicate).
    pub forward_to: Vec<String>,
    /// Soft-bounce rules of those workspaces that have their own (a
    /// `kind: Workspace` document); the others use the store's default.
    pub soft_bounce_rules: Vec<(String, SoftBouncePolicy)>,
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A hard bounce.
    HardBounce,
    /// A spam complaint.
    Complaint,
    /// Soft bounces reached the threshold within the window.
    SoftBounces,
    /// Added by an operator.
    Manual,
}

impl SuppressionReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HardBounce => "hard_bounce",
            Self::Complaint => "complaint",
            Self::SoftBounces => "soft_bounces",
            Self::Manual => "manual",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hard_bounce" => Self::HardBounce,
            "complaint" => Self::Complaint,
            "soft_bounces" => Self::SoftBounces,
            "manual" => Self::Manual,
            _ => return None,
        })
    }
}

/// One suppressed address in one workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// The workspace whose mail must not go to the address.
    pub workspace: String,
    /// The address as first seen (domain compared case-insensitively).
    pub address: String,
    /// Why.
    pub reason: SuppressionReason,
    /// The event that caused it (none for manual entries).
    pub event_id: Option<String>,
    /// Operator's note (manual entries).
    pub note: Option<String>,
    /// When it was added, RFC 3339 UTC.
    pub created_at: String,
}

/// A write to apply inside a group-commit transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// One webhook request: record its single-use tokens and store its
    /// events (duplicates skipped), applying their suppressions. A token
    /// already recorded for the connection refuses the whole write
    /// ([`Applied::Replayed`]) and stores nothing of it.
    Events {
        /// The events.
        events: Vec<NewEvent>,
        /// Single-use tokens the plugin named (`replay.use-token`).
        tokens: Vec<ReplayToken>,
    },
    /// Suppress an address manually.
    Suppress {
        /// Workspace.
        workspace: String,
        /// Address.
        address: String,
        /// Operator's note.
        note: Option<String>,
    },
    /// Queue messages (one request; a batch is all or nothing).
    Enqueue {
        /// The messages, each with its recipients.
        messages: Vec<queue::NewMessage>,
    },
    /// Remove a suppression.
    Unsuppress {
        /// Workspace.
        workspace: String,
        /// Address.
        address: String,
    },
}

/// A single-use token of one connection, remembered until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayToken {
    /// The connection whose requests it authenticated.
    pub connection: String,
    /// The token.
    pub token: String,
    /// SHA-256 of the request body that used it: the same bytes again are
    /// the provider's retry (accepted; its events are duplicates), other
    /// bytes are a replay.
    pub body_sha256: [u8; 32],
    /// When it was used, Unix seconds (the plugin clock).
    pub used_at: i64,
    /// Until when a request reusing it is refused, Unix seconds.
    pub expires_at: i64,
}

impl Write {
    /// Events of a request that named no single-use token.
    pub fn events(events: Vec<NewEvent>) -> Self {
        Self::Events {
            events,
            tokens: Vec::new(),
        }
    }
}

/// What one [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A token of the request was used before: nothing of it was stored.
    Replayed,
    /// Ids of the events stored, and how many were already stored.
    Events {
        /// New event ids, in input order.
        stored: Vec<String>,
        /// Events skipped as already stored.
        duplicates: usize,
    },
    /// Whether the address was newly suppressed.
    Suppressed(bool),
    /// Whether a suppression was removed.
    Unsuppressed(bool),
    /// The messages' ids, in input order.
    Enqueued(Vec<queue::Enqueued>),
}

/// Order of an event listing (by id, i.e. commit order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

/// An opaque position in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub String);

/// Filters of an event listing; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this connection.
    pub connection: Option<String>,
    /// Only events of connections serving this workspace.
    pub workspace: Option<String>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only this recipient (domain compared case-insensitively).
    pub recipient: Option<String>,
    /// `occurred_at` at or after (Unix seconds).
    pub since: Option<i64>,
    /// `occurred_at` before (Unix seconds).
    pub until: Option<i64>,
    /// Only events committed after this event id (follows a tail).
    pub after: Option<String>,
    /// Listing order.
    pub order: Order,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Continue after this cursor (from a previous page, same filters).
    pub cursor: Option<Cursor>,
}

/// Filters of a suppression listing.
#[derive(Debug, Clone, Default)]
pub struct SuppressionQuery {
    /// Only this workspace.
    pub workspace: Option<String>,
    /// Only this address.
    pub address: Option<String>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<Cursor>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Row counts, for status and metrics.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Stored events.
    pub events: u64,
    /// Suppressed (workspace, address) pairs.
    pub suppressions: u64,
}

/// When soft bounces suppress an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftBouncePolicy {
    /// Soft bounces (per workspace and address) that suppress.
    pub threshold: u32,
    /// Within this window of `occurred_at`.
    pub window: Duration,
}

impl Default for SoftBouncePolicy {
    fn default() -> Self {
        Self {
            threshold: 3,
            window: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A storage backend. Calls block; [`Store`] runs them on its writer thread
/// (writes) or the blocking pool (reads and outbox calls).
pub trait Backend: Outbox + Queue + Send + Sync + 'static {
    /// Which backend (`sqlite`, `postgres`).
    fn kind(&self) -> &'static str;
    /// Applies every write, in order, in one transaction; all or nothing.
    /// Event ids come from `next_id`, called once per event in commit order.
    fn apply(
        &self,
        writes: &[Write],
        next_id: &mut dyn FnMut() -> String,
    ) -> Result<Vec<Applied>, StoreError>;
    /// One page of events.
    fn events(&self, query: &EventQuery) -> Result<Page<DeliveryEvent>, StoreError>;
    /// One event by id.
    fn event(&self, id: &str) -> Result<Option<DeliveryEvent>, StoreError>;
    /// One page of suppressions.
    fn suppressions(&self, query: &SuppressionQuery) -> Result<Page<Suppression>, StoreError>;
    /// Row counts.
    fn counts(&self) -> Result<Counts, StoreError>;
    /// Whether the store answers now (a trivial query; `/readyz`).
    fn ping(&self) -> Result<(), StoreError>;
    /// How the backend's connection pool is used; `None` for a backend
    /// without one that waits or caps (SQLite: one writer thread, readers
    /// opened on demand).
    fn pool(&self) -> Option<PoolStats> {
        None
    }
    /// Flushes and closes (after the last write).
    fn close(&self) -> Result<(), StoreError>;
}

enum Job {
    Write(Write, oneshot::Sender<Result<Applied, StoreError>>),
    Close(oneshot::Sender<()>),
}

/// Observes each group commit (metrics).
pub type CommitObserver = Box<dyn Fn(usize, usize, Duration, bool) + Send + Sync>;

/// The store handle the daemon shares: group-committed writes, pooled reads.
pub struct Store {
    backend: Arc<dyn Backend>,
    jobs: SyncSender<Job>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Woken after a commit that queued outbox rows, so forwarding starts
    /// at once instead of at its next poll.
    queued: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend.kind())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts the writer over `backend`; `observe(requests, events, took, ok)`
    /// is called after each group commit.
    pub fn start(backend: Arc<dyn Backend>, observe: CommitObserver) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let writer_backend = backend.clone();
        let queued = Arc::new(tokio::sync::Notify::new());
        let wake = queued.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&*writer_backend, &rx, &observe, &wake))
            .ok();
        Self {
            backend,
            jobs,
            writer: std::sync::Mutex::new(writer),
            queued,
        }
    }

    /// Notified after each commit that queued outbox rows.
    pub fn outbox_queued(&self) -> &tokio::sync::Notify {
        &self.queued
    }

    /// Which backend this is.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// How the backend's connection pool is used (no query: counters only).
    pub fn pool(&self) -> Option<PoolStats> {
        self.backend.pool()
    }

    /// Applies one write with the next group commit; resolves once it is durable.
    pub async fn write(&self, write: Write) -> Result<Applied, StoreError> {
        let (tx, rx) = oneshot::channel();
        match self.jobs.try_send(Job::Write(write, tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Busy(format!(
                    "{QUEUE_CAPACITY} writes are waiting"
                )));
            }
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Runs a read on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || read(&*backend))
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend(format!("read task failed: {e}"))))
    }

    /// Commits every write queued before this call, stops the writer and
    /// closes the backend. Later writes get [`StoreError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        // A blocking send: queued writes go first, so none is dropped.
        let jobs = self.jobs.clone();
        let sent = tokio::task::spawn_blocking(move || jobs.send(Job::Close(tx)).is_ok())
            .await
            .unwrap_or(false);
        if sent {
            let _ = rx.await;
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        let backend = self.backend.clone();
        match tokio::task::spawn_blocking(move || backend.close()).await {
            Ok(Ok(())) => tracing::info!("store closed"),
            Ok(Err(e)) => tracing::error!(error = %e, "closing the store failed"),
            Err(e) => tracing::error!(error = %e, "closing the store failed"),
        }
    }
}

fn writer_loop(
    backend: &dyn Backend,
    rx: &Receiver<Job>,
    observe: &CommitObserver,
    queued: &tokio::sync::Notify,
) {
    let mut ids = ulid::Generator::new();
    let mut next_id = move || match ids.generate() {
        Ok(id) => id.to_string(),
        // More than 2^80 ids in one millisecond: wait for the next one.
        Err(_) => {
            std::thread::sleep(Duration::from_millis(1));
            ulid::Ulid::new().to_string()
        }
    };
    let mut closing = None;
    while closing.is_none() {
        let Ok(first) = rx.recv() else { return };
        let mut batch = Vec::new();
        match first {
            Job::Write(w, reply) => batch.push((w, reply)),
            Job::Close(reply) => closing = Some(reply),
        }
        while closing.is_none() && batch.len() < MAX_BATCH_REQUESTS {
            match rx.try_recv() {
                Ok(Job::Write(w, reply)) => batch.push((w, reply)),
                Ok(Job::Close(reply)) => closing = Some(reply),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (writes, replies): (Vec<Write>, Vec<_>) = batch.into_iter().unzip();
        let events: usize = writes
            .iter()
            .map(|w| match w {
                Write::Events { events: e, .. } => e.len(),
                _ => 0,
            })
            .sum();
        let forwards = writes.iter().any(|w| match w {
            Write::Events { events: e, .. } => e.iter().any(|e| !e.forward_to.is_empty()),
            _ => false,
        });
        let start = std::time::Instant::now();
        let result = backend.apply(&writes, &mut next_id);
        observe(writes.len(), events, start.elapsed(), result.is_ok());
        if forwards && result.is_ok() {
            queued.notify_one();
        }
        match result {
            Ok(applied) if applied.len() == replies.len() => {
                for (reply, applied) in replies.into_iter().zip(applied) {
                    let _ = reply.send(Ok(applied));
                }
            }
            Ok(_) => {
                let e = StoreError::Backend("backend answered a different number of writes".into());
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = replies.len(), "group commit failed; nothing of it is stored");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// The dedupe key of an event: its provider event id when it has one
/// (connection, provider, provider event id, recipient, kind), else a hash
/// of everything the provider sent about it: the first 128 bits of a SHA-256
/// over those fields. Both forms cover the recipient's [`address_key`], so a
/// backend may index it after the recipient (SQLite does).
pub fn dedupe_key(connection: &str, event: &NormalizedEvent) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |v: &str| {
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    };
    let kind = event.kind.as_str();
    match &event.provider_event_id {
        Some(id) => {
            field("id");
            field(connection);
            field(&event.provider);
            field(id);
            field(&address_key(&event.recipient));
            field(kind);
        }
        None => {
            field("content");
            field(connection);
            field(&event.provider);
            field(&address_key(&event.recipient));
            field(kind);
            field(&event.occurred_at);
            for v in [
                &event.provider_message_id,
                &event.message_id,
                &event.smtp_status,
                &event.enhanced_status,
                &event.diagnostic,
            ] {
                field(v.as_deref().unwrap_or("\u{0}"));
            }
            field(event.bounce_class.map_or("", BounceClass::as_str));
        }
    }
    let digest = h.finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// How addresses are compared: surrounding space trimmed, the domain
/// lower-cased (RFC 5321 leaves the local part's case to the receiving
/// server, so it is kept).
pub fn address_key(address: &str) -> String {
    let a = address.trim();
    match a.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => a.to_owned(),
    }
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `d` after `now_ms` (Unix milliseconds), saturating: when a lease or a
/// wait ends.
pub(crate) fn ms_after(now_ms: i64, d: std::time::Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let t = u64::try_from(ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, recipient: &str) -> NormalizedEvent {
        NormalizedEvent {
            kind: EventKind::Bounced,
            bounce_class: None,
            recipient: recipient.into(),
            occurred_at: "2026-01-01T00:00:00Z".into(),
            provider: "sendgrid".into(),
            provider_event_id: id.map(Into::into),
            provider_message_id: None,
            message_id: None,
            smtp_status: None,
            enhanced_status: None,
            diagnostic: None,
        }
    }

    #[test]
    fn addresses_compare_case_insensitively_in_the_domain_only() {
        assert_eq!(address_key(" Bob@Example.COM "), "Bob@example.com");
        assert_ne!(address_key("Bob@x.org"), address_key("bob@x.org"));
        assert_eq!(address_key("no-at-sign"), "no-at-sign");
    }

    #[test]
    fn dedupe_keys_follow_provider_ids_or_content() {
        let a = dedupe_key("c", &event(Some("e1"), "a@x.org"));
        assert_eq!(a, dedupe_key("c", &event(Some("e1"), "a@X.ORG")));
        assert_ne!(a, dedupe_key("c", &event(Some("e2"), "a@x.org")));
        assert_ne!(a, dedupe_key("other", &event(Some("e1"), "a@x.org")));
        let mut diag = event(None, "a@x.org");
        let plain = dedupe_key("c", &diag);
        diag.diagnostic = Some("550".into());
        assert_ne!(plain, dedupe_key("c", &diag));
        assert_ne!(plain, a);
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(format_ms(1_767_268_800_123), "2026-01-01T12:00:00.123Z");
    }
}
