//! Forwarding stored delivery events to the application: which forwarders
//! an event goes to (decided at ingest, queued in the event's transaction),
//! and the worker that drains the outbox — Standard Webhooks signed POSTs
//! or NDJSON lines, retried with exponential backoff and full jitter until
//! the forwarder's `max_age`, one event at a time per recipient.
//!
//! Guarantees and their limits are documented in `docs/forwarding.md`.

use crate::event::EventKind;
use crate::state::Snapshot;

mod backoff;
mod deliver;
pub mod sign;
mod worker;

pub use worker::{Forwarding, WorkerSettings};

/// Names of the live forwarders that receive an event of `kind` stored for
/// a connection serving `workspaces`.
pub fn forwarders_for(snapshot: &Snapshot, workspaces: &[String], kind: EventKind) -> Vec<String> {
    if snapshot.forwarders.is_empty() {
        return Vec::new();
    }
    snapshot
        .forwarders
        .values()
        .filter(|f| f.accepts(workspaces, kind))
        .map(|f| f.name.clone())
        .collect()
}
