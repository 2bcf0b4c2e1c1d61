//! How a backend's connection pool is used, as `/metrics` shows it: the
//! same figures whichever backend has a pool (PostgreSQL's today).

/// A pool's clients now and its totals since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolStats {
    /// Connections open: idle, in use, and being opened.
    pub open: u64,
    /// Open connections waiting to be used.
    pub idle: u64,
    /// Most connections the pool opens at once.
    pub max: u64,
    /// Checkouts that found every connection in use and the pool at `max`,
    /// so waited for one to be returned.
    pub waits: u64,
    /// Seconds those checkouts waited, summed.
    pub wait_seconds: f64,
    /// Checkouts that waited in vain and failed busy.
    pub timeouts: u64,
    /// Connections that could not be opened (server down, login refused).
    pub connect_errors: u64,
}

impl PoolStats {
    /// Connections checked out now (open and not idle).
    pub fn in_use(&self) -> u64 {
        self.open.saturating_sub(self.idle)
    }
}
