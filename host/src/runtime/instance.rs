//! A plugin instance: a Store plus the instantiated component, with the
//! plugin's memory cap and deadline. Reusable across calls of one connection;
//! thrown away after any failure so no state survives a trap or limit hit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use wasmtime::component::HasSelf;
use wasmtime::{Store, Trap, WasmBacktrace};

use super::bindings::{Provider, ProviderPre};
use super::convert::{self, PluginInfo};
use super::engine::deadline_ticks;
use super::error::{Export, FailureCause, PluginError};
use super::host::{CallContext, CallRequests, Clock, StoreData};
use super::metrics::{Outcome, PluginMetrics};
use super::{FieldError, ParseError, SmtpOverrides, SmtpSettings, VerifyError, WebhookRequest};
use crate::event::NormalizedEvent;

/// Effective limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Linear memory cap in MiB.
    pub memory_mib: u32,
    /// Wall-clock deadline per call in milliseconds (instantiating a fresh
    /// instance gets a budget of its own of the same length).
    pub deadline_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 32,
            deadline_ms: 100,
        }
    }
}

/// What every instance of one plugin shares.
pub(crate) struct Shared {
    pub(crate) id: Arc<str>,
    pub(crate) pre: ProviderPre<StoreData>,
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<PluginMetrics>,
}

impl Shared {
    fn fail(&self, export: Export, cause: FailureCause) -> PluginError {
        PluginError {
            plugin: self.id.to_string(),
            export,
            cause,
        }
    }
}

struct Live {
    store: Store<StoreData>,
    bindings: Provider,
}

/// An instance of a plugin (created lazily, recreated after a failure).
pub struct PluginInstance {
    shared: Arc<Shared>,
    live: Option<Live>,
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.shared.id)
            .field("instantiated", &self.live.is_some())
            .finish()
    }
}

fn outcome<T, E>(result: &Result<Result<T, E>, PluginError>) -> Outcome {
    match result {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(_)) => Outcome::Rejected,
        Err(_) => Outcome::Failed,
    }
}

/// The trap code in an error's chain (it sits under the backtrace context).
fn trap_code(err: &wasmtime::Error) -> Option<Trap> {
    err.downcast_ref::<Trap>()
        .copied()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<Trap>().copied()))
}

/// An error's causes joined by ": ", without the backtrace (reported apart).
fn describe_error(err: &wasmtime::Error) -> String {
    // The backtrace is attached as the outermost context.
    let skip = usize::from(err.downcast_ref::<WasmBacktrace>().is_some());
    let parts: Vec<String> = err.chain().skip(skip).map(ToString::to_string).collect();
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Turns a wasmtime error into a typed cause, using what the store recorded.
fn classify(
    err: &wasmtime::Error,
    data: &mut StoreData,
    limits: Limits,
    instantiating: bool,
) -> FailureCause {
    let guest_output = data.drain_guest_output();
    let memory_refused = data.limiter.refused;
    if instantiating {
        return FailureCause::Instantiate(if memory_refused {
            format!(
                "its initial memory exceeds the {} MiB memory cap",
                limits.memory_mib
            )
        } else if trap_code(err) == Some(Trap::Interrupt) {
            format!(
                "its start-up did not finish within the {} ms deadline",
                limits.deadline_ms
            )
        } else {
            describe_error(err)
        });
    }
    if memory_refused {
        return FailureCause::MemoryCap {
            cap_mib: limits.memory_mib,
        };
    }
    match trap_code(err) {
        Some(Trap::Interrupt) => FailureCause::Deadline {
            deadline_ms: limits.deadline_ms,
        },
        trap => FailureCause::Trap {
            message: trap.map_or_else(|| describe_error(err), |t| t.to_string()),
            guest_output,
            backtrace: err
                .downcast_ref::<WasmBacktrace>()
                .map(ToString::to_string)
                .unwrap_or_default(),
        },
    }
}

impl PluginInstance {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, live: None }
    }

    /// The plugin id.
    pub fn plugin_id(&self) -> &str {
        &self.shared.id
    }

    /// Runs one export on the live instance (instantiating first if needed),
    /// under the plugin's deadline; any failure discards the instance.
    fn invoke<R>(
        &mut self,
        export: Export,
        run: impl FnOnce(&Provider, &mut Store<StoreData>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let shared = &self.shared;
        let ticks = deadline_ticks(shared.limits.deadline_ms);
        let live = match self.live.take() {
            Some(live) => live,
            None => {
                let data = StoreData::new(
                    shared.id.clone(),
                    shared.clock,
                    shared.limits.memory_mib as usize * (1 << 20),
                );
                let mut store = Store::new(shared.pre.engine(), data);
                store.limiter(|d| &mut d.limiter);
                store.epoch_deadline_trap();
                store.set_epoch_deadline(ticks);
                shared
                    .metrics
                    .instantiations
                    .fetch_add(1, Ordering::Relaxed);
                match shared.pre.instantiate(&mut store) {
                    Ok(bindings) => Live { store, bindings },
                    Err(err) => {
                        let cause = classify(&err, store.data_mut(), shared.limits, true);
                        return Err(shared.fail(export, cause));
                    }
                }
            }
        };
        let Live {
            mut store,
            bindings,
        } = live;
        store.set_epoch_deadline(ticks);
        store.data_mut().log_budget = super::host::LOG_LINES_PER_CALL;
        match run(&bindings, &mut store) {
            Ok(value) => {
                store.data_mut().drain_guest_output();
                self.live = Some(Live { store, bindings });
                Ok(value)
            }
            Err(err) => Err(shared.fail(
                export,
                classify(&err, store.data_mut(), shared.limits, false),
            )),
        }
    }

    fn invalid(&mut self, export: Export, message: String) -> PluginError {
        self.live = None;
        self.shared
            .fail(export, FailureCause::InvalidOutput(message))
    }

    fn record<T, E>(
        &self,
        export: Export,
        start: Instant,
        result: &Result<Result<T, E>, PluginError>,
    ) {
        self.shared
            .metrics
            .export(export)
            .record(start.elapsed(), outcome(result));
    }

    /// Calls `describe` and checks its answer.
    pub fn describe(&mut self) -> Result<PluginInfo, PluginError> {
        let start = Instant::now();
        let result = self
            .invoke(Export::Describe, |p, s| p.call_describe(s))
            .and_then(|info| {
                convert::plugin_info(info).map_err(|m| self.invalid(Export::Describe, m))
            });
        let outcome = if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.shared
            .metrics
            .export(Export::Describe)
            .record(start.elapsed(), outcome);
        result
    }

    /// Calls `adapt-connection`: SMTP settings, or the plugin's field errors.
    /// A user name taken from a secret (`credentials.username-secret`) is
    /// then in [`Self::take_requests`].
    pub fn adapt_connection(
        &mut self,
        options: &str,
        overrides: &SmtpOverrides,
    ) -> Result<Result<SmtpSettings, Vec<FieldError>>, PluginError> {
        let start = Instant::now();
        let result = self
            .invoke(Export::AdaptConnection, |p, s| {
                s.data_mut().asked = CallRequests::default();
                p.call_adapt_connection(s, options, overrides)
            })
            .and_then(|r| match r {
                Ok(settings) => match convert::smtp_settings(&settings) {
                    Ok(()) => Ok(Ok(settings)),
                    Err(m) => Err(self.invalid(Export::AdaptConnection, m)),
                },
                Err(errors) => Ok(Err(errors)),
            });
        self.record(Export::AdaptConnection, start, &result);
        result
    }

    /// Calls `verify-webhook` with the connection's secret, the imports
    /// answering as outside any connection.
    pub fn verify_webhook(
        &mut self,
        request: &WebhookRequest,
        secret: &str,
    ) -> Result<Result<(), VerifyError>, PluginError> {
        self.verify_webhook_with(request, secret, &CallContext::default())
    }

    /// Calls `verify-webhook`, the imports answering from `context` (the
    /// connection's tolerance, endpoint URL and SNS settings). What the call
    /// asked for is then in [`Self::take_requests`].
    pub fn verify_webhook_with(
        &mut self,
        request: &WebhookRequest,
        secret: &str,
        context: &CallContext,
    ) -> Result<Result<(), VerifyError>, PluginError> {
        let start = Instant::now();
        let result = self.invoke(Export::VerifyWebhook, |p, s| {
            s.data_mut().call = context.clone();
            s.data_mut().asked = CallRequests::default();
            let verified = p.call_verify_webhook(&mut *s, request, secret);
            s.data_mut().call = CallContext::default();
            verified
        });
        self.record(Export::VerifyWebhook, start, &result);
        result
    }

    /// What the last call asked the host for (tokens, a certificate to
    /// fetch, subscriptions to confirm); empty after a failed call.
    pub fn take_requests(&mut self) -> CallRequests {
        self.live
            .as_mut()
            .map(|l| std::mem::take(&mut l.store.data_mut().asked))
            .unwrap_or_default()
    }

    /// Calls `parse-webhook` and checks every returned event.
    pub fn parse_webhook(
        &mut self,
        request: &WebhookRequest,
    ) -> Result<Result<Vec<NormalizedEvent>, ParseError>, PluginError> {
        self.parse_webhook_with(request, &CallContext::default())
    }

    /// Calls `parse-webhook` with the imports answering from `context`.
    pub fn parse_webhook_with(
        &mut self,
        request: &WebhookRequest,
        context: &CallContext,
    ) -> Result<Result<Vec<NormalizedEvent>, ParseError>, PluginError> {
        let start = Instant::now();
        let result = self
            .invoke(Export::ParseWebhook, |p, s| {
                s.data_mut().call = context.clone();
                s.data_mut().asked = CallRequests::default();
                let parsed = p.call_parse_webhook(&mut *s, request);
                s.data_mut().call = CallContext::default();
                parsed
            })
            .and_then(|r| match r {
                Ok(events) => convert::delivery_events(&request.body, events)
                    .map(Ok)
                    .map_err(|m| self.invalid(Export::ParseWebhook, m)),
                Err(e) => Ok(Err(e)),
            });
        self.record(Export::ParseWebhook, start, &result);
        result
    }
}

/// Adds the plugin imports (and an empty WASI) to a linker.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<StoreData>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    Provider::add_to_linker::<_, HasSelf<StoreData>>(linker, |d| d)?;
    Ok(())
}
