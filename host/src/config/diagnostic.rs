//! Diagnostics: one located problem in a configuration file, printed as
//! `FILE:LINE:COL: severity: /pointer: message (hint: ...)` or as JSON, and
//! the output hygiene of that text: user values quoted in messages are cut
//! to an [`excerpt`], and the text form escapes control characters so a
//! configuration file cannot forge lines or terminal sequences in CI logs.

use std::borrow::Cow;
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
    /// JSON Pointer of the offending node within its document (`""` = the
    /// document). Printed and serialized cut to [`POINTER_CHARS`]: a key can
    /// be as long as the file.
    #[serde(serialize_with = "serialize_pointer")]
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

/// The text form: always exactly one line. Every part that can hold
/// file-controlled text (the path too) goes through [`Escaped`]; the JSON form
/// needs none of this, JSON string escaping already covers it.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}: {}",
            Escaped(&self.file.to_string_lossy()),
            self.line,
            self.column,
            self.severity,
            Escaped(&truncated(display_pointer(&self.pointer), POINTER_CHARS)),
            Escaped(&self.message)
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {})", Escaped(hint))?;
        }
        Ok(())
    }
}

/// Longest user value, in characters, that a message quotes in full.
pub const EXCERPT_CHARS: usize = 80;

/// Longest JSON Pointer, in characters, printed in full.
pub const POINTER_CHARS: usize = 200;

/// Longest message from a plugin (a field error), in characters, printed in
/// full: longer than a value excerpt, since it is prose, but bounded.
pub const PLUGIN_MESSAGE_CHARS: usize = 300;

/// A user value as messages quote it: at most [`EXCERPT_CHARS`] characters,
/// with `…` when cut, so a huge value cannot blow up the output.
pub fn excerpt(value: &str) -> Cow<'_, str> {
    truncated(value, EXCERPT_CHARS)
}

/// `value` cut to at most `max` characters, with `…` when cut.
pub fn truncated(value: &str, max: usize) -> Cow<'_, str> {
    match value.char_indices().nth(max) {
        None => Cow::Borrowed(value),
        Some((end, _)) => Cow::Owned(format!("{}…", &value[..end])),
    }
}

fn serialize_pointer<S: serde::Serializer>(pointer: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&truncated(pointer, POINTER_CHARS))
}

/// A user value quoted in a message printed outside a [`Diagnostic`] (error
/// types of the mail and runtime layers): in backticks, cut like
/// [`excerpt`] and escaped like [`Escaped`], so a hostile or huge value can
/// neither forge output lines nor flood it.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", Escaped(&excerpt(self.0)))
    }
}

/// Displays text with every character that could break the one-line shape
/// or drive a terminal made visible: `\n`, `\r`, `\t`, other C0/C1 controls
/// as `\x1b`-style escapes, and Unicode line separators and bidirectional
/// overrides (which can reorder what a reviewer sees) as `\u{...}`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(needs_escape) {
            f.write_str(&rest[..i])?;
            let mut chars = rest[i..].chars();
            let Some(c) = chars.next() else { break };
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if u32::from(c) < 0x100 => write!(f, "\\x{:02x}", u32::from(c))?,
                c => write!(f, "\\u{{{:04x}}}", u32::from(c))?,
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn display_escapes_control_characters_and_stays_one_line() {
        let d = Diagnostic::error(
            Path::new("a\nb.yaml"),
            Pos { line: 1, col: 2 },
            "/smtp/\u{1b}",
            "`x\r\n./other.yaml:1:1: error: forged\u{1b}[31m` is bad\u{202e}\u{85}",
        )
        .with_hint("tab\there");
        assert_eq!(
            d.to_string(),
            "a\\nb.yaml:1:2: error: /smtp/\\x1b: `x\\r\\n./other.yaml:1:1: error: forged\\x1b[31m` \
             is bad\\u{202e}\\x85 (hint: tab\\there)"
        );
        // JSON keeps the value, with JSON's own escaping.
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains(r"forged\u001b[31m"), "{json}");
        assert!(!json.contains('\u{1b}'), "{json}");
    }

    #[test]
    fn excerpts_cut_long_values_at_a_character_boundary() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(300);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'), "{cut}");
        assert_eq!(excerpt(&"x".repeat(EXCERPT_CHARS)).len(), EXCERPT_CHARS);
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
