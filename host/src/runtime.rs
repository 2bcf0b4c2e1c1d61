//! The plugin runtime — the only module that imports wasmtime: one Engine
//! (component model, epoch deadlines, pooling allocator), a compiled and
//! cached component plus an `InstancePre` per plugin, and instances with a
//! memory cap and a deadline whose failures stay confined to one call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::sha256_hex;
use wasmtime::Engine;
use wasmtime::component::Linker;

mod bindings;
pub mod builtin;
mod cache;
mod convert;
pub mod crypto;
mod engine;
mod error;
pub mod fuzz;
mod host;
mod instance;
pub mod metrics;
pub mod sns;

pub use bindings::mailplug::provider::types::{
    FieldError, ParseError, PasswordSource, Security, SmtpOverrides, SmtpSettings, VerifyError,
    WebhookRequest,
};
pub use cache::CacheOutcome;
pub use convert::{Capability, MAX_EVENTS, PluginInfo};
pub use engine::EngineOptions;
pub use error::{Export, FailureCause, LoadError, PluginError};
pub use host::{
    CallContext, CallRequests, Clock, DEFAULT_SIGNATURE_TOLERANCE, FIXED_NOW_ENV, UsedToken,
};
pub use instance::{Limits, PluginInstance};
pub use metrics::PluginMetrics;

use bindings::ProviderPre;
use host::StoreData;
use instance::Shared;

/// Largest plugin `.wasm` file read. Provider components are a few hundred
/// KiB; the bound keeps a mistaken path (a disk image, a log) from being
/// read whole into memory before it is rejected.
pub const MAX_PLUGIN_BYTES: u64 = 64 * 1024 * 1024;

/// Where a plugin's component comes from.
#[derive(Debug, Clone)]
pub enum WasmSource {
    /// A `.wasm` component file.
    Path(PathBuf),
    /// Component bytes already in memory.
    Bytes(Vec<u8>),
}

/// Per-plugin limit overrides (`kind: Plugin` → `limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginLimits {
    /// Memory cap in MiB (default 32).
    pub memory_mib: Option<u32>,
    /// Deadline per call in milliseconds (default 100).
    pub deadline_ms: Option<u32>,
}

/// A plugin to register (from a `kind: Plugin` document or the author CLI).
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// Registered id; `describe` must report the same. `None` accepts the
    /// plugin's own id (the author CLI on a bare `.wasm`).
    pub id: Option<String>,
    /// The component.
    pub wasm: WasmSource,
    /// Pinned sha256 (hex); loading is refused on mismatch.
    pub expected_sha256: Option<String>,
    /// Limit overrides.
    pub limits: PluginLimits,
}

/// Runtime-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Engine sizing.
    pub engine: EngineOptions,
    /// Directory for compiled components (`<data dir>/plugin-cache`); `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The clock plugins see.
    pub clock: Clock,
    /// Limits for plugins that do not override them.
    pub default_limits: Limits,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            cache_dir: None,
            // `MAILPLUG_FIXED_NOW` (test-only) replays recorded signed
            // payloads; the daemon refuses to start on an invalid value.
            clock: Clock::from_env().unwrap_or(Clock::System),
            default_limits: Limits::default(),
        }
    }
}

/// A registered plugin.
pub struct Plugin {
    shared: Arc<Shared>,
    info: PluginInfo,
    sha256: String,
    origin: String,
    cache: CacheOutcome,
    /// Idle instances kept for reuse (webhook requests take one each).
    idle: std::sync::Mutex<Vec<PluginInstance>>,
}

/// Most idle instances a plugin keeps for reuse.
const MAX_IDLE_INSTANCES: usize = 16;

/// An instance taken from a plugin's idle pool; it goes back on drop.
#[derive(Debug)]
pub struct PooledInstance<'a> {
    plugin: &'a Plugin,
    instance: Option<PluginInstance>,
}

impl std::ops::Deref for PooledInstance<'_> {
    type Target = PluginInstance;
    fn deref(&self) -> &PluginInstance {
        self.instance
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for PooledInstance<'_> {
    fn deref_mut(&mut self) -> &mut PluginInstance {
        self.instance
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for PooledInstance<'_> {
    fn drop(&mut self) {
        // An instance that failed has already discarded its store, so
        // whatever comes back is clean or will re-instantiate on next use.
        if let (Some(instance), Ok(mut idle)) = (self.instance.take(), self.plugin.idle.lock())
            && idle.len() < MAX_IDLE_INSTANCES
        {
            idle.push(instance);
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.info.id)
            .field("origin", &self.origin)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// What `describe` returned at load.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
    /// sha256 (hex) of the component.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// `builtin` or the file path it was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// Whether loading compiled the component or took it from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }
    /// Effective limits.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }
    /// Call counters.
    pub fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.shared.metrics
    }
    /// A new instance, e.g. one per connection (instantiated on first call).
    pub fn instance(&self) -> PluginInstance {
        PluginInstance::new(self.shared.clone())
    }
    /// An idle instance (or a new one), returned to the pool when dropped:
    /// concurrent requests each get their own, and reuse skips instantiation.
    pub fn pooled(&self) -> PooledInstance<'_> {
        let idle = self.idle.lock().ok().and_then(|mut i| i.pop());
        PooledInstance {
            plugin: self,
            instance: Some(idle.unwrap_or_else(|| self.instance())),
        }
    }
}

/// The set of loaded plugins and the engine they run on.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreData>,
    options: RuntimeOptions,
    plugins: BTreeMap<String, Plugin>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("plugins", &self.plugins.keys())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// The clock plugins see (pinned by `MAILPLUG_FIXED_NOW` in tests).
    pub fn clock(&self) -> Clock {
        self.options.clock
    }

    /// An engine with no plugins loaded.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Self> {
        let engine = engine::build(&options.engine)?;
        let mut linker = Linker::new(&engine);
        instance::link(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            options,
            plugins: BTreeMap::new(),
        })
    }

    /// An engine with every first-party plugin loaded.
    pub fn with_builtins(options: RuntimeOptions) -> anyhow::Result<Self> {
        let mut runtime = Self::new(options)?;
        for builtin in builtin::BUILTINS {
            runtime.load(PluginSource {
                id: Some(builtin.id.to_owned()),
                wasm: WasmSource::Bytes(builtin.wasm.to_vec()),
                expected_sha256: None,
                limits: PluginLimits::default(),
            })?;
        }
        Ok(runtime)
    }

    /// Compiles (or takes from the cache), links, describes and registers a plugin.
    pub fn load(&mut self, source: PluginSource) -> Result<&Plugin, LoadError> {
        let label = source.id.clone().unwrap_or_else(|| match &source.wasm {
            WasmSource::Path(path) => path
                .file_stem()
                .map_or_else(|| "(unnamed)".into(), |s| s.to_string_lossy().into_owned()),
            WasmSource::Bytes(_) => "(unnamed)".into(),
        });
        let (bytes, origin) = match source.wasm {
            WasmSource::Bytes(bytes) => (bytes, "builtin".to_owned()),
            // Guarded like configuration files: a FIFO named as a plugin is
            // refused instead of blocking the load (and with it a reload).
            WasmSource::Path(path) => match crate::fsread::read_bounded(&path, MAX_PLUGIN_BYTES) {
                Ok(bytes) => (bytes, path.display().to_string()),
                Err(error) => {
                    return Err(LoadError::Read {
                        id: label,
                        path,
                        error,
                    });
                }
            },
        };
        let sha256 = sha256_hex(&bytes);
        if let Some(expected) = &source.expected_sha256
            && !expected.trim().eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::HashMismatch {
                id: label,
                expected: expected.clone(),
                actual: sha256,
            });
        }
        let limits = self.limits(&label, source.limits)?;
        let invalid = |detail: String| LoadError::Invalid {
            id: label.clone(),
            detail,
        };
        let (component, cache) = cache::load(
            &self.engine,
            &bytes,
            &sha256,
            self.options.cache_dir.as_deref(),
        )
        .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = ProviderPre::new(pre).map_err(|e| invalid(format!("{e:#}")))?;
        let clock = self.options.clock;
        let shared_as = |id: &str| {
            Arc::new(Shared {
                id: Arc::from(id),
                pre: pre.clone(),
                limits,
                clock,
                metrics: Arc::default(),
            })
        };
        let shared = shared_as(&label);
        let info = PluginInstance::new(shared.clone()).describe()?;
        if source.id.as_ref().is_some_and(|id| *id != info.id) {
            return Err(LoadError::BadDescription {
                detail: format!(
                    "describe() reports id `{}`; the registration says `{label}`",
                    info.id
                ),
                id: label,
            });
        }
        let id = info.id.clone();
        if self.plugins.contains_key(&id) {
            return Err(LoadError::Duplicate(id));
        }
        // A bare file was labelled by its name until `describe` told its id.
        let shared = if id == label { shared } else { shared_as(&id) };
        let plugin = Plugin {
            shared,
            info,
            sha256,
            origin,
            cache,
            idle: std::sync::Mutex::default(),
        };
        Ok(self.plugins.entry(id).or_insert(plugin))
    }

    fn limits(&self, id: &str, overrides: PluginLimits) -> Result<Limits, LoadError> {
        let defaults = self.options.default_limits;
        let limits = Limits {
            memory_mib: overrides.memory_mib.unwrap_or(defaults.memory_mib),
            deadline_ms: overrides.deadline_ms.unwrap_or(defaults.deadline_ms),
        };
        let max_memory = self.options.engine.max_memory_mib;
        if limits.memory_mib == 0 || limits.memory_mib > max_memory {
            return Err(LoadError::BadDescription {
                id: id.to_owned(),
                detail: format!(
                    "limits.memory_mib must be 1..={max_memory}, not {}",
                    limits.memory_mib
                ),
            });
        }
        if limits.deadline_ms == 0 || limits.deadline_ms > 60_000 {
            return Err(LoadError::BadDescription {
                id: id.to_owned(),
                detail: format!(
                    "limits.deadline_ms must be 1..=60000, not {}",
                    limits.deadline_ms
                ),
            });
        }
        Ok(limits)
    }

    /// A loaded plugin.
    pub fn plugin(&self, id: &str) -> Option<&Plugin> {
        self.plugins.get(id)
    }

    /// Every loaded plugin, by id.
    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.values()
    }

    /// What a plugin's `describe` returned (its options schema included).
    pub fn describe(&self, id: &str) -> Option<&PluginInfo> {
        self.plugins.get(id).map(Plugin::info)
    }
}
