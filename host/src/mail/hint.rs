//! One-sentence fix hints: what to change in the connection (or what to
//! try next) for a classified outcome. mailplug itself neither retries nor
//! rate-limits, so no hint promises either.

use super::classify::{Class, Stage};
use super::target::{Security, SmtpTarget};

/// One sentence saying what to change, for a class at a stage.
pub(crate) fn hint(
    target: &SmtpTarget,
    class: Class,
    stage: Stage,
    code: u16,
    enhanced: Option<&str>,
) -> String {
    let addr = target.address();
    let from = &target.from_email;
    match class {
        Class::Accepted => "nothing to change".into(),
        Class::ConfigError => "fix the connection's configuration as the message says".into(),
        Class::DnsFailure => format!(
            "check smtp.host: {:?} does not resolve from this machine",
            target.host
        ),
        Class::ConnectionRefused => format!(
            "nothing accepts connections on {addr}; check smtp.host/smtp.port and any firewall"
        ),
        Class::Timeout => format!(
            "{addr} did not answer in time ({stage}); check that the port is reachable from here \
             (outbound SMTP is often blocked) or raise limits.timeout_seconds"
        ),
        Class::NetworkError => {
            format!("the connection to {addr} broke; retry, and check network paths if it persists")
        }
        Class::TlsMismatch => match target.security {
            Security::Tls => "this port speaks plain SMTP; use security: starttls".into(),
            _ => "this port expects TLS from the first byte; use security: tls".into(),
        },
        Class::CertificateInvalid => {
            "the server certificate is not trusted for this host; fix the certificate, \
             set tls.ca_file to the issuing CA, or point smtp.host at the name on the certificate"
                .into()
        }
        Class::TlsFailed => {
            "the TLS handshake failed; check that the server supports TLS 1.2 or newer".into()
        }
        Class::StarttlsUnavailable => {
            "the server does not offer STARTTLS on this port; use the provider's submission \
             port (587 starttls or 465 tls), or security: none only on a trusted network"
                .into()
        }
        Class::AuthFailed => {
            "the server rejected the login; check smtp.username and the password secret \
             (some providers need an app password or API key)"
                .into()
        }
        Class::AuthUnavailable => {
            if target.security == Security::None {
                "the server offers no AUTH here; it may only offer AUTH after TLS \
                 (use security: starttls) or need no credentials"
                    .into()
            } else {
                "the server offers no AUTH mechanism mailplug supports (PLAIN, LOGIN); \
                 remove the credentials or use the provider's submission port"
                    .into()
            }
        }
        Class::AuthRequired => {
            "the server requires authentication; set smtp.username and smtp.password".into()
        }
        Class::SenderNotAllowed => format!(
            "the server does not let this login send as {from}; set from.email to an address \
             or domain verified for this account"
        ),
        Class::RecipientRejected => match enhanced {
            Some("5.1.1") | Some("5.1.10") => {
                "the recipient mailbox does not exist; check the address".into()
            }
            Some(e) if e.starts_with("5.7.") => {
                "the server refuses to relay to this recipient for this login; check the \
                 account's relay permissions"
                    .into()
            }
            _ => "the server refused this recipient; check the address".into(),
        },
        Class::MessageRejected => {
            "the server refused the message content (size, policy or spam filter); \
             check the reply text"
                .into()
        }
        Class::Throttled => format!(
            "the server is rate limiting this client (reply {code}); wait and try again \
             later, or lower the sending rate"
        ),
        Class::Deferred => "temporary failure on the server side; try again later".into(),
        Class::PermanentFailure => format!(
            "the server refused at {stage} (reply {code}); check the reply text and the \
             provider's documentation"
        ),
        Class::ProtocolError => {
            format!("{addr} does not answer like an SMTP server; check smtp.host and smtp.port")
        }
    }
}
