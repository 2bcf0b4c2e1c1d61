//! First-party plugin `mailjet`: Mailjet's SMTP relay, its Event API
//! webhooks authenticated by HTTP basic auth (Mailjet signs nothing; the
//! credentials ride in the callback URL and are compared in constant time)
//! and the mapping of its events to unified delivery events.
//!
//! Mailjet posts one bare JSON object per event, or an array of events when
//! the callback groups them (Event API "Version 2"); both are accepted on
//! every connection, since the grouping is a setting at Mailjet this plugin
//! cannot see. Events carry no event id, so the host de-duplicates them on
//! their content.

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Id, Object, Str};
use mailplug_sdk::prelude::*;
use serde::Deserialize;

mod adapt;

pub struct Mailjet;

impl Plugin for Mailjet {
    const ID: &'static str = "mailjet";

    fn info() -> Info {
        Info::new("Mailjet", env!("CARGO_PKG_VERSION"))
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
    /// event callback URL configured at Mailjet.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify::basic_auth(request, secret)
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(&request.body)
    }
}

mailplug_sdk::export!(Mailjet);

/// The fields of one Mailjet event that the mapping reads.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event: Option<Str<'a>>,
    /// Unix seconds of the event itself.
    time: Option<serde_json::Number>,
    #[serde(borrow)]
    email: Option<Str<'a>>,
    /// Mailjet's message id: a 64-bit integer above 2^53, kept exact (an
    /// integer or a string, never a double).
    #[serde(borrow, rename = "MessageID")]
    message_id: Option<Id<'a>>,
    /// The same id as a string (deprecated; `sent` events of grouped
    /// callbacks may carry only this one).
    #[serde(borrow)]
    mj_message_id: Option<Id<'a>>,
    /// On `bounce`: whether the error is permanent.
    hard_bounce: Option<bool>,
    /// On `bounce` and `blocked`: Mailjet's error name (`user unknown`,
    /// `greylisted`, `preblocked`, ...).
    #[serde(borrow)]
    error: Option<Str<'a>>,
    /// On `sent`: the receiving server's reply, e.g. `sent (250 2.0.0 OK ...)`.
    #[serde(borrow)]
    smtp_reply: Option<Str<'a>>,
}

/// Unified kind of a Mailjet event; `None` for names Mailjet may add.
///
/// A greylisted bounce that is not permanent is retried by Mailjet ("delivery
/// will be re-attempted"), so it is `deferred`, as django-anymail reads it. A
/// bounce without `hard_bounce` has no class: Mailjet does not say.
fn kind(
    event: &str,
    hard_bounce: Option<bool>,
    error: Option<&str>,
) -> Option<(EventKind, Option<BounceClass>)> {
    let greylisted = error.is_some_and(|e| e.trim().eq_ignore_ascii_case("greylisted"));
    Some(match event {
        "sent" => (EventKind::Delivered, None),
        "bounce" => match hard_bounce {
            Some(true) => (EventKind::Bounced, Some(BounceClass::Hard)),
            _ if greylisted => (EventKind::Deferred, None),
            Some(false) => (EventKind::Bounced, Some(BounceClass::Soft)),
            None => (EventKind::Bounced, None),
        },
        // Mailjet refused to try (preblocked, duplicate in campaign, ...).
        "blocked" => (EventKind::Dropped, None),
        "spam" => (EventKind::Complained, None),
        "open" => (EventKind::Opened, None),
        "click" => (EventKind::Clicked, None),
        "unsub" => (EventKind::Unsubscribed, None),
        _ => return None,
    })
}

fn invalid(message: &str) -> ParseError {
    ParseError::Invalid(message.to_owned())
}

/// An optional text field, `None` when absent, `null` or empty (Mailjet
/// sends `""` for fields it has no value for).
fn present<'s>(value: &'s Option<Str<'_>>) -> Option<&'s str> {
    value.as_deref().filter(|v| !v.is_empty())
}

impl Event<'_> {
    fn convert(&self, body: &[u8]) -> Result<Option<DeliveryEvent>, ParseError> {
        let name = self
            .event
            .as_deref()
            .ok_or_else(|| invalid("missing `event`"))?;
        let Some((kind, class)) = kind(name, self.hard_bounce, self.error.as_deref()) else {
            host::log_info(&format!(
                "skipping Mailjet event {name:?} (no unified kind)"
            ));
            return Ok(None);
        };
        let recipient = self
            .email
            .as_deref()
            .ok_or_else(|| invalid("missing `email`"))?;
        let recipient = text(body, limits::id("email", recipient)?);
        let occurred_at = self
            .time
            .as_ref()
            .ok_or_else(|| invalid("missing `time`"))
            .and_then(|n| limits::unix_seconds_from_number("time", n))?;
        let message_id = [
            ("MessageID", &self.message_id),
            ("mj_message_id", &self.mj_message_id),
        ]
        .into_iter()
        .find_map(|(field, id)| {
            id.as_ref()
                .filter(|id| !id.is_empty())
                .map(|id| (field, id))
        });
        let message_id = match message_id {
            Some((field, id)) => Some(text(body, limits::id(field, id)?)),
            None => None,
        };
        // Remote-server text belongs to delivery outcomes only: the reply on
        // `sent`, Mailjet's error name on `bounce` and `blocked` (the reply if
        // an error event ever carries no error). Complaints and engagement
        // events carry none.
        let diagnostic = match kind {
            EventKind::Delivered => present(&self.smtp_reply),
            EventKind::Deferred | EventKind::Bounced | EventKind::Dropped => {
                present(&self.error).or(present(&self.smtp_reply))
            }
            _ => None,
        };
        Ok(Some(
            DeliveryEvent::new(kind, recipient, occurred_at)
                .bounce_class(class)
                .message_id(message_id)
                .status_from(diagnostic)
                .diagnostic(diagnostic.map(|d| text_cow(body, limits::diagnostic(d)))),
        ))
    }
}

/// A bare event object, or an array of them (grouped callbacks). A batch is
/// all-or-nothing: a malformed body or a known event missing its recipient
/// or time refuses the request (400); unknown event names are skipped.
fn parse(body: &[u8]) -> Result<Vec<DeliveryEvent>, ParseError> {
    let grouped = match json::first_token(body) {
        Some(b'{') => false,
        Some(b'[') => true,
        _ => {
            return Err(ParseError::Malformed(
                "Mailjet posts a JSON event object, or an array of them when events are grouped"
                    .into(),
            ));
        }
    };
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    if !grouped {
        let event: Event<'_> = json::parse_borrowed(body)?;
        return Ok(event.convert(body)?.into_iter().collect());
    }
    let items: Vec<Object<Event<'_>>> = json::parse_borrowed(body)?;
    if items.len() > limits::MAX_EVENTS {
        return Err(ParseError::Invalid(format!(
            "{} events in one request (limit {})",
            items.len(),
            limits::MAX_EVENTS
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, Object(item)) in items.iter().enumerate() {
        let converted = item.convert(body).map_err(|e| match e {
            ParseError::Invalid(m) => ParseError::Invalid(format!("event {i}: {m}")),
            ParseError::Malformed(m) => ParseError::Malformed(format!("event {i}: {m}")),
        })?;
        events.extend(converted);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::{kind, parse};
    use mailplug_sdk::event::limits;
    use mailplug_sdk::types::{BounceClass, EventKind, ParseError, Text};

    #[test]
    fn bounces_split_by_hard_bounce_and_greylisting() {
        let hard = Some((EventKind::Bounced, Some(BounceClass::Hard)));
        let soft = Some((EventKind::Bounced, Some(BounceClass::Soft)));
        let deferred = Some((EventKind::Deferred, None));
        assert_eq!(kind("bounce", Some(true), Some("user unknown")), hard);
        assert_eq!(kind("bounce", Some(false), Some("quota exceeded")), soft);
        assert_eq!(kind("bounce", Some(false), Some("greylisted")), deferred);
        assert_eq!(kind("bounce", None, Some("Greylisted ")), deferred);
        assert_eq!(kind("bounce", Some(true), Some("greylisted")), hard);
        assert_eq!(kind("bounce", None, None), Some((EventKind::Bounced, None)));
        // Greylisting changes bounces only.
        assert_eq!(
            kind("blocked", None, Some("greylisted")),
            Some((EventKind::Dropped, None))
        );
        assert_eq!(kind("Sent", None, None), None);
        assert_eq!(kind("inbound", None, None), None);
    }

    #[test]
    fn batches_beyond_the_host_limit_are_refused_whole() {
        let body = format!("[{}]", vec!["{}"; limits::MAX_EVENTS + 1].join(","));
        assert!(
            matches!(parse(body.as_bytes()), Err(ParseError::Invalid(m)) if m.contains("limit")),
        );
    }

    fn owned(t: &Option<Text>) -> Option<&str> {
        match t {
            Some(Text::Owned(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn integer_message_ids_beyond_2_pow_53_stay_exact() {
        let body = br#"{"event":"open","time":1767268800,"email":"a@example.com","MessageID":9223372036854775807}"#;
        let events = parse(body).unwrap();
        assert_eq!(
            owned(&events[0].provider_message_id),
            Some("9223372036854775807")
        );
        let body = br#"{"event":"open","time":1767268800,"email":"a@example.com","MessageID":18446744073709551616}"#;
        assert!(matches!(parse(body), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn string_ids_and_recipients_are_spans_of_the_body() {
        let body = br#"[{"event":"spam","time":1767268800.9,"email":"a@example.com","MessageID":"","mj_message_id":"1152921504606846977"}]"#;
        let events = parse(body).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].occurred_at, 1_767_268_800);
        let span = |t: &Option<Text>| match t {
            Some(Text::Span((offset, len))) => {
                std::str::from_utf8(&body[*offset as usize..(*offset + *len) as usize]).ok()
            }
            _ => None,
        };
        assert_eq!(
            span(&events[0].provider_message_id),
            Some("1152921504606846977")
        );
        assert_eq!(
            span(&Some(events[0].recipient.clone())),
            Some("a@example.com")
        );
    }

    #[test]
    fn batch_errors_name_the_event() {
        let body =
            br#"[{"event":"open","time":1,"email":"a@example.com"},{"event":"click","time":1}]"#;
        assert_eq!(
            parse(body),
            Err(ParseError::Invalid("event 1: missing `email`".into()))
        );
        assert!(matches!(parse(b"\"sent\""), Err(ParseError::Malformed(_))));
        assert_eq!(parse(b"[]"), Ok(Vec::new()));
        // A derived struct would take an array of its fields in order.
        let fields = br#"[["open",1,"a@example.com",null,null,null,null,null]]"#;
        assert!(matches!(parse(fields), Err(ParseError::Malformed(_))));
    }
}
