//! From a validated configuration [`Connection`] to an [`SmtpTarget`]:
//! defaults, secret resolution, paths relative to the defining file.

use std::time::Duration;

use crate::config::Connection;

use super::target::{Secret, Security, SmtpTarget};

/// Why a configured connection cannot be turned into an SMTP target.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A provider connection whose SMTP settings come from its plugin.
    #[error(
        "connection {connection}: provider {provider:?} gets its SMTP settings from its plugin's \
         adapt-connection; resolve it through the provider catalog"
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

/// The machine's host name for EHLO, `localhost` if unknown.
fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// SMTP settings a provider plugin's `adapt-connection` returned, mapped to
/// host types by the plugin runtime (which also resolves the plugin's
/// password source to a secret). The plugin never touches the network.
#[derive(Debug, Clone)]
pub struct ProviderSmtp {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Security mode.
    pub security: Security,
    /// AUTH user, if any.
    pub username: Option<String>,
    /// AUTH password, if any.
    pub password: Option<Secret>,
}

/// Builds the SMTP target of `conn`, resolving its password reference.
/// Provider connections without an explicit `smtp.host` need their plugin's
/// settings: use [`target_for_provider`].
pub fn target_for(conn: &Connection) -> Result<SmtpTarget, ConfigError> {
    let spec = &conn.spec;
    if spec.smtp.as_ref().and_then(|s| s.host.as_ref()).is_none() {
        if spec.provider != "custom-smtp" {
            return Err(ConfigError::NeedsPlugin {
                connection: spec.name.clone(),
                provider: spec.provider.clone(),
            });
        }
        return Err(ConfigError::NoHost(spec.name.clone()));
    }
    build(conn, None)
}

/// Builds the SMTP target of a provider connection from its plugin's
/// settings; fields set in the connection's `smtp` section override them.
pub fn target_for_provider(
    conn: &Connection,
    adapted: ProviderSmtp,
) -> Result<SmtpTarget, ConfigError> {
    build(conn, Some(adapted))
}

fn build(conn: &Connection, adapted: Option<ProviderSmtp>) -> Result<SmtpTarget, ConfigError> {
    let spec = &conn.spec;
    let name = spec.name.clone();
    let smtp = spec.smtp.clone().unwrap_or_default();
    let base = conn.base_dir();
    let security = smtp
        .security
        .or_else(|| adapted.as_ref().map(|a| a.security))
        .unwrap_or(Security::Starttls);
    let password = match &smtp.password {
        Some(r) => Some(r.resolve(base).map_err(|e| ConfigError::Secret {
            connection: name.clone(),
            reason: e.to_string(),
        })?),
        None => adapted.as_ref().and_then(|a| a.password.clone()),
    };
    let host = smtp
        .host
        .clone()
        .or_else(|| adapted.as_ref().map(|a| a.host.clone()))
        .ok_or_else(|| ConfigError::NoHost(name.clone()))?;
    let port = smtp
        .port
        .or_else(|| adapted.as_ref().map(|a| a.port))
        .unwrap_or(security.default_port());
    let username = smtp
        .username
        .clone()
        .or_else(|| adapted.as_ref().and_then(|a| a.username.clone()));
    let tls = smtp.tls.clone().unwrap_or_default();
    let timeout = Duration::from_secs(u64::from(spec.limits.timeout_seconds.max(1)));
    Ok(SmtpTarget {
        connection: name,
        host,
        port,
        security,
        username,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, LoadOptions};

    fn load(yaml: &str) -> Connection {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let loaded = config::load(&[path], &LoadOptions::default(), None);
        let diags: Vec<String> = loaded.all_diagnostics().map(ToString::to_string).collect();
        let conn = loaded.connections().next().cloned();
        conn.unwrap_or_else(|| panic!("no connection: {diags:?}"))
    }

    const HEAD: &str =
        "api_version: mailplug/v1\nkind: Connection\nname: c\nfrom: { email: a@example.test }\n";

    #[test]
    fn custom_smtp_defaults_follow_the_security_mode() {
        let conn = load(&format!(
            "{HEAD}smtp:\n  host: mx.example.test\n  security: tls\n  tls: {{ ca_file: ca.pem }}\nlimits: {{ timeout_seconds: 7, max_connections: 3 }}\n"
        ));
        let t = target_for(&conn).unwrap();
        assert_eq!((t.port, t.security), (465, Security::Tls));
        assert!(t.verify_tls);
        assert_eq!(t.ca_file, Some(conn.base_dir().join("ca.pem")));
        assert_eq!(t.command_timeout, Duration::from_secs(7));
        assert_eq!(t.max_connections, 3);
        assert!(!t.helo_name.is_empty());
    }

    #[test]
    fn provider_settings_fill_in_and_explicit_fields_override() {
        let conn = load(&format!(
            "{HEAD}provider: sendgrid\nsmtp:\n  password: {{ env: MAILPLUG_FROM_CONFIG_TEST_PW }}\n"
        ));
        assert!(matches!(
            target_for(&conn),
            Err(ConfigError::NeedsPlugin { .. })
        ));
        let adapted = ProviderSmtp {
            host: "smtp.sendgrid.net".into(),
            port: 587,
            security: Security::Starttls,
            username: Some("apikey".into()),
            password: None,
        };
        let err = target_for_provider(&conn, adapted.clone()).unwrap_err();
        assert!(
            err.to_string().contains("MAILPLUG_FROM_CONFIG_TEST_PW"),
            "{err}"
        );
        let conn = load(&format!("{HEAD}provider: sendgrid\n"));
        let t = target_for_provider(
            &conn,
            ProviderSmtp {
                password: Some(Secret::new("k")),
                ..adapted
            },
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.username.as_deref()),
            ("smtp.sendgrid.net", 587, Some("apikey"))
        );
        assert!(t.password.is_some());
    }
}
