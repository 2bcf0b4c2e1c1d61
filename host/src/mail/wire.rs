//! A small line-based SMTP client for the stages mailplug drives itself
//! (the greeting, EHLO/STARTTLS before TLS, and the whole probe), with a
//! redacted trace of the dialogue.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::net::Conn;
use super::redact::Redactor;
use super::target::SmtpTarget;
use super::tls::looks_like_tls;

/// Longest reply line accepted (RFC 5321 says 512; servers exceed it).
const MAX_LINE: u64 = 4096;
/// Most lines in one multi-line reply.
const MAX_LINES: usize = 200;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    /// Text of each line, without the code and separator.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// All lines joined with spaces.
    pub(crate) fn text(&self) -> String {
        self.lines.join(" ")
    }

    pub(crate) fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The reply as it came on the wire (for replaying it to lettre).
    pub(crate) fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
        out
    }

    /// EHLO keywords (upper case), from every line but the first.
    pub(crate) fn extensions(&self) -> Vec<String> {
        self.lines
            .iter()
            .skip(1)
            .map(|l| l.trim().to_ascii_uppercase())
            .collect()
    }

    /// Whether EHLO advertised `keyword` (e.g. `STARTTLS`).
    pub(crate) fn has_extension(&self, keyword: &str) -> bool {
        self.extensions()
            .iter()
            .any(|e| e.split_whitespace().next() == Some(keyword))
    }

    /// The AUTH mechanisms EHLO advertised.
    pub(crate) fn auth_mechanisms(&self) -> Vec<String> {
        self.extensions()
            .iter()
            .filter_map(|e| {
                let mut words = e.split(|c: char| c.is_whitespace() || c == '=');
                (words.next() == Some("AUTH")).then(|| words.map(str::to_owned).collect::<Vec<_>>())
            })
            .flatten()
            .filter(|m| !m.is_empty())
            .collect()
    }
}

/// Why reading a reply failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not an SMTP reply: {text:?}")]
    Malformed { text: String, raw: Vec<u8> },
}

impl WireError {
    /// Classifies the failure at `stage`.
    pub(crate) fn classify(&self, target: &SmtpTarget, stage: Stage) -> Classification {
        let class = match self {
            WireError::Timeout(_) => Class::Timeout,
            WireError::Closed => Class::NetworkError,
            WireError::Io(e) if e.kind() == io::ErrorKind::TimedOut => Class::Timeout,
            WireError::Io(_) => Class::NetworkError,
            WireError::Malformed { raw, .. } if looks_like_tls(raw) => Class::TlsMismatch,
            WireError::Malformed { .. } => Class::ProtocolError,
        };
        Classification::local(
            class,
            stage,
            self.to_string(),
            hint(target, class, stage, 0, None),
        )
    }
}

/// An SMTP session over [`Conn`], tracing every line at `trace` level with
/// credentials redacted.
#[derive(Debug)]
pub(crate) struct Wire {
    io: BufReader<Conn>,
    connection: String,
    /// Applied to every traced line, ours and the server's (a server may
    /// echo what we sent).
    redactor: Redactor,
}

impl Wire {
    pub(crate) fn new(conn: Conn, target: &SmtpTarget, redactor: Redactor) -> Self {
        Wire {
            io: BufReader::new(conn),
            connection: target.connection.clone(),
            redactor,
        }
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub(crate) fn conn(&self) -> &Conn {
        self.io.get_ref()
    }

    /// Gives the stream back; fails if the server sent bytes we have not
    /// read (after STARTTLS that would be a command-injection attempt).
    pub(crate) fn into_conn(self) -> Result<Conn, WireError> {
        if !self.io.buffer().is_empty() {
            let raw = self.io.buffer().to_vec();
            return Err(WireError::Malformed {
                text: "unexpected data after the reply".into(),
                raw,
            });
        }
        Ok(self.io.into_inner())
    }

    /// Reads one (possibly multi-line) reply.
    pub(crate) async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, WireError> {
        match tokio::time::timeout(timeout, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout(timeout)),
        }
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, WireError> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.io)
                .take(MAX_LINE)
                .read_until(b'\n', &mut raw)
                .await?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            tracing::trace!(target: "mailplug::smtp", connection = %self.connection, "S: {}", self.redactor.redact(line));
            let bytes = line.as_bytes();
            let parsed = (bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit))
                .then(|| line[..3].parse::<u16>().ok())
                .flatten()
                .filter(|c| (200..600).contains(c));
            let sep = bytes.get(3).copied();
            let (Some(this), true) = (parsed, matches!(sep, None | Some(b' ') | Some(b'-'))) else {
                return Err(WireError::Malformed {
                    text: line.chars().take(80).collect(),
                    raw,
                });
            };
            if code != 0 && this != code {
                return Err(WireError::Malformed {
                    text: line.into(),
                    raw,
                });
            }
            code = this;
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if sep != Some(b'-') {
                return Ok(Reply { code, lines });
            }
            if lines.len() > MAX_LINES {
                return Err(WireError::Malformed {
                    text: "reply too long".into(),
                    raw,
                });
            }
        }
    }

    /// Sends a command line and reads its reply.
    pub(crate) async fn command(
        &mut self,
        line: &str,
        timeout: Duration,
    ) -> Result<Reply, WireError> {
        tracing::trace!(target: "mailplug::smtp", connection = %self.connection, "C: {}", self.redactor.redact(line));
        self.write_line(line).await?;
        self.read_reply(timeout).await
    }

    /// Sends a line that carries credentials; the trace shows `shown` (a
    /// fixed placeholder, never derived from the credentials).
    pub(crate) async fn secret_command(
        &mut self,
        line: &str,
        shown: &str,
        timeout: Duration,
    ) -> Result<Reply, WireError> {
        tracing::trace!(target: "mailplug::smtp", connection = %self.connection, "C: {shown}");
        self.write_line(line).await?;
        self.read_reply(timeout).await
    }

    async fn write_line(&mut self, line: &str) -> Result<(), WireError> {
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        let io = self.io.get_mut();
        io.write_all(&buf).await?;
        io.flush().await?;
        Ok(())
    }

    /// Best-effort QUIT (errors ignored: the session is over either way).
    pub(crate) async fn quit(&mut self, timeout: Duration) {
        let _ = self.command("QUIT", timeout).await;
        let _ = self.io.get_mut().shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ehlo_extensions_and_auth_mechanisms_are_parsed() {
        let r = reply(
            250,
            &[
                "mx hello",
                "SIZE 1000",
                "STARTTLS",
                "AUTH LOGIN PLAIN",
                "AUTH=LOGIN",
            ],
        );
        assert!(r.has_extension("STARTTLS"));
        assert!(!r.has_extension("SMTPUTF8"));
        assert_eq!(r.auth_mechanisms(), ["LOGIN", "PLAIN", "LOGIN"]);
    }

    #[test]
    fn replies_round_trip_to_wire_format() {
        let r = reply(220, &["first", "second"]);
        assert_eq!(r.to_wire(), b"220-first\r\n220 second\r\n");
    }
}
