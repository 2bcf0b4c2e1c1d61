//! SES events (the `Message` of an SNS notification) mapped to unified
//! delivery events: both dialects (identity notifications'
//! `notificationType`, configuration-set event publishing's `eventType`),
//! one event per recipient of a message-level SES event.
//!
//! The SES event is JSON text inside a JSON string, so every value read
//! from it is an owned copy: none lies verbatim in the request body.

use mailplug_sdk::event::limits;
use mailplug_sdk::json::Str;
use mailplug_sdk::prelude::*;
use serde::Deserialize;

/// What SES publishes once when a topic is attached to an identity; plain
/// text, not an event.
pub const SETUP_MESSAGE: &str = "Successfully validated SNS topic for Amazon SES event publishing.";

/// The provider name every event carries (the shared fixtures' spelling).
pub const PROVIDER: &str = "amazon_ses";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(borrow)]
    notification_type: Option<Str<'a>>,
    #[serde(borrow)]
    event_type: Option<Str<'a>>,
    #[serde(borrow)]
    mail: Option<Mail<'a>>,
    #[serde(borrow)]
    bounce: Option<Bounce<'a>>,
    #[serde(borrow)]
    complaint: Option<Recipients<'a>>,
    #[serde(borrow)]
    delivery: Option<Delivery<'a>>,
    #[serde(borrow)]
    reject: Option<Reject<'a>>,
    #[serde(borrow)]
    open: Option<Stamped<'a>>,
    #[serde(borrow)]
    click: Option<Stamped<'a>>,
    #[serde(borrow)]
    delivery_delay: Option<Recipients<'a>>,
    #[serde(borrow)]
    subscription: Option<Stamped<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail<'a> {
    /// When SES accepted the message (the time of a `Reject`).
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
    /// SES's message id (SendEmail's MessageId).
    #[serde(borrow)]
    message_id: Option<Str<'a>>,
    /// Every envelope recipient.
    #[serde(borrow)]
    destination: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    common_headers: Option<CommonHeaders<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonHeaders<'a> {
    /// Our Message-ID as the message was submitted (SES rewrites the
    /// header it sends, `mail.messageId@<region>.amazonses.com`).
    #[serde(borrow)]
    message_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce<'a> {
    #[serde(borrow)]
    bounce_type: Option<Str<'a>>,
    #[serde(borrow)]
    bounce_sub_type: Option<Str<'a>>,
    #[serde(borrow)]
    bounced_recipients: Option<Vec<Recipient<'a>>>,
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
}

/// `complaint` (`complainedRecipients`) and `deliveryDelay`
/// (`delayedRecipients`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipients<'a> {
    #[serde(borrow, alias = "complainedRecipients", alias = "delayedRecipients")]
    recipients: Option<Vec<Recipient<'a>>>,
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient<'a> {
    #[serde(borrow)]
    email_address: Option<Str<'a>>,
    /// RFC 3463 enhanced status (bounces and delays).
    #[serde(borrow)]
    status: Option<Str<'a>>,
    /// The remote server's reply, e.g. `smtp; 550 5.1.1 user unknown`.
    #[serde(borrow)]
    diagnostic_code: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery<'a> {
    #[serde(borrow)]
    recipients: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
    #[serde(borrow)]
    smtp_response: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Reject<'a> {
    /// Why SES refused the message (e.g. `Bad content`).
    #[serde(borrow)]
    reason: Option<Str<'a>>,
}

/// `open`, `click` and `subscription`: the time is all the mapping reads
/// (SES does not say which recipient opened or clicked).
#[derive(Deserialize)]
struct Stamped<'a> {
    #[serde(borrow)]
    timestamp: Option<Str<'a>>,
}

/// What an SNS notification's `Message` comes to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Unified events (at least one).
    Events(Vec<DeliveryEvent>),
    /// Nothing to store; why, for the log.
    Skipped(String),
}

fn invalid(message: String) -> ParseError {
    ParseError::Invalid(message)
}

fn timestamp(value: &Option<Str<'_>>, field: &str) -> Result<i64, ParseError> {
    let text = value
        .as_deref()
        .ok_or_else(|| invalid(format!("missing `{field}`")))?;
    time::rfc3339(text, field)
}

/// A non-empty list the event fans out over.
fn list<'s, T>(value: &'s Option<Vec<T>>, field: &str) -> Result<&'s [T], ParseError> {
    match value.as_deref() {
        None => Err(invalid(format!("missing `{field}`"))),
        Some([]) => Err(invalid(format!("`{field}` is empty"))),
        Some(items) => Ok(items),
    }
}

/// A field that is absent, `null` or empty counts as absent.
fn present<'s>(value: &'s Option<Str<'_>>) -> Option<&'s str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

/// The unified kind and class of a bounce: SES never tried a suppressed
/// address (`dropped`); otherwise the bounce type says hard / soft / unknown.
fn bounce_kind(bounce_type: &str, sub_type: Option<&str>) -> (EventKind, Option<BounceClass>) {
    if matches!(sub_type, Some("Suppressed" | "OnAccountSuppressionList")) {
        return (EventKind::Dropped, None);
    }
    match bounce_type {
        "Permanent" => (EventKind::Bounced, Some(BounceClass::Hard)),
        "Transient" => (EventKind::Bounced, Some(BounceClass::Soft)),
        // "Undetermined": SES could not tell.
        _ => (EventKind::Bounced, None),
    }
}

/// The message-level fields every event of one SES event shares.
struct Common<'b> {
    body: &'b [u8],
    sns_message_id: &'b str,
    provider_message_id: Option<String>,
    our_message_id: Option<String>,
}

impl Common<'_> {
    fn event(
        &self,
        kind: EventKind,
        recipient: &str,
        field: &str,
        at: i64,
    ) -> Result<DeliveryEvent, ParseError> {
        let recipient = limits::id(field, recipient)?;
        Ok(DeliveryEvent::new(kind, recipient, at)
            .provider(PROVIDER)
            .event_id(text(self.body, self.sns_message_id))
            .message_id(self.provider_message_id.clone())
            .our_message_id(self.our_message_id.clone()))
    }

    /// An event per entry of `recipients` (`field`), with each entry's
    /// enhanced status and remote reply when `with_reply`.
    fn per_recipient(
        &self,
        recipients: &[Recipient<'_>],
        field: &str,
        at: i64,
        (kind, class): (EventKind, Option<BounceClass>),
        with_reply: bool,
    ) -> Result<Vec<DeliveryEvent>, ParseError> {
        recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let address = r
                    .email_address
                    .as_deref()
                    .ok_or_else(|| invalid(format!("missing `{field}[{i}].emailAddress`")))?;
                let status =
                    present(&r.status).filter(|s| with_reply && smtp::is_enhanced_status(s));
                let diagnostic = present(&r.diagnostic_code).filter(|_| with_reply);
                Ok(self
                    .event(kind, address, &format!("{field}[{i}].emailAddress"), at)?
                    .bounce_class(class)
                    .smtp(None::<&str>, status)
                    .status_from(diagnostic)
                    .diagnostic(diagnostic.map(limits::diagnostic)))
            })
            .collect()
    }

    /// An event per address of a plain list (`delivery.recipients`,
    /// `mail.destination`).
    fn per_address(
        &self,
        addresses: &[Str<'_>],
        field: &str,
        at: i64,
        kind: EventKind,
        diagnostic: Option<&str>,
    ) -> Result<Vec<DeliveryEvent>, ParseError> {
        addresses
            .iter()
            .enumerate()
            .map(|(i, address)| {
                Ok(self
                    .event(kind, address, &format!("{field}[{i}]"), at)?
                    .status_from(diagnostic)
                    .diagnostic(diagnostic.map(limits::diagnostic)))
            })
            .collect()
    }
}

fn optional_id(field: &str, value: Option<&str>) -> Result<Option<String>, ParseError> {
    value
        .map(|v| limits::id(field, v).map(str::to_owned))
        .transpose()
}

/// The unified events of an SNS notification's `Message` (`message`);
/// `sns_message_id` lies in `body`, the other values are copies.
pub fn events(message: &str, body: &[u8], sns_message_id: &str) -> Result<Outcome, ParseError> {
    if json::first_token(message.as_bytes()) != Some(b'{') {
        if message.trim() == SETUP_MESSAGE {
            return Ok(Outcome::Skipped(
                "SES setup notification (topic validated)".into(),
            ));
        }
        return Err(ParseError::Malformed(
            "the SNS Message is not an SES event (a JSON object)".into(),
        ));
    }
    json::check_depth(message.as_bytes(), json::DEFAULT_MAX_DEPTH)?;
    let event: Event<'_> = json::parse_borrowed(message.as_bytes())
        .map_err(|e| ParseError::Malformed(format!("SNS Message: {}", super::error_text(e))))?;
    let name = match (
        event.event_type.as_deref(),
        event.notification_type.as_deref(),
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(format!(
                "eventType {a:?} and notificationType {b:?} disagree"
            )));
        }
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) => {
            return Err(invalid(
                "missing `eventType` (or `notificationType`)".into(),
            ));
        }
    };
    let mail = event
        .mail
        .as_ref()
        .ok_or_else(|| invalid("missing `mail`".into()))?;
    let common = Common {
        body,
        sns_message_id,
        provider_message_id: optional_id("mail.messageId", present(&mail.message_id))?,
        our_message_id: optional_id(
            "mail.commonHeaders.messageId",
            mail.common_headers
                .as_ref()
                .and_then(|h| present(&h.message_id)),
        )?,
    };
    let missing = |field: &str| invalid(format!("missing `{field}`"));
    let events = match name {
        "Bounce" => {
            let b = event.bounce.as_ref().ok_or_else(|| missing("bounce"))?;
            let bounce_type = b
                .bounce_type
                .as_deref()
                .ok_or_else(|| missing("bounce.bounceType"))?;
            let at = timestamp(&b.timestamp, "bounce.timestamp")?;
            let recipients = list(&b.bounced_recipients, "bounce.bouncedRecipients")?;
            let kind = bounce_kind(bounce_type, b.bounce_sub_type.as_deref());
            common.per_recipient(recipients, "bounce.bouncedRecipients", at, kind, true)?
        }
        "Complaint" => {
            let c = event
                .complaint
                .as_ref()
                .ok_or_else(|| missing("complaint"))?;
            let at = timestamp(&c.timestamp, "complaint.timestamp")?;
            let recipients = list(&c.recipients, "complaint.complainedRecipients")?;
            // A complaint carries no remote reply.
            let kind = (EventKind::Complained, None);
            common.per_recipient(
                recipients,
                "complaint.complainedRecipients",
                at,
                kind,
                false,
            )?
        }
        "DeliveryDelay" => {
            let d = event
                .delivery_delay
                .as_ref()
                .ok_or_else(|| missing("deliveryDelay"))?;
            let at = timestamp(&d.timestamp, "deliveryDelay.timestamp")?;
            let recipients = list(&d.recipients, "deliveryDelay.delayedRecipients")?;
            let kind = (EventKind::Deferred, None);
            common.per_recipient(
                recipients,
                "deliveryDelay.delayedRecipients",
                at,
                kind,
                true,
            )?
        }
        "Delivery" => {
            let d = event.delivery.as_ref().ok_or_else(|| missing("delivery"))?;
            let at = timestamp(&d.timestamp, "delivery.timestamp")?;
            let recipients = list(&d.recipients, "delivery.recipients")?;
            let reply = present(&d.smtp_response);
            common.per_address(
                recipients,
                "delivery.recipients",
                at,
                EventKind::Delivered,
                reply,
            )?
        }
        "Reject" => {
            let r = event.reject.as_ref().ok_or_else(|| missing("reject"))?;
            // The reject object has no time of its own: SES refuses the
            // message when it is submitted.
            let at = timestamp(&mail.timestamp, "mail.timestamp")?;
            let recipients = list(&mail.destination, "mail.destination")?;
            let reason = present(&r.reason);
            common.per_address(
                recipients,
                "mail.destination",
                at,
                EventKind::Dropped,
                reason,
            )?
        }
        "Open" | "Click" | "Subscription" => {
            let (stamped, field, kind) = match name {
                "Open" => (&event.open, "open", EventKind::Opened),
                "Click" => (&event.click, "click", EventKind::Clicked),
                _ => (&event.subscription, "subscription", EventKind::Unsubscribed),
            };
            let s = stamped.as_ref().ok_or_else(|| missing(field))?;
            let at = timestamp(&s.timestamp, &format!("{field}.timestamp"))?;
            let recipients = list(&mail.destination, "mail.destination")?;
            common.per_address(recipients, "mail.destination", at, kind, None)?
        }
        // Send, Rendering Failure, and types SES may add.
        other => {
            return Ok(Outcome::Skipped(format!(
                "SES event {other:?} has no unified kind"
            )));
        }
    };
    if events.len() > limits::MAX_EVENTS {
        return Err(invalid(format!(
            "{} recipients exceed the {} events of one request",
            events.len(),
            limits::MAX_EVENTS
        )));
    }
    Ok(Outcome::Events(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(t: &Option<Text>) -> Option<&str> {
        match t {
            Some(Text::Owned(s)) => Some(s),
            _ => None,
        }
    }

    fn run(message: &str) -> Result<Outcome, ParseError> {
        events(message, b"m-1", "m-1")
    }

    fn parsed(message: &str) -> Vec<DeliveryEvent> {
        match run(message) {
            Ok(Outcome::Events(events)) => events,
            other => panic!("{other:?}"),
        }
    }

    const MAIL: &str = r#""mail":{"timestamp":"2026-01-01T11:58:00.512Z","messageId":"ses-1","destination":["a@example.com","b@example.org"],"commonHeaders":{"messageId":"<ours@example.test>"}}"#;

    #[test]
    fn bounce_kinds_follow_type_and_subtype() {
        assert_eq!(
            bounce_kind("Permanent", Some("General")),
            (EventKind::Bounced, Some(BounceClass::Hard))
        );
        assert_eq!(
            bounce_kind("Transient", Some("MailboxFull")),
            (EventKind::Bounced, Some(BounceClass::Soft))
        );
        assert_eq!(
            bounce_kind("Undetermined", None),
            (EventKind::Bounced, None)
        );
        assert_eq!(
            bounce_kind("Permanent", Some("Suppressed")),
            (EventKind::Dropped, None)
        );
        assert_eq!(
            bounce_kind("Permanent", Some("OnAccountSuppressionList")),
            (EventKind::Dropped, None)
        );
    }

    #[test]
    fn a_bounce_fans_out_with_explicit_status_and_codes_from_the_reply() {
        let message = format!(
            r#"{{"eventType":"Bounce","bounce":{{"bounceType":"Transient","bounceSubType":"MailboxFull","timestamp":"2026-01-01T11:58:30.999Z","bouncedRecipients":[{{"emailAddress":"a@example.com","status":"4.2.2","diagnosticCode":"smtp; 452 4.2.2 full"}},{{"emailAddress":"b@example.org","status":"junk"}}]}},{MAIL}}}"#
        );
        let events = parsed(&message);
        assert_eq!(events.len(), 2);
        let (a, b) = (&events[0], &events[1]);
        assert_eq!(
            (a.kind, a.bounce_class),
            (EventKind::Bounced, Some(BounceClass::Soft))
        );
        assert_eq!(a.occurred_at, 1_767_268_710);
        assert_eq!(owned(&a.smtp_status), Some("452"));
        assert_eq!(owned(&a.enhanced_status), Some("4.2.2"));
        assert_eq!(owned(&a.diagnostic), Some("smtp; 452 4.2.2 full"));
        assert_eq!(a.provider_event_id, Some(Text::Span((0, 3))));
        assert_eq!(owned(&a.provider_message_id), Some("ses-1"));
        assert_eq!(owned(&a.message_id), Some("<ours@example.test>"));
        assert_eq!(a.provider, Text::Owned(PROVIDER.into()));
        assert!(b.smtp_status.is_none() && b.enhanced_status.is_none() && b.diagnostic.is_none());
    }

    #[test]
    fn engagement_and_reject_use_the_destination_list() {
        let open = format!(
            r#"{{"eventType":"Open","open":{{"timestamp":"2026-01-01T12:00:00Z"}},{MAIL}}}"#
        );
        let events = parsed(&open);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventKind::Opened);
        let reject =
            format!(r#"{{"eventType":"Reject","reject":{{"reason":"Bad content"}},{MAIL}}}"#);
        let events = parsed(&reject);
        assert_eq!(events[0].kind, EventKind::Dropped);
        assert_eq!(events[0].occurred_at, 1_767_268_680);
        assert_eq!(owned(&events[0].diagnostic), Some("Bad content"));
    }

    #[test]
    fn types_without_a_kind_and_the_setup_text_are_skipped() {
        for name in ["Send", "Rendering Failure", "Received"] {
            let message = format!(r#"{{"eventType":"{name}",{MAIL}}}"#);
            assert!(matches!(run(&message), Ok(Outcome::Skipped(_))), "{name}");
        }
        assert!(matches!(run(SETUP_MESSAGE), Ok(Outcome::Skipped(_))));
        assert!(matches!(run("hello"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            run("{\"eventType\":"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn missing_fields_are_named() {
        let cases = [
            (
                format!(r#"{{{MAIL}}}"#),
                "missing `eventType` (or `notificationType`)",
            ),
            (
                format!(r#"{{"eventType":"Delivery",{MAIL}}}"#),
                "missing `delivery`",
            ),
            (
                format!(
                    r#"{{"eventType":"Bounce","bounce":{{"bounceType":"Permanent","timestamp":"2026-01-01T12:00:00Z"}},{MAIL}}}"#
                ),
                "missing `bounce.bouncedRecipients`",
            ),
            (
                format!(
                    r#"{{"eventType":"Delivery","delivery":{{"timestamp":"2026-01-01T12:00:00Z","recipients":[]}},{MAIL}}}"#
                ),
                "`delivery.recipients` is empty",
            ),
            (
                format!(
                    r#"{{"eventType":"Complaint","complaint":{{"timestamp":"2026-01-01T12:00:00Z","complainedRecipients":[{{}}]}},{MAIL}}}"#
                ),
                "missing `complaint.complainedRecipients[0].emailAddress`",
            ),
            (
                format!(r#"{{"eventType":"Open","notificationType":"Click",{MAIL}}}"#),
                "eventType \"Open\" and notificationType \"Click\" disagree",
            ),
        ];
        for (message, want) in cases {
            assert_eq!(
                run(&message),
                Err(ParseError::Invalid(want.into())),
                "{message}"
            );
        }
    }
}
