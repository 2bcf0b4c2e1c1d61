//! Diagnostics: one located problem in a configuration file, printed as
//! `FILE:LINE:COL: severity: /pointer: message (hint: ...)` or as JSON.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::yaml::{Pos, display_pointer};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is invalid and will not be applied.
    Error,
    /// Applied, but probably not what the operator wants.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem, located in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file the problem is in (as it was found, not canonicalized).
    pub file: PathBuf,
    /// 1-based line (0 when the problem concerns the whole file).
    pub line: usize,
    /// 1-based column (0 when the problem concerns the whole file).
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// JSON Pointer of the offending node within its document (`""` = the document).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when we can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at a position.
    pub fn error(file: &Path, pos: Pos, pointer: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, pos, pointer, message)
    }

    /// A warning at a position.
    pub fn warning(file: &Path, pos: Pos, pointer: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, file, pos, pointer, message)
    }

    /// An error about a whole file (unreadable, binary, too large...).
    pub fn file_error(file: &Path, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, Pos { line: 1, col: 1 }, "", message)
    }

    fn new(
        severity: Severity,
        file: &Path,
        pos: Pos,
        pointer: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            severity,
            pointer: pointer.to_owned(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.severity,
            display_pointer(&self.pointer),
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Suggests the closest candidate to a misspelt word, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_col_severity_pointer_message_hint() {
        let d = Diagnostic::error(
            Path::new("c/x.yaml"),
            Pos { line: 3, col: 5 },
            "/smtp/secuirty",
            "unknown field",
        )
        .with_hint("did you mean `security`?");
        assert_eq!(
            d.to_string(),
            "c/x.yaml:3:5: error: /smtp/secuirty: unknown field (hint: did you mean `security`?)"
        );
    }

    #[test]
    fn did_you_mean_finds_close_words_only() {
        assert_eq!(
            did_you_mean("secuirty", ["host", "security", "port"]),
            Some("security")
        );
        assert_eq!(did_you_mean("zzz", ["host", "security", "port"]), None);
    }
}
