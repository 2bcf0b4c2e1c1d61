//! What the mail module needs to know about one connection's SMTP side,
//! independent of how the configuration spells it.

use crate::config::diagnostic::{Escaped, Quoted};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::config::Secret;

/// How the connection is secured: the configuration's own type. The three
/// modes are strict: there is no "opportunistic" mode that silently falls
/// back to plaintext.
pub use crate::config::Security;

/// Everything needed to talk SMTP for one connection. Built from the
/// validated configuration (or from a provider plugin's `adapt-connection`
/// answer); all fields are already resolved.
#[derive(Debug, Clone)]
pub struct SmtpTarget {
    /// Connection name, used in log lines, hints and the test subject.
    pub connection: String,
    /// Server host name or IP literal.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Security mode.
    pub security: Security,
    /// AUTH user; `None` means no authentication.
    pub username: Option<String>,
    /// The user name was read from a secret (e.g. Postmark's server token):
    /// replies and errors are redacted of it like of the password.
    pub username_is_secret: bool,
    /// AUTH password; required when `username` is set.
    pub password: Option<Secret>,
    /// Extra PEM trust roots (added to the webpki roots), e.g. a private CA.
    pub ca_file: Option<PathBuf>,
    /// Verify the server certificate. Only an explicit `tls.verify: false`
    /// turns this off, and every use then logs a warning.
    pub verify_tls: bool,
    /// Name sent in EHLO; defaults to the machine's host name when empty.
    pub helo_name: String,
    /// Allow AUTH over `security: none` (credentials in clear).
    pub allow_insecure_auth: bool,
    /// Display name of the sender.
    pub from_name: Option<String>,
    /// Envelope and header sender.
    pub from_email: String,
    /// Limit for DNS + TCP connect.
    pub connect_timeout: Duration,
    /// Limit for each SMTP command's reply (and the TLS handshake).
    pub command_timeout: Duration,
    /// Headers added to every message (the provider plugin's
    /// `adapt-connection` asked for them).
    pub extra_headers: Vec<(String, String)>,
    /// Pool size: concurrent SMTP sessions to this server.
    pub max_connections: usize,
}

/// A target that cannot be used as configured; a configuration error, not a
/// delivery failure. Configured values are quoted cut and escaped
/// ([`Quoted`]): these messages reach terminals, logs and API responses.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Credentials with `security: none` and no explicit opt-in.
    #[error(
        "connection {0}: refusing to send credentials over plaintext SMTP (security: none); \
         use security: starttls or tls, or set smtp.allow_insecure_auth: true"
    )]
    InsecureAuth(String),
    /// A username without a password (or the reverse).
    #[error("connection {0}: smtp.username and smtp.password must be set together")]
    PartialCredentials(String),
    /// The CA file could not be read or holds no certificate.
    #[error(
        "connection {connection}: tls.ca_file {}: {}",
        Escaped(path),
        Escaped(reason)
    )]
    CaFile {
        /// Connection name.
        connection: String,
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The host is not a valid TLS server name.
    #[error("connection {}: smtp.host {} is not a valid host name for TLS", .0, Quoted(.1))]
    ServerName(String, String),
    /// `from.email` is not a plain address (it goes into MAIL FROM as is).
    #[error("connection {}: from.email {} is not a valid email address", .0, Quoted(.1))]
    BadFrom(String, String),
    /// `helo_name` is not a single token (it goes into EHLO as is).
    #[error("connection {}: smtp.helo_name {} must be a host name without spaces", .0, Quoted(.1))]
    BadHelo(String, String),
    /// Pool size zero.
    #[error("connection {0}: limits.max_connections must be at least 1")]
    NoConnections(String),
}

impl SmtpTarget {
    /// Checks the rules that are independent of the network and returns the
    /// warnings an operator should see (e.g. verification disabled).
    pub fn validate(&self) -> Result<Vec<String>, TargetError> {
        // The rules are `config`'s (config::schema), so whatever `validate`
        // accepted is accepted here; these checks guard other callers.
        use crate::config::schema::{
            credentials_problem, helo_name_problem, insecure_auth_refused, max_connections_problem,
        };
        let mut warnings = Vec::new();
        if credentials_problem(self.username.is_some(), self.password.is_some()).is_some() {
            return Err(TargetError::PartialCredentials(self.connection.clone()));
        }
        if crate::address::parse(&self.from_email).is_err() {
            return Err(TargetError::BadFrom(
                self.connection.clone(),
                self.from_email.clone(),
            ));
        }
        if helo_name_problem(&self.helo_name).is_some() {
            return Err(TargetError::BadHelo(
                self.connection.clone(),
                self.helo_name.clone(),
            ));
        }
        let pool = u64::try_from(self.max_connections).unwrap_or(u64::MAX);
        if max_connections_problem(pool).is_some() {
            return Err(TargetError::NoConnections(self.connection.clone()));
        }
        if insecure_auth_refused(
            self.security,
            self.username.is_some(),
            self.allow_insecure_auth,
        ) {
            return Err(TargetError::InsecureAuth(self.connection.clone()));
        }
        if self.security == Security::None && self.username.is_some() {
            warnings.push(format!(
                "connection {}: credentials are sent in clear (security: none, allow_insecure_auth: true)",
                self.connection
            ));
        }
        if !self.verify_tls && self.security != Security::None {
            warnings.push(format!(
                "connection {}: TLS certificate verification is disabled (tls.verify: false)",
                self.connection
            ));
        }
        Ok(warnings)
    }

    /// `host:port` for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(crate) fn credentials(&self) -> Option<(&str, &Secret)> {
        match (&self.username, &self.password) {
            (Some(user), Some(pass)) => Some((user.as_str(), pass)),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> SmtpTarget {
        SmtpTarget {
            connection: "corp".into(),
            host: "127.0.0.1".into(),
            port: 587,
            security: Security::Starttls,
            username: Some("user".into()),
            username_is_secret: false,
            password: Some(Secret::new("hunter2-secret")),
            ca_file: None,
            verify_tls: true,
            helo_name: "client.test".into(),
            allow_insecure_auth: false,
            extra_headers: Vec::new(),
            from_name: None,
            from_email: "sender@example.test".into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            max_connections: 1,
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn credentials_over_plaintext_need_explicit_opt_in() {
        let mut t = sample();
        t.security = Security::None;
        assert!(matches!(t.validate(), Err(TargetError::InsecureAuth(_))));
        t.allow_insecure_auth = true;
        let warnings = t.validate().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn values_that_go_into_smtp_commands_are_checked() {
        let mut t = sample();
        t.from_email = "a@b.test>\r\nRCPT TO:<x@y.test".into();
        assert!(matches!(t.validate(), Err(TargetError::BadFrom(..))));
        let mut t = sample();
        t.helo_name = "a b".into();
        assert!(matches!(t.validate(), Err(TargetError::BadHelo(..))));
    }

    #[test]
    fn refused_values_are_quoted_cut_and_escaped() {
        let mut t = sample();
        t.helo_name = format!("evil\r\n\x1b[2J{}", "x".repeat(10_000));
        let message = t.validate().unwrap_err().to_string();
        assert!(message.len() < 200, "{} bytes: {message}", message.len());
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(message.contains(r"`evil\r\n\x1b[2Jxxx"), "{message}");
        assert!(message.contains("…`"), "{message}");
        let mut t = sample();
        t.from_email = "a@b\nerror: forged".into();
        let message = t.validate().unwrap_err().to_string();
        assert!(message.contains(r"`a@b\nerror: forged`"), "{message}");
    }

    #[test]
    fn disabled_verification_is_a_warning() {
        let mut t = sample();
        t.verify_tls = false;
        let warnings = t.validate().unwrap();
        assert!(warnings[0].contains("tls.verify: false"));
    }
}
