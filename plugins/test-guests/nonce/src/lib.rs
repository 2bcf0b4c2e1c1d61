//! Test-only guest for single-use tokens, shaped like Mailgun's scheme: the
//! request carries `X-Token` and `X-Signature: hex(HMAC-SHA256(secret,
//! token + body))`; a valid request names its token to the host
//! (`replay.use-token`), which refuses a second request with it. The body is
//! `{"id": "...", "recipient": "..."}`: one `delivered` event.

use mailplug_sdk::prelude::*;
use serde::Deserialize;

struct Nonce;

#[derive(Deserialize)]
struct Body {
    id: String,
    recipient: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Guest for Nonce {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "nonce".into(),
            version: "0.1.0".into(),
            display_name: "Single-use token test guest".into(),
            options_schema: "{}".into(),
            capabilities: vec![
                Capability::AdaptsSmtp,
                Capability::VerifiesWebhooks,
                Capability::ParsesWebhooks,
            ],
            signature_scheme: Some("hmac-sha256-token".into()),
        }
    }

    fn adapt_connection(
        _options: String,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        let (port, security) = smtp::port_security_defaults(overrides.port, overrides.security);
        Ok(SmtpSettings {
            host: overrides.host.unwrap_or_else(|| "smtp.example.net".into()),
            port,
            security,
            username: overrides.username,
            password: PasswordSource::SmtpPassword,
            extra_headers: vec![],
        })
    }

    fn verify_webhook(request: WebhookRequest, secret: String) -> Result<(), VerifyError> {
        let token = mailplug_sdk::header(&request, "x-token")
            .ok_or_else(|| VerifyError::MissingHeader("x-token".into()))?;
        let signature = mailplug_sdk::header(&request, "x-signature")
            .ok_or_else(|| VerifyError::MissingHeader("x-signature".into()))?;
        let mac = host::hmac(
            host::Hash::Sha256,
            secret.as_bytes(),
            &[token.as_bytes(), &request.body].concat(),
        );
        if !host::constant_time_eq(hex(&mac).as_bytes(), signature.trim().as_bytes()) {
            return Err(VerifyError::BadSignature);
        }
        host::use_token(token, 900);
        Ok(())
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let body: Body = json::parse(&request.body)?;
        Ok(vec![DeliveryEvent {
            kind: EventKind::Delivered,
            bounce_class: None,
            recipient: Text::Owned(body.recipient),
            occurred_at: host::now(),
            provider: Text::Owned("nonce".into()),
            provider_event_id: Some(Text::Owned(body.id)),
            provider_message_id: None,
            message_id: None,
            smtp_status: None,
            enhanced_status: None,
            diagnostic: None,
        }])
    }
}

mailplug_sdk::export!(Nonce);
