//! A small pool of blocking PostgreSQL clients: at most `max` open at
//! once, idle ones reused, a broken one dropped (the next caller opens a
//! fresh one).

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use super::tls::RustlsConnect;
use crate::store::StoreError;

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
    /// Idle clients and how many are open.
    state: Mutex<State>,
    /// Signalled when a client is returned or closed.
    freed: Condvar,
}

struct State {
    /// Clients not in use, reused before a new one is opened.
    idle: Vec<Client>,
    /// Clients open (idle and checked out): the cap applies to these.
    open: usize,
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
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// `host:port/database`.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// An idle client, or a new one while fewer than `max` are open.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let poisoned = || StoreError::Backend("store pool lock poisoned".into());
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        loop {
            while let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open = state.open.saturating_sub(1);
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    client: Some(client),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                let connected = match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()),
                    None => self.config.connect(NoTls),
                };
                return match connected {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(e) => {
                        self.closed();
                        Err(StoreError::Backend(format!(
                            "cannot connect to PostgreSQL at {}: {}",
                            self.target,
                            causes(&e)
                        )))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Busy);
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

    fn put(&self, client: Client) {
        if client.is_closed() {
            drop(client);
            self.closed();
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            state.idle.push(client);
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
    client: Option<Client>,
}

impl Deref for Pooled<'_> {
    type Target = Client;

    #[allow(clippy::expect_used, reason = "only `drop` takes the client out")]
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("pooled client")
    }
}

impl DerefMut for Pooled<'_> {
    #[allow(clippy::expect_used, reason = "only `drop` takes the client out")]
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("pooled client")
    }
}

impl Pooled<'_> {
    /// Closes the client instead of returning it (its connection broke).
    pub(crate) fn discard(mut self) {
        if let Some(client) = self.client.take() {
            drop(client);
            self.pool.closed();
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool.put(client);
        }
    }
}
