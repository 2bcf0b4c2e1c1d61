//! One attempt of a claimed delivery (compose, send, classify into the next
//! state: sent, deferred, failed or moved to another connection) and the
//! settler that records finished attempts in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Done, Lane, Sending};
use crate::config::Connection;
use crate::mail::{Class, Classification, Mailer, OutgoingMessage, Stage};
use crate::metrics::Metrics;
use crate::send::breaker::Breaker;
use crate::send::retry::{Next, RetryPolicy, next_attempt};
use crate::send::route;
use crate::state::Snapshot;
use crate::store::queue::{ClaimedDelivery, DeliveryOutcome, DeliverySettlement};
use crate::store::{Store, now_ms};

pub(super) fn config_error(detail: String) -> Classification {
    Classification::local(
        Class::ConfigError,
        Stage::Connect,
        detail,
        "fix the connection's settings (see `mailplug check`)".into(),
    )
}

/// Whether a failure is the connection's (fail over, count for the
/// circuit) rather than the recipient's or the message's.
pub fn connection_level(c: &Classification) -> bool {
    match c.class {
        Class::ConfigError
        | Class::DnsFailure
        | Class::ConnectionRefused
        | Class::Timeout
        | Class::NetworkError
        | Class::TlsMismatch
        | Class::CertificateInvalid
        | Class::TlsFailed
        | Class::StarttlsUnavailable
        | Class::AuthFailed
        | Class::AuthUnavailable
        | Class::AuthRequired
        | Class::ProtocolError
        | Class::SenderNotAllowed => true,
        Class::Deferred | Class::PermanentFailure => {
            matches!(
                c.stage,
                Stage::Dns
                    | Stage::Connect
                    | Stage::Banner
                    | Stage::Ehlo
                    | Stage::Tls
                    | Stage::Auth
            )
        }
        _ => false,
    }
}

/// One delivery attempt on a lane; its outcome goes to the settler.
pub(super) struct Attempt {
    pub(super) lane: Arc<Lane>,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) conn: Arc<Connection>,
    pub(super) mailer: Result<Mailer, Classification>,
    pub(super) retry: RetryPolicy,
    pub(super) sending: Arc<Sending>,
    pub(super) done: mpsc::UnboundedSender<Done>,
}

impl Attempt {
    pub(super) async fn run(self, d: ClaimedDelivery) {
        let started = now_ms();
        let result = match &self.mailer {
            Ok(mailer) => match self.message(mailer, &d) {
                Ok(message) => mailer
                    .send(&message)
                    .await
                    .map(|ok| (ok.queue_id, ok.classification)),
                Err(c) => Err(c),
            },
            Err(c) => Err(c.clone()),
        };
        let now = now_ms();
        let (outcome, class) = match result {
            Ok((queue_id, classification)) => {
                self.lane.limiter.on_sent(now);
                self.breaker(|b| b.on_success(now));
                (
                    DeliveryOutcome::Sent {
                        queue_id,
                        result: json(&classification),
                    },
                    "accepted",
                )
            }
            Err(c) => (self.failed(&d, &c, now), c.class.as_str()),
        };
        self.lane.in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = self.done.send(Done {
            settlement: DeliverySettlement {
                id: d.id,
                lease: d.lease,
                connection: self.conn.name.clone(),
                at_ms: started,
                outcome,
            },
            class,
        });
    }

    fn breaker(&self, f: impl FnOnce(&mut Breaker)) {
        if let Ok(mut b) = self.lane.breaker.lock() {
            f(&mut b);
        }
    }

    fn message(
        &self,
        mailer: &Mailer,
        d: &ClaimedDelivery,
    ) -> Result<OutgoingMessage, Classification> {
        let bad = |what: String| {
            Classification::local(
                Class::MessageRejected,
                Stage::Data,
                what,
                "the stored message cannot be sent; it was checked when accepted, so this is a bug"
                    .into(),
            )
        };
        let from = crate::address::parse(&d.from_email).map_err(|e| bad(e.to_string()))?;
        let to = crate::address::parse(&d.recipient).map_err(|e| bad(e.to_string()))?;
        let envelope =
            lettre::address::Envelope::new(Some(from), vec![to]).map_err(|e| bad(e.to_string()))?;
        let raw = crate::mail::message::with_extra_headers(
            &mailer.target().extra_headers,
            d.raw.as_ref().clone(),
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok(OutgoingMessage {
            envelope,
            raw,
            message_id: format!("<{}>", d.message_id_header),
        })
    }

    /// What a failed attempt leads to.
    fn failed(&self, d: &ClaimedDelivery, c: &Classification, now: i64) -> DeliveryOutcome {
        let result = json(c);
        let usable = |n: &str| n != self.conn.name && self.sending.available(n);
        let failover = || {
            route::failover(
                &self.snapshot,
                &d.workspace,
                d.pinned_connection.is_some(),
                &self.conn.name,
                &d.from_email,
                &usable,
            )
        };
        let attempts = d.attempts.saturating_add(1);
        let retry =
            |jitter: f64| match next_attempt(&self.retry, attempts, d.queued_at_ms, now, jitter) {
                Next::RetryAt(at) => DeliveryOutcome::Deferred {
                    next_attempt_at_ms: at,
                    result: result.clone(),
                },
                Next::GiveUp => DeliveryOutcome::Failed {
                    result: result.clone(),
                },
            };
        if c.class == Class::Throttled {
            self.lane.limiter.on_throttled(now);
            if self.lane.limiter.at_floor() {
                self.breaker(|b| b.on_failure(now, "throttled"));
                if let Some(to) = failover() {
                    return DeliveryOutcome::Moved {
                        to,
                        result: Some(result),
                    };
                }
            }
            // The limiter paces the retry; it is due again shortly.
            return match next_attempt(&self.retry, 1, d.queued_at_ms, now, 0.0) {
                Next::GiveUp => DeliveryOutcome::Failed { result },
                Next::RetryAt(_) => DeliveryOutcome::Deferred {
                    next_attempt_at_ms: now + 1000,
                    result,
                },
            };
        }
        if connection_level(c) {
            self.breaker(|b| b.on_failure(now, c.class.as_str()));
            if let Some(to) = failover() {
                return DeliveryOutcome::Moved {
                    to,
                    result: Some(result),
                };
            }
            // The connection's fault, not the recipient's: retried (on the
            // schedule) even when the reply was permanent, until max age.
            return retry(fastrand::f64());
        }
        // The server answered about this recipient or message.
        self.lane.limiter.on_sent(now);
        self.breaker(|b| b.on_success(now));
        if c.temporary {
            retry(fastrand::f64())
        } else {
            DeliveryOutcome::Failed { result }
        }
    }
}

fn json(c: &Classification) -> serde_json::Value {
    serde_json::to_value(c).unwrap_or(serde_json::Value::Null)
}

/// How long the settler gathers outcomes after the first one of a batch
/// arrives. Under load one commit then records hundreds of attempts instead
/// of the handful that finished during the last commit; the store's writes
/// per attempt (WAL pages, fsyncs) were the largest single cost of sending.
/// The duplicate window (docs/sending.md) grows by at most this much.
const SETTLE_GATHER: Duration = Duration::from_millis(10);

/// Most outcomes recorded in one commit.
const SETTLE_BATCH: usize = 1024;

/// Records finished attempts in batches: each round takes the outcomes that
/// arrive within [`SETTLE_GATHER`] of its first, so under load one
/// transaction records many.
pub(super) async fn settle_loop(
    store: Arc<Store>,
    sending: Arc<Sending>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Done>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + SETTLE_GATHER;
        while batch.len() < SETTLE_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(d)) => batch.push(d),
                // Timed out, or every sender is gone (shutdown): record
                // what is here; the next recv ends the loop.
                Ok(None) | Err(_) => break,
            }
        }
        for d in &batch {
            let outcome = match &d.settlement.outcome {
                DeliveryOutcome::Released { .. } => continue,
                o => match o {
                    DeliveryOutcome::Moved { .. } => "moved",
                    o => o.state(),
                },
            };
            metrics
                .queue_sends
                .get_or_create(&vec![
                    ("connection", d.settlement.connection.clone()),
                    ("outcome", outcome.to_owned()),
                    ("class", d.class.to_owned()),
                ])
                .inc();
        }
        let settlements: Vec<DeliverySettlement> =
            batch.into_iter().map(|d| d.settlement).collect();
        let mut moved: Vec<String> = settlements
            .iter()
            .filter_map(|s| match &s.outcome {
                DeliveryOutcome::Moved { to, .. } => Some(to.clone()),
                _ => None,
            })
            .collect();
        moved.sort();
        moved.dedup();
        record(&store, settlements).await;
        // Deliveries moved by a failover are due on their new connection now.
        for to in moved {
            sending.wake(&to);
        }
    }
}

/// Longest wait between two tries of recording outcomes.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);
/// Tries of one batch of outcomes (about five minutes at the longest wait).
const RECORD_TRIES: u32 = 64;

/// Records outcomes, trying again while the store cannot be reached (a
/// PostgreSQL restart, say): the outcomes stay in memory meanwhile, so
/// accepted deliveries are not sent twice and deferred ones do not wait
/// for their leases to lapse. After [`RECORD_TRIES`] the batch is given
/// up: its leases lapse and the deliveries are attempted again (nothing is
/// lost; an accepted one may be sent twice).
async fn record(store: &Arc<Store>, settlements: Vec<DeliverySettlement>) {
    let settlements = Arc::new(settlements);
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=RECORD_TRIES {
        let batch = settlements.clone();
        match store.read(move |b| b.settle_deliveries(&batch)).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(
                        attempts = settlements.len(),
                        tries = attempt,
                        "send outcomes recorded after the store came back"
                    );
                }
                return;
            }
            Err(e) if e.is_retryable() && attempt < RECORD_TRIES => {
                if attempt == 1 {
                    tracing::warn!(error = %e, attempts = settlements.len(), "recording send outcomes failed; trying again");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECORD_RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(error = %e, attempts = settlements.len(), tries = attempt, "recording send outcomes failed; the deliveries are attempted again once their leases lapse");
                return;
            }
        }
    }
}
