//! Glue between validated connections, the plugin runtime and the SMTP
//! transport: which providers exist (for `validate`), their options
//! schemas, and turning a provider connection into an SMTP target through
//! its plugin's `adapt-connection`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::diagnostic::Diagnostic;
use crate::config::schema::CompiledSchema;
use crate::config::{self, Connection, PluginRegistration, ProviderCatalog, SecretRef};
use crate::mail::{self, ProviderSmtp, SmtpTarget};
use crate::runtime::{
    self, PasswordSource, PluginLimits, PluginSource, Runtime, RuntimeOptions, SmtpOverrides,
    WasmSource,
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
            if self.runtime.plugin(&reg.spec.id).is_some() {
                continue;
            }
            let source = PluginSource {
                id: Some(reg.spec.id.clone()),
                wasm: WasmSource::Path(reg.wasm_path.clone()),
                expected_sha256: Some(reg.spec.sha256.clone()),
                limits: PluginLimits {
                    memory_mib: reg.spec.limits.memory_mib,
                    deadline_ms: reg.spec.limits.deadline_ms,
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

    /// The SMTP target of a connection: Custom SMTP directly, other providers
    /// through their plugin's `adapt-connection` with the connection's
    /// `smtp` fields on top.
    pub fn smtp_target(&self, conn: &Connection) -> Result<SmtpTarget, AdaptError> {
        if conn.spec.provider == "custom-smtp" {
            return Ok(mail::target_for(conn)?);
        }
        let adapted = self.adapt(conn)?;
        Ok(mail::target_for_provider(conn, adapted)?)
    }

    /// Calls the provider plugin's `adapt-connection` (no secret is resolved).
    fn settings(&self, conn: &Connection) -> Result<runtime::SmtpSettings, AdaptError> {
        let spec = &conn.spec;
        let plugin = self
            .runtime
            .plugin(&spec.provider)
            .ok_or_else(|| AdaptError::UnknownProvider(spec.provider.clone()))?;
        let smtp = spec.smtp.clone().unwrap_or_default();
        let overrides = SmtpOverrides {
            host: smtp.host.clone(),
            port: smtp.port,
            security: smtp.security.map(|s| match s {
                config::Security::Starttls => runtime::Security::Starttls,
                config::Security::Tls => runtime::Security::Tls,
                config::Security::None => runtime::Security::None,
            }),
            username: smtp.username.clone(),
            has_password: smtp.password.is_some(),
        };
        let options = serde_json::to_string(&spec.options).unwrap_or_else(|_| "{}".to_owned());
        match plugin.instance().adapt_connection(&options, &overrides)? {
            Ok(settings) => Ok(settings),
            Err(fields) => Err(AdaptError::Fields(
                fields.into_iter().map(|f| (f.path, f.message)).collect(),
            )),
        }
    }

    fn adapt(&self, conn: &Connection) -> Result<ProviderSmtp, AdaptError> {
        let spec = &conn.spec;
        let smtp = spec.smtp.clone().unwrap_or_default();
        let settings = self.settings(conn)?;
        let base = conn.base_dir();
        let secret = |r: &SecretRef| {
            r.resolve(base)
                .map_err(|e| AdaptError::Secret(format!("connection {}: {e}", spec.name)))
        };
        let password = match &settings.password {
            PasswordSource::None => None,
            PasswordSource::SmtpPassword => smtp.password.as_ref().map(secret).transpose()?,
            PasswordSource::OptionsField(pointer) => {
                let value = serde_json::to_value(&spec.options).unwrap_or_default();
                let reference: SecretRef = value
                    .pointer(pointer)
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .ok_or_else(|| {
                        AdaptError::Secret(format!("options{pointer} is not a secret reference"))
                    })?;
                Some(secret(&reference)?)
            }
        };
        Ok(ProviderSmtp {
            host: settings.host,
            port: settings.port,
            security: match settings.security {
                runtime::Security::Starttls => config::Security::Starttls,
                runtime::Security::Tls => config::Security::Tls,
                runtime::Security::None => config::Security::None,
            },
            username: settings.username,
            password,
        })
    }
}

/// Why a connection could not be turned into an SMTP target.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// No plugin with the connection's provider id.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    /// The plugin refused the settings.
    #[error("the provider plugin refused the settings: {}", .0.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; "))]
    Fields(Vec<(String, String)>),
    /// A secret did not resolve.
    #[error("{0}")]
    Secret(String),
    /// The plugin call failed (trap, deadline...).
    #[error(transparent)]
    Plugin(#[from] runtime::PluginError),
    /// The resulting settings are unusable.
    #[error(transparent)]
    Config(#[from] mail::ConfigError),
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

    /// Empty when the plugin accepts the settings, or when the call itself
    /// failed: that is reported when the connection is used.
    fn adapt_errors(&self, conn: &Connection) -> Vec<(String, String)> {
        match self.settings(conn) {
            Err(AdaptError::Fields(fields)) => fields,
            _ => Vec::new(),
        }
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
    let mut loaded = config::load(paths, opts, Some(&catalog));
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
    loaded = config::load(paths, opts, Some(&catalog));
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
