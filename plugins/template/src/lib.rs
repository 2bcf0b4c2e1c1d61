//! Example provider plugin (a template to copy): a fictional provider that
//! posts `[{"event": "...", "email": "...", "time": "RFC 3339", "id": "..."}]`
//! signed with `X-Example-Signature: hex(HMAC-SHA256(secret, timestamp + body))`
//! and `X-Example-Timestamp: <unix seconds>`.

use mailplug_sdk::prelude::*;
use mailplug_sdk::verify::{Encoding, Hmac, Part};

struct Example;

/// Options of `provider: example`.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Options {
    /// Account region: the SMTP host is smtp.<region>.example.net.
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
        let info = Info::new("Example Provider", env!("CARGO_PKG_VERSION"));
        info.options::<Options>().adapts_smtp().webhooks("hmac-sha256-hex")
    }

    fn adapt_connection(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
        let region = match options::parse::<Options>(options)?.region {
            Region::Eu => "eu",
            Region::Us => "us",
        };
        // The host's rule for unset port/security, so 465 alone means TLS.
        let host = format!("smtp.{region}.example.net");
        Ok(SmtpSettings::relay(o, &host, Some("apikey")))
    }

    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        let hmac = Hmac::sha256("x-example-signature", Encoding::Hex);
        let scheme = hmac.timestamp("x-example-timestamp").signs(&[Part::Timestamp, Part::Body]);
        scheme.verify(request, secret.as_bytes(), host::now())
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let mut out = Vec::new();
        for e in json::parse::<Vec<Event>>(&request.body)? {
            let at = time::rfc3339(&e.time, "time")?;
            let event = match e.event.as_str() {
                "delivered" => DeliveryEvent::delivered(e.email, at),
                "bounce" => DeliveryEvent::bounced(e.email, at).hard(),
                "spam" => DeliveryEvent::complained(e.email, at),
                _ => continue, // no unified kind
            };
            out.push(event.event_id(e.id).status_from(e.reason.as_deref()).diagnostic(e.reason));
        }
        Ok(out)
    }
}

mailplug_sdk::export!(Example);
