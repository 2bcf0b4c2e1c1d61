//! What an operator learns about a store without running the daemon:
//! the schema version found against this binary's, and what is stored
//! (`mailplug store status`, `mailplug store migrate`).

use serde::Serialize;

use super::queue::ConnectionQueue;

/// A store's schema as found, read without migrating anything.
#[derive(Debug, Clone)]
pub struct SchemaStatus {
    /// Newest migration applied to the store (0: none, an empty database).
    pub found: i64,
    /// Newest migration this binary knows.
    pub supported: i64,
    /// What is stored; read only when the schema is current, since the
    /// tables of another version may not have the columns counted.
    pub contents: Option<Contents>,
}

/// Row counts of a store whose schema is current.
#[derive(Debug, Clone, Serialize)]
pub struct Contents {
    /// Stored delivery events.
    pub events: u64,
    /// Suppressed (workspace, address) pairs.
    pub suppressions: u64,
    /// Deliveries queued, sending or deferred, per connection that has any.
    pub pending: Vec<PendingDeliveries>,
}

/// Pending deliveries of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct PendingDeliveries {
    /// Connection name (rows outlive their connection file).
    pub connection: String,
    /// Queued, sending and deferred deliveries.
    pub pending: u64,
}

impl From<ConnectionQueue> for PendingDeliveries {
    fn from(q: ConnectionQueue) -> Self {
        Self {
            connection: q.connection,
            pending: q.pending,
        }
    }
}

/// What a schema version means for this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// This binary's version: the daemon opens it as it is.
    Current,
    /// Older: this many migrations would be applied (by `store migrate`, or
    /// by `serve` at start).
    Pending(i64),
    /// Newer than this binary: it refuses the store.
    TooNew,
}

impl SchemaStatus {
    /// The state of the version found.
    pub fn state(&self) -> SchemaState {
        match self.found.cmp(&self.supported) {
            std::cmp::Ordering::Equal => SchemaState::Current,
            std::cmp::Ordering::Less => SchemaState::Pending(self.supported - self.found),
            std::cmp::Ordering::Greater => SchemaState::TooNew,
        }
    }
}

/// Versions before and after a migration run; equal when the store was
/// already current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version found.
    pub from: i64,
    /// The version left (this binary's).
    pub to: i64,
}
