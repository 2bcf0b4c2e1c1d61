//! Example provider plugin (a template to copy): a fictional provider that
//! posts `[{"event": "...", "email": "...", "time": "RFC 3339", "id": "..."}]`
//! signed with `X-Example-Signature: hex(HMAC-SHA256(secret, timestamp + body))`
//! and `X-Example-Timestamp: <unix seconds>`.

use mailplug_sdk::prelude::*;
use mailplug_sdk::verify::{Encoding, Hmac, Part};
use serde::Deserialize;

struct Example;

/// Options of `provider: example`.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Account region: the SMTP host is smtp.<region>.example.net.
    #[serde(default)]
    region: Region,
}

#[derive(Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
enum Region {
    #[default]
    Eu,
    Us,
}

#[derive(Deserialize)]
struct Event {
    event: String,
    email: String,
    time: String,
    id: Option<String>,
    reason: Option<String>,
}

impl Plugin for Example {
    const ID: &'static str = "example";

    fn info() -> Info {
        Info::new("Example Provider", env!("CARGO_PKG_VERSION"))
            .options::<Options>()
            .adapts_smtp()
            .webhooks("hmac-sha256-hex")
    }

    fn adapt_connection(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
        let region = match options::parse::<Options>(options)?.region {
            Region::Eu => "eu",
            Region::Us => "us",
        };
        // The host's rule for unset port/security, so 465 alone means TLS.
        let (port, security) = smtp::port_security_defaults(o.port, o.security);
        let host = o.host.unwrap_or_else(|| format!("smtp.{region}.example.net"));
        let username = Some("apikey".into());
        let password = PasswordSource::SmtpPassword;
        Ok(SmtpSettings { host, port, security, username, password, extra_headers: vec![] })
    }

    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        Hmac::sha256("x-example-signature", Encoding::Hex)
            .timestamp("x-example-timestamp")
            .signs(&[Part::Timestamp, Part::Body])
            .verify(request, secret.as_bytes(), host::now())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let mut out = Vec::new();
        for e in json::parse::<Vec<Event>>(&request.body)? {
            let at = time::parse_rfc3339(&e.time)
                .ok_or_else(|| ParseError::Invalid(format!("bad time {:?}", e.time)))?;
            let event = match e.event.as_str() {
                "delivered" => DeliveryEvent::delivered(e.email, at),
                "bounce" => DeliveryEvent::bounced(e.email, at).hard(),
                "spam" => DeliveryEvent::complained(e.email, at),
                other => {
                    log_debug(&format!("ignoring event type {other}"));
                    continue;
                }
            };
            let reason = e.reason.as_deref();
            out.push(event.event_id(e.id).status_from(reason).diagnostic(reason));
        }
        Ok(out)
    }
}

mailplug_sdk::export!(Example);
