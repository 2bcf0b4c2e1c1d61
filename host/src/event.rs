//! The unified delivery event: what every plugin produces and every consumer
//! codes against (`schemas/delivery-event.schema.json` is generated from it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happened to a message for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The receiving server accepted the message.
    Delivered,
    /// Delivery failed temporarily; the provider will retry.
    Deferred,
    /// The provider gave up on this recipient for this message.
    Bounced,
    /// The recipient reported the message as spam.
    Complained,
    /// The provider refused to attempt delivery (suppression, policy, invalid address).
    Dropped,
    /// The recipient opened the message (tracking pixel).
    Opened,
    /// The recipient clicked a tracked link.
    Clicked,
    /// The recipient unsubscribed.
    Unsubscribed,
}

impl EventKind {
    /// The wire name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Bounced => "bounced",
            Self::Complained => "complained",
            Self::Dropped => "dropped",
            Self::Opened => "opened",
            Self::Clicked => "clicked",
            Self::Unsubscribed => "unsubscribed",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// Whether a bounce is permanent (`hard`) or caused by a transient condition (`soft`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BounceClass {
    /// Address or permanent failure: suppress the recipient.
    Hard,
    /// Transient cause (mailbox full, greylisting, ...).
    Soft,
}

impl BounceClass {
    /// The wire name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// An event as a plugin normalizes it, before the host assigns identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizedEvent {
    /// The unified event kind.
    pub kind: EventKind,
    /// Only for `bounced`: `hard`, `soft`, or null when the provider does not say.
    pub bounce_class: Option<BounceClass>,
    /// The recipient address as the provider states it.
    pub recipient: String,
    /// Time of the event itself, RFC 3339 UTC with whole seconds (`YYYY-MM-DDTHH:MM:SSZ`).
    pub occurred_at: String,
    /// Provider name as the payload format states it (e.g. `sendgrid`, `standard_webhooks`).
    pub provider: String,
    /// The provider's id of this event or delivery, when it has one.
    pub provider_event_id: Option<String>,
    /// The provider's message id, verbatim (large integers rendered exactly as decimal strings).
    pub provider_message_id: Option<String>,
    /// Our Message-ID when the provider echoes it.
    pub message_id: Option<String>,
    /// Basic SMTP reply code, e.g. `550` (a string).
    pub smtp_status: Option<String>,
    /// RFC 3463 enhanced status code, e.g. `5.1.1`.
    pub enhanced_status: Option<String>,
    /// The remote server's text, verbatim; null for engagement and complaint events.
    pub diagnostic: Option<String>,
}

/// The version of the stored event format ([`DeliveryEvent::schema_version`]).
/// Within one version fields are only added; a breaking change bumps it.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Which plugin build parsed an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginStamp {
    /// Plugin id (the connection's `provider`).
    pub id: String,
    /// The plugin's own version, as `describe` reports it.
    pub version: String,
    /// sha256 (hex) of the plugin component.
    pub sha256: String,
}

/// A stored delivery event: the normalized event plus host-assigned
/// identity. This is the format `GET /v1/events`, `mailplug events` and
/// forwarders deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "mailplug delivery event, format version 1")]
pub struct DeliveryEvent {
    /// Format version of this object (currently 1).
    pub schema_version: u32,
    /// Host-assigned unique id: a 26-character ULID, assigned in commit
    /// order, so sorting ids sorts events by when they were stored.
    pub id: String,
    /// Name of the connection whose webhook received the event.
    pub connection: String,
    /// Workspaces that connection served when the event was stored.
    pub workspaces: Vec<String>,
    /// When the host received the webhook request, RFC 3339 UTC with milliseconds.
    pub received_at: String,
    /// The event as normalized by the provider plugin.
    #[serde(flatten)]
    pub event: NormalizedEvent,
    /// The plugin build that parsed the request.
    pub plugin: PluginStamp,
}

/// JSON Schema of a stored delivery event (`schemas/delivery-event.schema.json`).
pub fn delivery_event_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(DeliveryEvent)).unwrap_or_default()
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`; `None` outside years 1970–9999.
pub fn format_unix_seconds(seconds: i64) -> Option<String> {
    let secs = u64::try_from(seconds).ok()?;
    if secs > 253_402_300_799 {
        return None;
    }
    // Written digit by digit: this runs for every event a plugin returns,
    // and going through `fmt` cost several times more than the arithmetic.
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; 20];
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3_600, 2);
    put(14, rem % 3_600 / 60, 2);
    put(17, rem % 60, 2);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        out[at] = sep;
    }
    // Only ASCII digits and separators were written.
    String::from_utf8(out.to_vec()).ok()
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic
/// Gregorian calendar (H. Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_in_utc() {
        assert_eq!(
            format_unix_seconds(1_767_268_800).as_deref(),
            Some("2026-01-01T12:00:00Z")
        );
        assert_eq!(format_unix_seconds(-1), None);
        assert_eq!(format_unix_seconds(i64::MAX), None);
    }

    #[test]
    fn formatting_matches_humantime_over_the_whole_range() {
        let last = 253_402_300_799_i64;
        let step = 7_919 * 3_600 + 1_234;
        let samples = (0..=last).step_by(step as usize).chain([
            0,
            951_782_400,
            951_868_799,
            4_107_542_399,
            last,
        ]);
        for secs in samples {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
            assert_eq!(
                format_unix_seconds(secs),
                Some(humantime::format_rfc3339_seconds(time).to_string()),
                "{secs}"
            );
        }
        assert_eq!(format_unix_seconds(last + 1), None);
    }
}
