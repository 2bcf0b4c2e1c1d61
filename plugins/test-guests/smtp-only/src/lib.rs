//! Test-only guest that only adapts SMTP settings: a connection using it has
//! no webhook endpoint (the host answers 404 without calling the guest).

use mailplug_sdk::prelude::*;

struct SmtpOnly;

impl Guest for SmtpOnly {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "smtp-only".into(),
            version: "0.1.0".into(),
            display_name: "SMTP-only test guest".into(),
            options_schema: "{}".into(),
            capabilities: vec![Capability::AdaptsSmtp],
            signature_scheme: None,
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

    fn verify_webhook(_request: WebhookRequest, _secret: String) -> Result<(), VerifyError> {
        Err(VerifyError::BadSignature)
    }

    fn parse_webhook(_request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        Err(ParseError::Invalid("this plugin parses no webhooks".into()))
    }
}

mailplug_sdk::export!(SmtpOnly);
