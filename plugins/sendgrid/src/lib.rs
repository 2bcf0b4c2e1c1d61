//! First-party plugin `sendgrid`: SMTP relay settings for SendGrid, its
//! Signed Event Webhook (ECDSA P-256 over `timestamp ‖ body`) and the
//! mapping of its event batches to unified delivery events.

use std::borrow::Cow;

use mailplug_sdk::json::Id;
use mailplug_sdk::prelude::*;
use mailplug_sdk::types::Text as Out;
use serde::Deserialize;

mod adapt;

pub struct SendGrid;

const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";
const PROVIDER: &str = "sendgrid";

// The host refuses output beyond these limits as a failure of the call (a
// 500); an authentic but oversized batch is a 400 instead. Same values as
// host/src/runtime/convert.rs.
const MAX_EVENTS: usize = 10_000;
const MAX_ID_LEN: usize = 1_024;
const MAX_DIAGNOSTIC_LEN: usize = 16 << 10;
/// 9999-12-31T23:59:59Z, the last instant the host accepts.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

impl Plugin for SendGrid {
    const ID: &'static str = PROVIDER;

    fn info() -> Info {
        Info::new("SendGrid", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("sendgrid-ecdsa-p256-sha256")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify(request, secret, host::now())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(&request.body)
    }
}

mailplug_sdk::export!(SendGrid);

/// The configured key(s) are base64 DER SubjectPublicKeyInfo as SendGrid
/// shows it, several separated by whitespace during a rotation, or one PEM
/// block ([`verify::public_keys`]).
fn verify(request: &WebhookRequest, secret: &str, now: i64) -> Result<(), VerifyError> {
    let signature = verify::required_header(request, SIGNATURE_HEADER)?;
    let timestamp_text = verify::required_header(request, TIMESTAMP_HEADER)?;
    if timestamp_text.trim() != timestamp_text {
        return Err(VerifyError::Malformed(format!(
            "{TIMESTAMP_HEADER} is not Unix seconds"
        )));
    }
    let timestamp = verify::parse_unix_seconds(timestamp_text, TIMESTAMP_HEADER)?;
    // SendGrid documents no tolerance; signatures cover the timestamp, so a
    // window (the connection's `webhook.tolerance`) is what stops replays,
    // with `sg_event_id` dedupe in the host.
    verify::check_timestamp(timestamp, now, host::signature_tolerance())?;
    let signature = host::base64_decode(signature.trim())
        .map_err(|e| VerifyError::Malformed(format!("{SIGNATURE_HEADER} is not base64: {e}")))?;
    let keys = verify::public_keys(secret)?;
    // Signed bytes: the timestamp header exactly as sent, then the raw body.
    let signed = [timestamp_text.as_bytes(), &request.body].concat();
    verify::ecdsa_p256_sha256(&keys, &signed, &signature)
}

type Field<'a> = Option<Cow<'a, str>>;

/// The fields of one SendGrid event that the mapping reads. Everything else
/// (custom args merged top-level, `category`, `url_offset`, ...) is skipped;
/// the depth check before parsing bounds what skipping has to walk.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event: Field<'a>,
    #[serde(borrow)]
    email: Field<'a>,
    timestamp: Option<serde_json::Number>,
    #[serde(borrow, rename = "type")]
    bounce_type: Field<'a>,
    #[serde(borrow)]
    reason: Field<'a>,
    #[serde(borrow)]
    response: Field<'a>,
    #[serde(borrow)]
    status: Field<'a>,
    #[serde(borrow)]
    sg_event_id: Option<Id<'a>>,
    #[serde(borrow)]
    sg_message_id: Option<Id<'a>>,
    #[serde(borrow, rename = "smtp-id")]
    smtp_id: Field<'a>,
}

/// Unified kind of a SendGrid event name; `None` for events with no unified
/// kind (`processed`, `group_resubscribe`) and for unknown ones.
fn kind(event: &str, bounce_type: Option<&str>) -> Option<(EventKind, Option<BounceClass>)> {
    Some(match event {
        "delivered" => (EventKind::Delivered, None),
        "deferred" => (EventKind::Deferred, None),
        // `blocked` is a policy/reputation refusal, worth retrying later even
        // when the remote answered 5xx.
        "bounce" => (
            EventKind::Bounced,
            match bounce_type {
                Some("bounce") => Some(BounceClass::Hard),
                Some("blocked") => Some(BounceClass::Soft),
                _ => None,
            },
        ),
        "dropped" => (EventKind::Dropped, None),
        "spamreport" => (EventKind::Complained, None),
        "open" => (EventKind::Opened, None),
        "click" => (EventKind::Clicked, None),
        "unsubscribe" | "group_unsubscribe" => (EventKind::Unsubscribed, None),
        _ => return None,
    })
}

/// An identifier or address, refused when the host would refuse it.
fn id(body: &[u8], field: &str, value: Cow<'_, str>) -> Result<Out, String> {
    if value.len() > MAX_ID_LEN || value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "{field} is too long or contains control characters"
        ));
    }
    Ok(text_cow(body, value))
}

/// Remote server text, verbatim unless it has control characters (a
/// multi-line reply) or exceeds the host's limit.
fn diagnostic(body: &[u8], value: Cow<'_, str>) -> Out {
    if value.len() <= MAX_DIAGNOSTIC_LEN && !value.chars().any(|c| c.is_control() && c != '\t') {
        return text_cow(body, value);
    }
    let mut clean = String::with_capacity(value.len().min(MAX_DIAGNOSTIC_LEN));
    for c in value.chars() {
        if clean.len() + c.len_utf8() > MAX_DIAGNOSTIC_LEN {
            break;
        }
        clean.push(if c.is_control() && c != '\t' { ' ' } else { c });
    }
    Out::Owned(clean)
}

/// Unix seconds of `timestamp`; a fractional value is truncated.
fn unix_seconds(n: &serde_json::Number) -> Option<i64> {
    let seconds = match n.as_i64() {
        Some(i) => i,
        // Saturating cast; the range check below refuses the extremes.
        None => n.as_f64().filter(|f| f.is_finite())?.trunc() as i64,
    };
    (0..=MAX_UNIX_SECONDS).contains(&seconds).then_some(seconds)
}

impl Event<'_> {
    /// The unified event, `Ok(None)` for an event with no unified kind.
    fn convert(self, body: &[u8]) -> Result<Option<DeliveryEvent>, String> {
        let name = self.event.as_deref().ok_or("missing `event`")?;
        let Some((kind, bounce_class)) = kind(name, self.bounce_type.as_deref()) else {
            if !matches!(name, "processed" | "group_resubscribe") {
                host::log_info(&format!("skipping unknown SendGrid event {name:?}"));
            }
            return Ok(None);
        };
        let recipient = self
            .email
            .filter(|e| !e.is_empty())
            .ok_or("missing `email`")?;
        let occurred_at = self
            .timestamp
            .as_ref()
            .ok_or("missing `timestamp`")
            .and_then(|n| unix_seconds(n).ok_or("`timestamp` is not Unix seconds (1970-9999)"))?;

        // SMTP text: `reason` on bounce/dropped, `response` on delivered/deferred.
        let text = match kind {
            EventKind::Bounced | EventKind::Dropped => self.reason.or(self.response),
            EventKind::Delivered | EventKind::Deferred => self.response.or(self.reason),
            _ => None,
        };
        let (mut smtp_status, mut enhanced_status) = (None, None);
        if let Some((code, enhanced)) = text.as_deref().and_then(smtp::extract_status) {
            smtp_status = Some(Out::Owned(code));
            enhanced_status = enhanced.map(Out::Owned);
        }
        // An explicit `status` wins over the text (on `dropped` it is the
        // only code, a synthetic 5.0.0); engagement events carry none.
        if text.is_some() || matches!(kind, EventKind::Bounced | EventKind::Dropped) {
            match self.status {
                Some(s) if smtp::is_enhanced_status(&s) => {
                    enhanced_status = Some(text_cow(body, s));
                }
                Some(s) if smtp::is_reply_code(&s) && smtp_status.is_none() => {
                    smtp_status = Some(text_cow(body, s));
                }
                _ => {}
            }
        }
        let event = DeliveryEvent::new(kind, id(body, "email", recipient)?, occurred_at)
            .bounce_class(bounce_class)
            .event_id(
                self.sg_event_id
                    .map(|v| id(body, "sg_event_id", v.0))
                    .transpose()?,
            )
            .message_id(
                self.sg_message_id
                    .map(|v| id(body, "sg_message_id", v.0))
                    .transpose()?,
            )
            .our_message_id(self.smtp_id.map(|v| id(body, "smtp-id", v)).transpose()?)
            .smtp(smtp_status, enhanced_status)
            .diagnostic(text.map(|t| diagnostic(body, t)));
        Ok(Some(event))
    }
}

/// A batch is all-or-nothing: a malformed body or a known event missing its
/// recipient or time refuses the request (400); unknown event names are skipped.
fn parse(body: &[u8]) -> Result<Vec<DeliveryEvent>, ParseError> {
    if json::first_token(body) != Some(b'[') {
        return Err(ParseError::Malformed(
            "SendGrid posts a JSON array of events".into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    let items: Vec<Event<'_>> = json::parse_borrowed(body)?;
    if items.len() > MAX_EVENTS {
        return Err(ParseError::Invalid(format!(
            "{} events in one request (limit {MAX_EVENTS})",
            items.len()
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(event) = item
            .convert(body)
            .map_err(|e| ParseError::Invalid(format!("event {i}: {e}")))?
        {
            events.push(event);
        }
    }
    Ok(events)
}
