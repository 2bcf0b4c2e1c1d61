//! First-party plugin `postmark`: Postmark's SMTP service, its webhooks
//! authenticated by HTTP basic auth (Postmark signs nothing; the credentials
//! ride in the webhook URL and are compared in constant time) and the
//! mapping of its records to unified delivery events.

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Id, Str};
use mailplug_sdk::prelude::*;
use serde::Deserialize;

mod adapt;

pub struct Postmark;

impl Plugin for Postmark {
    const ID: &'static str = "postmark";

    fn info() -> Info {
        Info::new("Postmark", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("basic-auth")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is `user:password`, the credentials embedded in the
    /// webhook URL configured at Postmark.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify::basic_auth(request, secret)
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(&request.body)
    }
}

mailplug_sdk::export!(Postmark);

/// The fields of one Postmark record that the mapping reads.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, rename = "RecordType")]
    record_type: Option<Str<'a>>,
    /// Bounce type name (`HardBounce`, `Transient`, ...).
    #[serde(borrow, rename = "Type")]
    bounce_type: Option<Str<'a>>,
    #[serde(borrow, rename = "ID")]
    id: Option<Id<'a>>,
    #[serde(borrow, rename = "MessageID")]
    message_id: Option<Str<'a>>,
    /// Recipient of bounce and spam-complaint records.
    #[serde(borrow, rename = "Email")]
    email: Option<Str<'a>>,
    /// Recipient of delivery, open, click and subscription records.
    #[serde(borrow, rename = "Recipient")]
    recipient: Option<Str<'a>>,
    #[serde(borrow, rename = "BouncedAt")]
    bounced_at: Option<Str<'a>>,
    #[serde(borrow, rename = "DeliveredAt")]
    delivered_at: Option<Str<'a>>,
    #[serde(borrow, rename = "ReceivedAt")]
    received_at: Option<Str<'a>>,
    #[serde(borrow, rename = "ChangedAt")]
    changed_at: Option<Str<'a>>,
    #[serde(borrow, rename = "Details")]
    details: Option<Str<'a>>,
    #[serde(rename = "SuppressSending")]
    suppress_sending: Option<bool>,
}

/// Unified kind of a bounce record's `Type`; `None` for the types with no
/// unified kind (auto-responders, address changes, challenge and relay
/// tests, `Unknown`) and for types Postmark may add.
fn bounce_kind(bounce_type: &str) -> Option<(EventKind, Option<BounceClass>)> {
    Some(match bounce_type {
        "HardBounce" => (EventKind::Bounced, Some(BounceClass::Hard)),
        "SoftBounce" => (EventKind::Bounced, Some(BounceClass::Soft)),
        "Transient" | "DnsError" => (EventKind::Deferred, None),
        // Postmark refused to send (suppressed, invalid or blocked address).
        "BadEmailAddress" | "ManuallyDeactivated" | "Blocked" | "DMARCPolicy" => {
            (EventKind::Dropped, None)
        }
        "SpamNotification" | "SpamComplaint" => (EventKind::Complained, None),
        "Unsubscribe" => (EventKind::Unsubscribed, None),
        _ => return None,
    })
}

/// Which record fields hold the recipient and the time for a family.
enum Fields {
    /// Bounce and spam-complaint records: `Email`, `BouncedAt`.
    Bounce,
    /// Delivery: `Recipient`, `DeliveredAt`.
    Delivery,
    /// Open and click: `Recipient`, `ReceivedAt`.
    Engagement,
    /// Subscription change: `Recipient`, `ChangedAt`.
    Subscription,
}

fn required<'s>(value: &'s Option<Str<'_>>, name: &str) -> Result<&'s str, ParseError> {
    value
        .as_deref()
        .ok_or_else(|| ParseError::Invalid(format!("missing `{name}`")))
}

impl Record<'_> {
    /// The unified kind and where its fields live; `None` for records with
    /// no unified kind.
    fn classify(&self) -> Result<Option<(EventKind, Option<BounceClass>, Fields)>, ParseError> {
        let record_type = required(&self.record_type, "RecordType")?;
        Ok(match record_type {
            "Delivery" => Some((EventKind::Delivered, None, Fields::Delivery)),
            "Bounce" => bounce_kind(required(&self.bounce_type, "Type")?)
                .map(|(kind, class)| (kind, class, Fields::Bounce)),
            "SpamComplaint" => Some((EventKind::Complained, None, Fields::Bounce)),
            "Open" => Some((EventKind::Opened, None, Fields::Engagement)),
            "Click" => Some((EventKind::Clicked, None, Fields::Engagement)),
            // A reactivation (`SuppressSending: false`) has no unified kind.
            "SubscriptionChange" if self.suppress_sending == Some(true) => {
                Some((EventKind::Unsubscribed, None, Fields::Subscription))
            }
            _ => None,
        })
    }

    fn convert(self, body: &[u8]) -> Result<Option<DeliveryEvent>, ParseError> {
        let Some((kind, class, fields)) = self.classify()? else {
            host::log_info(&format!(
                "skipping Postmark record {:?} / {:?} (no unified kind)",
                self.record_type.as_deref().unwrap_or(""),
                self.bounce_type.as_deref().unwrap_or("")
            ));
            return Ok(None);
        };
        let (recipient, time) = match fields {
            Fields::Bounce => (
                required(&self.email, "Email")?,
                required(&self.bounced_at, "BouncedAt")?,
            ),
            Fields::Delivery => (
                required(&self.recipient, "Recipient")?,
                required(&self.delivered_at, "DeliveredAt")?,
            ),
            Fields::Engagement => (
                required(&self.recipient, "Recipient")?,
                required(&self.received_at, "ReceivedAt")?,
            ),
            Fields::Subscription => (
                required(&self.recipient, "Recipient")?,
                required(&self.changed_at, "ChangedAt")?,
            ),
        };
        let occurred_at = time::parse_rfc3339(time)
            .ok_or_else(|| ParseError::Invalid(format!("time {time:?} is not ISO 8601")))
            .and_then(|t| limits::unix_seconds("time", t))?;
        let recipient = text(body, limits::id("recipient", recipient)?);
        let event_id = match &self.id {
            Some(id) => Some(text(body, limits::id("ID", id)?)),
            None => None,
        };
        let message_id = match self.message_id.as_deref() {
            Some(id) => Some(text(body, limits::id("MessageID", id)?)),
            None => None,
        };
        // Remote-server text belongs to delivery outcomes only; a complaint or
        // an engagement record carries none.
        let details = match kind {
            EventKind::Delivered
            | EventKind::Deferred
            | EventKind::Bounced
            | EventKind::Dropped => self.details.as_deref().filter(|d| !d.is_empty()),
            _ => None,
        };
        Ok(Some(
            DeliveryEvent::new(kind, recipient, occurred_at)
                .bounce_class(class)
                .event_id(event_id)
                .message_id(message_id)
                .status_from(details)
                .diagnostic(details.map(|d| text_cow(body, limits::diagnostic(d)))),
        ))
    }
}

/// Postmark posts one JSON object per request.
fn parse(body: &[u8]) -> Result<Vec<DeliveryEvent>, ParseError> {
    if json::first_token(body) != Some(b'{') {
        return Err(ParseError::Malformed(
            "Postmark posts one JSON object per request".into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    let record: Record<'_> = json::parse_borrowed(body)?;
    Ok(record.convert(body)?.into_iter().collect())
}
