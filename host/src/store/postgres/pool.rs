//! A small pool of blocking PostgreSQL clients: at most `max` open at
//! once, idle ones reused with the statements they prepared, a broken one
//! dropped (the next caller opens a fresh one), and counters of its use
//! ([`PoolStats`]).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use super::sql::{Sql, Statements};
use super::tls::RustlsConnect;
use crate::store::{PoolStats, StoreError};

/// How long a caller waits for a free client before giving up (busy).
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients of one database.
pub(crate) struct Pool {
    /// How to open a client.
    config: Config,
    /// The TLS connector when the URL asks for TLS.
    tls: Option<RustlsConnect>,
    /// `host:port/database`, for errors.
    target: String,
    /// Most clients open at once (busy and idle).
    max: usize,
    /// How long a checkout waits for a client before it fails busy.
    checkout_timeout: Duration,
    /// Idle clients and how many are open.
    state: Mutex<State>,
    /// Signalled when a client is returned or closed.
    freed: Condvar,
    /// Checkouts that waited, and how long, for `/metrics`.
    counters: Counters,
}

struct State {
    /// Clients not in use, reused before a new one is opened.
    idle: Vec<Conn>,
    /// Clients open (idle, checked out and being opened): the cap applies
    /// to these.
    open: usize,
}

/// One open client and the statements it prepared (they exist in its
/// server session only, so they live and die with it).
pub(crate) struct Conn {
    client: Client,
    statements: Statements,
}

/// Totals since the pool was made; atomics, so reading them for a scrape
/// never waits for a checkout.
#[derive(Default)]
struct Counters {
    /// Checkouts that found every client busy and the pool at its cap.
    waits: AtomicU64,
    /// Nanoseconds those checkouts waited, summed.
    wait_nanos: AtomicU64,
    /// Checkouts that waited [`Pool::checkout_timeout`] in vain.
    timeouts: AtomicU64,
    /// Connections that could not be opened.
    connect_errors: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of at most `max` (at least 1) clients; opens none yet.
    pub(crate) fn new(
        config: Config,
        tls: Option<RustlsConnect>,
        target: String,
        max: usize,
    ) -> Self {
        Self {
            config,
            tls,
            target,
            max: max.max(1),
            checkout_timeout: CHECKOUT_TIMEOUT,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            counters: Counters::default(),
        }
    }

    /// The same pool with checkouts failing busy after `timeout`.
    #[cfg(test)]
    pub(crate) fn with_checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout;
        self
    }

    /// Clients open and idle now, the cap, and the totals of waits,
    /// timeouts and failed connects.
    pub(crate) fn stats(&self) -> PoolStats {
        let (open, idle) = self
            .state
            .lock()
            .map(|s| (s.open, s.idle.len()))
            .unwrap_or_default();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        PoolStats {
            open: count(open),
            idle: count(idle),
            max: count(self.max),
            waits: self.counters.waits.load(Relaxed),
            wait_seconds: self.counters.wait_nanos.load(Relaxed) as f64 / 1e9,
            timeouts: self.counters.timeouts.load(Relaxed),
            connect_errors: self.counters.connect_errors.load(Relaxed),
        }
    }

    /// Adds the time since `since` (when this checkout started waiting,
    /// if it did) to the total waited.
    fn waited(&self, since: Option<Instant>) {
        if let Some(since) = since {
            let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.counters.wait_nanos.fetch_add(nanos, Relaxed);
        }
    }

    /// `host:port/database`.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Opens a client within `connect_timeout` for the whole set-up: the
    /// client library bounds only the TCP connect, and a server (or proxy)
    /// that accepts but never answers the start-up would hold the caller
    /// forever. The attempt runs on a thread of its own; one that outlives
    /// the bound is left to end with its socket, and its client is dropped.
    fn connect(&self) -> Result<Client, String> {
        let bound = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(super::url::DEFAULT_CONNECT_TIMEOUT);
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let (sent, received) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("pg-connect".into())
            .spawn(move || {
                let connected = match tls {
                    Some(tls) => config.connect(tls),
                    None => config.connect(NoTls),
                };
                let _ = sent.send(connected.map_err(|e| causes(&e)));
            })
            .map_err(|e| format!("cannot start a connection thread: {e}"))?;
        match received.recv_timeout(bound) {
            Ok(connected) => connected,
            Err(_) => Err(format!(
                "the server did not complete the connection start-up within {bound:?} \
                 (connect_timeout)"
            )),
        }
    }

    /// An idle client, or a new one while fewer than `max` are open.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let poisoned = || StoreError::Backend("store pool lock poisoned".into());
        let deadline = Instant::now() + self.checkout_timeout;
        let mut waiting_since = None;
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        loop {
            while let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    state.open = state.open.saturating_sub(1);
                    continue;
                }
                drop(state);
                self.waited(waiting_since);
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                self.waited(waiting_since);
                return match self.connect() {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        conn: Some(Conn {
                            client,
                            statements: Statements::default(),
                        }),
                    }),
                    Err(e) => {
                        self.counters.connect_errors.fetch_add(1, Relaxed);
                        self.closed();
                        Err(StoreError::Backend(format!(
                            "cannot connect to PostgreSQL at {}: {e}",
                            self.target
                        )))
                    }
                };
            }
            if waiting_since.is_none() {
                waiting_since = Some(Instant::now());
                self.counters.waits.fetch_add(1, Relaxed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                self.waited(waiting_since);
                self.counters.timeouts.fetch_add(1, Relaxed);
                return Err(StoreError::Busy(format!(
                    "no PostgreSQL connection came free within {:?} (all {} in use)",
                    self.checkout_timeout, self.max
                )));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .map_err(|_| poisoned())?
                .0;
        }
    }

    /// Drops every idle client (at close).
    pub(crate) fn clear(&self) {
        let idle = match self.state.lock() {
            Ok(mut state) => {
                let idle = std::mem::take(&mut state.idle);
                state.open = state.open.saturating_sub(idle.len());
                idle
            }
            Err(_) => Vec::new(),
        };
        drop(idle);
        self.freed.notify_all();
    }

    fn closed(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.open = state.open.saturating_sub(1);
        }
        self.freed.notify_one();
    }

    fn put(&self, conn: Conn) {
        if conn.client.is_closed() {
            drop(conn);
            self.closed();
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            state.idle.push(conn);
        }
        self.freed.notify_one();
    }
}

/// An error and its sources, `outer: inner: ...` (a failed TLS handshake
/// says why only in its source).
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A client closes through its own runtime, which must not run inside
        // an async runtime's thread: the last handle to the store may be
        // dropped on one, so idle clients are closed on a thread of their own.
        let idle = self
            .state
            .get_mut()
            .map(|s| std::mem::take(&mut s.idle))
            .unwrap_or_default();
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("store-pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

/// A client checked out of the pool; returned when dropped (or discarded,
/// if its connection broke).
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Deref for Pooled<'_> {
    type Target = Conn;

    #[allow(clippy::expect_used, reason = "only `drop` takes the client out")]
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("pooled client")
    }
}

impl DerefMut for Pooled<'_> {
    #[allow(clippy::expect_used, reason = "only `drop` takes the client out")]
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("pooled client")
    }
}

impl Conn {
    /// The client, for what runs outside the statement cache (migrations,
    /// health checks).
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The client with its kept statements.
    pub(crate) fn sql(&mut self) -> Sql<'_, Client> {
        Sql::new(&mut self.client, &mut self.statements, false)
    }

    /// How many statements the client keeps.
    #[cfg(test)]
    pub(crate) fn kept_statements(&self) -> usize {
        self.statements.len()
    }
}

impl Pooled<'_> {
    /// Closes the client instead of returning it (its connection broke).
    pub(crate) fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn);
            self.pool.closed();
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put(conn);
        }
    }
}
