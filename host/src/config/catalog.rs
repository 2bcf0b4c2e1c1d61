//! What the configuration layer needs from the installed provider plugins,
//! as a trait so `config/` depends on nothing above it: the plugin runtime
//! implements it (`providers::Catalog`), tests and benchmarks can use
//! [`NoPlugins`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::connection::{CUSTOM_SMTP, Security};
use super::schema::CompiledSchema;

/// The SMTP fields a connection file sets explicitly, as a provider plugin
/// sees them. Secrets never reach a plugin; only whether one is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpOverrides {
    /// `smtp.host`.
    pub host: Option<String>,
    /// `smtp.port`.
    pub port: Option<u16>,
    /// `smtp.security`.
    pub security: Option<Security>,
    /// `smtp.username`.
    pub username: Option<String>,
    /// Whether `smtp.password` is set.
    pub has_password: bool,
}

/// Where the SMTP password comes from, as a plugin designates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password.
    None,
    /// The connection's `smtp.password` reference.
    SmtpPassword,
    /// A secret reference in this `options` field (JSON Pointer inside `options`).
    OptionsField(String),
}

/// A provider plugin's `adapt-connection` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptedSmtp {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Security mode.
    pub security: Security,
    /// AUTH user.
    pub username: Option<String>,
    /// Where the AUTH user is read from when it is a secret
    /// (`credentials.username-secret`); [`PasswordSource::None`]: `username`.
    pub username_secret: PasswordSource,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// Headers the provider needs on every message (name, value).
    pub extra_headers: Vec<(String, String)>,
}

/// Why a provider plugin produced no settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdaptFailure {
    /// The plugin refused fields: (JSON Pointer in the document, message).
    Fields(Vec<(String, String)>),
    /// The call itself failed (trap, deadline, no such plugin).
    Failed(String),
}

/// The installed providers, as the configuration layer sees them.
pub trait ProviderCatalog {
    /// Whether a plugin with this id is installed.
    fn is_known(&self, id: &str) -> bool;
    /// The compiled schema of the plugin's `options`, if it declares one.
    fn options_schema(&self, id: &str) -> Option<&CompiledSchema>;
    /// Installed plugin ids, for hints.
    fn ids(&self) -> Vec<String>;
    /// Runs the plugin's `adapt-connection` (never called for Custom SMTP,
    /// which the host compiles itself).
    fn adapt(
        &self,
        id: &str,
        options: &BTreeMap<String, Value>,
        overrides: &SmtpOverrides,
    ) -> Result<AdaptedSmtp, AdaptFailure>;
}

/// A catalog with Custom SMTP only and no plugin runtime: for checks that
/// must not load wasm (benchmarks, unit tests). Every other provider is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPlugins;

impl ProviderCatalog for NoPlugins {
    fn is_known(&self, id: &str) -> bool {
        id == CUSTOM_SMTP
    }

    fn options_schema(&self, _id: &str) -> Option<&CompiledSchema> {
        None
    }

    fn ids(&self) -> Vec<String> {
        vec![CUSTOM_SMTP.to_owned()]
    }

    fn adapt(
        &self,
        id: &str,
        _options: &BTreeMap<String, Value>,
        _overrides: &SmtpOverrides,
    ) -> Result<AdaptedSmtp, AdaptFailure> {
        Err(AdaptFailure::Failed(format!("no plugin `{id}` is loaded")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin answering every connection with a flood of huge field
    /// errors holding terminal escapes.
    struct Flood;

    impl ProviderCatalog for Flood {
        fn is_known(&self, id: &str) -> bool {
            id == "flood" || id == CUSTOM_SMTP
        }

        fn options_schema(&self, _id: &str) -> Option<&CompiledSchema> {
            None
        }

        fn ids(&self) -> Vec<String> {
            vec!["flood".to_owned()]
        }

        fn adapt(
            &self,
            _id: &str,
            _options: &BTreeMap<String, Value>,
            _overrides: &SmtpOverrides,
        ) -> Result<AdaptedSmtp, AdaptFailure> {
            let message = format!(
                "bad\r\n\x1b[2Jother.yaml:1:1: error: {}",
                "x".repeat(10_000)
            );
            Err(AdaptFailure::Fields(vec![
                ("/options".to_owned(), message);
                1_000
            ]))
        }
    }

    #[test]
    fn a_plugins_field_errors_are_cut_escaped_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "api_version: mailplug/v1\nkind: Connection\nname: c\nprovider: flood\nfrom: { email: a@example.com }\n",
        )
        .unwrap();
        let loaded = super::super::load(&[file], &super::super::LoadOptions::default(), &Flood);
        let diags: Vec<_> = loaded.all_diagnostics().collect();
        assert_eq!(diags.len(), 21, "{diags:#?}");
        assert!(
            diags[20].to_string().contains("980 more field errors"),
            "{}",
            diags[20]
        );
        for d in &diags[..20] {
            let line = d.to_string();
            assert!(line.len() < 600, "{} bytes", line.len());
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(line.contains('…'), "{line}");
            assert!(line.contains(r"bad\r\n\x1b[2J"), "{line}");
        }
    }
}
