//! The provider catalog: the plugin runtime seen through the configuration
//! layer's [`ProviderCatalog`] trait — which providers exist, their options
//! schemas, and `adapt-connection`, which `config` calls while compiling a
//! provider connection into its effective SMTP settings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::diagnostic::Diagnostic;
use crate::config::schema::CompiledSchema;
use crate::config::{
    self, AdaptFailure, AdaptedSmtp, PasswordSource, PluginRegistration, ProviderCatalog,
};
use crate::runtime::{
    self, PluginLimits, PluginSource, Runtime, RuntimeOptions, SmtpOverrides, WasmSource,
};

/// The installed providers: first-party plugins plus `kind: Plugin`
/// registrations, with their compiled options schemas.
#[derive(Debug)]
pub struct Catalog {
    runtime: Runtime,
    schemas: HashMap<String, CompiledSchema>,
}

/// The default compile cache: `$XDG_DATA_HOME/mailplug/plugin-cache` (or
/// `~/.local/share/...`), shared by every command that runs plugins.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))?;
    Some(base.join("mailplug").join("plugin-cache"))
}

impl Catalog {
    /// A catalog of the first-party plugins, compiled components cached in `cache_dir`.
    pub fn builtins(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let runtime = Runtime::with_builtins(RuntimeOptions {
            cache_dir,
            ..RuntimeOptions::default()
        })?;
        let mut catalog = Self {
            runtime,
            schemas: HashMap::new(),
        };
        catalog.compile_schemas();
        Ok(catalog)
    }

    fn compile_schemas(&mut self) {
        for plugin in self.runtime.plugins() {
            let info = plugin.info();
            if self.schemas.contains_key(&info.id) {
                continue;
            }
            match CompiledSchema::new(info.options_schema.clone()) {
                Ok(schema) => {
                    self.schemas.insert(info.id.clone(), schema);
                }
                Err(e) => {
                    tracing::warn!(plugin = %info.id, error = %e, "plugin options schema does not compile")
                }
            }
        }
    }

    /// Loads community plugin registrations; each failure (unreadable file,
    /// hash mismatch, invalid component) becomes an error at the registration.
    pub fn register(&mut self, registrations: &[&PluginRegistration]) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for reg in registrations {
            if self.runtime.plugin(&reg.id).is_some() {
                continue;
            }
            let source = PluginSource {
                id: Some(reg.id.clone()),
                wasm: WasmSource::Path(reg.wasm_path.clone()),
                expected_sha256: Some(reg.sha256.clone()),
                limits: PluginLimits {
                    memory_mib: reg.limits.memory_mib,
                    deadline_ms: reg.limits.deadline_ms,
                },
            };
            if let Err(e) = self.runtime.load(source) {
                let pos = config::yaml::Pos {
                    line: reg.source.line,
                    col: reg.source.column,
                };
                problems.push(Diagnostic::error(
                    &reg.source.file,
                    pos,
                    "/id",
                    e.to_string(),
                ));
            }
        }
        self.compile_schemas();
        problems
    }

    /// The runtime holding every loaded plugin.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

fn to_wit(s: config::Security) -> runtime::Security {
    match s {
        config::Security::Starttls => runtime::Security::Starttls,
        config::Security::Tls => runtime::Security::Tls,
        config::Security::None => runtime::Security::None,
    }
}

fn from_wit(s: runtime::Security) -> config::Security {
    match s {
        runtime::Security::Starttls => config::Security::Starttls,
        runtime::Security::Tls => config::Security::Tls,
        runtime::Security::None => config::Security::None,
    }
}

fn from_wit_source(source: runtime::PasswordSource) -> PasswordSource {
    match source {
        runtime::PasswordSource::None => PasswordSource::None,
        runtime::PasswordSource::SmtpPassword => PasswordSource::SmtpPassword,
        runtime::PasswordSource::OptionsField(p) => PasswordSource::OptionsField(p),
    }
}

impl ProviderCatalog for Catalog {
    fn is_known(&self, id: &str) -> bool {
        self.runtime.plugin(id).is_some()
    }

    fn options_schema(&self, id: &str) -> Option<&CompiledSchema> {
        self.schemas.get(id)
    }

    fn ids(&self) -> Vec<String> {
        self.runtime
            .plugins()
            .map(|p| p.info().id.clone())
            .collect()
    }

    /// Calls the plugin's `adapt-connection`; no secret is resolved or
    /// passed, only whether `smtp.password` is set.
    fn adapt(
        &self,
        id: &str,
        options: &BTreeMap<String, Value>,
        overrides: &config::SmtpOverrides,
    ) -> Result<AdaptedSmtp, AdaptFailure> {
        let plugin = self
            .runtime
            .plugin(id)
            .ok_or_else(|| AdaptFailure::Failed(format!("no plugin `{id}` is loaded")))?;
        let wit = SmtpOverrides {
            host: overrides.host.clone(),
            port: overrides.port,
            security: overrides.security.map(to_wit),
            username: overrides.username.clone(),
            has_password: overrides.has_password,
        };
        let options = serde_json::to_string(options).unwrap_or_else(|_| "{}".to_owned());
        let mut instance = plugin.instance();
        let settings = match instance.adapt_connection(&options, &wit) {
            Ok(Ok(settings)) => settings,
            Ok(Err(fields)) => {
                return Err(AdaptFailure::Fields(
                    fields.into_iter().map(|f| (f.path, f.message)).collect(),
                ));
            }
            Err(e) => return Err(AdaptFailure::Failed(e.to_string())),
        };
        let username_secret = instance
            .take_requests()
            .username_secret
            .map_or(PasswordSource::None, from_wit_source);
        Ok(AdaptedSmtp {
            host: settings.host,
            port: settings.port,
            security: from_wit(settings.security),
            username: settings.username,
            username_secret,
            password: from_wit_source(settings.password),
            extra_headers: settings.extra_headers,
        })
    }
}

/// Loads `paths` with provider checks: first-party plugins plus every
/// `kind: Plugin` registration found (loaded, then the files checked again
/// so connections can use them). Registration failures are errors in the
/// registering file.
pub fn load_config(
    paths: &[PathBuf],
    opts: &config::LoadOptions,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<(config::Loaded, Catalog)> {
    let mut catalog = Catalog::builtins(cache_dir)?;
    let mut loaded = config::load(paths, opts, &catalog);
    let registrations: Vec<PluginRegistration> = loaded
        .files
        .iter()
        .filter(|f| !f.has_errors())
        .flat_map(|f| f.plugins.iter().cloned())
        .collect();
    if registrations.is_empty() {
        return Ok((loaded, catalog));
    }
    let problems = catalog.register(&registrations.iter().collect::<Vec<_>>());
    loaded = config::load(paths, opts, &catalog);
    for problem in problems {
        if let Some(file) = loaded.files.iter_mut().find(|f| f.path == problem.file) {
            file.diagnostics.push(problem);
            file.diagnostics.sort_by_key(|d| (d.line, d.column));
        } else {
            loaded.diagnostics.push(problem);
        }
    }
    Ok((loaded, catalog))
}
