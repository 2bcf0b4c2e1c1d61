//! The forwarding worker: one task that claims due outbox rows of every
//! live forwarder (up to its `concurrency`, heads of recipient queues
//! only), runs each attempt on the blocking pool, and settles finished
//! attempts in batches. It wakes when a commit queued rows, when an attempt
//! finishes, and on a short poll for retries coming due.
//!
//! At shutdown it stops claiming at once, gives attempts in flight a short
//! bound to finish and records their outcomes; an attempt still running
//! after that keeps its lease, which lapses, and the row is attempted again
//! (after a restart, or by the next claim): at least once, never lost.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{backoff, deliver, sign};
use crate::config::Forwarder;
use crate::config::forwarder::{Target, signing_key};
use crate::metrics::Metrics;
use crate::state::Snapshot;
use crate::store::outbox::{Claimed, Outcome, Settlement};
use crate::store::{Store, now_ms};

/// How the worker paces itself.
/// How often delivered rows past `keep_delivered` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement, and statements per round.
const PRUNE_BATCH: usize = 5_000;
const PRUNE_BATCHES: usize = 20;

#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// How often due retries are looked for when nothing else wakes the worker.
    pub poll: Duration,
    /// How long attempts in flight at shutdown get to finish.
    pub drain: Duration,
    /// How long a claim outlives the attempt timeout before it lapses (a
    /// worker that died mid-attempt holds rows no longer than this).
    pub lease_margin: Duration,
    /// How long delivered rows are kept (then deleted; their count stays in
    /// `mailplug_forward_deliveries_total`).
    pub keep_delivered: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            drain: Duration::from_secs(10),
            lease_margin: Duration::from_secs(30),
            keep_delivered: Duration::from_secs(24 * 3600),
        }
    }
}

/// The running worker.
#[derive(Debug)]
pub struct Forwarding {
    task: JoinHandle<()>,
}

impl Forwarding {
    /// Starts the worker; it runs until `stop` turns true, then drains.
    pub fn start(
        store: Arc<Store>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        settings: WorkerSettings,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let worker = Worker {
            store,
            snapshot,
            metrics,
            settings,
            inflight: JoinSet::new(),
            busy: HashMap::new(),
            tasks: HashMap::new(),
            agents: HashMap::new(),
            files: HashMap::new(),
        };
        Self {
            task: tokio::spawn(worker.run(stop)),
        }
    }

    /// Waits until the worker has stopped and recorded every outcome it
    /// could (call after `stop` turned true, before the store closes).
    pub async fn finished(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the forwarding worker ended abnormally");
        }
    }
}

/// A finished attempt.
struct Done {
    forwarder: String,
    settlement: Settlement,
    took: Duration,
}

struct Worker {
    store: Arc<Store>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    settings: WorkerSettings,
    inflight: JoinSet<Done>,
    /// Attempts in flight per forwarder.
    busy: HashMap<String, usize>,
    /// Which forwarder each attempt task belongs to, so a task that panics
    /// still frees its slot.
    tasks: HashMap<tokio::task::Id, String>,
    /// One agent (connection pool) per forwarder, rebuilt when its timeout changes.
    agents: HashMap<String, (Duration, ureq::Agent)>,
    /// One lock per NDJSON file: lines of parallel attempts never interleave.
    files: HashMap<PathBuf, Arc<Mutex<()>>>,
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let store = self.store.clone();
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            let stopping = *stop.borrow();
            if stopping {
                break;
            }
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(std::time::Instant::now());
                self.prune().await;
            }
            self.claim_all().await;
            // The watch guard must not live across the awaits below.
            let stopped = async {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                () = stopped => break,
                Some(joined) = self.inflight.join_next_with_id(), if !self.inflight.is_empty() => {
                    let mut done: Vec<Done> = self.joined(joined).into_iter().collect();
                    while let Some(more) = self.inflight.try_join_next_with_id() {
                        done.extend(self.joined(more));
                    }
                    self.settle(done).await;
                }
                () = store.outbox_queued().notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        self.drain().await;
    }

    /// Deletes delivered rows older than `keep_delivered`, a bounded number
    /// per round so the writer is never held long.
    async fn prune(&self) {
        let keep = i64::try_from(self.settings.keep_delivered.as_millis()).unwrap_or(i64::MAX);
        let before = crate::store::now_ms().saturating_sub(keep);
        let store = self.store.clone();
        let pruned = store
            .read(move |b| {
                let mut total = 0;
                for _ in 0..PRUNE_BATCHES {
                    let n = b.prune_delivered(before, PRUNE_BATCH)?;
                    total += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Ok(total)
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned delivered outbox rows"),
            Err(e) => tracing::warn!(error = %e, "pruning delivered outbox rows failed"),
        }
    }

    /// After `stop`: no new claims; attempts in flight get `drain` to finish.
    async fn drain(&mut self) {
        if self.inflight.is_empty() {
            return;
        }
        tracing::info!(
            in_flight = self.inflight.len(),
            bound = ?self.settings.drain,
            "forwarding stops: waiting for attempts in flight"
        );
        let deadline = tokio::time::Instant::now() + self.settings.drain;
        let mut done = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.inflight.join_next_with_id()).await {
                Ok(Some(joined)) => done.extend(self.joined(joined)),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        left = self.inflight.len(),
                        "attempts still running at the shutdown bound; their rows stay pending and are attempted again"
                    );
                    self.inflight.abort_all();
                    break;
                }
            }
        }
        self.settle(done).await;
    }

    async fn claim_all(&mut self) {
        let snapshot = self.snapshot.load_full();
        for forwarder in snapshot.forwarders.values() {
            let busy = self.busy.get(&forwarder.name).copied().unwrap_or(0);
            let free = forwarder.concurrency.saturating_sub(busy);
            if free == 0 {
                continue;
            }
            let name = forwarder.name.clone();
            let lease = forwarder.timeout + self.settings.lease_margin;
            let claimed = self
                .store
                .read(move |b| b.claim(&name, now_ms(), lease, free))
                .await;
            match claimed {
                Ok(rows) => {
                    for row in rows {
                        self.spawn(forwarder.clone(), row);
                    }
                }
                Err(e) => {
                    tracing::error!(forwarder = %forwarder.name, error = %e, "claiming outbox rows failed");
                }
            }
        }
    }

    /// Frees the slot of a finished attempt task.
    fn joined(
        &mut self,
        joined: Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) -> Option<Done> {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        if let Some(name) = self.tasks.remove(&id)
            && let Some(n) = self.busy.get_mut(&name)
        {
            *n = n.saturating_sub(1);
        }
        match joined {
            Ok((_, done)) => Some(done),
            Err(e) => {
                // The row keeps its lease, which lapses: it is attempted again.
                tracing::error!(error = %e, "a forwarding attempt task failed");
                None
            }
        }
    }

    fn spawn(&mut self, forwarder: Arc<Forwarder>, row: Claimed) {
        *self.busy.entry(forwarder.name.clone()).or_default() += 1;
        let agent = match &forwarder.target {
            Target::Url(_) => Some(self.agent(&forwarder)),
            Target::File(_) => None,
        };
        let lock = match &forwarder.target {
            Target::File(path) => Some(self.files.entry(path.clone()).or_default().clone()),
            Target::Url(_) => None,
        };
        let name = forwarder.name.clone();
        let handle = self.inflight.spawn(attempt(forwarder, row, agent, lock));
        self.tasks.insert(handle.id(), name);
    }

    fn agent(&mut self, forwarder: &Forwarder) -> ureq::Agent {
        match self.agents.get(&forwarder.name) {
            Some((timeout, agent)) if *timeout == forwarder.timeout => agent.clone(),
            _ => {
                let agent = deliver::agent(forwarder.timeout);
                self.agents
                    .insert(forwarder.name.clone(), (forwarder.timeout, agent.clone()));
                agent
            }
        }
    }

    async fn settle(&mut self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        for d in &done {
            let result = match &d.settlement.outcome {
                Outcome::Delivered => "delivered",
                Outcome::Retry { .. } => "retry",
                Outcome::Dead { .. } => "dead",
            };
            self.metrics.observe_forward(&d.forwarder, result, d.took);
        }
        let settlements: Vec<Settlement> = done.into_iter().map(|d| d.settlement).collect();
        let n = settlements.len();
        if let Err(e) = self.store.read(move |b| b.settle(&settlements)).await {
            // The rows keep their leases, which lapse: they are attempted
            // again, so nothing is lost (a delivered one may be sent twice).
            tracing::error!(error = %e, attempts = n, "recording forwarding outcomes failed");
        }
    }
}

/// Runs one attempt and works out its outcome.
async fn attempt(
    forwarder: Arc<Forwarder>,
    row: Claimed,
    agent: Option<ureq::Agent>,
    lock: Option<Arc<Mutex<()>>>,
) -> Done {
    let started = Instant::now();
    let attempted_at_ms = now_ms();
    let id = sign::webhook_id(&row.id);
    let body = serde_json::to_vec(&row.event);
    let target = forwarder.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let body = body.map_err(|e| format!("cannot encode the event: {e}"))?;
        match (&target.target, agent, lock) {
            (Target::Url(url), Some(agent), _) => {
                let Some(secret) = &target.secret else {
                    return Err("no signing secret configured".to_owned());
                };
                let value = secret
                    .resolve(target.base_dir())
                    .map_err(|e| format!("signing secret unavailable: {e}"))?;
                let key = signing_key(value.expose())
                    .map_err(|e| format!("signing secret unusable: {e}"))?;
                let timestamp = attempted_at_ms.div_euclid(1000);
                let signature = sign::signature(&key, &id, timestamp, &body);
                let signed = deliver::Signed {
                    id: &id,
                    timestamp,
                    signature: &signature,
                };
                deliver::post(&agent, url, &signed, &body)
            }
            (Target::File(path), _, Some(lock)) => {
                let _guard = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                deliver::append(path, &body)
            }
            _ => Err("internal: attempt without its client".to_owned()),
        }
    });
    // ureq bounds the request by the timeout; this only guards against a
    // blocking call that ignores it.
    let bound = forwarder.timeout + Duration::from_secs(5);
    let result = match tokio::time::timeout(bound, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("attempt failed: {e}")),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(forwarder.timeout)
        )),
    };
    let outcome = match result {
        Ok(()) => Outcome::Delivered,
        Err(error) => {
            let outcome = backoff::after_failure(
                &forwarder,
                row.attempts,
                row.enqueued_at_ms,
                now_ms(),
                error,
                fastrand::f64(),
            );
            match &outcome {
                Outcome::Dead { error } => tracing::warn!(
                    forwarder = %forwarder.name, outbox_id = %row.id, event_id = %row.event.id,
                    attempts = row.attempts + 1, %error,
                    "forwarding gave up after max_age: the event is a dead letter"
                ),
                Outcome::Retry {
                    error,
                    next_attempt_at_ms,
                } => tracing::debug!(
                    forwarder = %forwarder.name, outbox_id = %row.id, attempts = row.attempts + 1,
                    %error, in_ms = next_attempt_at_ms - now_ms(), "forwarding attempt failed; retrying"
                ),
                Outcome::Delivered => {}
            }
            outcome
        }
    };
    Done {
        forwarder: forwarder.name.clone(),
        settlement: Settlement {
            id: row.id,
            lease: row.lease,
            attempted_at_ms,
            outcome,
        },
        took: started.elapsed(),
    }
}
