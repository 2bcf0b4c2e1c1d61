//! Outgoing messages: the envelope plus the formatted bytes, and the
//! multipart test email `mailplug test-send` sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::target::SmtpTarget;
use crate::config::diagnostic::{Escaped, Quoted};

/// A message ready for SMTP: envelope (MAIL FROM / RCPT TO) and the
/// RFC 5322 bytes.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Envelope sender and recipients.
    pub envelope: Envelope,
    /// The formatted message (headers and body, CRLF line ends).
    pub raw: Vec<u8>,
    /// The Message-ID header value, for correlating provider events.
    pub message_id: String,
}

impl OutgoingMessage {
    /// Builds an outgoing message from a lettre [`Message`].
    pub fn from_message(message: &Message, message_id: String) -> Self {
        OutgoingMessage {
            envelope: message.envelope().clone(),
            raw: message.formatted(),
            message_id,
        }
    }
}

/// Why the test message could not be built (bad addresses in the input).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The From address of the connection is not a valid address.
    #[error("from.email {} is not a valid email address: {}", Quoted(.0), Escaped(.1))]
    From(String, String),
    /// The `--to` address is not a valid address.
    #[error("recipient {} is not a valid email address: {}", Quoted(.0), Escaped(.1))]
    To(String, String),
    /// lettre refused the message.
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// A new Message-ID in the sender's domain, unique per process and time.
pub fn new_message_id(from_email: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let domain = from_email
        .rsplit_once('@')
        .map_or("mailplug.invalid", |(_, d)| d);
    format!("<mailplug.{nanos:x}.{:x}.{n}@{domain}>", std::process::id())
}

/// The test email for `target`: multipart/alternative (text + HTML) from
/// the connection's From, with Date, Message-ID and a subject naming the
/// connection.
pub fn test_message(target: &SmtpTarget, to: &str) -> Result<OutgoingMessage, MessageError> {
    let from_addr = crate::address::parse(&target.from_email)
        .map_err(|e| MessageError::From(target.from_email.clone(), e.to_string()))?;
    let to_addr =
        crate::address::parse(to).map_err(|e| MessageError::To(to.to_owned(), e.to_string()))?;
    let from = Mailbox::new(target.from_name.clone(), from_addr);
    let message_id = new_message_id(&target.from_email);
    let subject = format!(
        "mailplug test email for connection \"{}\"",
        target.connection
    );
    let text = format!(
        "This is a test email sent by mailplug through the connection \"{}\" ({} via {}, security: {}).\n\
         If you can read this, the connection delivers mail.\n",
        target.connection,
        target.from_email,
        target.address(),
        target.security.as_str()
    );
    let html = format!(
        "<!doctype html><html><body><p>This is a test email sent by <b>mailplug</b> through the \
         connection <code>{}</code> ({} via {}, security: {}).</p>\
         <p>If you can read this, the connection delivers mail.</p></body></html>\n",
        escape(&target.connection),
        escape(&target.from_email),
        escape(&target.address()),
        target.security.as_str()
    );
    let message = Message::builder()
        .from(from)
        .to(Mailbox::new(None, to_addr))
        .subject(subject)
        .date_now()
        .message_id(Some(message_id.clone()))
        .user_agent(format!("mailplug/{}", env!("CARGO_PKG_VERSION")))
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| MessageError::Build(e.to_string()))?;
    let mut outgoing = OutgoingMessage::from_message(&message, message_id);
    outgoing.raw = with_extra_headers(&target.extra_headers, outgoing.raw)?;
    Ok(outgoing)
}

/// `raw` with the provider's headers in front (checked at load time: field
/// names, no header mailplug sets itself, no line breaks in values). A name
/// may repeat (Mailgun takes one `X-Mailgun-Tag` per tag), which lettre's
/// header map cannot hold, so each is formatted (encoded and folded by
/// lettre) on its own and the lines are spliced into the header block.
pub(crate) fn with_extra_headers(
    extra: &[(String, String)],
    raw: Vec<u8>,
) -> Result<Vec<u8>, MessageError> {
    if extra.is_empty() {
        return Ok(raw);
    }
    let mut lines = String::new();
    for (name, value) in extra {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| MessageError::Build(format!("invalid header name {name:?}")))?;
        let mut one = lettre::message::header::Headers::new();
        one.insert_raw(HeaderValue::new(name, value.clone()));
        lines.push_str(&one.to_string());
    }
    let mut out = lines.into_bytes();
    out.extend_from_slice(&raw);
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_message_is_multipart_with_required_headers() {
        let mut t = crate::mail::target::tests::sample();
        t.from_name = Some("Acme News".into());
        let m = test_message(&t, "rcpt@example.test").unwrap();
        let text = String::from_utf8(m.raw).unwrap();
        assert!(
            text.contains("From: \"Acme News\" <sender@example.test>"),
            "{text}"
        );
        assert!(text.contains("To: rcpt@example.test"));
        assert!(text.contains("Subject: mailplug test email for connection \"corp\""));
        assert!(text.contains("Date: "));
        assert!(text.contains(&format!("Message-ID: {}", m.message_id)));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("text/plain") && text.contains("text/html"));
        assert_eq!(m.envelope.to().len(), 1);
    }

    #[test]
    fn the_providers_extra_headers_are_on_the_message() {
        let mut t = crate::mail::target::tests::sample();
        t.extra_headers = vec![
            ("X-PM-Message-Stream".into(), "broadcast".into()),
            ("X-Mailgun-Tag".into(), "newsletter".into()),
            ("X-Mailgun-Tag".into(), "weekly".into()),
        ];
        let m = test_message(&t, "rcpt@example.test").unwrap();
        let text = String::from_utf8(m.raw).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(head.contains("X-PM-Message-Stream: broadcast"), "{head}");
        assert!(head.contains("X-Mailgun-Tag: newsletter\r\n"), "{head}");
        assert!(head.contains("X-Mailgun-Tag: weekly\r\n"), "{head}");
        // The header block still ends where lettre ended it.
        assert!(head.contains("From: ") && text.contains("multipart/alternative"));
    }

    #[test]
    fn bad_recipient_is_an_input_error() {
        let t = crate::mail::target::tests::sample();
        assert!(matches!(
            test_message(&t, "not an address"),
            Err(MessageError::To(..))
        ));
    }
}
