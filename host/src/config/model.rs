//! Raw configuration types as written in YAML, private to `config/` (the rest
//! of the host reads the compiled types of `connection`); their doc comments
//! become the JSON Schema descriptions operators see in their editors.
//!
//! These types describe *shape* only. Cross-field rules (port vs security,
//! credentials over plaintext, duplicate names) live in `check`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::connection::Security;
use super::secret::SecretRef;

/// The only configuration API version this build understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// First stable version of the configuration format.
    #[serde(rename = "mailplug/v1")]
    V1,
}

/// A delivery connection: where and how mail for some workspaces is sent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mailplug Connection")]
pub struct ConnectionSpec {
    /// Configuration format version; always `mailplug/v1`.
    pub api_version: ApiVersion,
    /// Object kind; `Connection` for this schema.
    pub kind: ConnectionKind,
    /// Unique connection name, used in URLs and the CLI: lowercase letters,
    /// digits and `-`, starting with a letter or digit, at most 63 characters.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub name: String,
    /// Human-readable name shown in the admin API and test emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub display_name: Option<String>,
    /// Plugin id of the provider (`custom-smtp`, `sendgrid`, ...). Defaults to
    /// `custom-smtp`, which sends through the SMTP server given in `smtp`.
    #[serde(default = "default_provider")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub provider: String,
    /// SMTP server settings. Required for `custom-smtp`; for other providers
    /// these override what the provider plugin fills in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,
    /// Sender identity used for test emails and as the envelope sender.
    pub from: FromSpec,
    /// Workspaces (tenants, teams, products) allowed to send through this connection.
    #[serde(default)]
    #[schemars(inner(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")))]
    pub workspaces: Vec<String>,
    /// Provider-specific settings; their schema comes from the provider plugin
    /// (`mailplug plugin inspect <provider>`).
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
    /// How provider webhooks (bounces, complaints) are authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Concurrency, rate and timeout limits for this connection.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Order among a workspace's connections when sending: lower first,
    /// ties by name; later ones take over when earlier ones fail at the
    /// connection level. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: Option<u32>,
}

/// Marker for `kind: Connection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConnectionKind {
    /// A delivery connection.
    Connection,
}

/// Marker for `kind: Plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PluginKind {
    /// A community provider plugin registration.
    Plugin,
}

fn default_provider() -> String {
    super::connection::CUSTOM_SMTP.to_owned()
}

/// SMTP server settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpSpec {
    /// Server host name or IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// TCP port. Defaults to 587 for `starttls`, 465 for `tls`, 25 for `none`
    /// (587 when `security` is unset too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Transport security: `starttls` (required STARTTLS), `tls` (implicit
    /// TLS) or `none` (plaintext). Defaults to `tls` on port 465 and to
    /// `starttls` on any other port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// Login for SMTP AUTH; omit for servers that need no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 320))]
    pub username: Option<String>,
    /// Password for SMTP AUTH, as a secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// TLS certificate verification settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Name announced in EHLO. Defaults to the machine's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub helo_name: Option<String>,
    /// Allow AUTH over a plaintext (`security: none`) session. Off by default:
    /// credentials sent in clear can be read by anyone on the path.
    #[serde(default)]
    pub allow_insecure_auth: bool,
}

/// TLS certificate verification settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file with extra CA certificates to trust (e.g. a corporate CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Verify the server certificate (default `true`). Only set `false` for
    /// testing; every use is logged as a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
}

/// Sender identity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FromSpec {
    /// Display name in the From header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub name: Option<String>,
    /// Sender address (From header and envelope MAIL FROM).
    #[schemars(length(min = 3, max = 320))]
    pub email: String,
}

/// Webhook authentication.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Signing key or shared secret the provider uses for its webhooks, or a
    /// list of them (key rotation; any one may verify a request). Public
    /// verification keys (PEM, base64 DER, `whpk_...`) may be written inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<WebhookSecrets>,
    /// Largest webhook request body accepted, in bytes (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 67_108_864))]
    pub max_body_bytes: Option<u64>,
    /// How far a provider's signed timestamp may be from the current time,
    /// e.g. `5m`, `30s` (1s to 1h; default 300s). Applies to schemes that
    /// sign a timestamp (SendGrid, Standard Webhooks, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
    /// The URL the provider calls for this connection, exactly as
    /// registered there (scheme, host, path, query, trailing slash).
    /// Mandrill signs it. Default: the daemon's `--public-url` followed by
    /// `/webhooks/<name>`; set it when a proxy rewrites the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: Option<String>,
    /// Amazon SNS subscriptions (provider `amazon-ses`): the topics
    /// accepted, whether to confirm subscriptions, trusted certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsSpec>,
}

/// Amazon SNS settings of a connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnsSpec {
    /// Topic ARNs whose messages are accepted; any other topic is refused
    /// (401). Required for SNS: an empty list accepts nothing.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub topics: Vec<SnsTopic>,
    /// Confirm a verified `SubscriptionConfirmation` of a listed topic by
    /// opening its `SubscribeURL` (default `false`: the pending confirmation
    /// is shown in `/v1/status` and the log, with the URL to open).
    #[serde(default)]
    pub auto_confirm: bool,
    /// Trusted signing certificates: `SigningCertURL` → PEM file (relative
    /// to this file's folder). Such a URL is never fetched; for air-gapped
    /// sites and tests.
    #[serde(default)]
    pub certificates: std::collections::BTreeMap<String, PathBuf>,
}

/// An SNS topic ARN, `arn:aws:sns:<region>:<account>:<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SnsTopic(
    #[schemars(regex(
        pattern = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}$"
    ))]
    pub String,
);

/// One webhook secret or several.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum WebhookSecrets {
    /// A list of secrets: any one may verify.
    Many(#[schemars(length(min = 1, max = 8))] Vec<SecretRef>),
    /// One secret.
    One(SecretRef),
}

impl WebhookSecrets {
    /// The secrets in order.
    pub fn into_vec(self) -> Vec<SecretRef> {
        match self {
            Self::Many(v) => v,
            Self::One(s) => vec![s],
        }
    }
}

/// Limits for one connection.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Maximum simultaneous SMTP sessions (pool size).
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,
    /// Most messages per second the sending queue starts on this connection,
    /// evenly spaced (no bursts). Unset: as fast as the pool allows. The
    /// queue lowers it on throttling replies and raises it back (AIMD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub per_second: Option<u32>,
    /// Most messages in any 60 seconds (a provider quota; sliding window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub per_minute: Option<u32>,
    /// Most messages in any hour (sliding window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub per_hour: Option<u32>,
    /// Most messages in any 24 hours (sliding window; survives restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub per_day: Option<u32>,
    /// Timeout in seconds for connecting and for each SMTP command.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u32,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            per_second: None,
            per_minute: None,
            per_hour: None,
            per_day: None,
            timeout_seconds: default_timeout_seconds(),
        }
    }
}

fn default_max_connections() -> u32 {
    4
}

fn default_timeout_seconds() -> u32 {
    30
}

/// Registration of a community provider plugin.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mailplug Plugin")]
pub struct PluginSpec {
    /// Configuration format version; always `mailplug/v1`.
    pub api_version: ApiVersion,
    /// Object kind; `Plugin` for this schema.
    pub kind: PluginKind,
    /// Plugin id that connections name in `provider`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub id: String,
    /// Path of the component (`.wasm`), relative to this file's directory.
    pub path: PathBuf,
    /// Expected SHA-256 of the `.wasm` file (64 hex digits); a mismatch refuses the plugin.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// Sandbox limits for this plugin's calls.
    #[serde(default)]
    pub limits: PluginLimitsSpec,
}

/// Sandbox limits of one plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginLimitsSpec {
    /// Linear memory cap in MiB (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: Option<u32>,
    /// Wall-clock deadline per call in milliseconds (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub deadline_ms: Option<u32>,
}

/// Marker for `kind: Workspace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkspaceKind {
    /// Settings of one workspace.
    Workspace,
}

/// Settings of one workspace (the name connections list under
/// `workspaces`). Optional: a workspace without one uses the daemon's
/// defaults.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mailplug Workspace")]
pub struct WorkspaceSpec {
    /// Configuration format version; always `mailplug/v1`.
    pub api_version: ApiVersion,
    /// Object kind; `Workspace` for this schema.
    pub kind: WorkspaceKind,
    /// The workspace name, as connections list it under `workspaces`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub name: String,
    /// When soft bounces suppress an address in this workspace. Default:
    /// the daemon's `--soft-bounce-threshold` and `--soft-bounce-window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_bounces: Option<SoftBouncesSpec>,
}

/// A soft-bounce suppression rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoftBouncesSpec {
    /// Soft bounces (and bounces of unknown class) of one address within
    /// `window` that suppress it (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub threshold: u32,
    /// How far back soft bounces count, e.g. `7days`, `48h` (1m to 1year).
    pub window: String,
}

/// Marker for `kind: Forwarder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ForwarderKind {
    /// A destination of a workspace's unified delivery events.
    Forwarder,
}

/// Sends every stored delivery event of one workspace to the application:
/// an HTTPS endpoint (signed per the Standard Webhooks spec) or an NDJSON
/// file for a log shipper. Events are queued durably and retried.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mailplug Forwarder")]
pub struct ForwarderSpec {
    /// Configuration format version; always `mailplug/v1`.
    pub api_version: ApiVersion,
    /// Object kind; `Forwarder` for this schema.
    pub kind: ForwarderKind,
    /// Unique forwarder name, used in the admin API and metrics: lowercase
    /// letters, digits and `-`, starting with a letter or digit, at most 63
    /// characters. Queued events belong to the name: renaming a forwarder
    /// leaves its queue behind.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub name: String,
    /// The workspace whose events this forwarder receives: every event
    /// stored for a connection that serves this workspace.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))]
    pub workspace: String,
    /// Endpoint each event is POSTed to as JSON (`http` or `https`; redirects
    /// are not followed). Exactly one of `url` and `file` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// Absolute path of an NDJSON file each event is appended to, one JSON
    /// object per line, for log shippers. Exactly one of `url` and `file` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Signing secret of the endpoint, in the Standard Webhooks format
    /// `whsec_<base64>`, as a secret reference. Required with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// Only events of these kinds are forwarded. Default: every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub kinds: Option<Vec<crate::event::EventKind>>,
    /// How long an event is retried before it becomes a dead letter,
    /// counted from when it was queued, e.g. `24h`, `90m` (1s to 30days;
    /// default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Time one delivery attempt may take (connect, send, response), e.g.
    /// `10s` (100ms to 5m; default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Events of different recipients delivered at once (1 to 64; default 4).
    /// Events of one recipient are always delivered one after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<u32>,
    /// Backoff between attempts: exponential with full jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// Backoff bounds of a forwarder.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Upper bound of the wait after the first failed attempt; it doubles
    /// after every further failure, e.g. `1s` (10ms to 1h; default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Largest upper bound of a wait between attempts, e.g. `10m` (at least
    /// `initial_delay`, at most 24h; default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
}
