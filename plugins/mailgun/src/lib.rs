//! First-party plugin `mailgun`: Mailgun's SMTP service (US or EU region),
//! its JSON webhooks signed with HMAC-SHA256 over `timestamp + token`
//! (inside the body), and the mapping of its events to unified events.
//!
//! The signature covers only the timestamp and token, never `event-data`:
//! the 300 s window bounds replays, and refusing a token seen before needs
//! state the sandbox does not have (a host-side store; not implemented).

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Id, Str};
use mailplug_sdk::prelude::*;
use mailplug_sdk::verify::Encoding;
use serde::Deserialize;

mod adapt;

pub struct Mailgun;

impl Plugin for Mailgun {
    const ID: &'static str = "mailgun";

    fn info() -> Info {
        Info::new("Mailgun", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("mailgun-hmac-sha256")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is the HTTP webhook signing key of the account.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify(request, secret, host::now())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(&request.body)
    }
}

mailplug_sdk::export!(Mailgun);

#[derive(Deserialize)]
struct Signed<'a> {
    #[serde(borrow)]
    signature: Option<Signature<'a>>,
}

#[derive(Deserialize)]
struct Signature<'a> {
    #[serde(borrow)]
    timestamp: Option<Id<'a>>,
    #[serde(borrow)]
    token: Option<Str<'a>>,
    #[serde(borrow)]
    signature: Option<Str<'a>>,
}

fn verify(request: &WebhookRequest, secret: &str, now: i64) -> Result<(), VerifyError> {
    let key = secret.trim();
    if key.is_empty() {
        return Err(VerifyError::Malformed("webhook secret is empty".into()));
    }
    let body = &request.body[..];
    if json::first_token(body) != Some(b'{') {
        return Err(VerifyError::Malformed(
            "not a Mailgun JSON webhook object (legacy form-encoded webhooks are not supported)"
                .into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)
        .and_then(|()| json::parse_borrowed::<Signed<'_>>(body))
        .map_err(|_| VerifyError::Malformed("body is not a Mailgun JSON webhook".into()))
        .and_then(|signed| {
            let missing = |f: &str| VerifyError::Malformed(format!("missing signature.{f}"));
            let s = signed.signature.ok_or_else(|| missing("timestamp"))?;
            let timestamp = s.timestamp.ok_or_else(|| missing("timestamp"))?;
            let token = s.token.ok_or_else(|| missing("token"))?;
            let signature = s.signature.ok_or_else(|| missing("signature"))?;
            let sent = verify::parse_unix_seconds(&timestamp, "signature.timestamp")?;
            verify::check_timestamp(sent, now, host::signature_tolerance())?;
            let signed = [timestamp.as_bytes(), token.as_bytes()].concat();
            let ok = verify::hmac_matches(
                host::Hash::Sha256,
                key.as_bytes(),
                &signed,
                &signature,
                Encoding::Hex,
                "signature.signature",
            )?;
            if !ok {
                return Err(VerifyError::BadSignature);
            }
            // The token is single-use: the host refuses a later request
            // with it (a replay inside the timestamp window). Remembered for
            // twice the window, so it outlives every timestamp it can pass.
            let window = u32::try_from(host::signature_tolerance()).unwrap_or(u32::MAX);
            host::use_token(&token, window.saturating_mul(2));
            Ok(())
        })
}

#[derive(Deserialize)]
struct Webhook<'a> {
    #[serde(borrow, rename = "event-data")]
    event_data: Option<EventData<'a>>,
}

#[derive(Deserialize)]
struct EventData<'a> {
    #[serde(borrow)]
    id: Option<Id<'a>>,
    timestamp: Option<serde_json::Number>,
    #[serde(borrow)]
    event: Option<Str<'a>>,
    #[serde(borrow)]
    severity: Option<Str<'a>>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
    #[serde(borrow)]
    recipient: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Message<'a>>,
    #[serde(borrow, rename = "delivery-status")]
    delivery_status: Option<DeliveryStatus<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    headers: Option<Headers<'a>>,
}

#[derive(Deserialize)]
struct Headers<'a> {
    #[serde(borrow, rename = "message-id")]
    message_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct DeliveryStatus<'a> {
    code: Option<serde_json::Number>,
    #[serde(borrow, rename = "enhanced-code")]
    enhanced_code: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(borrow)]
    description: Option<Str<'a>>,
}

/// Unified kind of a Mailgun event; `None` for events with no unified kind
/// (`accepted`, `stored`, list events) and for ones Mailgun may add.
fn kind(
    event: &str,
    severity: Option<&str>,
    reason: Option<&str>,
) -> Option<(EventKind, Option<BounceClass>)> {
    Some(match event {
        "delivered" => (EventKind::Delivered, None),
        "failed" => match (severity, reason) {
            (Some("temporary"), _) => (EventKind::Deferred, None),
            // Mailgun did not try: the address is on one of its suppression lists.
            (
                Some("permanent"),
                Some("suppress-bounce" | "suppress-unsubscribe" | "suppress-complaint"),
            ) => (EventKind::Dropped, None),
            (Some("permanent"), _) => (EventKind::Bounced, Some(BounceClass::Hard)),
            _ => (EventKind::Bounced, None),
        },
        "rejected" => (EventKind::Dropped, None),
        "complained" => (EventKind::Complained, None),
        "opened" => (EventKind::Opened, None),
        "clicked" => (EventKind::Clicked, None),
        "unsubscribed" => (EventKind::Unsubscribed, None),
        _ => return None,
    })
}

/// The message id without the angle brackets some payloads keep.
fn strip_brackets(id: &str) -> &str {
    id.trim()
        .strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .unwrap_or(id.trim())
}

/// One event per request.
fn parse(body: &[u8]) -> Result<Vec<DeliveryEvent>, ParseError> {
    if json::first_token(body) != Some(b'{') {
        return Err(ParseError::Malformed(
            "Mailgun posts one JSON object per request".into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    let webhook: Webhook<'_> = json::parse_borrowed(body)?;
    let invalid = |m: &str| ParseError::Invalid(m.to_owned());
    let e = webhook
        .event_data
        .ok_or_else(|| invalid("missing `event-data`"))?;
    let name = e
        .event
        .as_deref()
        .ok_or_else(|| invalid("missing `event-data.event`"))?;
    let Some((kind, class)) = kind(name, e.severity.as_deref(), e.reason.as_deref()) else {
        host::log_info(&format!(
            "skipping Mailgun event {name:?} (no unified kind)"
        ));
        return Ok(Vec::new());
    };
    let recipient = e
        .recipient
        .as_deref()
        .ok_or_else(|| invalid("missing `event-data.recipient`"))?;
    let recipient = text(body, limits::id("event-data.recipient", recipient)?);
    let occurred_at = e
        .timestamp
        .as_ref()
        .ok_or_else(|| invalid("missing `event-data.timestamp`"))
        .and_then(|n| limits::unix_seconds_from_number("event-data.timestamp", n))?;
    let event_id = match &e.id {
        Some(id) => Some(text(body, limits::id("event-data.id", id)?)),
        None => None,
    };
    let message_id = match e
        .message
        .as_ref()
        .and_then(|m| m.headers.as_ref())
        .and_then(|h| h.message_id.as_deref())
    {
        Some(id) => Some(text(body, limits::id("message-id", strip_brackets(id))?)),
        None => None,
    };
    let mut event = DeliveryEvent::new(kind, recipient, occurred_at)
        .bounce_class(class)
        .event_id(event_id)
        .message_id(message_id);
    let outcome = matches!(
        kind,
        EventKind::Delivered | EventKind::Deferred | EventKind::Bounced | EventKind::Dropped
    );
    if let (true, Some(status)) = (outcome, e.delivery_status.as_ref()) {
        let diagnostic = status
            .message
            .as_deref()
            .filter(|m| !m.is_empty())
            .or(status.description.as_deref().filter(|d| !d.is_empty()));
        let enhanced = status
            .enhanced_code
            .as_deref()
            .filter(|c| smtp::is_enhanced_status(c))
            .map(|c| text(body, c));
        event = match &status.code {
            // Codes of 600 and up are Mailgun's own (suppressions, ...), not SMTP.
            Some(code) => {
                let code = code
                    .as_u64()
                    .map(|c| c.to_string())
                    .filter(|c| smtp::is_reply_code(c));
                match code {
                    // An older payload has the enhanced status only in the text.
                    Some(code) => event.smtp(code, enhanced).status_from(diagnostic),
                    None => event,
                }
            }
            None => event.smtp(None::<&str>, enhanced).status_from(diagnostic),
        };
        event = event.diagnostic(diagnostic.map(|d| text_cow(body, limits::diagnostic(d))));
    }
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use super::{kind, strip_brackets};
    use mailplug_sdk::types::{BounceClass, EventKind};

    #[test]
    fn failed_events_split_by_severity_and_reason() {
        assert_eq!(
            kind("failed", Some("temporary"), Some("generic")),
            Some((EventKind::Deferred, None))
        );
        assert_eq!(
            kind("failed", Some("permanent"), Some("bounce")),
            Some((EventKind::Bounced, Some(BounceClass::Hard)))
        );
        assert_eq!(
            kind("failed", Some("permanent"), Some("suppress-complaint")),
            Some((EventKind::Dropped, None))
        );
        assert_eq!(kind("failed", None, None), Some((EventKind::Bounced, None)));
        assert_eq!(kind("accepted", None, None), None);
        assert_eq!(kind("stored", None, None), None);
    }

    #[test]
    fn message_ids_lose_their_brackets_only() {
        assert_eq!(strip_brackets("<a@b>"), "a@b");
        assert_eq!(strip_brackets(" a@b "), "a@b");
        assert_eq!(strip_brackets("<a@b"), "<a@b");
    }
}
