//! Per-store state and the host side of the plugin imports (log, clock;
//! crypto lives in `crypto.rs`), plus the sandbox: an empty WASI context and
//! the memory limiter.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::mailplug::provider::{clock, credentials, endpoint, log, replay, types};
use super::sns::{SnsTrust, SubscriptionRequest};

/// Guest stdout/stderr kept per store; beyond this the guest's writes fail.
const GUEST_OUTPUT_CAPACITY: usize = 64 << 10;
/// Log lines a plugin may emit per call; the rest are dropped (with a note).
pub(crate) const LOG_LINES_PER_CALL: u32 = 256;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE: usize = 4 << 10;
/// Growth of tables beyond this is refused (Rust guests use a few hundred entries).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The time plugins see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The host's real clock.
    System,
    /// A fixed instant in Unix seconds (replaying recorded payloads).
    Fixed(i64),
}

/// The environment variable that fixes the clock plugins see (test-only).
pub const FIXED_NOW_ENV: &str = "MAILPLUG_FIXED_NOW";

impl Clock {
    /// `Fixed` when `MAILPLUG_FIXED_NOW` holds Unix seconds, else `System`;
    /// an unparsable value is an error naming it.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(FIXED_NOW_ENV) {
            Err(_) => Ok(Self::System),
            Ok(v) => v
                .trim()
                .parse::<i64>()
                .map(Self::Fixed)
                .map_err(|_| format!("{FIXED_NOW_ENV}={v:?} is not a number of Unix seconds")),
        }
    }

    /// Current time in Unix seconds.
    pub fn now(self) -> i64 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Self::Fixed(t) => t,
        }
    }
}

/// WASI's wall clock shows the same time as the `clock` import, so a guest
/// using `std::time::SystemTime` cannot see another clock.
struct WasiWallClock(Clock);

impl HostWallClock for WasiWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.0.now()).unwrap_or(0))
    }
}

/// A monotonic clock that does not move: plugins get no timing source.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Memory cap of one store; records a refusal so the failure is typed.
pub(crate) struct Limiter {
    pub(crate) memory_cap: usize,
    pub(crate) refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap || maximum.is_some_and(|m| desired > m) {
            self.refused = true;
            // An error (rather than `Ok(false)`) traps at once instead of
            // letting the guest's allocator abort with a less clear message.
            return Err(wasmtime::Error::msg(format!(
                "memory growth to {desired} bytes refused (cap {} bytes)",
                self.memory_cap
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// `clock.signature-tolerance` outside a verify call, and the default of
/// `webhook.tolerance`, seconds.
pub const DEFAULT_SIGNATURE_TOLERANCE: u32 = 300;

/// Everything one store owns.
pub(crate) struct StoreData {
    pub(crate) plugin: Arc<str>,
    pub(crate) clock: Clock,
    pub(crate) limiter: Limiter,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Bytes of stdout/stderr already forwarded to the log.
    logged: (usize, usize),
    /// Log lines the guest may still emit during the current call.
    pub(crate) log_budget: u32,
    /// What the imports answer during the current call.
    pub(crate) call: CallContext,
    /// What the current call asked the host for.
    pub(crate) asked: CallRequests,
}

/// What the imports of one `verify-webhook` / `parse-webhook` call answer:
/// the connection's settings. [`Default`] is what a call outside a
/// connection sees (`plugin inspect`, fuzzing).
#[derive(Debug, Clone)]
pub struct CallContext {
    /// `clock.signature-tolerance`: the connection's `webhook.tolerance`.
    pub tolerance: u32,
    /// `endpoint.registered-url`.
    pub registered_url: Option<String>,
    /// What `sns.*` answers; `None`: no SNS settings (keys refused, no topic allowed).
    pub sns: Option<SnsTrust>,
}

impl Default for CallContext {
    fn default() -> Self {
        Self {
            tolerance: DEFAULT_SIGNATURE_TOLERANCE,
            registered_url: None,
            sns: None,
        }
    }
}

/// What one call asked the host for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRequests {
    /// `replay.use-token` (verify calls).
    pub tokens: Vec<UsedToken>,
    /// The last signing certificate `sns.signing-key` found neither cached
    /// nor trusted: the daemon fetches it and verifies again.
    pub certificate: Option<String>,
    /// `sns.confirm-subscription` (parse calls).
    pub confirmations: Vec<SubscriptionRequest>,
    /// `credentials.username-secret` (adapt calls): the last source named;
    /// `None` when never called or withdrawn with `none`.
    pub username_secret: Option<types::PasswordSource>,
}

/// A single-use token a plugin named, for the store to remember.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedToken {
    /// The token, as the provider sent it.
    pub token: String,
    /// How long to remember it.
    pub ttl_seconds: u32,
}

/// Bounds of `replay.use-token`.
const MAX_TOKEN_BYTES: usize = 512;
const MAX_TOKENS_PER_CALL: usize = 8;

impl replay::Host for StoreData {
    fn use_token(&mut self, token: String, ttl_seconds: u32) {
        if token.is_empty()
            || token.len() > MAX_TOKEN_BYTES
            || self.asked.tokens.len() >= MAX_TOKENS_PER_CALL
        {
            tracing::debug!(plugin = %self.plugin, "replay.use-token ignored (empty, too long or too many)");
            return;
        }
        self.asked.tokens.push(UsedToken { token, ttl_seconds });
    }
}

/// Longest JSON Pointer `credentials.username-secret` may name (as an
/// `options-field`); longer ones are ignored.
const MAX_SECRET_POINTER_BYTES: usize = 256;

impl credentials::Host for StoreData {
    fn username_secret(&mut self, source: types::PasswordSource) {
        self.asked.username_secret = match source {
            types::PasswordSource::None => None,
            types::PasswordSource::OptionsField(p) if p.len() > MAX_SECRET_POINTER_BYTES => {
                tracing::debug!(plugin = %self.plugin, "credentials.username-secret ignored (pointer too long)");
                return;
            }
            other => Some(other),
        };
    }
}

impl StoreData {
    pub(crate) fn new(plugin: Arc<str>, clock: Clock, memory_cap: usize) -> Self {
        let stdout = MemoryOutputPipe::new(GUEST_OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(GUEST_OUTPUT_CAPACITY);
        // No preopens, environment, arguments, sockets or name lookups; the
        // only clock is the host's (possibly pinned) one.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(WasiWallClock(clock))
            .monotonic_clock(FrozenMonotonicClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            plugin,
            clock,
            limiter: Limiter {
                memory_cap,
                refused: false,
            },
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            logged: (0, 0),
            log_budget: LOG_LINES_PER_CALL,
            call: CallContext::default(),
            asked: CallRequests::default(),
        }
    }

    /// Forwards new guest stdout/stderr lines to the log (tagged with the
    /// plugin id) and returns the new stderr text (for trap reports).
    pub(crate) fn drain_guest_output(&mut self) -> String {
        let out = self.stdout.contents();
        let err = self.stderr.contents();
        let new_out =
            String::from_utf8_lossy(out.get(self.logged.0..).unwrap_or_default()).into_owned();
        let new_err =
            String::from_utf8_lossy(err.get(self.logged.1..).unwrap_or_default()).into_owned();
        self.logged = (out.len(), err.len());
        for line in new_out.lines().filter(|l| !l.is_empty()) {
            tracing::info!(plugin = %self.plugin, stream = "stdout", "{line}");
        }
        for line in new_err.lines().filter(|l| !l.is_empty()) {
            tracing::warn!(plugin = %self.plugin, stream = "stderr", "{line}");
        }
        new_err
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for StoreData {}

impl clock::Host for StoreData {
    fn signature_tolerance(&mut self) -> u32 {
        self.call.tolerance
    }

    fn now(&mut self) -> i64 {
        self.clock.now()
    }
}

impl endpoint::Host for StoreData {
    fn registered_url(&mut self) -> Option<String> {
        self.call.registered_url.clone()
    }
}

impl log::Host for StoreData {
    fn log(&mut self, level: log::Level, mut message: String) {
        let plugin = &*self.plugin;
        match self.log_budget {
            0 => return,
            1 => {
                self.log_budget = 0;
                tracing::warn!(
                    plugin,
                    "plugin log limit of {LOG_LINES_PER_CALL} lines per call reached; dropping the rest"
                );
                return;
            }
            _ => self.log_budget -= 1,
        }
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" …");
        }
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
