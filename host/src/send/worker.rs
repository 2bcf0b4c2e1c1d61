//! The send workers: one lane per live connection that claims its due
//! deliveries, paces them through the connection's [`Limiter`] and pool
//! (`limits.max_connections` sessions), attempts each one and hands the
//! outcome to one settler task that records outcomes in batches.
//!
//! A lane whose circuit is open sends nothing: it moves its due deliveries
//! to the next connection of their workspace (when there is one), and once
//! the pause is over it runs the staged probe before sending again.
//!
//! At shutdown a lane stops claiming, releases what it claimed but did not
//! start, and gives attempts in flight a bound to finish; an attempt still
//! running after that keeps its lease, and the delivery is attempted again
//! after a restart (the duplicate window of docs/sending.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::breaker::{Admit, Breaker, BreakerSettings, BreakerState};
use super::limit::{Limiter, RateSettings, RateState};
use super::retry::RetryPolicy;
use super::route;
use crate::config::Connection;
use crate::mail::{self, Classification, Mailer};
use crate::metrics::Metrics;
use crate::state::Snapshot;
use crate::store::queue::{ClaimedDelivery, DeliveryOutcome, DeliverySettlement};
use crate::store::{Store, now_ms};

mod attempt;
pub mod lease;

pub use attempt::connection_level;
use attempt::{Attempt, config_error, settle_loop};

/// Deliveries a lane claims ahead per session of its pool (one claim is one
/// store commit). Every claim waits its turn at the store's single writer
/// behind enqueue and settle commits; claiming a few dozen per session
/// keeps the sessions busy through that wait.
const CLAIM_PER_SESSION: usize = 32;

/// How the workers behave.
#[derive(Debug, Clone, Copy)]
pub struct SendSettings {
    /// Retry schedule of temporary failures.
    pub retry: RetryPolicy,
    /// When a connection's circuit opens and how long it pauses.
    pub breaker: BreakerSettings,
    /// How often a lane looks for due retries when nothing wakes it.
    pub poll: Duration,
    /// How long attempts in flight at shutdown get to finish.
    pub drain: Duration,
    /// Accept and queue, send nothing (`--hold-queue`).
    pub hold: bool,
    /// Lease of a claimed delivery (`--delivery-lease`); `None`: 12 × the
    /// connection's timeout, at least 10 minutes.
    pub delivery_lease: Option<Duration>,
}

impl Default for SendSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            breaker: BreakerSettings::default(),
            poll: Duration::from_millis(250),
            drain: Duration::from_secs(10),
            hold: false,
            delivery_lease: None,
        }
    }
}

/// The sending state of one connection, shared by its lane, the API and
/// the metrics.
#[derive(Debug)]
pub struct Lane {
    /// Connection name.
    pub name: String,
    limiter: Limiter,
    breaker: Mutex<Breaker>,
    wake: Notify,
    /// Attempts running now.
    in_flight: AtomicU64,
    /// Whether this process holds the connection's send lease.
    lease: lease::LeaseCell,
}

/// What the admin API shows of a lane.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneState {
    /// Connection name.
    pub connection: String,
    /// Attempts running now.
    pub in_flight: u64,
    /// Rate and quota state (adaptive throttling).
    pub rate: RateState,
    /// Circuit breaker.
    pub breaker: BreakerState,
    /// Whether this process sends through the connection (its send lease).
    pub lease: lease::LeaseState,
}

impl Lane {
    fn settings(conn: &Connection) -> RateSettings {
        RateSettings {
            per_second: conn.limits.per_second,
            per_minute: conn.limits.per_minute,
            per_hour: conn.limits.per_hour,
            per_day: conn.limits.per_day,
        }
    }

    /// Whether the lane takes new mail now (its circuit is not open).
    pub fn available(&self, now: i64) -> bool {
        self.breaker
            .lock()
            .map(|b| !matches!(b.snapshot(now).state, super::breaker::BreakerPhase::Open))
            .unwrap_or(true)
    }

    /// The lane's state for the API.
    pub fn state(&self, now: i64) -> LaneState {
        LaneState {
            connection: self.name.clone(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            rate: self.limiter.snapshot(now),
            breaker: self
                .breaker
                .lock()
                .map(|b| b.snapshot(now))
                .unwrap_or_else(|p| p.into_inner().snapshot(now)),
            lease: self.lease.get(),
        }
    }
}

/// The senders' shared state: one lane per connection that has had one.
#[derive(Debug)]
pub struct Sending {
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    settings: SendSettings,
    /// Quota history loaded at start, handed to each lane as it is created.
    history: Mutex<HashMap<String, Vec<i64>>>,
    /// Deliveries found in flight at start (the duplicate window).
    pub recovered_in_flight: AtomicU64,
    /// This process's name on send leases: host, process id and a ULID.
    pub holder: String,
}

impl Sending {
    /// Empty state; lanes appear as the supervisor starts them.
    pub fn new(settings: SendSettings) -> Self {
        Self {
            lanes: Mutex::new(HashMap::new()),
            settings,
            history: Mutex::new(HashMap::new()),
            recovered_in_flight: AtomicU64::new(0),
            holder: format!(
                "{}/{}/{}",
                mail::machine_hostname(),
                std::process::id(),
                ulid::Ulid::new()
            ),
        }
    }

    /// Whether sending is held (`--hold-queue`).
    pub fn held(&self) -> bool {
        self.settings.hold
    }

    fn lane(&self, conn: &Connection) -> Arc<Lane> {
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lane) = lanes.get(&conn.name) {
            lane.limiter.update(Lane::settings(conn), now_ms());
            return lane.clone();
        }
        let history = self
            .history
            .lock()
            .ok()
            .and_then(|mut h| h.remove(&conn.name))
            .unwrap_or_default();
        let lane = Arc::new(Lane {
            name: conn.name.clone(),
            limiter: Limiter::new(Lane::settings(conn), &history, now_ms()),
            breaker: Mutex::new(Breaker::new(self.settings.breaker)),
            wake: Notify::new(),
            in_flight: AtomicU64::new(0),
            lease: lease::LeaseCell::default(),
        });
        lanes.insert(conn.name.clone(), lane.clone());
        lane
    }

    /// A lane by connection name, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Lane>> {
        self.lanes.lock().ok()?.get(name).cloned()
    }

    /// Every lane's state, by name.
    pub fn states(&self) -> Vec<LaneState> {
        let now = now_ms();
        let mut lanes: Vec<Arc<Lane>> = self
            .lanes
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default();
        lanes.sort_by(|a, b| a.name.cmp(&b.name));
        lanes.iter().map(|l| l.state(now)).collect()
    }

    /// Whether a connection takes new mail now (no lane yet: yes).
    pub fn available(&self, name: &str) -> bool {
        self.get(name).is_none_or(|l| l.available(now_ms()))
    }

    /// Wakes a connection's lane (new deliveries are due).
    pub fn wake(&self, name: &str) {
        if let Some(lane) = self.get(name) {
            lane.wake.notify_one();
        }
    }
}

/// A finished attempt on its way to the settler.
struct Done {
    settlement: DeliverySettlement,
    class: &'static str,
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    task: JoinHandle<()>,
}

impl Workers {
    /// Recovers what a previous process left in flight, then starts one lane
    /// per live connection (following reloads) and the settler.
    pub async fn start(
        sending: Arc<Sending>,
        store: Arc<Store>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let now = now_ms();
        match store.read(move |b| b.recover_in_flight(now)).await {
            Ok(0) => {}
            Ok(n) => {
                sending.recovered_in_flight.store(n, Ordering::Relaxed);
                metrics.queue_recovered.inc_by(n);
                tracing::warn!(
                    deliveries = n,
                    "deliveries were in flight when the last process stopped; they are sent again (the server may have accepted some already)"
                );
            }
            Err(e) => tracing::error!(error = %e, "recovering in-flight deliveries failed"),
        }
        let since = now.saturating_sub(24 * 3600 * 1000);
        match store.read(move |b| b.sent_since(since)).await {
            Ok(rows) => {
                if let Ok(mut h) = sending.history.lock() {
                    for (conn, at) in rows {
                        h.entry(conn).or_default().push(at);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "loading the quota history failed"),
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let settler = tokio::spawn(settle_loop(
            store.clone(),
            sending.clone(),
            metrics.clone(),
            done_rx,
        ));
        let task = tokio::spawn(supervise(sending, store, snapshot, stop, done_tx, settler));
        Self { task }
    }

    /// Waits until every lane stopped and its outcomes are recorded.
    pub async fn finished(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the send workers ended abnormally");
        }
    }
}

/// Keeps one lane task per live connection.
async fn supervise(
    sending: Arc<Sending>,
    store: Arc<Store>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::UnboundedSender<Done>,
    settler: JoinHandle<()>,
) {
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        if !sending.settings.hold {
            let snap = snapshot.load_full();
            running.retain(|name, task| !task.is_finished() || snap.connections.contains_key(name));
            for conn in snap.connections.values() {
                let lane = sending.lane(conn);
                if running.get(&conn.name).is_some_and(|t| !t.is_finished()) {
                    continue;
                }
                let worker = LaneWorker {
                    lane,
                    sending: sending.clone(),
                    store: store.clone(),
                    snapshot: snapshot.clone(),
                    done: done.clone(),
                    mailer: None,
                    permits: Arc::new(Semaphore::new(conn.limits.max_connections as usize)),
                    pool_size: conn.limits.max_connections,
                    lease: lease::Lease::default(),
                    ahead: None,
                };
                running.insert(conn.name.clone(), tokio::spawn(worker.run(stop.clone())));
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    for (_, task) in running {
        let _ = task.await;
    }
    drop(done);
    let _ = settler.await;
}

struct LaneWorker {
    lane: Arc<Lane>,
    sending: Arc<Sending>,
    store: Arc<Store>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    done: mpsc::UnboundedSender<Done>,
    /// The pool for the connection as it was when built.
    mailer: Option<(Arc<Connection>, Mailer)>,
    permits: Arc<Semaphore>,
    pool_size: u32,
    lease: lease::Lease,
    /// The next claim, started while the last deliveries of the current
    /// one wait for a session, so the sessions do not idle through it.
    ahead: Option<JoinHandle<Vec<ClaimedDelivery>>>,
}

impl LaneWorker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let name = self.lane.name.clone();
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            while inflight.try_join_next().is_some() {}
            let snap = self.snapshot.load_full();
            let Some(conn) = snap.connections.get(&name).cloned() else {
                break;
            };
            if conn.limits.max_connections != self.pool_size {
                // A reload changed the pool size: the supervisor starts a
                // fresh lane task with the new permits.
                if inflight.is_empty() {
                    break;
                }
            }
            let holder = &self.sending.holder;
            if !self
                .lease
                .hold(
                    &self.store,
                    holder,
                    &conn,
                    &self.lane.limiter,
                    &self.lane.lease,
                )
                .await
            {
                // Another process sends through this connection now.
                self.release_ahead().await;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(lease::STANDBY_POLL) => {}
                }
                continue;
            }
            let now = now_ms();
            let admit = self
                .lane
                .breaker
                .lock()
                .map(|mut b| b.admit(now))
                .unwrap_or(Admit::Send);
            if !matches!(admit, Admit::Send) {
                self.release_ahead().await;
            }
            let wait = match admit {
                Admit::Paused { until_ms } => {
                    self.move_away(&snap, &conn).await;
                    Duration::from_millis(u64::try_from(until_ms - now).unwrap_or(0))
                        .min(Duration::from_secs(1))
                }
                Admit::Probe => {
                    self.probe(&conn).await;
                    Duration::ZERO
                }
                Admit::Send => {
                    let sent = self.send_due(&snap, &conn, &mut inflight, &mut stop).await;
                    if sent {
                        Duration::ZERO
                    } else {
                        self.sending.settings.poll
                    }
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = self.lane.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Attempts in flight get a bound to finish.
        let drain = self.sending.settings.drain;
        if tokio::time::timeout(drain, async {
            while inflight.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(connection = %name, "attempts still running at the shutdown bound; they are sent again after a restart");
            inflight.abort_all();
        }
        self.release_ahead().await;
        if let Some((_, mailer)) = self.mailer.take() {
            mailer.close().await;
        }
        self.lease
            .release(&self.store, &self.sending.holder, &name)
            .await;
    }

    /// The connection's pool, rebuilt when its settings changed.
    async fn mailer(&mut self, conn: &Arc<Connection>) -> Result<Mailer, Classification> {
        if let Some((built, mailer)) = &self.mailer
            && **built == **conn
        {
            return Ok(mailer.clone());
        }
        let c = conn.clone();
        let target = tokio::task::spawn_blocking(move || mail::target_for(&c))
            .await
            .map_err(|e| config_error(e.to_string()))?
            .map_err(|e| config_error(e.to_string()))?;
        let mailer = Mailer::new(target).map_err(|e| config_error(e.to_string()))?;
        if let Some((_, old)) = self.mailer.replace((conn.clone(), mailer.clone())) {
            tokio::spawn(async move { old.close().await });
        }
        Ok(mailer)
    }

    /// Claims due deliveries and starts their attempts, paced; false when
    /// nothing was due.
    async fn send_due(
        &mut self,
        snap: &Arc<Snapshot>,
        conn: &Arc<Connection>,
        inflight: &mut tokio::task::JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        // Claim ahead of the sessions (a claim is one store commit): up to
        // CLAIM_PER_SESSION deliveries per session, or one second's worth at
        // the current rate when that is less. Claimed deliveries wait for a
        // session below; their leases outlast that wait by far.
        let pool = self.pool_size.max(1) as usize;
        let rate = self.lane.limiter.snapshot(now_ms()).effective_per_second;
        let want = match rate {
            Some(r) => pool
                .saturating_mul(CLAIM_PER_SESSION)
                .min(r.ceil() as usize + 1),
            None => pool.saturating_mul(CLAIM_PER_SESSION),
        }
        .clamp(1, 256);
        let claimed = match self.ahead.take() {
            // A claim started ahead finds what was due then; when that was
            // nothing, look again now.
            Some(ahead) => match ahead.await {
                Ok(rows) if !rows.is_empty() => rows,
                _ => self.claim(conn, want).await,
            },
            None => self.claim(conn, want).await,
        };
        if claimed.is_empty() {
            return false;
        }
        // A full claim means more is likely due: the next one starts while
        // the last `pool` deliveries of this one wait for their sessions.
        let full = claimed.len() >= want;
        let mailer = self.mailer(conn).await;
        let mut rest = claimed.into_iter();
        while let Some(d) = rest.next() {
            if full && rest.len() < pool && self.ahead.is_none() {
                self.ahead = Some(tokio::spawn(claim(
                    self.store.clone(),
                    self.sending.settings,
                    conn.clone(),
                    want,
                )));
            }
            // Pacing: wait for a slot of the rate and quotas.
            loop {
                let now = now_ms();
                match self.lane.limiter.try_acquire(now) {
                    Ok(()) => break,
                    Err(wait) => {
                        let ms = u64::try_from(wait.until_ms - now).unwrap_or(0).max(1);
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => {
                                self.release(std::iter::once(d).chain(rest), now_ms());
                                return true;
                            }
                            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        }
                    }
                }
            }
            let permit = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                p = self.permits.clone().acquire_owned() => p.ok(),
            };
            let Some(permit) = permit else {
                // Shutting down (or the pool is gone): what waited for a
                // session goes back to the queue unsent.
                self.release(std::iter::once(d).chain(rest), now_ms());
                return true;
            };
            let open = self
                .lane
                .breaker
                .lock()
                .map(|b| {
                    !matches!(
                        b.snapshot(now_ms()).state,
                        super::breaker::BreakerPhase::Closed
                    )
                })
                .unwrap_or(false);
            if open {
                // Failures while this batch waited opened the circuit.
                drop(permit);
                self.release(std::iter::once(d).chain(rest), now_ms());
                return true;
            }
            let attempt = Attempt {
                lane: self.lane.clone(),
                snapshot: snap.clone(),
                conn: conn.clone(),
                mailer: mailer.clone(),
                retry: self.sending.settings.retry,
                sending: self.sending.clone(),
                done: self.done.clone(),
            };
            self.lane.in_flight.fetch_add(1, Ordering::Relaxed);
            inflight.spawn(async move {
                attempt.run(d).await;
                drop(permit);
            });
        }
        true
    }

    async fn claim(&self, conn: &Arc<Connection>, want: usize) -> Vec<ClaimedDelivery> {
        claim(
            self.store.clone(),
            self.sending.settings,
            conn.clone(),
            want,
        )
        .await
    }

    /// Gives back what a claim started ahead holds (the lane stops, pauses
    /// or lost its send lease).
    async fn release_ahead(&mut self) {
        if let Some(ahead) = self.ahead.take()
            && let Ok(rows) = ahead.await
        {
            self.release(rows.into_iter(), now_ms());
        }
    }

    fn release(&self, rows: impl Iterator<Item = ClaimedDelivery>, at: i64) {
        for d in rows {
            let _ = self.done.send(Done {
                settlement: DeliverySettlement {
                    id: d.id,
                    lease: d.lease,
                    connection: self.lane.name.clone(),
                    at_ms: at,
                    outcome: DeliveryOutcome::Released {
                        next_attempt_at_ms: at,
                    },
                },
                class: "released",
            });
        }
    }

    /// The circuit is open: due deliveries that can go elsewhere move now.
    async fn move_away(&self, snap: &Arc<Snapshot>, conn: &Arc<Connection>) {
        let usable = |n: &str| n != conn.name && self.sending.available(n);
        let any_other = conn.workspaces.iter().any(|w| {
            route::workspace_connections(snap, w)
                .iter()
                .any(|c| usable(&c.name))
        });
        if !any_other {
            return;
        }
        let claimed = self.claim(conn, 256).await;
        let now = now_ms();
        for d in claimed {
            let to = route::failover(
                snap,
                &d.workspace,
                d.pinned_connection.is_some(),
                &conn.name,
                &d.from_email,
                &usable,
            );
            let outcome = match &to {
                Some(to) => DeliveryOutcome::Moved {
                    to: to.clone(),
                    result: None,
                },
                None => DeliveryOutcome::Released {
                    next_attempt_at_ms: now + 1000,
                },
            };
            let _ = self.done.send(Done {
                settlement: DeliverySettlement {
                    id: d.id,
                    lease: d.lease,
                    connection: conn.name.clone(),
                    at_ms: now,
                    outcome,
                },
                class: if to.is_some() { "moved" } else { "released" },
            });
        }
    }

    /// Half-open: the staged probe decides whether the circuit closes.
    async fn probe(&mut self, conn: &Arc<Connection>) {
        let report = match self.mailer(conn).await {
            Ok(mailer) => {
                mail::probe(mailer.target(), mail::ProbeOptions { rcpt: None })
                    .await
                    .classification
            }
            Err(c) => c,
        };
        let now = now_ms();
        if let Ok(mut b) = self.lane.breaker.lock() {
            b.on_probe(now, (!report.is_success()).then(|| report.class.as_str()));
        }
        tracing::info!(connection = %conn.name, outcome = %report.class, "circuit probe");
    }
}

/// Claims up to `want` due deliveries of `conn` (one store commit).
async fn claim(
    store: Arc<Store>,
    settings: SendSettings,
    conn: Arc<Connection>,
    want: usize,
) -> Vec<ClaimedDelivery> {
    let name = conn.name.clone();
    let scope = conn.workspaces.clone();
    // A lease outlives any attempt: connect plus every command at the
    // connection's timeout, with room to spare.
    let lease = settings
        .delivery_lease
        .unwrap_or_else(|| (conn.limits.timeout * 12).max(Duration::from_secs(600)));
    match store
        .read(move |b| b.claim_deliveries(&name, &scope, now_ms(), lease, want))
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(connection = %conn.name, error = %e, "claiming deliveries failed");
            Vec::new()
        }
    }
}
