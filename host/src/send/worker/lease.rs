//! The send lease of a rate-limited connection: one process sends through
//! it at a time, so `limits.per_second` and the quotas hold for every
//! process sharing the store (replicas on one PostgreSQL), not per process.
//!
//! The holder renews its lease every few seconds; a process that finds
//! another's lease running stands by and asks again. When a holder stops
//! cleanly it releases the lease and another process takes over at once;
//! when it dies, once the lease has lapsed ([`TTL`]). The new holder first
//! adopts the connection's send history from the store, so quotas count
//! what the previous holder sent and the next send keeps the rate's
//! spacing from the previous holder's last one. Connections without any
//! rate or quota need no lease: every process sends through them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::Connection;
use crate::send::limit::Limiter;
use crate::store::{Store, now_ms};

/// How long a lease runs without renewal.
pub const TTL: Duration = Duration::from_secs(15);
/// A holder renews once less than this is left (about every 5 s).
const RENEW_WHEN_LEFT_MS: i64 = 10_000;
/// How often a standing-by process asks again.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// Whether this process sends through a connection, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// No rate or quota: every process sends through it.
    NotNeeded,
    /// This process holds the lease and sends.
    Held,
    /// Another process holds it; this one waits.
    Standby,
}

impl LeaseState {
    fn to_u8(self) -> u8 {
        match self {
            Self::NotNeeded => 0,
            Self::Held => 1,
            Self::Standby => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Held,
            2 => Self::Standby,
            _ => Self::NotNeeded,
        }
    }
}

/// A lane's lease state, shared with the API.
#[derive(Debug, Default)]
pub struct LeaseCell(AtomicU8);

impl LeaseCell {
    /// The state now.
    pub fn get(&self) -> LeaseState {
        LeaseState::from_u8(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, s: LeaseState) {
        self.0.store(s.to_u8(), Ordering::Relaxed);
    }
}

/// Whether a connection's sending needs the lease.
pub fn needed(conn: &Connection) -> bool {
    let l = &conn.limits;
    l.per_second.is_some() || l.per_minute.is_some() || l.per_hour.is_some() || l.per_day.is_some()
}

/// The lease as one lane task holds it.
#[derive(Debug, Default)]
pub(super) struct Lease {
    /// Until when this process holds it (Unix ms); 0: not held.
    until_ms: i64,
}

impl Lease {
    /// Whether this process may send through `conn` now: takes or renews
    /// the lease when needed, adopting the store's send history into
    /// `limiter` when the lease was not held a moment ago.
    pub(super) async fn hold(
        &mut self,
        store: &Arc<Store>,
        holder: &str,
        conn: &Connection,
        limiter: &Limiter,
        cell: &LeaseCell,
    ) -> bool {
        if !needed(conn) {
            self.release(store, holder, &conn.name).await;
            cell.set(LeaseState::NotNeeded);
            return true;
        }
        let now = now_ms();
        if self.until_ms - now > RENEW_WHEN_LEFT_MS {
            return true;
        }
        let (name, who) = (conn.name.clone(), holder.to_owned());
        let taken = store
            .read(move |b| b.lease_connection(&name, &who, now, TTL))
            .await;
        match taken {
            Ok(true) => {
                if self.until_ms <= now {
                    adopt_history(store, conn, limiter).await;
                    tracing::info!(connection = %conn.name, holder, "took the send lease");
                }
                self.until_ms = now.saturating_add(ttl_ms());
                cell.set(LeaseState::Held);
                true
            }
            Ok(false) => {
                if self.until_ms > now {
                    tracing::warn!(connection = %conn.name, "another process took the send lease");
                }
                self.until_ms = 0;
                cell.set(LeaseState::Standby);
                false
            }
            Err(e) => {
                // The store is unreachable: keep sending until the lease
                // lapses (no other process can take it before), then stop.
                let held = self.until_ms > now;
                tracing::warn!(connection = %conn.name, error = %e, held, "renewing the send lease failed");
                if !held {
                    self.until_ms = 0;
                    cell.set(LeaseState::Standby);
                }
                held
            }
        }
    }

    /// Gives the lease up if held (shutdown, or the limits were removed).
    pub(super) async fn release(&mut self, store: &Arc<Store>, holder: &str, connection: &str) {
        if self.until_ms == 0 {
            return;
        }
        self.until_ms = 0;
        let (name, who) = (connection.to_owned(), holder.to_owned());
        if let Err(e) = store.read(move |b| b.release_connection(&name, &who)).await {
            tracing::warn!(connection, error = %e, "releasing the send lease failed; it lapses on its own");
        }
    }
}

fn ttl_ms() -> i64 {
    i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX)
}

/// Loads what was sent through `conn` within its longest window (at least
/// the last two seconds, for the rate's spacing) into `limiter`.
async fn adopt_history(store: &Arc<Store>, conn: &Connection, limiter: &Limiter) {
    let l = &conn.limits;
    let span_ms: i64 = if l.per_day.is_some() {
        24 * 3600 * 1000
    } else if l.per_hour.is_some() {
        3600 * 1000
    } else if l.per_minute.is_some() {
        60 * 1000
    } else {
        2000
    };
    let now = now_ms();
    let since = now.saturating_sub(span_ms);
    match store.read(move |b| b.sent_since(since)).await {
        Ok(rows) => {
            let times: Vec<i64> = rows
                .into_iter()
                .filter(|(c, _)| *c == conn.name)
                .map(|(_, at)| at)
                .collect();
            limiter.adopt(&times, now);
        }
        Err(e) => {
            tracing::warn!(connection = %conn.name, error = %e, "loading the send history failed; quotas count this process's sends only");
        }
    }
}
