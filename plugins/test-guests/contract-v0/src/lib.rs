//! Test-only guest pinned to the first published `mailplug:provider@0.1.0`
//! contract (`wit/provider.wit` here is that file, before the additive
//! `clock.signature-tolerance` and `replay` imports), built with plain
//! wit-bindgen and no SDK: the host must keep loading and running it.
//!
//! Verification: the `x-token` header must equal the secret. Parsing: the
//! body is a recipient address; one `delivered` event at the host's clock.

#[allow(
    unsafe_code,
    clippy::too_many_arguments,
    reason = "generated canonical-ABI glue"
)]
mod bindings {
    wit_bindgen::generate!({ world: "provider", path: "wit" });
}

use bindings::mailplug::provider::types::{
    Capability, DeliveryEvent, EventKind, FieldError, ParseError, PluginInfo, Security,
    SmtpOverrides, SmtpSettings, Text, VerifyError, WebhookRequest,
};
use bindings::mailplug::provider::{clock, crypto};

struct ContractV0;

impl bindings::Guest for ContractV0 {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "contract-v0".into(),
            version: "0.1.0".into(),
            display_name: "0.1.0 contract test guest".into(),
            options_schema: "{}".into(),
            capabilities: vec![
                Capability::AdaptsSmtp,
                Capability::VerifiesWebhooks,
                Capability::ParsesWebhooks,
            ],
            signature_scheme: Some("token-header".into()),
        }
    }

    fn adapt_connection(
        _options: String,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        Ok(SmtpSettings {
            host: overrides.host.unwrap_or_else(|| "smtp.example.net".into()),
            port: overrides.port.unwrap_or(587),
            security: overrides.security.unwrap_or(Security::Starttls),
            username: overrides.username,
            password: bindings::mailplug::provider::types::PasswordSource::SmtpPassword,
            extra_headers: vec![],
        })
    }

    fn verify_webhook(request: WebhookRequest, secret: String) -> Result<(), VerifyError> {
        let token = request
            .headers
            .iter()
            .find(|(name, _)| name == "x-token")
            .map(|(_, value)| value.as_bytes())
            .ok_or_else(|| VerifyError::MissingHeader("x-token".into()))?;
        if crypto::constant_time_eq(token, secret.as_bytes()) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let recipient = std::str::from_utf8(&request.body)
            .ok()
            .map(str::trim)
            .filter(|r| r.contains('@'))
            .ok_or_else(|| ParseError::Invalid("the body is not an address".into()))?;
        Ok(vec![DeliveryEvent {
            kind: EventKind::Delivered,
            bounce_class: None,
            recipient: Text::Owned(recipient.into()),
            occurred_at: clock::now(),
            provider: Text::Owned("contract-v0".into()),
            provider_event_id: None,
            provider_message_id: None,
            message_id: None,
            smtp_status: None,
            enhanced_status: None,
            diagnostic: None,
        }])
    }
}

#[allow(unsafe_code, reason = "generated canonical-ABI glue")]
mod exports {
    use super::{ContractV0, bindings};
    bindings::export!(ContractV0 with_types_in bindings);
}
