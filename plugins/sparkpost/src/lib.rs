//! First-party plugin `sparkpost`: SparkPost's (Bird's) SMTP relay, its event
//! webhooks authenticated by HTTP basic auth or an OAuth 2.0 bearer token
//! (SparkPost signs nothing; either credential is compared in constant
//! time), and the mapping of its events to unified delivery events.
//!
//! SparkPost posts a JSON array of wrappers `{"msys": {"<class>": {...}}}`,
//! up to a thousand and more per request; the array is parsed in one pass
//! into borrowed fields (strings without escapes become spans of the body),
//! and fields this plugin does not read are skipped unparsed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Id, Str};
use mailplug_sdk::prelude::*;

mod adapt;
mod wire;

use mailplug_sdk::json::Object;
use wire::{Element, Entry, Event, RawTime};

/// A `webhook.secret` starting with this is a bearer token (the webhook's
/// `auth_type: oauth2`); any other secret is basic auth's `user:password`.
pub const BEARER_PREFIX: &str = "bearer:";

pub struct SparkPost;

impl Plugin for SparkPost {
    const ID: &'static str = "sparkpost";

    fn info() -> Info {
        Info::new("SparkPost", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("basic-auth-or-bearer")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is `user:password` (the webhook's `auth_type: basic`)
    /// or `bearer:TOKEN` (`auth_type: oauth2`: SparkPost sends the token its
    /// token endpoint handed out as `Authorization: Bearer TOKEN`).
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        match secret.strip_prefix(BEARER_PREFIX) {
            Some(token) => verify::bearer(request, token),
            None => verify::basic_auth(request, secret),
        }
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let parsed = parse(&request.body)?;
        if !parsed.skipped.is_empty() {
            let list: Vec<String> = parsed
                .skipped
                .iter()
                .map(|((class, kind), n)| format!("{class}/{kind} x{n}"))
                .collect();
            host::log_info(&format!(
                "skipped SparkPost events without a unified kind: {}",
                list.join(", ")
            ));
        }
        Ok(parsed.events)
    }
}

mailplug_sdk::export!(SparkPost);

/// What one SparkPost event becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    Event(EventKind, Option<BounceClass>),
    /// No unified kind (injection, generation_failure, not-spam feedback, ...).
    Skip,
}

/// Unified kind and class of a `bounce` / `out_of_band` by SparkPost's
/// bounce classification code: Hard → hard; Soft and Block (usually
/// temporary blocks) → soft; Admin (failed by SparkPost's own policy) →
/// dropped; Undetermined (1), a code not in the table, or none → no class.
fn bounce(class: Option<&str>) -> Mapping {
    let code = class.and_then(|c| c.trim().parse::<u32>().ok());
    match code {
        Some(10 | 30 | 90) => Mapping::Event(EventKind::Bounced, Some(BounceClass::Hard)),
        Some(20..=24 | 40 | 60 | 70 | 100 | 50..=54) => {
            Mapping::Event(EventKind::Bounced, Some(BounceClass::Soft))
        }
        Some(25 | 26 | 80) => Mapping::Event(EventKind::Dropped, None),
        _ => Mapping::Event(EventKind::Bounced, None),
    }
}

/// The mapping of an event of a class this plugin reads (message, track,
/// generation and unsubscribe events), by its `type`.
fn map(kind: &str, bounce_class: Option<&str>, fbtype: Option<&str>) -> Mapping {
    use EventKind as K;
    let event = |k| Mapping::Event(k, None);
    match kind {
        "delivery" => event(K::Delivered),
        "delay" => event(K::Deferred),
        "bounce" | "out_of_band" => bounce(bounce_class),
        "policy_rejection" | "generation_rejection" => event(K::Dropped),
        // Feedback that a message is *not* spam is no complaint.
        "spam_complaint" if fbtype.is_some_and(|t| t.eq_ignore_ascii_case("not-spam")) => {
            Mapping::Skip
        }
        "spam_complaint" => event(K::Complained),
        "open" | "initial_open" | "amp_open" | "amp_initial_open" => event(K::Opened),
        "click" | "amp_click" => event(K::Clicked),
        "list_unsubscribe" | "link_unsubscribe" => event(K::Unsubscribed),
        _ => Mapping::Skip,
    }
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::Invalid(message.into())
}

/// A text field, `None` when absent or empty.
fn present<'s>(value: &'s Option<Str<'_>>) -> Option<&'s str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// An id field, `None` when absent or empty; otherwise within the host's
/// limits.
fn id<'s>(field: &str, value: &'s Option<Id<'_>>) -> Result<Option<&'s str>, ParseError> {
    match value.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => limits::id(field, v).map(Some),
        None => Ok(None),
    }
}

/// `timestamp` as Unix seconds: SparkPost writes a string of digits; a
/// fraction is truncated; a JSON number and RFC 3339 text are accepted too.
fn occurred_at(time: &RawTime<'_>) -> Result<i64, ParseError> {
    const FIELD: &str = "timestamp";
    let seconds = match time {
        RawTime::Int(i) => *i,
        RawTime::Float(f) if f.is_finite() => f.trunc() as i64,
        RawTime::Float(_) => return Err(invalid("`timestamp` is not a number")),
        RawTime::Text(text) => {
            let whole = text.split_once('.').map_or(&**text, |(w, frac)| {
                if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
                    w
                } else {
                    text
                }
            });
            if !whole.is_empty() && whole.len() <= 18 && whole.bytes().all(|b| b.is_ascii_digit()) {
                whole.parse::<i64>().map_err(|e| invalid(e.to_string()))?
            } else {
                return time::rfc3339(text, FIELD).map_err(|_| {
                    invalid(format!(
                        "`timestamp` {text:?} is neither Unix seconds nor an RFC 3339 date-time"
                    ))
                });
            }
        }
    };
    limits::unix_seconds(FIELD, seconds)
}

impl Event<'_> {
    /// The unified event, or `None` for a type without a unified kind.
    fn convert(&self, body: &[u8]) -> Result<Option<DeliveryEvent>, ParseError> {
        let name = present(&self.kind).ok_or_else(|| invalid("missing `type`"))?;
        let Mapping::Event(kind, class) =
            map(name, self.bounce_class.as_deref(), self.fbtype.as_deref())
        else {
            return Ok(None);
        };
        let recipient = present(&self.rcpt_to).ok_or_else(|| invalid("missing `rcpt_to`"))?;
        let recipient = text(body, limits::id("rcpt_to", recipient)?);
        let occurred_at = occurred_at(
            self.timestamp
                .as_ref()
                .ok_or_else(|| invalid("missing `timestamp`"))?,
        )?;
        let event_id = id("event_id", &self.event_id)?;
        let message_id = match id("transmission_id", &self.transmission_id)? {
            Some(t) => Some(t),
            None => id("message_id", &self.message_id)?,
        };
        let outcome = matches!(
            kind,
            EventKind::Delivered | EventKind::Deferred | EventKind::Bounced | EventKind::Dropped
        );
        let mut event = DeliveryEvent::new(kind, recipient, occurred_at)
            .bounce_class(class)
            .event_id(event_id.map(|v| text(body, v)))
            .message_id(message_id.map(|v| text(body, v)));
        if outcome {
            // `raw_reason` is the remote text verbatim; `reason` the same with
            // the address masked, used only when the raw one is absent.
            let diagnostic = present(&self.raw_reason).or(present(&self.reason));
            // Owned: `status_from` pairs an enhanced status from the text
            // with the explicit code only when it can compare the two.
            let code = self
                .error_code
                .as_deref()
                .map(str::trim)
                .filter(|c| smtp::is_reply_code(c))
                .map(str::to_owned);
            event = event
                .smtp(code, None::<&str>)
                .status_from(diagnostic)
                .diagnostic(diagnostic.map(|d| text_cow(body, limits::diagnostic(d))));
        }
        Ok(Some(event))
    }
}

/// The events of one request, and the names of those without a unified
/// kind (`(class, type)` → count) for one log line.
#[derive(Debug, Default)]
struct Parsed<'a> {
    events: Vec<DeliveryEvent>,
    skipped: BTreeMap<(Cow<'a, str>, Cow<'a, str>), usize>,
}

/// A JSON array of `{"msys": {...}}` wrappers. A batch is all-or-nothing: a
/// malformed body, or a mapped event missing its type, recipient or time,
/// refuses the request (400, naming the element); events without a unified
/// kind are skipped.
fn parse(body: &[u8]) -> Result<Parsed<'_>, ParseError> {
    if json::first_token(body) != Some(b'[') {
        return Err(ParseError::Malformed(
            "SparkPost posts a JSON array of {\"msys\": {...}} objects".into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    let items: Vec<Object<Element<'_>>> = json::parse_borrowed(body)?;
    if items.len() > limits::MAX_EVENTS {
        return Err(invalid(format!(
            "{} events in one request (limit {})",
            items.len(),
            limits::MAX_EVENTS
        )));
    }
    let mut parsed = Parsed {
        events: Vec::with_capacity(items.len()),
        skipped: BTreeMap::new(),
    };
    for (i, Object(item)) in items.into_iter().enumerate() {
        let entries = item
            .msys
            .ok_or_else(|| invalid(format!("event {i}: missing `msys`")))?;
        for entry in entries.0 {
            match entry {
                Entry::Read(class, Object(event)) => {
                    let converted = event.convert(body).map_err(|e| match e {
                        ParseError::Invalid(m) => invalid(format!("event {i} ({class}): {m}")),
                        ParseError::Malformed(m) => {
                            ParseError::Malformed(format!("event {i} ({class}): {m}"))
                        }
                    })?;
                    match converted {
                        Some(event) => parsed.events.push(event),
                        None => {
                            let kind = event.kind.map_or(Cow::Borrowed("?"), |k| k.0);
                            *parsed
                                .skipped
                                .entry((Cow::Borrowed(class), kind))
                                .or_default() += 1;
                        }
                    }
                }
                Entry::Skipped(class, kind) => {
                    let kind = kind.map_or(Cow::Borrowed("?"), |k| k.0);
                    *parsed.skipped.entry((class, kind)).or_default() += 1;
                }
            }
        }
    }
    if parsed.events.len() > limits::MAX_EVENTS {
        return Err(invalid(format!(
            "{} events in one request (limit {})",
            parsed.events.len(),
            limits::MAX_EVENTS
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
