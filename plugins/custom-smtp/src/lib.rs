//! First-party plugin `custom-smtp`: passes Custom SMTP settings through
//! (with the usual port/security defaults), verifies Standard Webhooks
//! signatures and parses events sent in mailplug's unified format (one
//! object or an array) or in the Standard Webhooks `email.*` envelope.

use mailplug_sdk::prelude::*;
use serde::Deserialize;

mod adapt;

pub struct CustomSmtp;

/// Provider name for events sent in the unified format without one.
const DEFAULT_PROVIDER: &str = "custom-smtp";
/// Provider name for events sent in the Standard Webhooks `email.*` envelope.
const ENVELOPE_PROVIDER: &str = "standard_webhooks";

impl Plugin for CustomSmtp {
    const ID: &'static str = DEFAULT_PROVIDER;

    fn info() -> Info {
        // Hand-written: header names and values need patterns (no CR/LF).
        Info::new("Custom SMTP", env!("CARGO_PKG_VERSION"))
            .options_schema_json(adapt::OPTIONS_SCHEMA)
            .adapts_smtp()
            .webhooks("standard-webhooks-v1")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify::standard_webhooks(request, secret, host::now())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let webhook_id = mailplug_sdk::header(request, "webhook-id");
        match json::first_token(&request.body) {
            Some(b'[') => parse_array(&request.body, webhook_id),
            Some(b'{') => {
                let item: Incoming<'_> = json::parse_borrowed(&request.body)?;
                let mut events = Vec::with_capacity(1);
                item.convert(&request.body, webhook_id, true, &mut events)
                    .map_err(ParseError::Invalid)?;
                Ok(events)
            }
            _ => Err(ParseError::Malformed(
                "body is not a JSON object or array".into(),
            )),
        }
    }
}

mailplug_sdk::export!(CustomSmtp);

/// Converts each array element as soon as it is parsed (no intermediate
/// vector of raw events); a conversion error stops the parse.
struct ArrayVisitor<'v> {
    body: &'v [u8],
    webhook_id: Option<&'v str>,
    events: &'v mut Vec<DeliveryEvent>,
    invalid: &'v mut Option<String>,
}

impl<'de> serde::de::Visitor<'de> for ArrayVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while let Some(item) = seq.next_element::<Incoming<'de>>()? {
            if let Err(e) = item.convert(self.body, self.webhook_id, false, self.events) {
                *self.invalid = Some(format!("event {index}: {e}"));
                return Err(serde::de::Error::custom("invalid event"));
            }
            index += 1;
        }
        Ok(())
    }
}

/// Upper bound for the pre-allocated event vector (the host refuses more
/// than 10,000 events per call anyway).
const MAX_PREALLOCATED_EVENTS: usize = 10_000;

fn parse_array(body: &[u8], webhook_id: Option<&str>) -> Result<Vec<DeliveryEvent>, ParseError> {
    use serde::Deserializer as _;
    // Real events take well over 64 bytes of JSON each: one allocation, no regrowth.
    let mut events = Vec::with_capacity((body.len() / 64).min(MAX_PREALLOCATED_EVENTS));
    let mut invalid = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let visitor = ArrayVisitor {
        body,
        webhook_id,
        events: &mut events,
        invalid: &mut invalid,
    };
    let parsed = de.deserialize_seq(visitor).and_then(|()| de.end());
    match (parsed, invalid) {
        (_, Some(message)) => Err(ParseError::Invalid(message)),
        (Err(e), None) => Err(ParseError::Malformed(format!("invalid JSON: {e}"))),
        (Ok(()), None) => Ok(events),
    }
}

type Text<'a> = Option<json::Str<'a>>;

/// One event object: the unified format, or (when `type` is present) the
/// Standard Webhooks email envelope `{type, timestamp, data}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    bounce_class: Text<'a>,
    #[serde(borrow)]
    recipient: Text<'a>,
    #[serde(borrow)]
    occurred_at: Text<'a>,
    #[serde(borrow)]
    provider: Text<'a>,
    #[serde(borrow)]
    provider_event_id: Text<'a>,
    #[serde(borrow)]
    provider_message_id: Text<'a>,
    #[serde(borrow)]
    message_id: Text<'a>,
    #[serde(borrow)]
    smtp_status: Text<'a>,
    #[serde(borrow)]
    enhanced_status: Text<'a>,
    #[serde(borrow)]
    diagnostic: Text<'a>,
    /// Host-assigned fields of a stored event: accepted and ignored, so
    /// events exported by one mailplug can be fed to another.
    #[serde(borrow, rename = "id")]
    _id: Text<'a>,
    #[serde(borrow, rename = "connection")]
    _connection: Text<'a>,
    #[serde(borrow, rename = "received_at")]
    _received_at: Text<'a>,
    #[serde(borrow, rename = "type")]
    envelope_type: Text<'a>,
    #[serde(borrow)]
    timestamp: Text<'a>,
    #[serde(borrow)]
    data: Option<EnvelopeData<'a>>,
}

#[derive(Deserialize)]
struct EnvelopeData<'a> {
    #[serde(borrow)]
    recipient: Text<'a>,
    #[serde(borrow)]
    message_id: Text<'a>,
    #[serde(borrow)]
    bounce_type: Text<'a>,
    smtp: Option<EnvelopeSmtp<'a>>,
}

#[derive(Deserialize)]
struct EnvelopeSmtp<'a> {
    code: Option<u16>,
    #[serde(borrow)]
    enhanced: Text<'a>,
    #[serde(borrow)]
    text: Text<'a>,
}

/// The output form of an optional field: a span of the body when borrowed.
fn out(body: &[u8], value: Text<'_>) -> Option<mailplug_sdk::types::Text> {
    value.map(|v| text_cow(body, v.0))
}

fn owned(value: String) -> mailplug_sdk::types::Text {
    mailplug_sdk::types::Text::Owned(value)
}

fn event_kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "delivered" => EventKind::Delivered,
        "deferred" => EventKind::Deferred,
        "bounced" => EventKind::Bounced,
        "complained" => EventKind::Complained,
        "dropped" => EventKind::Dropped,
        "opened" => EventKind::Opened,
        "clicked" => EventKind::Clicked,
        "unsubscribed" => EventKind::Unsubscribed,
        _ => return None,
    })
}

fn bounce_class(name: &str) -> Result<BounceClass, String> {
    match name {
        "hard" => Ok(BounceClass::Hard),
        "soft" => Ok(BounceClass::Soft),
        other => Err(format!("bounce class {other:?} is not hard or soft")),
    }
}

fn required<'a>(value: &'a Text<'_>, field: &str) -> Result<&'a str, String> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("missing {field}")),
    }
}

fn timestamp(value: &str, field: &str) -> Result<i64, String> {
    time::parse_rfc3339(value)
        .ok_or_else(|| format!("{field} {value:?} is not an RFC 3339 date-time"))
}

impl Incoming<'_> {
    /// `single`: the body holds just this event, so the `webhook-id` header
    /// identifies it when the event carries no `provider_event_id`.
    fn convert(
        self,
        body: &[u8],
        webhook_id: Option<&str>,
        single: bool,
        events: &mut Vec<DeliveryEvent>,
    ) -> Result<(), String> {
        if self.envelope_type.is_some() {
            return self.convert_envelope(body, webhook_id, events);
        }
        if self.timestamp.is_some() || self.data.is_some() {
            return Err(
                "`timestamp`/`data` belong to the envelope format, which needs `type`".into(),
            );
        }
        let kind_name = required(&self.kind, "kind")?;
        let kind = event_kind(kind_name).ok_or_else(|| format!("unknown kind {kind_name:?}"))?;
        let bounce_class = match self.bounce_class.as_deref() {
            None => None,
            Some(_) if kind != EventKind::Bounced => {
                return Err("bounce_class is only allowed on bounced events".into());
            }
            Some(name) => Some(bounce_class(name)?),
        };
        let recipient = text(body, required(&self.recipient, "recipient")?);
        let occurred_at = timestamp(required(&self.occurred_at, "occurred_at")?, "occurred_at")?;
        let header_id = webhook_id.filter(|_| single).map(|id| owned(id.to_owned()));
        events.push(DeliveryEvent {
            kind,
            bounce_class,
            recipient,
            occurred_at,
            provider: out(body, self.provider)
                .unwrap_or_else(|| owned(DEFAULT_PROVIDER.to_owned())),
            provider_event_id: out(body, self.provider_event_id).or(header_id),
            provider_message_id: out(body, self.provider_message_id),
            message_id: out(body, self.message_id),
            smtp_status: out(body, self.smtp_status),
            enhanced_status: out(body, self.enhanced_status),
            diagnostic: out(body, self.diagnostic),
        });
        Ok(())
    }

    fn convert_envelope(
        self,
        body: &[u8],
        webhook_id: Option<&str>,
        events: &mut Vec<DeliveryEvent>,
    ) -> Result<(), String> {
        if self.kind.is_some() || self.recipient.is_some() || self.occurred_at.is_some() {
            return Err("unified-format fields are not allowed in a `type` envelope".into());
        }
        let event_type = self.envelope_type.as_deref().unwrap_or_default();
        let Some(kind) = event_type.strip_prefix("email.").and_then(event_kind) else {
            host::log_debug(&format!(
                "skipping envelope event type {event_type:?}: no unified kind"
            ));
            return Ok(());
        };
        let data = self.data.ok_or("envelope has no `data`")?;
        let recipient = text(body, required(&data.recipient, "data.recipient")?);
        let occurred_at = timestamp(required(&self.timestamp, "timestamp")?, "timestamp")?;
        let bounce_class = match (kind, data.bounce_type.as_deref()) {
            (EventKind::Bounced, Some(name)) => Some(bounce_class(name)?),
            _ => None,
        };
        let (mut smtp_status, mut enhanced_status, mut diagnostic) = (None, None, None);
        if let Some(smtp) = data.smtp {
            smtp_status = smtp.code.map(|c| owned(c.to_string()));
            if smtp_status.is_none()
                && let Some((code, enhanced)) = smtp.text.as_deref().and_then(smtp::extract_status)
            {
                smtp_status = Some(owned(code));
                enhanced_status = enhanced.map(owned);
            }
            enhanced_status = out(body, smtp.enhanced).or(enhanced_status);
            diagnostic = out(body, smtp.text);
        }
        events.push(DeliveryEvent {
            kind,
            bounce_class,
            recipient,
            occurred_at,
            provider: owned(ENVELOPE_PROVIDER.to_owned()),
            provider_event_id: webhook_id.map(|id| owned(id.to_owned())),
            provider_message_id: out(body, data.message_id),
            message_id: None,
            smtp_status,
            enhanced_status,
            diagnostic,
        });
        Ok(())
    }
}
