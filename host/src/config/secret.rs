//! Secret references (`{env: NAME}`, `{file: PATH}`, or a discouraged
//! literal) and the resolved secret value, which never prints itself.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a secret comes from.
#[derive(Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum SecretRef {
    /// Read from an environment variable of the mailplug process.
    Env(EnvRef),
    /// Read from a file (trailing newline stripped), e.g. a mounted Kubernetes secret.
    File(FileRef),
    /// The secret written inline. Accepted with a warning: it ends up in Git.
    Literal(String),
}

/// `{ env: NAME }`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    /// Environment variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub env: String,
}

/// `{ file: PATH }`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Path of the file holding the secret; relative paths are resolved
    /// against the directory of the connection file.
    pub file: PathBuf,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(r) => write!(f, "Env({})", r.env),
            Self::File(r) => write!(f, "File({})", r.file.display()),
            Self::Literal(_) => f.write_str("Literal(<redacted>)"),
        }
    }
}

/// Why a secret reference could not be resolved. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set (or not valid UTF-8).
    #[error("environment variable `{0}` is not set")]
    EnvMissing(String),
    /// The environment variable is set but empty.
    #[error("environment variable `{0}` is empty")]
    EnvEmpty(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file named by the reference.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is empty (after stripping the trailing newline).
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
}

impl SecretRef {
    /// Resolves the reference; `base` is the directory relative file paths start from.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        match self {
            Self::Env(r) => match std::env::var(&r.env) {
                Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty(r.env.clone())),
                Ok(v) => Ok(Secret(v)),
                Err(_) => Err(SecretError::EnvMissing(r.env.clone())),
            },
            Self::File(r) => {
                let path = base.join(&r.file);
                // The same guarded read as configuration files: a FIFO or
                // device named as a secret is refused instead of blocking.
                let text = super::source::read(&path).map_err(|e| SecretError::File {
                    path: path.clone(),
                    source: match e {
                        super::source::ReadError::Io(io) => io,
                        other => std::io::Error::other(other.to_string()),
                    },
                })?;
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    return Err(SecretError::FileEmpty(path));
                }
                Ok(Secret(value.to_owned()))
            }
            Self::Literal(v) => Ok(Secret(v.clone())),
        }
    }

    /// A reference given on the command line: `env:NAME`, `file:PATH`, or
    /// the value itself.
    pub fn from_flag(text: &str) -> Self {
        if let Some(env) = text.strip_prefix("env:") {
            Self::Env(EnvRef {
                env: env.to_owned(),
            })
        } else if let Some(file) = text.strip_prefix("file:") {
            Self::File(FileRef { file: file.into() })
        } else {
            Self::Literal(text.to_owned())
        }
    }

    /// Whether the secret is written inline in the configuration.
    pub fn is_literal(&self) -> bool {
        matches!(self, Self::Literal(_))
    }

    /// A description safe to print: the reference, never the value.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(r) => format!("env:{}", r.env),
            Self::File(r) => format!("file:{}", r.file.display()),
            Self::Literal(_) => "literal (redacted)".to_owned(),
        }
    }
}

/// A resolved secret. `Debug` and `Display` print `<redacted>`; use
/// [`Secret::expose`] at the single place the value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value obtained elsewhere (e.g. from a plugin).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_literal_or_resolved_value() {
        let r = SecretRef::Literal("hunter2".into());
        assert!(!format!("{r:?}").contains("hunter2"));
        let s = r.resolve(Path::new(".")).unwrap();
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_strips_one_trailing_newline_and_is_relative_to_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let r = SecretRef::File(FileRef { file: "pw".into() });
        assert_eq!(r.resolve(dir.path()).unwrap().expose(), "s3cret");
        let missing = SecretRef::File(FileRef {
            file: "nope".into(),
        });
        assert!(matches!(
            missing.resolve(dir.path()),
            Err(SecretError::File { .. })
        ));
    }

    #[test]
    fn missing_env_is_reported_by_name() {
        let r = SecretRef::Env(EnvRef {
            env: "MAILPLUG_TEST_SURELY_UNSET_VAR".into(),
        });
        let err = r.resolve(Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("MAILPLUG_TEST_SURELY_UNSET_VAR"), "{err}");
    }
}
