//! From a validated configuration [`Connection`] to an [`SmtpTarget`]:
//! defaults, secret resolution, paths relative to the defining file.

use std::time::Duration;

use crate::config::{Connection, Security as ConfigSecurity};

use super::target::{Security, SmtpTarget};

/// Why a configured connection cannot be turned into an SMTP target.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A provider connection whose SMTP settings come from its plugin.
    #[error(
        "connection {connection}: provider {provider:?} gets its SMTP settings from its plugin's \
         adapt-connection, which this build cannot run yet; set smtp.host (and port/security/username) \
         explicitly to check it"
    )]
    NeedsPlugin {
        /// Connection name.
        connection: String,
        /// Provider id.
        provider: String,
    },
    /// No `smtp.host` for a custom SMTP connection.
    #[error("connection {0}: smtp.host is required")]
    NoHost(String),
    /// A secret reference did not resolve.
    #[error("connection {connection}: smtp.password: {reason}")]
    Secret {
        /// Connection name.
        connection: String,
        /// Why (never the value).
        reason: String,
    },
}

/// The default port for a security mode (submission, SMTPS, SMTP).
pub fn default_port(security: Security) -> u16 {
    match security {
        Security::Starttls => 587,
        Security::Tls => 465,
        Security::None => 25,
    }
}

/// The machine's host name for EHLO, `localhost` if unknown.
fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Builds the SMTP target of `conn`, resolving its password reference.
/// Provider connections need explicit `smtp` settings until the plugin
/// runtime can supply them.
pub fn target_for(conn: &Connection) -> Result<SmtpTarget, ConfigError> {
    let spec = &conn.spec;
    let name = spec.name.clone();
    let smtp = spec.smtp.clone().unwrap_or_default();
    let Some(host) = smtp.host.clone() else {
        if spec.provider != "custom-smtp" {
            return Err(ConfigError::NeedsPlugin {
                connection: name,
                provider: spec.provider.clone(),
            });
        }
        return Err(ConfigError::NoHost(name));
    };
    let security = match smtp.security.unwrap_or(ConfigSecurity::Starttls) {
        ConfigSecurity::Starttls => Security::Starttls,
        ConfigSecurity::Tls => Security::Tls,
        ConfigSecurity::None => Security::None,
    };
    let base = conn.base_dir();
    let password = match &smtp.password {
        Some(r) => Some(r.resolve(base).map_err(|e| ConfigError::Secret {
            connection: name.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let tls = smtp.tls.clone().unwrap_or_default();
    let timeout = Duration::from_secs(u64::from(spec.limits.timeout_seconds.max(1)));
    Ok(SmtpTarget {
        connection: name,
        port: smtp.port.unwrap_or(default_port(security)),
        host,
        security,
        username: smtp.username.clone(),
        password,
        ca_file: tls
            .ca_file
            .map(|p| if p.is_absolute() { p } else { base.join(p) }),
        verify_tls: tls.verify.unwrap_or(true),
        helo_name: smtp.helo_name.clone().unwrap_or_else(machine_hostname),
        allow_insecure_auth: smtp.allow_insecure_auth,
        from_name: spec.from.name.clone(),
        from_email: spec.from.email.clone(),
        connect_timeout: timeout,
        command_timeout: timeout,
        max_connections: usize::try_from(spec.limits.max_connections.max(1)).unwrap_or(1),
    })
}
