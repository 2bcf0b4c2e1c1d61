//! First-party plugin `brevo`: Brevo's (ex-Sendinblue) SMTP relay, its
//! transactional webhooks authenticated by a bearer token or by HTTP basic
//! auth in the webhook URL (Brevo signs nothing; either credential is
//! compared in constant time), and the mapping of its events to unified
//! delivery events.
//!
//! Brevo posts one JSON object per event, or, on a webhook created with
//! `batched: true`, several events at once; the batch body is not documented
//! and is taken to be a JSON array of the same objects. Both are accepted on
//! every connection, since batching is a setting at Brevo this plugin cannot
//! see. Events carry no event id (`id` is the webhook's), so the host
//! de-duplicates them on their content.

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Object, Str};
use mailplug_sdk::prelude::*;
use serde::Deserialize;

mod adapt;

pub struct Brevo;

impl Plugin for Brevo {
    const ID: &'static str = "brevo";

    fn info() -> Info {
        Info::new("Brevo", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("bearer-or-basic-auth")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is `user:password` (it holds a colon) for basic auth
    /// in the webhook URL, otherwise the webhook's bearer token.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        match auth_scheme(secret)? {
            Auth::Basic => verify::basic_auth(request, secret),
            Auth::Bearer => verify::bearer(request, secret),
        }
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(&request.body)
    }
}

mailplug_sdk::export!(Brevo);

/// Which credential `webhook.secret` is.
#[derive(Debug, PartialEq, Eq)]
enum Auth {
    /// `user:password` embedded in the webhook URL (`Authorization: Basic`).
    Basic,
    /// The webhook's `auth: {type: bearer, token}` (`Authorization: Bearer`).
    Bearer,
}

/// A secret with a colon is basic-auth `user:password` (both parts needed);
/// any other is a bearer token. Brevo lets the operator choose the token,
/// so a token never needs a colon.
fn auth_scheme(secret: &str) -> Result<Auth, VerifyError> {
    match secret.split_once(':') {
        None => Ok(Auth::Bearer),
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Auth::Basic),
        Some(_) => Err(VerifyError::Malformed(
            "webhook secret with a colon is basic auth and must be user:password, \
             both non-empty (a bearer token has no colon)"
                .into(),
        )),
    }
}

/// The fields of one Brevo event that the mapping reads.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event: Option<Str<'a>>,
    #[serde(borrow)]
    email: Option<Str<'a>>,
    /// Milliseconds since the epoch, UTC: the event time Brevo keeps in UTC
    /// (`date` is in the account's CET/CEST, `ts` has been seen offset).
    ts_epoch: Option<serde_json::Number>,
    /// Seconds since the epoch, documented as UTC; used only without `ts_epoch`.
    ts_event: Option<serde_json::Number>,
    /// Brevo's message id, Message-ID style with angle brackets.
    #[serde(borrow, rename = "message-id")]
    message_id: Option<Str<'a>>,
    /// The receiving server's text on bounces, deferrals and blocks.
    #[serde(borrow)]
    reason: Option<Str<'a>>,
    /// Only inbound-parse payloads have it (`{"items": [...]}`): named in
    /// the error so a mixed-up webhook URL is easy to see.
    items: Option<serde::de::IgnoredAny>,
}

/// Unified kind of a Brevo event name; `None` for the names without one
/// (`request` = sent, `error`) and names Brevo may add. Case and
/// underscores are ignored: payloads say `hard_bounce`, the webhook API
/// and newer docs `hardBounce`.
fn kind(event: &str) -> Option<(EventKind, Option<BounceClass>)> {
    let name: String = event
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match name.as_str() {
        "delivered" => (EventKind::Delivered, None),
        "hardbounce" => (EventKind::Bounced, Some(BounceClass::Hard)),
        "softbounce" => (EventKind::Bounced, Some(BounceClass::Soft)),
        "deferred" => (EventKind::Deferred, None),
        // Brevo refused to try: blocked sender/recipient, invalid address.
        "blocked" | "invalidemail" | "invalid" => (EventKind::Dropped, None),
        "spam" | "complaint" => (EventKind::Complained, None),
        "opened" | "uniqueopened" | "proxyopen" | "uniqueproxyopen" => (EventKind::Opened, None),
        "click" => (EventKind::Clicked, None),
        "unsubscribed" | "unsubscribe" => (EventKind::Unsubscribed, None),
        _ => return None,
    })
}

/// Below this, a `ts_epoch` read as milliseconds would fall before
/// 1973-03-03, which no Brevo event does; Brevo's own documented sample
/// carries seconds in `ts_epoch`, so such a value is read as seconds. The
/// two readings cannot be confused for any time between 1973 and 5138.
const MIN_EPOCH_MILLIS: i64 = 100_000_000_000;

/// The integer part of a JSON number (a fraction truncated, the extremes
/// saturated for the range check to refuse).
fn integer_part(field: &str, n: &serde_json::Number) -> Result<i64, ParseError> {
    match n.as_i64() {
        Some(i) => Ok(i),
        None => match n.as_f64().filter(|f| f.is_finite()) {
            Some(f) => Ok(f.trunc() as i64),
            None => Err(invalid(&format!("{field} is not a number"))),
        },
    }
}

/// Unix seconds of the event: `ts_epoch` (milliseconds, truncated to
/// seconds), else `ts_event` (seconds). `date` and `ts` are never used.
fn occurred_at(
    ts_epoch: Option<&serde_json::Number>,
    ts_event: Option<&serde_json::Number>,
) -> Result<i64, ParseError> {
    if let Some(n) = ts_epoch {
        let value = integer_part("ts_epoch", n)?;
        let seconds = if value < MIN_EPOCH_MILLIS {
            value
        } else {
            value.div_euclid(1000)
        };
        return limits::unix_seconds("ts_epoch", seconds);
    }
    match ts_event {
        Some(n) => limits::unix_seconds_from_number("ts_event", n),
        None => Err(invalid("missing `ts_epoch` (and `ts_event`)")),
    }
}

fn invalid(message: &str) -> ParseError {
    ParseError::Invalid(message.to_owned())
}

/// An optional text field without surrounding spaces, `None` when absent,
/// `null` or blank (Brevo's `reason` sometimes starts with a space).
fn present<'s>(value: &'s Option<Str<'_>>) -> Option<&'s str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Event<'_> {
    fn convert(&self, body: &[u8]) -> Result<Option<DeliveryEvent>, ParseError> {
        let Some(name) = self.event.as_deref() else {
            if self.items.is_some() {
                return Err(invalid(
                    "an inbound-parse payload (`items`), not a transactional event: \
                     this endpoint takes Brevo's transactional webhooks",
                ));
            }
            return Err(invalid("missing `event`"));
        };
        let Some((kind, class)) = kind(name) else {
            host::log_info(&format!("skipping Brevo event {name:?} (no unified kind)"));
            return Ok(None);
        };
        let recipient = self
            .email
            .as_deref()
            .ok_or_else(|| invalid("missing `email`"))?;
        let recipient = text(body, limits::id("email", recipient)?);
        let occurred_at = occurred_at(self.ts_epoch.as_ref(), self.ts_event.as_ref())?;
        let message_id = match present(&self.message_id) {
            Some(id) => Some(text(body, limits::id("message-id", id)?)),
            None => None,
        };
        // Remote-server text belongs to delivery outcomes only; complaints
        // and engagement events carry none.
        let diagnostic = match kind {
            EventKind::Deferred | EventKind::Bounced | EventKind::Dropped => present(&self.reason),
            _ => None,
        };
        if kind == EventKind::Deferred
            && diagnostic
                .and_then(smtp::extract_status)
                .is_some_and(|(code, _)| code.starts_with('5'))
        {
            // Brevo retries what it labels deferred; its label is kept.
            host::log_info("Brevo labelled a permanent (5xx) reply as deferred; kept as deferred");
        }
        Ok(Some(
            DeliveryEvent::new(kind, recipient, occurred_at)
                .bounce_class(class)
                .message_id(message_id)
                .status_from(diagnostic)
                .diagnostic(diagnostic.map(|d| text_cow(body, limits::diagnostic(d)))),
        ))
    }
}

/// A bare event object, or an array of them (batched webhooks). A batch is
/// all-or-nothing: a malformed body or a known event missing its recipient
/// or time refuses the request (400); unknown event names are skipped.
fn parse(body: &[u8]) -> Result<Vec<DeliveryEvent>, ParseError> {
    let batched = match json::first_token(body) {
        Some(b'{') => false,
        Some(b'[') => true,
        _ => {
            return Err(ParseError::Malformed(
                "Brevo posts a JSON event object, or an array of them from a batched webhook"
                    .into(),
            ));
        }
    };
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    if !batched {
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
    use super::{Auth, auth_scheme, kind, occurred_at, parse};
    use mailplug_sdk::event::limits;
    use mailplug_sdk::types::{BounceClass, EventKind, ParseError, Text, VerifyError};

    fn number(text: &str) -> serde_json::Number {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn event_names_map_regardless_of_case_and_underscores() {
        let hard = Some((EventKind::Bounced, Some(BounceClass::Hard)));
        assert_eq!(kind("hard_bounce"), hard);
        assert_eq!(kind("hardBounce"), hard);
        assert_eq!(
            kind("softBounce"),
            Some((EventKind::Bounced, Some(BounceClass::Soft)))
        );
        for dropped in ["blocked", "invalid_email", "invalid", "invalidEmail"] {
            assert_eq!(kind(dropped), Some((EventKind::Dropped, None)), "{dropped}");
        }
        for opened in ["opened", "unique_opened", "proxy_open", "uniqueProxyOpen"] {
            assert_eq!(kind(opened), Some((EventKind::Opened, None)), "{opened}");
        }
        assert_eq!(kind("complaint"), Some((EventKind::Complained, None)));
        assert_eq!(kind("unsubscribe"), Some((EventKind::Unsubscribed, None)));
        for none in [
            "request",
            "sent",
            "error",
            "list_addition",
            "",
            "hard bounce",
        ] {
            assert_eq!(kind(none), None, "{none}");
        }
    }

    #[test]
    fn ts_epoch_is_milliseconds_and_ts_event_the_fallback() {
        let ms = number("1767268705123");
        assert_eq!(occurred_at(Some(&ms), None), Ok(1_767_268_705));
        let fractional = number("1767268705999.9");
        assert_eq!(occurred_at(Some(&fractional), None), Ok(1_767_268_705));
        // Seconds in ts_epoch, as in Brevo's documented sample.
        let seconds = number("1767268705");
        assert_eq!(occurred_at(Some(&seconds), Some(&ms)), Ok(1_767_268_705));
        assert_eq!(
            occurred_at(None, Some(&number("1767268709"))),
            Ok(1_767_268_709)
        );
        assert_eq!(
            occurred_at(None, None),
            Err(ParseError::Invalid(
                "missing `ts_epoch` (and `ts_event`)".into()
            ))
        );
        for bad in ["-1", "-1767268705123", "1e300", "18446744073709551615"] {
            assert!(
                matches!(
                    occurred_at(Some(&number(bad)), None),
                    Err(ParseError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(occurred_at(None, Some(&number("-5"))).is_err());
    }

    #[test]
    fn a_colon_makes_the_secret_basic_auth() {
        assert_eq!(
            auth_scheme("brevo-test-bearer-token-4d9c1a"),
            Ok(Auth::Bearer)
        );
        assert_eq!(
            auth_scheme("brevo-hook:brevo-test-password-7e2b"),
            Ok(Auth::Basic)
        );
        assert_eq!(auth_scheme("user:pass:word"), Ok(Auth::Basic));
        for bad in [":password", "user:", ":"] {
            assert!(
                matches!(auth_scheme(bad), Err(VerifyError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn batches_beyond_the_host_limit_are_refused_whole() {
        let body = format!("[{}]", vec!["{}"; limits::MAX_EVENTS + 1].join(","));
        assert!(
            matches!(parse(body.as_bytes()), Err(ParseError::Invalid(m)) if m.contains("limit")),
        );
    }

    fn span<'b>(body: &'b [u8], t: &Option<Text>) -> Option<&'b str> {
        match t {
            Some(Text::Span((offset, len))) => {
                std::str::from_utf8(&body[*offset as usize..(*offset + *len) as usize]).ok()
            }
            _ => None,
        }
    }

    #[test]
    fn fields_are_spans_of_the_body_and_reason_is_trimmed() {
        let body = br#"{"event":"soft_bounce","email":"a@example.com","ts_epoch":1767268705123,"message-id":"<1@smtp-relay.mailin.fr>","reason":" 452 4.2.2 Mailbox full"}"#;
        let events = parse(body).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.kind, e.bounce_class),
            (EventKind::Bounced, Some(BounceClass::Soft))
        );
        assert_eq!(e.occurred_at, 1_767_268_705);
        assert_eq!(
            span(body, &Some(e.recipient.clone())),
            Some("a@example.com")
        );
        assert_eq!(
            span(body, &e.provider_message_id),
            Some("<1@smtp-relay.mailin.fr>")
        );
        assert_eq!(span(body, &e.diagnostic), Some("452 4.2.2 Mailbox full"));
        assert_eq!(e.provider_event_id, None);
    }

    #[test]
    fn engagement_events_carry_no_diagnostic() {
        let body = br#"[{"event":"spam","email":"a@example.com","ts_epoch":1767268705123,"reason":"550 5.7.1 abuse"},{"event":"click","email":"b@example.com","ts_event":1767268706}]"#;
        let events = parse(body).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Complained);
        assert_eq!(
            (events[0].diagnostic.clone(), events[0].smtp_status.clone()),
            (None, None)
        );
        assert_eq!(events[1].kind, EventKind::Clicked);
        assert_eq!(events[1].occurred_at, 1_767_268_706);
    }

    #[test]
    fn shapes_and_missing_fields_are_refused() {
        let body = br#"[{"event":"opened","email":"a@example.com","ts_epoch":1767268705123},{"event":"click","ts_epoch":1767268705123}]"#;
        assert_eq!(
            parse(body),
            Err(ParseError::Invalid("event 1: missing `email`".into()))
        );
        assert!(matches!(
            parse(b"\"delivered\""),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(parse(b"[]"), Ok(Vec::new()));
        let fields = br#"[["opened","a@example.com",1767268705123]]"#;
        assert!(matches!(parse(fields), Err(ParseError::Malformed(_))));
        let inbound = br#"{"items":[{"Uuid":["x"]}]}"#;
        assert!(matches!(parse(inbound), Err(ParseError::Invalid(m)) if m.contains("inbound")));
        let twice = br#"{"event":"opened","email":"a@example.com","email":"b@example.com","ts_epoch":1767268705123}"#;
        assert!(matches!(parse(twice), Err(ParseError::Malformed(_))));
    }
}
