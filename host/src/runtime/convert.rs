//! Checks what a guest returns and converts it to host types: a plugin's
//! output is untrusted input like any other.

use serde::Serialize;

use super::bindings::mailplug::provider::types as wit;
use crate::event::{self, BounceClass, EventKind, NormalizedEvent};

/// Most events one call may return (a 1 MiB body cannot hold more real events).
pub const MAX_EVENTS: usize = 10_000;
/// Longest identifier or address field, in bytes.
const MAX_ID_LEN: usize = 1_024;
/// Longest diagnostic text, in bytes.
const MAX_DIAGNOSTIC_LEN: usize = 16 << 10;
/// Longest options schema, in bytes.
const MAX_SCHEMA_LEN: usize = 1 << 20;

/// A plugin capability (see the WIT `capability` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Turns options into SMTP settings.
    AdaptsSmtp,
    /// Verifies webhook authenticity.
    VerifiesWebhooks,
    /// Parses webhook events.
    ParsesWebhooks,
}

impl Capability {
    /// The WIT name, e.g. `adapts-smtp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdaptsSmtp => "adapts-smtp",
            Self::VerifiesWebhooks => "verifies-webhooks",
            Self::ParsesWebhooks => "parses-webhooks",
        }
    }
}

/// What `describe` returns, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    /// Plugin id.
    pub id: String,
    /// Plugin version.
    pub version: String,
    /// Human-readable name.
    pub display_name: String,
    /// JSON Schema of a connection's `options`.
    pub options_schema: serde_json::Value,
    /// Implemented capabilities.
    pub capabilities: Vec<Capability>,
    /// Webhook signature scheme, if any.
    pub signature_scheme: Option<String>,
}

fn valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && id.len() <= 64
}

pub(crate) fn plugin_info(info: wit::PluginInfo) -> Result<PluginInfo, String> {
    if !valid_id(&info.id) {
        return Err(format!(
            "describe() returned id {:?}, which is not [a-z0-9][a-z0-9-]* (≤ 64)",
            info.id
        ));
    }
    // Shown by `plugin inspect`, the admin API and logs: checked like any
    // text a plugin returns.
    text("describe() version", &info.version, 64)?;
    text("describe() display_name", &info.display_name, 200)?;
    if let Some(scheme) = &info.signature_scheme {
        text("describe() signature_scheme", scheme, 64)?;
    }
    if info.options_schema.len() > MAX_SCHEMA_LEN {
        return Err("describe() returned an options schema over 1 MiB".into());
    }
    let options_schema: serde_json::Value = serde_json::from_str(&info.options_schema)
        .map_err(|e| format!("describe() returned an options schema that is not JSON: {e}"))?;
    if !options_schema.is_object() && !options_schema.is_boolean() {
        return Err(
            "describe() returned an options schema that is neither an object nor a boolean".into(),
        );
    }
    let capabilities = info
        .capabilities
        .into_iter()
        .map(|c| match c {
            wit::Capability::AdaptsSmtp => Capability::AdaptsSmtp,
            wit::Capability::VerifiesWebhooks => Capability::VerifiesWebhooks,
            wit::Capability::ParsesWebhooks => Capability::ParsesWebhooks,
        })
        .collect();
    Ok(PluginInfo {
        id: info.id,
        version: info.version,
        display_name: info.display_name,
        options_schema,
        capabilities,
        signature_scheme: info.signature_scheme,
    })
}

/// Whether `s` has a control character (Unicode Cc: U+0000–U+001F,
/// U+007F–U+009F) other than tab; a byte scan, this runs on every field.
fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    // Branch-free pass first (vectorises): almost every value is plain text.
    let suspicious = b.iter().fold(false, |acc, &c| {
        acc | (c < 0x20) | (c == 0x7f) | (c == 0xc2)
    });
    suspicious
        && b.iter().enumerate().any(|(i, &c)| {
            (c < 0x20 && c != b'\t')
                || c == 0x7f
                || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
        })
}

fn text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes long (limit {max})",
            value.len()
        ));
    }
    // Tabs survive in SMTP diagnostics; other control characters would let a
    // plugin forge log lines or headers downstream.
    if has_control(value) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// Resolves a `text` (a span of the request body, or an owned string) and
/// checks it; a span is checked in place and copied once.
fn resolve(body: &[u8], field: &str, value: wit::Text, max: usize) -> Result<String, String> {
    match value {
        wit::Text::Owned(s) => {
            text(field, &s, max)?;
            Ok(s)
        }
        wit::Text::Span((offset, len)) => {
            if len as usize > max {
                return Err(format!("{field} is {len} bytes long (limit {max})"));
            }
            let start = offset as usize;
            let bytes = start
                .checked_add(len as usize)
                .and_then(|end| body.get(start..end))
                .ok_or_else(|| {
                    format!(
                        "{field} span {offset}+{len} is outside the {}-byte body",
                        body.len()
                    )
                })?;
            let value = std::str::from_utf8(bytes)
                .map_err(|_| format!("{field} span {offset}+{len} is not UTF-8"))?;
            text(field, value, max)?;
            Ok(value.to_owned())
        }
    }
}

fn optional(
    body: &[u8],
    field: &str,
    value: Option<wit::Text>,
    max: usize,
) -> Result<Option<String>, String> {
    value.map(|v| resolve(body, field, v, max)).transpose()
}

fn delivery_event(body: &[u8], e: wit::DeliveryEvent) -> Result<NormalizedEvent, String> {
    let recipient = resolve(body, "recipient", e.recipient, MAX_ID_LEN)?;
    if recipient.is_empty() {
        return Err("recipient is empty".into());
    }
    let provider = resolve(body, "provider", e.provider, 64)?;
    if provider.is_empty() {
        return Err("provider is empty".into());
    }
    let provider_event_id = optional(body, "provider_event_id", e.provider_event_id, MAX_ID_LEN)?;
    let provider_message_id = optional(
        body,
        "provider_message_id",
        e.provider_message_id,
        MAX_ID_LEN,
    )?;
    let message_id = optional(body, "message_id", e.message_id, MAX_ID_LEN)?;
    let diagnostic = optional(body, "diagnostic", e.diagnostic, MAX_DIAGNOSTIC_LEN)?;
    let smtp_status = optional(body, "smtp_status", e.smtp_status, 3)?;
    if smtp_status
        .as_deref()
        .is_some_and(|c| !crate::smtp_status::is_reply_code(c))
    {
        return Err(format!(
            "smtp_status {smtp_status:?} is not a 3-digit SMTP reply code"
        ));
    }
    let enhanced_status = optional(body, "enhanced_status", e.enhanced_status, 11)?;
    if enhanced_status
        .as_deref()
        .is_some_and(|c| !crate::smtp_status::is_enhanced_status(c))
    {
        return Err(format!(
            "enhanced_status {enhanced_status:?} is not an RFC 3463 status code"
        ));
    }
    let kind = match e.kind {
        wit::EventKind::Delivered => EventKind::Delivered,
        wit::EventKind::Deferred => EventKind::Deferred,
        wit::EventKind::Bounced => EventKind::Bounced,
        wit::EventKind::Complained => EventKind::Complained,
        wit::EventKind::Dropped => EventKind::Dropped,
        wit::EventKind::Opened => EventKind::Opened,
        wit::EventKind::Clicked => EventKind::Clicked,
        wit::EventKind::Unsubscribed => EventKind::Unsubscribed,
    };
    let bounce_class = match (kind, e.bounce_class) {
        (_, None) => None,
        (EventKind::Bounced, Some(wit::BounceClass::Hard)) => Some(BounceClass::Hard),
        (EventKind::Bounced, Some(wit::BounceClass::Soft)) => Some(BounceClass::Soft),
        (other, Some(_)) => return Err(format!("bounce_class set on a {other:?} event")),
    };
    let occurred_at = event::format_unix_seconds(e.occurred_at)
        .ok_or_else(|| format!("occurred_at {} is outside years 1970-9999", e.occurred_at))?;
    Ok(NormalizedEvent {
        kind,
        bounce_class,
        recipient,
        occurred_at,
        provider,
        provider_event_id,
        provider_message_id,
        message_id,
        smtp_status,
        enhanced_status,
        diagnostic,
    })
}

/// Checks and converts every event (spans refer to `body`, the request the
/// host sent); the first violation fails the whole call.
pub(crate) fn delivery_events(
    body: &[u8],
    events: Vec<wit::DeliveryEvent>,
) -> Result<Vec<NormalizedEvent>, String> {
    if events.len() > MAX_EVENTS {
        return Err(format!(
            "{} events in one call (limit {MAX_EVENTS})",
            events.len()
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| delivery_event(body, e).map_err(|m| format!("event {i}: {m}")))
        .collect()
}

/// Checks SMTP settings returned by `adapt-connection`.
pub(crate) fn smtp_settings(s: &wit::SmtpSettings) -> Result<(), String> {
    if s.host.is_empty() {
        return Err("smtp host is empty".into());
    }
    text("smtp host", &s.host, 253)?;
    if s.port == 0 {
        return Err("smtp port is 0".into());
    }
    for (name, value) in &s.extra_headers {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!(
                "extra header name {name:?} is not a header field name"
            ));
        }
        text("extra header value", value, 998)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn control_characters_are_found_by_the_byte_scan() {
        for (s, expected) in [
            ("plain", false),
            ("tab\there", false),
            ("nul\0", true),
            ("del\u{7f}", true),
            ("c1\u{85}", true),
            ("é ü €", false),
        ] {
            assert_eq!(has_control(s), expected, "{s:?}");
            assert_eq!(
                has_control(s),
                s.chars().any(|c| c.is_control() && c != '\t'),
                "{s:?}"
            );
        }
    }
}
