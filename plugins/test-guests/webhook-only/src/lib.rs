//! Test-only guest: a webhook-only plugin on SDK v2. It writes no
//! `adapt_connection` (the SDK's default refuses), verifies an RSA
//! PKCS#1 v1.5 SHA-256 signature of the raw body (`X-Postal-Signature-256`)
//! with the SDK's verifier and maps Postal's `MessageSent` to `delivered`.

use mailplug_sdk::json::{Id, Str};
use mailplug_sdk::prelude::*;

struct WebhookOnly;

#[derive(Deserialize)]
struct Webhook<'a> {
    #[serde(borrow)]
    event: Str<'a>,
    timestamp: serde_json::Number,
    #[serde(borrow)]
    uuid: Str<'a>,
    #[serde(borrow)]
    payload: Payload<'a>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    output: Option<Str<'a>>,
    #[serde(borrow)]
    message: Message<'a>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Id<'a>,
    #[serde(borrow)]
    to: Str<'a>,
}

impl Plugin for WebhookOnly {
    const ID: &'static str = "webhook-only";

    fn info() -> Info {
        Info::new("Webhook-only test guest", env!("CARGO_PKG_VERSION")).webhooks("rsa-sha256")
    }

    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        let signature = verify::required_header(request, "x-postal-signature-256")?;
        let signature = host::base64_decode(signature.trim())
            .map_err(|e| VerifyError::Malformed(format!("signature is not base64: {e}")))?;
        let keys = verify::public_keys(secret)?;
        verify::rsa_pkcs1v15(host::Hash::Sha256, &keys, &request.body, &signature)
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let body = &request.body[..];
        let w: Webhook<'_> = json::parse_borrowed(body)?;
        if &*w.event != "MessageSent" {
            return Ok(Vec::new());
        }
        let at = mailplug_sdk::event::limits::unix_seconds_from_number("timestamp", &w.timestamp)?;
        let output = w.payload.output.as_deref();
        let event = DeliveryEvent::delivered(text(body, &w.payload.message.to), at)
            .provider("postal")
            .event_id(text(body, &w.uuid))
            .message_id(w.payload.message.id.0)
            .status_from(output)
            .diagnostic(output);
        Ok(vec![event])
    }
}

mailplug_sdk::export!(WebhookOnly);
