//! From a compiled configuration [`Connection`] to an [`SmtpTarget`]: the
//! one place a password reference is resolved for a session. Every default
//! was already settled by `config`, provider connections included.

use crate::config::{Connection, PasswordRef, Secret};

use super::target::SmtpTarget;

/// Why a configured connection cannot be turned into an SMTP target.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A secret reference did not resolve.
    #[error("connection {connection}: {field}: {reason}")]
    Secret {
        /// Connection name.
        connection: String,
        /// The field naming the secret (`smtp.password`, `options.api_key`...).
        field: String,
        /// Why (never the value).
        reason: String,
    },
}

/// The machine's host name (EHLO default, webhook URLs of a wildcard
/// listener), `localhost` if unknown.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `/smtp/password` → `smtp.password`, for messages.
fn field_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// Resolves one secret reference of `conn`.
fn resolve(conn: &Connection, reference: &PasswordRef) -> Result<Secret, ConfigError> {
    reference
        .secret
        .resolve(conn.base_dir())
        .map_err(|e| ConfigError::Secret {
            connection: conn.name.clone(),
            field: field_name(&reference.pointer),
            reason: e.to_string(),
        })
}

/// Builds the SMTP target of `conn`, resolving its password reference (and
/// the user name's, when a provider takes it from a secret).
pub fn target_for(conn: &Connection) -> Result<SmtpTarget, ConfigError> {
    let smtp = &conn.smtp;
    let password = smtp
        .password
        .as_ref()
        .map(|p| resolve(conn, p))
        .transpose()?;
    let username = match &smtp.username_secret {
        Some(reference) => Some(resolve(conn, reference)?.expose().to_owned()),
        None => smtp.username.clone(),
    };
    Ok(SmtpTarget {
        connection: conn.name.clone(),
        host: smtp.host.clone(),
        port: smtp.port,
        security: smtp.security,
        username,
        username_is_secret: smtp.username_secret.is_some(),
        password,
        ca_file: smtp.ca_file.clone(),
        verify_tls: smtp.verify_tls,
        helo_name: smtp.helo_name.clone().unwrap_or_else(machine_hostname),
        allow_insecure_auth: smtp.allow_insecure_auth,
        extra_headers: smtp.extra_headers.clone(),
        from_name: conn.from.name.clone(),
        from_email: conn.from.email.to_string(),
        connect_timeout: conn.limits.timeout,
        command_timeout: conn.limits.timeout,
        max_connections: usize::try_from(conn.limits.max_connections.max(1)).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{self, LoadOptions, NoPlugins, Security};

    fn load(yaml: &str) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let loaded = config::load(&[path], &LoadOptions::default(), &NoPlugins);
        let diags: Vec<String> = loaded.all_diagnostics().map(ToString::to_string).collect();
        let conn = loaded.connections().next().cloned();
        let conn = conn.unwrap_or_else(|| panic!("no connection: {diags:?}"));
        (dir, conn)
    }

    const HEAD: &str =
        "api_version: mailplug/v1\nkind: Connection\nname: c\nfrom: { email: a@example.test }\n";

    #[test]
    fn custom_smtp_defaults_follow_the_security_mode() {
        let (_dir, conn) = load(&format!(
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
    fn port_465_without_security_is_implicit_tls() {
        let (_dir, conn) = load(&format!(
            "{HEAD}smtp: {{ host: mx.example.test, port: 465 }}\n"
        ));
        let t = target_for(&conn).unwrap();
        assert_eq!((t.port, t.security), (465, Security::Tls));
    }

    #[test]
    fn an_unresolvable_password_names_the_field_and_the_variable() {
        let (_dir, conn) = load(&format!(
            "{HEAD}smtp:\n  host: h\n  username: u\n  password: {{ env: MAILPLUG_FROM_CONFIG_TEST_PW }}\n"
        ));
        let err = target_for(&conn).unwrap_err().to_string();
        assert!(
            err.contains("smtp.password") && err.contains("MAILPLUG_FROM_CONFIG_TEST_PW"),
            "{err}"
        );
    }
}
