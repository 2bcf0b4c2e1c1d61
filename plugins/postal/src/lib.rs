//! First-party plugin `postal`: a self-hosted Postal server's SMTP service,
//! its webhooks signed with the server's RSA key (PKCS#1 v1.5 SHA-256 over
//! the raw body, `X-Postal-Signature-256`) and the mapping of its events to
//! unified delivery events.
//!
//! Postal signs no timestamp and retries reuse the body for about 36
//! minutes, so there is no replay window to check: the host's dedupe on
//! `uuid` (the same on every attempt) is what absorbs a replay.

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Id, Str};
use mailplug_sdk::prelude::*;
use serde::Deserialize;

mod adapt;

pub struct Postal;

/// The one signature header verified. The legacy SHA-1 `X-Postal-Signature`
/// is never a fallback (a downgrade), and `X-Postal-Signature-KID` never
/// picks or vouches for a key: every configured key is tried.
const SIGNATURE_HEADER: &str = "x-postal-signature-256";

impl Plugin for Postal {
    const ID: &'static str = "postal";

    fn info() -> Info {
        Info::new("Postal", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("rsa-sha256")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is the Postal server's signing public key (a PEM
    /// block, or base64 DER); during a key rotation configure both keys as
    /// a list of secrets.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify(request, secret)
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(&request.body)
    }
}

mailplug_sdk::export!(Postal);

fn verify(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
    let signature = verify::required_header(request, SIGNATURE_HEADER)?;
    let signature = host::base64_decode(signature.trim())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| VerifyError::Malformed(format!("{SIGNATURE_HEADER} is not base64")))?;
    if secret.trim_start().starts_with('{') {
        return Err(VerifyError::Malformed(
            "webhook secret looks like JSON (a JWKS?): configure the public key as PEM".into(),
        ));
    }
    let keys = verify::public_keys(secret)?;
    verify::rsa_pkcs1v15(host::Hash::Sha256, &keys, &request.body, &signature)
}

/// The webhook envelope: `{event, timestamp, uuid, payload}`.
#[derive(Deserialize)]
struct Webhook<'a> {
    #[serde(borrow)]
    event: Option<Str<'a>>,
    /// When Postal queued the webhook (Unix seconds with a fraction).
    timestamp: Option<serde_json::Number>,
    /// The same on every attempt of one webhook request: the dedupe key.
    #[serde(borrow)]
    uuid: Option<Str<'a>>,
    #[serde(borrow)]
    payload: Option<Payload<'a>>,
}

/// The fields of the event payloads that the mapping reads. Status events
/// and engagement events carry `message`; `MessageBounced` carries
/// `original_message` (and `bounce`, the incoming DSN, which is not read).
#[derive(Deserialize)]
struct Payload<'a> {
    /// The remote server's reply (status events only).
    #[serde(borrow)]
    output: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Message<'a>>,
    #[serde(borrow)]
    original_message: Option<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    /// Postal's numeric message id.
    #[serde(borrow)]
    id: Option<Id<'a>>,
    /// `outgoing` or `incoming`.
    #[serde(borrow)]
    direction: Option<Str<'a>>,
    /// The Message-ID header (ours, when we set one).
    #[serde(borrow)]
    message_id: Option<Str<'a>>,
    /// The envelope recipient (`RCPT TO`).
    #[serde(borrow)]
    to: Option<Str<'a>>,
}

/// How an event maps: its unified kind and class, and which payload field
/// holds the message.
struct Mapping {
    kind: EventKind,
    class: Option<BounceClass>,
    /// `MessageBounced` describes `original_message`; the others `message`.
    original: bool,
    /// Status events carry the remote server's `output`.
    has_output: bool,
}

/// The mapping of a Postal event; `None` for events with no unified kind
/// (`MessageHeld`: the message may still be released; `DomainDNSError`,
/// `SendLimitApproaching`, `SendLimitExceeded`: alerts for the operator)
/// and for events Postal may add.
fn mapping(event: &str) -> Option<Mapping> {
    let (kind, class, original, has_output) = match event {
        "MessageSent" => (EventKind::Delivered, None, false, true),
        "MessageDelayed" => (EventKind::Deferred, None, false, true),
        "MessageDeliveryFailed" => (EventKind::Bounced, Some(BounceClass::Hard), false, true),
        // A DSN received after the remote server had accepted the message:
        // Postal does not classify it.
        "MessageBounced" => (EventKind::Bounced, None, true, false),
        "MessageLinkClicked" => (EventKind::Clicked, None, false, false),
        "MessageLoaded" => (EventKind::Opened, None, false, false),
        _ => return None,
    };
    Some(Mapping {
        kind,
        class,
        original,
        has_output,
    })
}

fn invalid(message: &str) -> ParseError {
    ParseError::Invalid(message.to_owned())
}

/// An optional id field, checked against the host's limits.
fn optional_id(body: &[u8], field: &str, value: Option<&str>) -> Result<Option<Text>, ParseError> {
    value
        .map(|v| limits::id(field, v).map(|v| text(body, v)))
        .transpose()
}

/// One event per request.
fn parse(body: &[u8]) -> Result<Vec<DeliveryEvent>, ParseError> {
    if json::first_token(body) != Some(b'{') {
        return Err(ParseError::Malformed(
            "Postal posts one JSON object per request".into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    let webhook: Webhook<'_> = json::parse_borrowed(body)?;
    let event = webhook
        .event
        .as_deref()
        .ok_or_else(|| invalid("missing `event`"))?;
    let Some(m) = mapping(event) else {
        host::log_info(&format!(
            "skipping Postal event {event:?} (no unified kind)"
        ));
        return Ok(Vec::new());
    };
    let payload = webhook
        .payload
        .as_ref()
        .ok_or_else(|| invalid("missing `payload`"))?;
    let (message, field) = if m.original {
        (
            payload.original_message.as_ref(),
            "payload.original_message",
        )
    } else {
        (payload.message.as_ref(), "payload.message")
    };
    let message = message.ok_or_else(|| ParseError::Invalid(format!("missing `{field}`")))?;
    // Mail Postal received (delivered to an HTTP or SMTP endpoint of the
    // server) is not mail we sent.
    if message.direction.as_deref() == Some("incoming") {
        host::log_info(&format!(
            "skipping Postal event {event:?} for an incoming message"
        ));
        return Ok(Vec::new());
    }
    let recipient = message
        .to
        .as_deref()
        .ok_or_else(|| ParseError::Invalid(format!("missing `{field}.to`")))?;
    let recipient = text(body, limits::id(&format!("{field}.to"), recipient)?);
    let occurred_at = webhook
        .timestamp
        .as_ref()
        .ok_or_else(|| invalid("missing `timestamp`"))
        .and_then(|n| limits::unix_seconds_from_number("timestamp", n))?;
    let uuid = webhook
        .uuid
        .as_deref()
        .ok_or_else(|| invalid("missing `uuid`"))?;
    let output = if m.has_output {
        payload.output.as_deref().filter(|o| !o.trim().is_empty())
    } else {
        None
    };
    Ok(vec![
        DeliveryEvent::new(m.kind, recipient, occurred_at)
            .bounce_class(m.class)
            .event_id(text(body, limits::id("uuid", uuid)?))
            .message_id(optional_id(
                body,
                &format!("{field}.id"),
                message.id.as_deref(),
            )?)
            .our_message_id(optional_id(
                body,
                &format!("{field}.message_id"),
                message.message_id.as_deref(),
            )?)
            .status_from(output)
            .diagnostic(output.map(|o| text_cow(body, limits::diagnostic(o)))),
    ])
}

#[cfg(test)]
mod tests {
    use super::mapping;
    use mailplug_sdk::types::{BounceClass, EventKind};

    #[test]
    fn only_delivery_and_engagement_events_have_a_kind() {
        let kind = |e: &str| mapping(e).map(|m| (m.kind, m.class));
        assert_eq!(
            kind("MessageDeliveryFailed"),
            Some((EventKind::Bounced, Some(BounceClass::Hard)))
        );
        assert_eq!(kind("MessageBounced"), Some((EventKind::Bounced, None)));
        assert!(mapping("MessageBounced").is_some_and(|m| m.original && !m.has_output));
        for none in [
            "MessageHeld",
            "DomainDNSError",
            "SendLimitApproaching",
            "SendLimitExceeded",
            "messagesent",
        ] {
            assert!(mapping(none).is_none(), "{none}");
        }
    }
}
