//! Failure classification shared by the probe, test-send and sending: which
//! stage failed, the server's reply (code, RFC 3463 enhanced status, text),
//! temporary vs permanent, and a one-sentence fix hint.

use std::fmt;

use serde::Serialize;

use super::hint::hint;
use super::target::SmtpTarget;

/// The step of an SMTP session, in the order a session runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Checks of the target before any network traffic.
    Config,
    /// Resolving the host name.
    Dns,
    /// TCP connect.
    Connect,
    /// The server's 220 greeting.
    Banner,
    /// EHLO and its capability list.
    Ehlo,
    /// STARTTLS or the implicit TLS handshake, including certificate checks.
    Tls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// DATA and the end-of-data reply.
    Data,
    /// RSET / QUIT at the end of a probe.
    Quit,
}

impl Stage {
    /// Short label for human output.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Config => "config",
            Stage::Dns => "DNS",
            Stage::Connect => "TCP connect",
            Stage::Banner => "banner",
            Stage::Ehlo => "EHLO",
            Stage::Tls => "TLS",
            Stage::Auth => "AUTH",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Quit => "RSET/QUIT",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What happened, in the operator's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The connection's settings are unusable as written (nothing was sent).
    ConfigError,
    /// The host name does not resolve.
    DnsFailure,
    /// Nothing listens on the port (RST).
    ConnectionRefused,
    /// No answer in time.
    Timeout,
    /// Other network failure (reset, unreachable, closed mid-session).
    NetworkError,
    /// Security mode does not match what the port speaks.
    TlsMismatch,
    /// The server's certificate is not trusted or does not match the host.
    CertificateInvalid,
    /// The TLS handshake failed for another reason (versions, ciphers, alert).
    TlsFailed,
    /// `security: starttls` but the server does not offer STARTTLS.
    StarttlsUnavailable,
    /// The server rejected the credentials.
    AuthFailed,
    /// The server offers no AUTH mechanism we can use.
    AuthUnavailable,
    /// The server requires AUTH but the connection has no credentials.
    AuthRequired,
    /// MAIL FROM rejected: this login may not send as this address.
    SenderNotAllowed,
    /// RCPT TO rejected.
    RecipientRejected,
    /// DATA or the message content rejected.
    MessageRejected,
    /// Rate limited (421, 4.7.x, rate/limit wording).
    Throttled,
    /// Other temporary (4xx) failure.
    Deferred,
    /// Other permanent (5xx) failure.
    PermanentFailure,
    /// The server answered something that is not SMTP.
    ProtocolError,
    /// Everything asked for succeeded.
    Accepted,
}

impl Class {
    /// The snake_case name used in JSON and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::ConfigError => "config_error",
            Class::DnsFailure => "dns_failure",
            Class::ConnectionRefused => "connection_refused",
            Class::Timeout => "timeout",
            Class::NetworkError => "network_error",
            Class::TlsMismatch => "tls_mismatch",
            Class::CertificateInvalid => "certificate_invalid",
            Class::TlsFailed => "tls_failed",
            Class::StarttlsUnavailable => "starttls_unavailable",
            Class::AuthFailed => "auth_failed",
            Class::AuthUnavailable => "auth_unavailable",
            Class::AuthRequired => "auth_required",
            Class::SenderNotAllowed => "sender_not_allowed",
            Class::RecipientRejected => "recipient_rejected",
            Class::MessageRejected => "message_rejected",
            Class::Throttled => "throttled",
            Class::Deferred => "deferred",
            Class::PermanentFailure => "permanent_failure",
            Class::ProtocolError => "protocol_error",
            Class::Accepted => "accepted",
        }
    }

    /// Whether a class without a reply code is worth retrying later
    /// (network conditions) rather than needing a configuration change.
    fn temporary_by_default(self) -> bool {
        matches!(
            self,
            Class::ConnectionRefused
                | Class::Timeout
                | Class::NetworkError
                | Class::Throttled
                | Class::Deferred
        )
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classified outcome of an SMTP operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// What happened.
    pub class: Class,
    /// Where it happened (the last stage reached for `accepted`).
    pub stage: Stage,
    /// The SMTP reply code, when the server answered.
    pub reply_code: Option<u16>,
    /// RFC 3463 enhanced status code (e.g. `5.1.1`), when the reply had one.
    pub enhanced_status: Option<String>,
    /// The server's reply text (or the local error); a report leaving the
    /// mail module has had the credentials removed from it (`Redactor`).
    pub server_text: Option<String>,
    /// Retrying later may succeed (4xx and transient network failures).
    pub temporary: bool,
    /// One sentence saying what to change.
    pub hint: String,
}

impl Classification {
    /// A failure without an SMTP reply (network, TLS, local checks).
    pub fn local(class: Class, stage: Stage, detail: impl Into<String>, hint: String) -> Self {
        Classification {
            class,
            stage,
            reply_code: None,
            enhanced_status: None,
            server_text: Some(detail.into()),
            temporary: class.temporary_by_default(),
            hint,
        }
    }

    /// Classifies a server reply at a stage. 2xx/3xx replies are `accepted`.
    pub fn from_reply(target: &SmtpTarget, stage: Stage, code: u16, text: &str) -> Self {
        let (enhanced, text) = crate::smtp_status::split_enhanced(code, text);
        let class = reply_class(stage, code, enhanced.as_deref(), &text);
        let temporary = (400..500).contains(&code);
        let hint = hint(target, class, stage, code, enhanced.as_deref());
        Classification {
            class,
            stage,
            reply_code: Some(code),
            enhanced_status: enhanced,
            server_text: Some(text),
            temporary,
            hint,
        }
    }

    /// Whether the class is `accepted`.
    pub fn is_success(&self) -> bool {
        self.class == Class::Accepted
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.class, self.stage)?;
        if let Some(code) = self.reply_code {
            write!(f, ": {code}")?;
            if let Some(enh) = &self.enhanced_status {
                write!(f, " {enh}")?;
            }
        }
        if let Some(text) = &self.server_text {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

fn mentions_rate(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["rate", "limit", "throttl", "too many", "slow down"]
        .iter()
        .any(|w| lower.contains(w))
}

fn reply_class(stage: Stage, code: u16, enhanced: Option<&str>, text: &str) -> Class {
    if code < 400 {
        return Class::Accepted;
    }
    let temporary = code < 500;
    let enh = enhanced.unwrap_or("");
    if code == 421 || (temporary && (enh.starts_with("4.7.") || mentions_rate(text))) {
        return Class::Throttled;
    }
    if temporary {
        return Class::Deferred;
    }
    match stage {
        Stage::Auth => match code {
            535 => Class::AuthFailed,
            _ if enh == "5.7.8" => Class::AuthFailed,
            // 504 unknown mechanism, 534 too weak, 538 encryption required.
            504 | 534 | 538 => Class::AuthUnavailable,
            _ => Class::AuthFailed,
        },
        _ if code == 530 || enh == "5.7.0" && text.to_ascii_lowercase().contains("auth") => {
            Class::AuthRequired
        }
        Stage::MailFrom if code == 552 || enh.starts_with("5.3.") => Class::MessageRejected,
        Stage::MailFrom => Class::SenderNotAllowed,
        Stage::RcptTo => Class::RecipientRejected,
        Stage::Data => Class::MessageRejected,
        Stage::Tls => Class::StarttlsUnavailable,
        _ => Class::PermanentFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::target::Security;
    use crate::mail::target::tests::sample;

    fn class(stage: Stage, code: u16, text: &str) -> Classification {
        Classification::from_reply(&sample(), stage, code, text)
    }

    #[test]
    fn enhanced_status_is_split_from_the_text() {
        let c = class(Stage::RcptTo, 550, "5.1.1 <x@y>: User unknown");
        assert_eq!(c.class, Class::RecipientRejected);
        assert_eq!(c.enhanced_status.as_deref(), Some("5.1.1"));
        assert_eq!(c.server_text.as_deref(), Some("<x@y>: User unknown"));
        assert!(!c.temporary);
    }

    #[test]
    fn enhanced_status_must_agree_with_the_reply_class() {
        let c = class(Stage::RcptTo, 550, "4.1.1 odd");
        assert_eq!(c.enhanced_status, None);
        assert_eq!(c.server_text.as_deref(), Some("4.1.1 odd"));
    }

    #[test]
    fn throttling_is_recognised_by_code_status_and_wording() {
        assert_eq!(
            class(Stage::Banner, 421, "too busy").class,
            Class::Throttled
        );
        assert_eq!(
            class(Stage::MailFrom, 451, "4.7.1 slow").class,
            Class::Throttled
        );
        assert_eq!(
            class(Stage::RcptTo, 450, "rate limit hit").class,
            Class::Throttled
        );
        let deferred = class(Stage::RcptTo, 450, "4.2.1 Mailbox busy");
        assert_eq!(deferred.class, Class::Deferred);
        assert!(deferred.temporary);
    }

    #[test]
    fn stage_decides_permanent_classes() {
        assert_eq!(
            class(Stage::Auth, 535, "5.7.8 bad").class,
            Class::AuthFailed
        );
        assert_eq!(
            class(Stage::Auth, 538, "5.7.11 enc").class,
            Class::AuthUnavailable
        );
        assert_eq!(
            class(Stage::MailFrom, 553, "5.7.1 no").class,
            Class::SenderNotAllowed
        );
        assert_eq!(
            class(Stage::MailFrom, 530, "5.7.0 Authentication required").class,
            Class::AuthRequired
        );
        assert_eq!(
            class(Stage::Data, 554, "5.6.0 no").class,
            Class::MessageRejected
        );
        assert_eq!(
            class(Stage::Ehlo, 554, "go away").class,
            Class::PermanentFailure
        );
        assert_eq!(
            class(Stage::Data, 250, "2.0.0 queued").class,
            Class::Accepted
        );
    }

    #[test]
    fn tls_mismatch_hint_names_the_mode_the_port_speaks() {
        let mut t = sample();
        t.security = Security::Tls;
        let h = hint(&t, Class::TlsMismatch, Stage::Tls, 0, None);
        assert_eq!(h, "this port speaks plain SMTP; use security: starttls");
        t.security = Security::Starttls;
        let h = hint(&t, Class::TlsMismatch, Stage::Banner, 0, None);
        assert_eq!(
            h,
            "this port expects TLS from the first byte; use security: tls"
        );
    }

    #[test]
    fn temporary_hints_say_to_try_again_later() {
        let t = sample();
        let h = hint(&t, Class::Throttled, Stage::MailFrom, 451, Some("4.7.1"));
        assert_eq!(
            h,
            "the server is rate limiting this client (reply 451); wait and try again later, \
             or lower the sending rate"
        );
        let h = hint(&t, Class::Deferred, Stage::RcptTo, 450, Some("4.2.1"));
        assert_eq!(h, "temporary failure on the server side; try again later");
    }
}
