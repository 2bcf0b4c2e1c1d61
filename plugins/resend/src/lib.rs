//! First-party plugin `resend`: Resend's SMTP service (user `resend`, the
//! API key as password), its Svix-signed webhooks (several `v1,` signatures
//! and keys for rotation, 5-minute window) and the mapping of its
//! `email.*` events to unified delivery events.

use mailplug_sdk::event::limits;
use mailplug_sdk::json::Str;
use mailplug_sdk::prelude::*;
use serde::Deserialize;

pub struct Resend;

/// Resend's SMTP service.
const DEFAULT_HOST: &str = "smtp.resend.com";
/// Resend's SMTP user is always this literal; the API key is the password.
const USERNAME: &str = "resend";
/// Resend's alternative implicit-TLS port (beside 465).
const ALT_TLS_PORT: u16 = 2465;

/// Resend takes no options: the API key is smtp.password and the webhook signing secret (whsec_...) is webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "resend options")]
struct Options {}

impl Plugin for Resend {
    const ID: &'static str = "resend";

    fn info() -> Info {
        Info::new("Resend", env!("CARGO_PKG_VERSION"))
            .options::<Options>()
            .adapts_smtp()
            .webhooks("svix-v1")
    }

    fn adapt_connection(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
        let mut errors = options::parse::<Options>(options).err().unwrap_or_default();
        let host = o.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let (port, security) = match (o.port, o.security) {
            (Some(ALT_TLS_PORT), None) => (ALT_TLS_PORT, Security::Tls),
            (port, security) => smtp::port_security_defaults(port, security),
        };
        smtp::relay_transport_errors(&host, port, security, "the API key", &mut errors);
        smtp::fixed_username_errors(
            &host,
            DEFAULT_HOST,
            o.username.as_deref(),
            ("Resend", USERNAME),
            &mut errors,
        );
        smtp::require_password(
            o.has_password,
            "resend needs smtp.password: a reference to the API key, e.g. { env: RESEND_API_KEY }",
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(SmtpSettings {
            host,
            port,
            security,
            username: Some(o.username.unwrap_or_else(|| USERNAME.to_owned())),
            password: PasswordSource::SmtpPassword,
            extra_headers: Vec::new(),
        })
    }

    /// `webhook.secret` is the endpoint's signing secret (`whsec_...`);
    /// during a rotation list both, or write them space-separated.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify::svix(request, secret, host::now())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(request)
    }
}

mailplug_sdk::export!(Resend);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    event_type: Option<Str<'a>>,
    #[serde(borrow)]
    created_at: Option<Str<'a>>,
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    email_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    to: Vec<Str<'a>>,
    #[serde(borrow)]
    bounce: Option<Bounce<'a>>,
}

#[derive(Deserialize)]
struct Bounce<'a> {
    /// `Permanent`, `Transient` or `Undetermined`.
    #[serde(borrow, rename = "type")]
    bounce_type: Option<Str<'a>>,
    /// e.g. `General`, `Suppressed`.
    #[serde(borrow, rename = "subType")]
    sub_type: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
}

/// Unified kind of a Resend event type; `None` for types with no unified
/// kind (`email.sent`, `email.scheduled`, `email.received`, contact and
/// domain events) and for types Resend may add.
fn kind(event_type: &str, bounce: Option<&Bounce<'_>>) -> Option<(EventKind, Option<BounceClass>)> {
    Some(match event_type {
        "email.delivered" => (EventKind::Delivered, None),
        "email.delivery_delayed" => (EventKind::Deferred, None),
        "email.bounced" => {
            let sub_type = bounce.and_then(|b| b.sub_type.as_deref());
            let bounce_type = bounce.and_then(|b| b.bounce_type.as_deref());
            match (bounce_type, sub_type) {
                // Resend did not try: the address is on its suppression list.
                (_, Some("Suppressed")) => (EventKind::Dropped, None),
                // Resend documents a bounce as a permanent rejection; older
                // payloads carry no type at all.
                (Some("Permanent") | None, _) => (EventKind::Bounced, Some(BounceClass::Hard)),
                (Some("Transient"), _) => (EventKind::Bounced, Some(BounceClass::Soft)),
                (Some(_), _) => (EventKind::Bounced, None),
            }
        }
        "email.complained" => (EventKind::Complained, None),
        "email.opened" => (EventKind::Opened, None),
        "email.clicked" => (EventKind::Clicked, None),
        // Resend could not send the message at all (its documentation calls
        // it a send failure); nothing reached a remote server.
        "email.failed" => (EventKind::Dropped, None),
        _ => return None,
    })
}

/// The address of a `to` entry, which may carry a display name
/// (`Name <a@example.com>`).
fn address(entry: &str) -> &str {
    let entry = entry.trim();
    match (entry.rfind('<'), entry.strip_suffix('>')) {
        (Some(open), Some(inner)) => inner.get(open + 1..).unwrap_or(entry).trim(),
        _ => entry,
    }
}

/// One event per request; one unified event per `to` address (they share
/// the `svix-id`, and the host de-duplicates per recipient).
fn parse(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
    let body = &request.body[..];
    if json::first_token(body) != Some(b'{') {
        return Err(ParseError::Malformed(
            "Resend posts one JSON object per request".into(),
        ));
    }
    json::check_depth(body, json::DEFAULT_MAX_DEPTH)?;
    let envelope: Envelope<'_> = json::parse_borrowed(body)?;
    let invalid = |m: &str| ParseError::Invalid(m.to_owned());
    let event_type = envelope
        .event_type
        .as_deref()
        .ok_or_else(|| invalid("missing `type`"))?;
    let data = envelope
        .data
        .as_ref()
        .ok_or_else(|| invalid("missing `data`"))?;
    let Some((kind, class)) = kind(event_type, data.bounce.as_ref()) else {
        host::log_info(&format!(
            "skipping Resend event {event_type:?} (no unified kind)"
        ));
        return Ok(Vec::new());
    };
    let created_at = envelope
        .created_at
        .as_deref()
        .ok_or_else(|| invalid("missing `created_at`"))?;
    let occurred_at = time::parse_rfc3339(created_at)
        .ok_or_else(|| ParseError::Invalid(format!("created_at {created_at:?} is not RFC 3339")))
        .and_then(|t| limits::unix_seconds("created_at", t))?;
    let event_id = match mailplug_sdk::header(request, "svix-id") {
        Some(id) => Some(limits::id("svix-id", id)?.to_owned()),
        None => None,
    };
    let message_id = match data.email_id.as_deref() {
        Some(id) => Some(text(body, limits::id("data.email_id", id)?)),
        None => None,
    };
    let diagnostic = match kind {
        EventKind::Bounced | EventKind::Dropped => data
            .bounce
            .as_ref()
            .and_then(|b| b.message.as_deref())
            .filter(|m| !m.is_empty())
            .map(|m| text_cow(body, limits::diagnostic(m))),
        _ => None,
    };
    if data.to.is_empty() {
        return Err(invalid("data.to names no recipient"));
    }
    if data.to.len() > limits::MAX_EVENTS {
        return Err(invalid(
            "data.to names more recipients than one call may return",
        ));
    }
    data.to
        .iter()
        .map(|to| {
            let recipient = limits::id("data.to[]", address(to))?;
            Ok(DeliveryEvent::new(kind, text(body, recipient), occurred_at)
                .bounce_class(class)
                .event_id(event_id.clone())
                .message_id(message_id.clone())
                .diagnostic(diagnostic.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::address;

    #[test]
    fn to_entries_with_display_names_give_their_address() {
        assert_eq!(address("a@example.com"), "a@example.com");
        assert_eq!(address(" Ann <a@example.com> "), "a@example.com");
        assert_eq!(address("\"A <b>\" <a@example.com>"), "a@example.com");
        assert_eq!(address("broken <a@example.com"), "broken <a@example.com");
        assert_eq!(address("<>"), "");
    }
}
