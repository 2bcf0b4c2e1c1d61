//! The compiled configuration: what every consumer (check, test-send, the
//! admin API, the daemon) reads. A [`Connection`] is built once per document
//! by `config::compile`, with every default resolved by one rule, so nothing
//! outside `config/` re-derives a port, a security mode or a provider.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SourceLocation;
use super::secret::SecretRef;
use crate::address::Address;

/// The plugin id of Custom SMTP, the default provider.
pub const CUSTOM_SMTP: &str = "custom-smtp";

/// Which plugin adapts a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// The connection's own `smtp:` settings, compiled by the host's rule.
    CustomSmtp,
    /// A provider plugin (first-party or `kind: Plugin`) by id; its
    /// `adapt-connection` supplies the SMTP settings.
    Plugin(String),
}

impl Provider {
    /// The provider named by a plugin id.
    pub fn from_id(id: &str) -> Self {
        if id == CUSTOM_SMTP {
            Self::CustomSmtp
        } else {
            Self::Plugin(id.to_owned())
        }
    }

    /// The plugin id (`custom-smtp`, `sendgrid`, ...).
    pub fn id(&self) -> &str {
        match self {
            Self::CustomSmtp => CUSTOM_SMTP,
            Self::Plugin(id) => id,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// How the SMTP session is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is required: the
    /// session fails if the server does not offer it (usually port 587).
    Starttls,
    /// Implicit TLS from the first byte (usually port 465).
    Tls,
    /// No encryption (local relays and development servers only).
    None,
}

impl Security {
    /// The YAML spelling of this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }

    /// The conventional port of this mode: 587 submission, 465 SMTPS, 25 SMTP.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }

    /// The mode a port implies when none is set: 465 is implicit TLS, every
    /// other port starts in plain text and is upgraded with STARTTLS.
    pub fn default_for_port(port: u16) -> Self {
        if port == 465 {
            Self::Tls
        } else {
            Self::Starttls
        }
    }
}

/// The one rule for port and security: an explicit value wins; `security`
/// unset follows the port (465 ⇒ `tls`, else `starttls`); `port` unset
/// follows the mode (587 / 465 / 25); both unset: 587 with `starttls`.
/// The plugin SDK's `port_security_defaults` is tested against the same
/// table of cases (`tests/fixtures/port-security-defaults.json`).
pub fn effective_port_security(port: Option<u16>, security: Option<Security>) -> (u16, Security) {
    match (port, security) {
        (Some(p), Some(s)) => (p, s),
        (Some(p), None) => (p, Security::default_for_port(p)),
        (None, Some(s)) => (s.default_port(), s),
        (None, None) => (587, Security::Starttls),
    }
}

/// A sender identity: display name and a parsed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Display name in the From header.
    pub name: Option<String>,
    /// From header and envelope sender.
    pub email: Address,
}

/// A password reference and the field it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRef {
    /// Where the value is read from; resolved only when a session needs it.
    pub secret: SecretRef,
    /// JSON Pointer of the field that names it (`/smtp/password`, or an
    /// `options` field a provider plugin designated).
    pub pointer: String,
}

/// Effective SMTP settings of a connection: for Custom SMTP the `smtp:`
/// section with the defaults filled in, for providers the plugin's
/// `adapt-connection` answer with the explicit `smtp:` fields on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    /// Server host name or IP literal.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Security mode.
    pub security: Security,
    /// AUTH user; `None` (and no `username_secret`) means no authentication.
    pub username: Option<String>,
    /// AUTH user read from a secret when a session logs in (a provider
    /// plugin's `credentials.username-secret`, e.g. Postmark's server token,
    /// which is also the password); when set, `username` is `None`.
    pub username_secret: Option<PasswordRef>,
    /// AUTH password reference.
    pub password: Option<PasswordRef>,
    /// Extra PEM trust roots, resolved against the connection file's directory.
    pub ca_file: Option<PathBuf>,
    /// Verify the server certificate (only an explicit `tls.verify: false` turns it off).
    pub verify_tls: bool,
    /// Name for EHLO; `None`: the machine's host name.
    pub helo_name: Option<String>,
    /// Allow AUTH over `security: none`.
    pub allow_insecure_auth: bool,
    /// Headers the provider plugin needs on every message sent through the
    /// connection (`adapt-connection`), in order; none of them one mailplug
    /// sets itself ([`OWNED_HEADERS`]).
    pub extra_headers: Vec<(String, String)>,
}

/// Header fields mailplug writes itself: a plugin's `extra_headers` may not
/// name them (compared case-insensitively).
pub const OWNED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "user-agent",
    "return-path",
    "received",
];

/// How provider webhooks are authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Webhook {
    /// Signing keys or shared secrets, resolved when a request is verified;
    /// any one may verify (rotation). Empty: none configured.
    pub secrets: Vec<SecretRef>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a signed timestamp may be off the current time.
    pub tolerance_seconds: u32,
    /// `webhook.url`: the URL as registered at the provider, if set.
    pub url: Option<String>,
    /// `webhook.sns`, certificate paths resolved; `None` when not set.
    pub sns: Option<std::sync::Arc<crate::runtime::sns::SnsSettings>>,
}

/// Default of `priority`.
pub const DEFAULT_PRIORITY: u32 = 100;

/// Default of `webhook.max_body_bytes`: 1 MiB.
pub const DEFAULT_WEBHOOK_MAX_BODY: usize = 1 << 20;

/// Limits of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Size of the session pool (at least 1).
    pub max_connections: u32,
    /// Messages per second the queue starts with (evenly spaced).
    pub per_second: Option<u32>,
    /// Quota per sliding minute.
    pub per_minute: Option<u32>,
    /// Quota per sliding hour.
    pub per_hour: Option<u32>,
    /// Quota per sliding 24 hours.
    pub per_day: Option<u32>,
    /// Bound on DNS + connect and on each SMTP reply.
    #[serde(rename = "timeout_seconds", serialize_with = "seconds")]
    pub timeout: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// A validated, compiled connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Unique name, used in URLs and the CLI.
    pub name: String,
    /// Human-readable name (the `name` unless `display_name` is set).
    pub display_name: String,
    /// Which plugin adapts it.
    pub provider: Provider,
    /// Effective SMTP settings.
    pub smtp: Smtp,
    /// Sender identity.
    pub from: Mailbox,
    /// Workspaces allowed to send through it.
    pub workspaces: Vec<String>,
    /// Provider-specific settings, as checked against the plugin's schema.
    pub options: BTreeMap<String, serde_json::Value>,
    /// Webhook authentication.
    pub webhook: Webhook,
    /// Concurrency, rate and timeout limits.
    pub limits: Limits,
    /// Sending order within a workspace (lower first).
    pub priority: u32,
    /// Where it was defined.
    pub source: SourceLocation,
}

impl Connection {
    /// The connection's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory relative secret paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.source.file.parent().unwrap_or(Path::new("."))
    }
}

/// Sandbox limits of a registered plugin (defaults apply when unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory cap in MiB.
    pub memory_mib: Option<u32>,
    /// Wall-clock deadline per call in milliseconds.
    pub deadline_ms: Option<u32>,
}

/// A validated community plugin registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRegistration {
    /// Plugin id connections name in `provider`.
    pub id: String,
    /// The `.wasm` path resolved against the registering file's directory.
    pub wasm_path: PathBuf,
    /// Pinned sha256 (lower-case hex).
    pub sha256: String,
    /// Sandbox limits.
    pub limits: PluginLimits,
    /// Where it was defined.
    pub source: SourceLocation,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(v: &serde_json::Value) -> Option<Security> {
        v.as_str()
            .map(|s| serde_json::from_value(serde_json::Value::String(s.to_owned())).unwrap())
    }

    #[test]
    fn port_security_rule_matches_the_shared_table() {
        let table: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/port-security-defaults.json"
        ))
        .unwrap();
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let port = case["port"].as_u64().map(|p| u16::try_from(p).unwrap());
            let want = (
                u16::try_from(case["effective_port"].as_u64().unwrap()).unwrap(),
                security(&case["effective_security"]).unwrap(),
            );
            assert_eq!(
                effective_port_security(port, security(&case["security"])),
                want,
                "{case}"
            );
        }
    }
}
