//! First-party plugin `custom-smtp`: passes Custom SMTP settings through
//! (with the usual port/security defaults), verifies Standard Webhooks
//! signatures and parses events sent in mailplug's unified format (one
//! object or an array) or in the Standard Webhooks `email.*` envelope.

use std::borrow::Cow;

use mailplug_sdk::prelude::*;
use serde::Deserialize;
use serde::de::IgnoredAny;

mod adapt;

struct CustomSmtp;

/// Provider name for events sent in the unified format without one.
const DEFAULT_PROVIDER: &str = "custom-smtp";
/// Provider name for events sent in the Standard Webhooks `email.*` envelope.
const ENVELOPE_PROVIDER: &str = "standard_webhooks";

impl Guest for CustomSmtp {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "custom-smtp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "Custom SMTP".into(),
            options_schema: adapt::OPTIONS_SCHEMA.into(),
            capabilities: vec![
                Capability::AdaptsSmtp,
                Capability::VerifiesWebhooks,
                Capability::ParsesWebhooks,
            ],
            signature_scheme: Some("standard-webhooks-v1".into()),
        }
    }

    fn adapt_connection(
        options: String,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(&options, overrides)
    }

    fn verify_webhook(request: WebhookRequest, secret: String) -> Result<(), VerifyError> {
        standard_webhooks::verify(
            &request,
            &secret,
            standard_webhooks::STANDARD,
            host::now(),
            standard_webhooks::DEFAULT_TOLERANCE_SECONDS,
        )
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let webhook_id = mailplug_sdk::header(&request, "webhook-id");
        match json::first_token(&request.body) {
            Some(b'[') => {
                let items: Vec<Incoming<'_>> = json::parse_borrowed(&request.body)?;
                let mut events = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    item.convert(webhook_id, false, &mut events)
                        .map_err(|e| ParseError::Invalid(format!("event {i}: {e}")))?;
                }
                Ok(events)
            }
            Some(b'{') => {
                let item: Incoming<'_> = json::parse_borrowed(&request.body)?;
                let mut events = Vec::with_capacity(1);
                item.convert(webhook_id, true, &mut events)
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

type Text<'a> = Option<Cow<'a, str>>;

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
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "connection")]
    _connection: Option<IgnoredAny>,
    #[serde(default, rename = "received_at")]
    _received_at: Option<IgnoredAny>,
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

fn owned(text: Text<'_>) -> Option<String> {
    text.map(Cow::into_owned)
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
        webhook_id: Option<&str>,
        single: bool,
        out: &mut Vec<DeliveryEvent>,
    ) -> Result<(), String> {
        if self.envelope_type.is_some() {
            return self.convert_envelope(webhook_id, out);
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
        let recipient = required(&self.recipient, "recipient")?.to_owned();
        let occurred_at = timestamp(required(&self.occurred_at, "occurred_at")?, "occurred_at")?;
        out.push(DeliveryEvent {
            kind,
            bounce_class,
            recipient,
            occurred_at,
            provider: self
                .provider
                .map_or_else(|| DEFAULT_PROVIDER.to_owned(), Cow::into_owned),
            provider_event_id: owned(self.provider_event_id)
                .or_else(|| webhook_id.filter(|_| single).map(str::to_owned)),
            provider_message_id: owned(self.provider_message_id),
            message_id: owned(self.message_id),
            smtp_status: owned(self.smtp_status),
            enhanced_status: owned(self.enhanced_status),
            diagnostic: owned(self.diagnostic),
        });
        Ok(())
    }

    fn convert_envelope(
        self,
        webhook_id: Option<&str>,
        out: &mut Vec<DeliveryEvent>,
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
        let recipient = required(&data.recipient, "data.recipient")?.to_owned();
        let occurred_at = timestamp(required(&self.timestamp, "timestamp")?, "timestamp")?;
        let bounce_class = match (kind, data.bounce_type.as_deref()) {
            (EventKind::Bounced, Some(name)) => Some(bounce_class(name)?),
            _ => None,
        };
        let (mut smtp_status, mut enhanced_status, mut diagnostic) = (None, None, None);
        if let Some(smtp) = data.smtp {
            smtp_status = smtp.code.map(|c| c.to_string());
            enhanced_status = owned(smtp.enhanced);
            diagnostic = owned(smtp.text);
            if smtp_status.is_none()
                && let Some((code, enhanced)) = diagnostic.as_deref().and_then(smtp::extract_status)
            {
                smtp_status = Some(code);
                enhanced_status = enhanced_status.or(enhanced);
            }
        }
        out.push(DeliveryEvent {
            kind,
            bounce_class,
            recipient,
            occurred_at,
            provider: ENVELOPE_PROVIDER.to_owned(),
            provider_event_id: webhook_id.map(str::to_owned),
            provider_message_id: owned(data.message_id),
            message_id: None,
            smtp_status,
            enhanced_status,
            diagnostic,
        });
        Ok(())
    }
}
