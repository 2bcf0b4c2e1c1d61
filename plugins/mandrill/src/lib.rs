//! First-party plugin `mandrill`: Mailchimp Transactional (Mandrill) SMTP,
//! its webhooks signed with HMAC-SHA1 over the registered URL and the POST
//! fields (`X-Mandrill-Signature`), and the mapping of its events to unified
//! delivery events.
//!
//! Mandrill signs no timestamp and sends no event id: a replayed request
//! verifies forever, and the host's de-duplication of stored events on their
//! content is the only defence against replays.

use std::borrow::Cow;

use mailplug_sdk::event::limits;
use mailplug_sdk::json::{Object, Str};
use mailplug_sdk::prelude::*;
use mailplug_sdk::verify::Encoding;
use serde::Deserialize;

mod adapt;

/// Public so that the exports stay reachable in a native build, where the
/// SDK's `export!` may expand to nothing (no dead-code warnings there).
pub struct Mandrill;

impl Plugin for Mandrill {
    const ID: &'static str = "mandrill";

    fn info() -> Info {
        Info::new(
            "Mailchimp Transactional (Mandrill)",
            env!("CARGO_PKG_VERSION"),
        )
        .options::<adapt::Options>()
        .adapts_smtp()
        .webhooks("mandrill-hmac-sha1")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is the key Mandrill shows for this webhook. The
    /// signed URL is the one registered at Mandrill, as the host knows it.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify(request, secret, host::registered_url())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let parsed = parse(request)?;
        for skipped in &parsed.skipped {
            host::log_info(&format!("skipping Mandrill {skipped} (no unified kind)"));
        }
        Ok(parsed.events)
    }
}

mailplug_sdk::export!(Mandrill);

/// The header with base64(HMAC-SHA1(key, URL + sorted fields)).
const SIGNATURE_HEADER: &str = "x-mandrill-signature";
/// The one form field Mandrill posts: a JSON array of events.
const EVENTS_FIELD: &str = "mandrill_events";

/// Mandrill's signed bytes: the URL exactly as registered, then every POST
/// field sorted by name as name + decoded value, with no separators.
fn signed_message(url: &str, form: &form::Form) -> Vec<u8> {
    let mut message = url.as_bytes().to_vec();
    message.extend_from_slice(&form.sorted_name_value_concat());
    message
}

/// Checks `X-Mandrill-Signature` against `secret` for the URL the webhook
/// is registered under (`None`: the operator configured none).
fn verify(
    request: &WebhookRequest,
    secret: &str,
    registered_url: Option<String>,
) -> Result<(), VerifyError> {
    let key = secret.trim();
    if key.is_empty() {
        return Err(VerifyError::Malformed("webhook secret is empty".into()));
    }
    let signature = verify::required_header(request, SIGNATURE_HEADER)?;
    let url = registered_url
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            VerifyError::Malformed(
                "Mandrill signs the webhook URL as registered at Mandrill, and this connection \
                 has none: set webhook.url to that URL (or start the daemon with --public-url)"
                    .into(),
            )
        })?;
    let form = form::parse(&request.body).map_err(|e| {
        let (ParseError::Malformed(m) | ParseError::Invalid(m)) = e;
        VerifyError::Malformed(format!("body is not a form: {m}"))
    })?;
    let matches = verify::hmac_matches(
        host::Hash::Sha1,
        key.as_bytes(),
        &signed_message(&url, &form),
        signature,
        Encoding::Base64,
        SIGNATURE_HEADER,
    )?;
    if matches {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// The fields of one entry of `mandrill_events` that the mapping reads.
#[derive(Deserialize)]
struct Event<'a> {
    /// Message events: `send`, `hard_bounce`, `open`, ...; absent on sync events.
    #[serde(borrow)]
    event: Option<Str<'a>>,
    /// Sync events (`whitelist` / `blacklist`) carry `type` and `action`
    /// instead of `event`.
    #[serde(borrow, rename = "type")]
    sync_type: Option<Str<'a>>,
    /// Unix seconds of the event itself (`msg.ts` is the send time).
    ts: Option<serde_json::Number>,
    /// Mandrill's message id.
    #[serde(borrow, rename = "_id")]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    msg: Option<Object<Message<'a>>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    email: Option<Str<'a>>,
    /// The same message id as the top-level `_id`.
    #[serde(borrow, rename = "_id")]
    id: Option<Str<'a>>,
    /// On bounces: the remote server's reply (`smtp;550 5.1.1 ...`).
    #[serde(borrow)]
    diag: Option<Str<'a>>,
    /// Delivery attempts, oldest first, each with the server's reply.
    #[serde(borrow)]
    smtp_events: Option<Vec<Object<SmtpEvent<'a>>>>,
}

#[derive(Deserialize)]
struct SmtpEvent<'a> {
    #[serde(borrow)]
    diag: Option<Str<'a>>,
}

/// Unified kind of a Mandrill message event; `None` for `inbound` and for
/// names Mandrill may add.
fn kind(event: &str) -> Option<(EventKind, Option<BounceClass>)> {
    Some(match event {
        // Mandrill's "sent": the recipient's server accepted the message.
        "send" => (EventKind::Delivered, None),
        "deferral" => (EventKind::Deferred, None),
        "hard_bounce" => (EventKind::Bounced, Some(BounceClass::Hard)),
        "soft_bounce" => (EventKind::Bounced, Some(BounceClass::Soft)),
        // Mandrill refused to send (rejection blacklist, invalid, ...).
        "reject" => (EventKind::Dropped, None),
        "spam" => (EventKind::Complained, None),
        "open" => (EventKind::Opened, None),
        "click" => (EventKind::Clicked, None),
        "unsub" => (EventKind::Unsubscribed, None),
        _ => return None,
    })
}

/// What a request turned into: its events, and a description of every
/// entry skipped for having no unified kind (logged by the caller, so this
/// stays testable off the host).
#[derive(Debug, Default)]
struct Parsed {
    events: Vec<DeliveryEvent>,
    skipped: Vec<String>,
}

fn invalid(message: &str) -> ParseError {
    ParseError::Invalid(message.to_owned())
}

/// A text field, `None` when absent, `null` or empty.
fn present<'s>(value: &'s Option<Str<'_>>) -> Option<&'s str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Owned output text. Every value comes out of the percent-decoded
/// `mandrill_events` field, not out of the body bytes, so no value can be a
/// span of the body.
fn owned(value: &str) -> Text {
    Text::Owned(value.to_owned())
}

impl Event<'_> {
    /// `Ok(Err(description))` for an entry with no unified kind.
    fn convert(&self) -> Result<Result<DeliveryEvent, String>, ParseError> {
        let name = match (present(&self.event), present(&self.sync_type)) {
            (Some(name), _) => name,
            (None, Some(sync)) => return Ok(Err(format!("sync event {sync:?}"))),
            (None, None) => return Err(invalid("missing `event`")),
        };
        let Some((kind, class)) = kind(name) else {
            return Ok(Err(format!("event {name:?}")));
        };
        let msg = self
            .msg
            .as_ref()
            .map(|Object(m)| m)
            .ok_or_else(|| invalid("missing `msg`"))?;
        let recipient = msg
            .email
            .as_deref()
            .ok_or_else(|| invalid("missing `msg.email`"))?;
        let recipient = owned(limits::id("msg.email", recipient)?);
        let occurred_at = self
            .ts
            .as_ref()
            .ok_or_else(|| invalid("missing `ts`"))
            .and_then(|n| limits::unix_seconds_from_number("ts", n))?;
        let message_id = [("_id", &self.id), ("msg._id", &msg.id)]
            .into_iter()
            .find_map(|(field, id)| present(id).map(|id| (field, id)));
        let message_id = match message_id {
            Some((field, id)) => Some(owned(limits::id(field, id)?)),
            None => None,
        };
        // Remote-server text belongs to delivery outcomes: the bounce reply
        // in `msg.diag`, else the reply to the latest delivery attempt.
        let diagnostic = match kind {
            EventKind::Delivered
            | EventKind::Deferred
            | EventKind::Bounced
            | EventKind::Dropped => present(&msg.diag).or_else(|| {
                msg.smtp_events
                    .iter()
                    .flatten()
                    .rev()
                    .find_map(|Object(attempt)| present(&attempt.diag))
            }),
            _ => None,
        };
        Ok(Ok(DeliveryEvent::new(kind, recipient, occurred_at)
            .bounce_class(class)
            .message_id(message_id)
            .status_from(diagnostic)
            .diagnostic(diagnostic.map(
                |d| match limits::diagnostic(d) {
                    Cow::Borrowed(d) => owned(d),
                    Cow::Owned(d) => Text::Owned(d),
                },
            ))))
    }
}

/// The events of a verified request: a form whose one `mandrill_events`
/// field holds a JSON array of events (possibly empty). All or nothing: one
/// known event missing its recipient or time refuses the whole request.
fn parse(request: &WebhookRequest) -> Result<Parsed, ParseError> {
    if !form::is_form(request) {
        return Err(ParseError::Malformed(
            "Mandrill posts an application/x-www-form-urlencoded form with a `mandrill_events` \
             field"
                .into(),
        ));
    }
    let form = form::parse(&request.body)?;
    let mut values = form
        .pairs
        .iter()
        .filter(|(name, _)| name == EVENTS_FIELD)
        .map(|(_, value)| value);
    let events = values
        .next()
        .ok_or_else(|| invalid("missing form field `mandrill_events`"))?;
    if values.next().is_some() {
        return Err(invalid(
            "form field `mandrill_events` is given more than once",
        ));
    }
    parse_events(events.as_bytes())
}

/// The JSON array of `mandrill_events`.
fn parse_events(json: &[u8]) -> Result<Parsed, ParseError> {
    let context = |e: ParseError| match e {
        ParseError::Malformed(m) => ParseError::Malformed(format!("`mandrill_events`: {m}")),
        ParseError::Invalid(m) => ParseError::Invalid(format!("`mandrill_events`: {m}")),
    };
    if json::first_token(json) != Some(b'[') {
        return Err(ParseError::Malformed(
            "`mandrill_events` is not a JSON array".into(),
        ));
    }
    json::check_depth(json, json::DEFAULT_MAX_DEPTH).map_err(context)?;
    let items: Vec<Object<Event<'_>>> = json::parse_borrowed(json).map_err(context)?;
    if items.len() > limits::MAX_EVENTS {
        return Err(ParseError::Invalid(format!(
            "{} events in one request (limit {})",
            items.len(),
            limits::MAX_EVENTS
        )));
    }
    let mut parsed = Parsed::default();
    for (i, Object(item)) in items.iter().enumerate() {
        let converted = item.convert().map_err(|e| match e {
            ParseError::Invalid(m) => ParseError::Invalid(format!("event {i}: {m}")),
            ParseError::Malformed(m) => ParseError::Malformed(format!("event {i}: {m}")),
        })?;
        match converted {
            Ok(event) => parsed.events.push(event),
            Err(skipped) => parsed.skipped.push(format!("{skipped} at index {i}")),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: &str, body: &[u8]) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/mandrill".into(),
            headers: vec![("content-type".into(), content_type.into())],
            body: body.to_vec(),
        }
    }

    /// A form body with `mandrill_events` set to `json`, percent-encoded.
    fn form_body(json: &str) -> Vec<u8> {
        let mut body = b"mandrill_events=".to_vec();
        for b in json.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                body.push(b);
            } else {
                body.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        body
    }

    fn events(json: &str) -> Result<Parsed, ParseError> {
        parse(&request(
            "application/x-www-form-urlencoded",
            &form_body(json),
        ))
    }

    fn text(t: &Option<Text>) -> Option<&str> {
        match t {
            Some(Text::Owned(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn every_message_event_has_its_kind() {
        let bounced = |c| Some((EventKind::Bounced, Some(c)));
        assert_eq!(kind("send"), Some((EventKind::Delivered, None)));
        assert_eq!(kind("deferral"), Some((EventKind::Deferred, None)));
        assert_eq!(kind("hard_bounce"), bounced(BounceClass::Hard));
        assert_eq!(kind("soft_bounce"), bounced(BounceClass::Soft));
        assert_eq!(kind("reject"), Some((EventKind::Dropped, None)));
        assert_eq!(kind("spam"), Some((EventKind::Complained, None)));
        assert_eq!(kind("open"), Some((EventKind::Opened, None)));
        assert_eq!(kind("click"), Some((EventKind::Clicked, None)));
        assert_eq!(kind("unsub"), Some((EventKind::Unsubscribed, None)));
        assert_eq!(kind("inbound"), None);
        assert_eq!(kind("Send"), None);
    }

    #[test]
    fn signed_bytes_are_the_url_then_sorted_names_and_decoded_values() {
        let form = form::parse(b"mandrill_events=%5B%5D&b=x+y&a=1").unwrap();
        assert_eq!(
            signed_message("https://h.example.test/w?t=1", &form),
            b"https://h.example.test/w?t=1a1bx ymandrill_events[]"
        );
    }

    #[test]
    fn an_empty_secret_a_missing_header_or_no_registered_url_are_refused_first() {
        let mut r = request(
            "application/x-www-form-urlencoded",
            b"mandrill_events=%5B%5D",
        );
        let url = || Some("https://h.example.test/webhooks/mandrill".to_owned());
        assert!(matches!(
            verify(&r, " ", url()),
            Err(VerifyError::Malformed(_))
        ));
        assert_eq!(
            verify(&r, "key", url()),
            Err(VerifyError::MissingHeader("x-mandrill-signature".into()))
        );
        r.headers
            .push(("x-mandrill-signature".into(), "AAAA".into()));
        for none in [None, Some(String::new())] {
            let Err(VerifyError::Malformed(m)) = verify(&r, "key", none) else {
                panic!("no URL must be malformed");
            };
            assert!(
                m.contains("webhook.url") && m.contains("--public-url"),
                "{m}"
            );
        }
        r.body = b"a=%ff".to_vec();
        assert!(
            matches!(verify(&r, "key", url()), Err(VerifyError::Malformed(m)) if m.contains("not a form"))
        );
    }

    #[test]
    fn a_bounce_takes_msg_diag_and_its_codes() {
        let parsed = events(
            r#"[{"event":"hard_bounce","_id":"abc","ts":1767268694.7,"msg":{"email":"a@example.com","_id":"other","diag":"smtp;550 5.1.1 unknown","smtp_events":[{"diag":"451 4.0.0 later"}]}}]"#,
        )
        .unwrap();
        let e = &parsed.events[0];
        assert_eq!(
            (e.kind, e.bounce_class),
            (EventKind::Bounced, Some(BounceClass::Hard))
        );
        assert_eq!(e.occurred_at, 1_767_268_694);
        assert_eq!(text(&e.provider_message_id), Some("abc"));
        assert_eq!(text(&e.smtp_status), Some("550"));
        assert_eq!(text(&e.enhanced_status), Some("5.1.1"));
        assert_eq!(text(&e.diagnostic), Some("smtp;550 5.1.1 unknown"));
        assert!(e.provider_event_id.is_none());
    }

    #[test]
    fn without_msg_diag_the_latest_attempt_with_a_reply_counts() {
        let parsed = events(
            r#"[{"event":"deferral","ts":1,"msg":{"email":"a@example.com","_id":"m1","diag":"","smtp_events":[{"diag":"421 4.7.0 first"},{"diag":"452 4.2.2 second"},{"diag":null},{}]}}]"#,
        )
        .unwrap();
        let e = &parsed.events[0];
        assert_eq!(text(&e.provider_message_id), Some("m1"));
        assert_eq!(text(&e.diagnostic), Some("452 4.2.2 second"));
        assert_eq!(text(&e.smtp_status), Some("452"));
    }

    #[test]
    fn engagement_and_complaints_carry_no_server_text() {
        let parsed = events(
            r#"[{"event":"spam","ts":1,"_id":"m","msg":{"email":"a@example.com","diag":"550 x","smtp_events":[{"diag":"250 ok"}]}},
                {"event":"click","ts":2,"_id":"m","msg":{"email":"a@example.com","smtp_events":[{"diag":"250 ok"}]}}]"#,
        )
        .unwrap();
        for e in &parsed.events {
            assert!(e.diagnostic.is_none() && e.smtp_status.is_none(), "{e:?}");
        }
    }

    #[test]
    fn sync_inbound_and_unknown_entries_are_skipped_and_described() {
        let parsed = events(
            r#"[{"type":"blacklist","action":"add","ts":1,"reject":{"email":"a@example.com"}},
                {"event":"inbound","ts":1,"msg":{"email":"in@example.com"}},
                {"event":"future","ts":1},
                {"event":"open","ts":1,"_id":"m","msg":{"email":"a@example.com"}}]"#,
        )
        .unwrap();
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(
            parsed.skipped,
            [
                "sync event \"blacklist\" at index 0",
                "event \"inbound\" at index 1",
                "event \"future\" at index 2"
            ]
        );
    }

    #[test]
    fn batches_are_all_or_nothing_and_errors_name_the_event() {
        assert_eq!(
            events(r#"[{"event":"open","ts":1,"msg":{"email":"a@example.com"}},{"event":"open","ts":1,"msg":{}}]"#).unwrap_err(),
            ParseError::Invalid("event 1: missing `msg.email`".into())
        );
        assert_eq!(
            events(r#"[{"event":"open","msg":{"email":"a@example.com"}}]"#).unwrap_err(),
            ParseError::Invalid("event 0: missing `ts`".into())
        );
        assert_eq!(
            events(r#"[{"event":"open","ts":1}]"#).unwrap_err(),
            ParseError::Invalid("event 0: missing `msg`".into())
        );
        assert_eq!(
            events(r#"[{"ts":1}]"#).unwrap_err(),
            ParseError::Invalid("event 0: missing `event`".into())
        );
        assert!(events("[]").unwrap().events.is_empty());
        let many = format!("[{}]", vec!["{}"; limits::MAX_EVENTS + 1].join(","));
        assert!(matches!(events(&many), Err(ParseError::Invalid(m)) if m.contains("limit")));
    }

    #[test]
    fn the_form_shape_is_checked_before_the_json() {
        let form = "application/x-www-form-urlencoded; charset=utf-8";
        assert!(matches!(
            parse(&request("application/json", b"[]")),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            parse(&request(form, b"other=1")).unwrap_err(),
            ParseError::Invalid("missing form field `mandrill_events`".into())
        );
        assert!(matches!(
            parse(&request(form, b"mandrill_events=%5B%5D&mandrill_events=%5B%5D")),
            Err(ParseError::Invalid(m)) if m.contains("more than once")
        ));
        assert!(matches!(
            parse(&request(form, b"mandrill_events=%7B%7D")),
            Err(ParseError::Malformed(m)) if m.contains("not a JSON array")
        ));
        // A derived struct would take an array of its fields in order.
        assert!(matches!(
            events(r#"[["open",null,1,"m",{"email":"a@example.com"}]]"#),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            events(&format!("[{}1{}]", "[".repeat(100), "]".repeat(100))),
            Err(ParseError::Malformed(m)) if m.contains("deeper")
        ));
    }
}
