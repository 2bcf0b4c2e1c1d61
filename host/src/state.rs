//! The daemon's shared state: the immutable configuration [`Snapshot`]
//! (swapped atomically on every reload), what request handlers can reach
//! ([`AppState`]) and how they ask for a reload ([`ReloadRequest`]). Both
//! `api/` and `daemon/` depend on this module; neither depends on the other's
//! internals through it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::diagnostic::Diagnostic;
use crate::config::{Connection, Forwarder, PluginRegistration, Workspace};
use crate::metrics::Metrics;
use crate::providers::Catalog;

/// Which version of a file is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Live {
    /// The file as it is on disk now.
    Current,
    /// The file is invalid now; its last valid version stays live.
    LastGood,
    /// The file is invalid and never was valid: nothing from it is live.
    None,
}

/// State of one file in a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// Which version is live.
    pub live: Live,
    /// Errors in the current version.
    pub errors: usize,
    /// Warnings in the current version.
    pub warnings: usize,
}

/// Outcome of one reload that produced a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// Every file is valid and applied.
    Ok,
    /// Some files are invalid; the rest applied, the invalid ones keep their last good version.
    Partial,
}

impl ReloadResult {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
        }
    }
}

/// One immutable view of the whole validated configuration. Requests hold
/// an `Arc` of the snapshot they started with, so a reload never mixes old
/// and new settings within one operation.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases whenever the live configuration changes.
    pub generation: u64,
    /// Live connections by name.
    pub connections: BTreeMap<String, Arc<Connection>>,
    /// Live community plugin registrations by id.
    pub plugins: BTreeMap<String, Arc<PluginRegistration>>,
    /// Live forwarders by name.
    pub forwarders: BTreeMap<String, Arc<Forwarder>>,
    /// Workspace documents by workspace name (only workspaces that have one).
    pub workspaces: BTreeMap<String, Arc<Workspace>>,
    /// Every file found, with which version of it is live.
    pub files: BTreeMap<PathBuf, FileStatus>,
    /// Current problems, as `mailplug validate` reports them.
    pub diagnostics: Vec<Diagnostic>,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// How long the reload took.
    pub duration: Duration,
    /// Whether everything applied.
    pub result: ReloadResult,
    /// The Git commit checked out in the config directory, if it is a work tree.
    pub git_commit: Option<String>,
    /// The providers (first-party and registered plugins) these connections use.
    pub catalog: Arc<Catalog>,
}

impl Snapshot {
    /// Number of current errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// A reload that produced no snapshot: the previous one stays live.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadFailure {
    /// The reload panicked (a bug); it was contained and counted, and the
    /// next reload runs normally.
    #[error("the reload failed internally ({0}); the previous configuration stays live")]
    Panicked(String),
    /// The daemon is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// A request for a reload; `reply` receives the outcome.
#[derive(Debug)]
pub struct ReloadRequest {
    /// What asked (`watch`, `sighup`, `api`), for logs.
    pub cause: &'static str,
    /// Where to send the new snapshot, if anyone waits for it.
    pub reply: Option<oneshot::Sender<Result<Arc<Snapshot>, ReloadFailure>>>,
}

/// The last check and test outcome of one connection.
#[derive(Debug, Default, Clone)]
pub struct LastOutcomes {
    /// Last `check`: `{at_unix, report}`.
    pub check: Option<Value>,
    /// Last `test`: `{at_unix, report}`.
    pub test: Option<Value>,
}

/// A webhook request that was refused (nothing stored).
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// When it was refused (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The HTTP status it got.
    pub status: u16,
    /// The reason label, as in `mailplug_webhooks_rejected_total`.
    pub reason: &'static str,
    /// The error text the provider got (at most [`Refusals::MESSAGE_CHARS`]).
    pub message: String,
}

/// The last [`Refusals::KEEP`] refused webhook requests of each connection,
/// in memory only (a restart starts empty; `/metrics` keeps the counts).
#[derive(Debug, Default)]
pub struct Refusals(Mutex<HashMap<String, VecDeque<Refused>>>);

impl Refusals {
    /// Refusals kept per connection.
    pub const KEEP: usize = 20;
    /// Characters of the error text kept per refusal.
    pub const MESSAGE_CHARS: usize = 300;

    /// Records one refusal of `connection` (a configured name: the caller
    /// checks, so requests for unknown names cannot grow the map).
    pub fn record(&self, connection: &str, status: u16, reason: &'static str, message: &str) {
        let mut kept: String = message.chars().take(Self::MESSAGE_CHARS).collect();
        if kept.len() < message.len() {
            kept.push('…');
        }
        let entry = Refused {
            at: crate::store::format_ms(crate::store::now_ms()),
            status,
            reason,
            message: kept,
        };
        let Ok(mut all) = self.0.lock() else { return };
        let list = all.entry(connection.to_owned()).or_default();
        if list.len() == Self::KEEP {
            list.pop_back();
        }
        list.push_front(entry);
    }

    /// The refusals of `connection`, newest first.
    pub fn recent(&self, connection: &str) -> Vec<Refused> {
        self.0
            .lock()
            .ok()
            .and_then(|all| all.get(connection).map(|l| l.iter().cloned().collect()))
            .unwrap_or_default()
    }
}

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The live configuration; each request loads it once.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
    /// Asks the reload task for a reload.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// Required bearer token, if any.
    pub admin_token: Option<String>,
    /// Base URL providers reach the public listener at (no trailing `/`).
    pub public_url: String,
    /// Set once the first configuration is live; cleared at shutdown.
    pub ready: AtomicBool,
    /// Last check/test outcome per connection name.
    pub outcomes: Mutex<HashMap<String, LastOutcomes>>,
    /// The last refused webhook requests per configured connection.
    pub refusals: Refusals,
    /// The durable event and suppression store.
    pub store: Arc<crate::store::Store>,
    /// Webhook plugin calls running at once: one per core. Plugin deadlines
    /// are wall-clock, so more parallel calls than cores would only slow
    /// each one down until it misses its deadline; excess requests wait here.
    pub plugin_slots: tokio::sync::Semaphore,
    /// Amazon SNS certificates and subscription confirmations.
    pub sns: Arc<crate::sns::SnsHost>,
    /// The send lanes (rate, throttling, circuit per connection).
    pub sending: Arc<crate::send::Sending>,
    /// Size limits of `POST /v1/messages`.
    pub compose_limits: crate::send::ComposeLimits,
}

impl AppState {
    /// Whether the daemon is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The webhook endpoint URL of a connection.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}/webhooks/{name}", self.public_url)
    }
}

#[cfg(test)]
mod tests {
    use super::Refusals;

    #[test]
    fn refusals_keep_the_newest_per_connection_and_cut_long_messages() {
        let refusals = Refusals::default();
        for i in 0..Refusals::KEEP + 5 {
            refusals.record("a", 401, "unauthorized", &format!("request {i}"));
        }
        refusals.record(
            "b",
            400,
            "malformed",
            &"é".repeat(Refusals::MESSAGE_CHARS + 1),
        );
        let a = refusals.recent("a");
        assert_eq!(a.len(), Refusals::KEEP);
        assert_eq!(a[0].message, format!("request {}", Refusals::KEEP + 4));
        assert_eq!(a[Refusals::KEEP - 1].message, "request 5");
        let b = refusals.recent("b");
        assert_eq!((b.len(), b[0].status, b[0].reason), (1, 400, "malformed"));
        assert_eq!(b[0].message.chars().count(), Refusals::MESSAGE_CHARS + 1);
        assert!(b[0].message.ends_with("é…"));
        assert!(refusals.recent("c").is_empty());
    }
}
