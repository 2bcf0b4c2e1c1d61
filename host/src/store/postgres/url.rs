//! The store URL of `--store` / `MAILPLUG_STORE_URL`: parsed and checked
//! once at start, and never shown with its password.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use super::tls::RustlsConnect;

/// How long opening one connection may take when the URL sets no
/// `connect_timeout`: a start against an unreachable server fails in
/// bounded time instead of hanging.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`). Its
/// `Debug` and `Display` show it with the password replaced by `***`.
#[derive(Clone)]
pub struct PostgresUrl {
    /// The URL as given (password included): only [`Self::config`] reads it.
    url: String,
    /// The same URL with the password hidden, for logs and errors.
    redacted: String,
    /// The TLS connector when `sslmode` asks for TLS; `None` is plain TCP.
    tls: Option<RustlsConnect>,
    /// `pool_size`: most connections one process opens, when given.
    pool_size: Option<usize>,
}

/// The largest `pool_size` accepted (PostgreSQL's own default
/// `max_connections` is 100, shared by every replica).
pub const MAX_POOL_SIZE: usize = 256;

impl PostgresUrl {
    /// Parses a store URL. Any scheme but `postgres`/`postgresql` is an
    /// error, so is an unknown `sslmode` or an unreadable `sslrootcert`.
    /// Errors never contain the password.
    ///
    /// `sslmode=disable` and `prefer` connect without TLS (`prefer` does
    /// not upgrade: TLS without verification is not offered); `require`,
    /// `verify-ca` and `verify-full` all connect with TLS and verify the
    /// server's certificate and name, against the webpki roots or the PEM
    /// file of `sslrootcert`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let redacted = redact(url);
        let Some((scheme, _)) = url.split_once("://") else {
            return Err(format!(
                "store URL `{redacted}` has no scheme: use postgres://user:password@host:port/database"
            ));
        };
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(format!(
                "store URL scheme `{scheme}` is not supported: use postgres:// or postgresql:// (omit --store for the embedded SQLite store)"
            ));
        }
        let mut tls = false;
        let mut root_cert = None;
        let mut pool_size = None;
        for (key, value) in query_pairs(url) {
            match key {
                "sslmode" => match value {
                    "disable" | "prefer" => tls = false,
                    "require" | "verify-ca" | "verify-full" => tls = true,
                    other => {
                        return Err(format!(
                            "store URL `{redacted}`: unknown sslmode `{other}` (supported: disable, prefer, require, verify-ca, verify-full)"
                        ));
                    }
                },
                "sslrootcert" => {
                    let path = percent_encoding::percent_decode_str(value)
                        .decode_utf8()
                        .map_err(|_| format!("store URL `{redacted}`: sslrootcert is not UTF-8"))?;
                    // libpq's `system` means the default roots.
                    root_cert = (path != "system").then(|| PathBuf::from(path.as_ref()));
                }
                "pool_size" => match value.parse::<usize>() {
                    Ok(n @ 1..=MAX_POOL_SIZE) => pool_size = Some(n),
                    _ => {
                        return Err(format!(
                            "store URL `{redacted}`: pool_size `{value}` is not a number from 1 to {MAX_POOL_SIZE}"
                        ));
                    }
                },
                _ => {}
            }
        }
        let tls = if tls {
            Some(
                RustlsConnect::new(root_cert.as_deref())
                    .map_err(|e| format!("store URL `{redacted}`: {e}"))?,
            )
        } else {
            None
        };
        let parsed = Self {
            url: url.to_owned(),
            redacted,
            tls,
            pool_size,
        };
        parsed.config()?;
        Ok(parsed)
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The `pool_size` parameter, when the URL has one.
    pub fn pool_size(&self) -> Option<usize> {
        self.pool_size
    }

    /// Whether connections use TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS connector, when connections use TLS.
    pub(crate) fn connector(&self) -> Option<RustlsConnect> {
        self.tls.clone()
    }

    /// The client configuration. The TLS parameters were read by
    /// [`Self::parse`]; the client sees `sslmode=require` or `disable` only.
    pub(crate) fn config(&self) -> Result<postgres::Config, String> {
        let stripped = strip_tls_params(&self.url);
        let mut config = postgres::Config::from_str(&stripped)
            .map_err(|e| format!("store URL `{}` is invalid: {e}", self.redacted))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("mailplug");
        }
        config.ssl_mode(if self.tls.is_some() {
            postgres::config::SslMode::Require
        } else {
            postgres::config::SslMode::Disable
        });
        Ok(config)
    }

    /// `host:port/database` of the URL, for errors (never the password).
    pub fn target(&self) -> String {
        match self.config() {
            Ok(c) => target(&c),
            Err(_) => self.redacted.clone(),
        }
    }
}

/// `host:port/database` of a configuration.
pub(crate) fn target(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(i)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or("(default)"))
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted)
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The URL without `sslmode` and `sslrootcert` (which the client would
/// refuse or misread: it knows no `verify-*` and no root files) and
/// without mailplug's own `pool_size`.
fn strip_tls_params(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            !matches!(key, "sslmode" | "sslrootcert" | "pool_size") && !p.is_empty()
        })
        .collect();
    if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    }
}

/// `key=value` pairs of the query string (raw, not percent-decoded).
fn query_pairs(url: &str) -> impl Iterator<Item = (&str, &str)> {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The URL with the password of its user info and any `password=` query
/// parameter replaced by `***`.
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            // User info ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{userinfo}@{hosts}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_the_url_or_its_errors() {
        let url = PostgresUrl::parse("postgres://app:s3cret@db.internal:6543/mail").unwrap();
        assert_eq!(url.redacted(), "postgres://app:***@db.internal:6543/mail");
        assert_eq!(format!("{url} {url:?}").matches("s3cret").count(), 0);
        assert_eq!(url.target(), "db.internal:6543/mail");
        assert_eq!(
            redact("postgresql://u:p%40ss@h/db?password=x&sslmode=disable"),
            "postgresql://u:***@h/db?password=***&sslmode=disable"
        );
        let err = PostgresUrl::parse(
            "postgres://app:s3cret@h/db?sslmode=require&sslrootcert=/nonexistent.pem",
        )
        .unwrap_err();
        assert!(err.contains("sslrootcert /nonexistent.pem"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn other_schemes_and_unknown_tls_modes_are_refused() {
        let err = PostgresUrl::parse("mysql://u:pw@h/db").unwrap_err();
        assert!(err.contains("`mysql` is not supported"), "{err}");
        assert!(PostgresUrl::parse("sqlite:///tmp/x.db").is_err());
        assert!(PostgresUrl::parse("db.internal:5432").is_err());
        assert!(PostgresUrl::parse("postgres://h/db?sslmode=bogus").is_err());
        assert!(PostgresUrl::parse("postgres://h/db?sslcert=/c.pem").is_err());
        let tls = |u: &str| PostgresUrl::parse(u).unwrap().tls();
        assert!(tls("postgres://h/db?sslmode=verify-full"));
        assert!(tls("postgres://h/db?sslmode=verify-ca&sslrootcert=system"));
        assert!(tls("postgres://h/db?connect_timeout=3&sslmode=require"));
        assert!(!tls("postgresql://h/db?sslmode=prefer"));
        assert!(!tls("postgres://h:5432/db?sslmode=disable"));
        assert!(!tls("postgres://h/db"));
        assert_eq!(
            strip_tls_params("postgres://h/db?sslmode=require&connect_timeout=3&sslrootcert=x"),
            "postgres://h/db?connect_timeout=3"
        );
    }

    #[test]
    fn pool_size_sets_the_cap_and_is_not_passed_to_the_client() {
        let url = PostgresUrl::parse("postgres://h/db?pool_size=24&connect_timeout=3").unwrap();
        assert_eq!(url.pool_size(), Some(24));
        assert_eq!(
            strip_tls_params("postgres://h/db?pool_size=24&connect_timeout=3"),
            "postgres://h/db?connect_timeout=3"
        );
        assert_eq!(
            PostgresUrl::parse("postgres://h/db").unwrap().pool_size(),
            None
        );
        for bad in ["0", "257", "many", ""] {
            let err =
                PostgresUrl::parse(&format!("postgres://u:pw@h/db?pool_size={bad}")).unwrap_err();
            assert!(
                err.contains("pool_size") && err.contains("1 to 256"),
                "{err}"
            );
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
