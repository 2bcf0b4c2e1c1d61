//! Example provider plugin (a template to copy): a fictional provider that
//! posts `[{"event": "...", "email": "...", "time": "RFC 3339", "id": "..."}]`
//! signed with `X-Example-Signature: hex(HMAC-SHA256(secret, timestamp + body))`
//! and `X-Example-Timestamp: <unix seconds>`.

use mailplug_sdk::prelude::*;
use serde::Deserialize;

struct Example;

#[derive(Deserialize)]
struct Event {
    event: String,
    email: String,
    time: String,
    id: Option<String>,
    reason: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Guest for Example {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "example".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "Example Provider".into(),
            options_schema: r#"{"type":"object","additionalProperties":false,"properties":{"region":{"enum":["eu","us"]}}}"#.into(),
            capabilities: vec![Capability::AdaptsSmtp, Capability::VerifiesWebhooks, Capability::ParsesWebhooks],
            signature_scheme: Some("hmac-sha256-hex".into()),
        }
    }

    fn adapt_connection(
        options: String,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        let region = if options.contains("\"us\"") {
            "us"
        } else {
            "eu"
        };
        // The host's rule for unset port/security, so 465 alone means TLS.
        let (port, security) = smtp::port_security_defaults(overrides.port, overrides.security);
        Ok(SmtpSettings {
            host: overrides
                .host
                .unwrap_or_else(|| format!("smtp.{region}.example.net")),
            port,
            security,
            username: Some("apikey".into()),
            password: PasswordSource::SmtpPassword,
            extra_headers: vec![],
        })
    }

    fn verify_webhook(request: WebhookRequest, secret: String) -> Result<(), VerifyError> {
        let missing = |h: &str| VerifyError::MissingHeader(h.into());
        let ts = mailplug_sdk::header(&request, "x-example-timestamp")
            .ok_or_else(|| missing("x-example-timestamp"))?;
        let sig = mailplug_sdk::header(&request, "x-example-signature")
            .ok_or_else(|| missing("x-example-signature"))?;
        let sent: i64 = ts
            .parse()
            .map_err(|_| VerifyError::Malformed("bad timestamp".into()))?;
        let skew = host::now() - sent;
        if skew.abs() > 300 {
            return Err(VerifyError::TimestampOutOfTolerance(skew));
        }
        let mac = host::hmac(
            host::Hash::Sha256,
            secret.as_bytes(),
            &[ts.as_bytes(), &request.body].concat(),
        );
        if host::constant_time_eq(
            hex(&mac).as_bytes(),
            sig.trim().to_ascii_lowercase().as_bytes(),
        ) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let events: Vec<Event> = json::parse(&request.body)?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let (kind, bounce_class) = match e.event.as_str() {
                "delivered" => (EventKind::Delivered, None),
                "bounce" => (EventKind::Bounced, Some(BounceClass::Hard)),
                "spam" => (EventKind::Complained, None),
                other => {
                    log_debug(&format!("ignoring event type {other}"));
                    continue;
                }
            };
            let occurred_at = time::parse_rfc3339(&e.time)
                .ok_or_else(|| ParseError::Invalid(format!("bad time {:?}", e.time)))?;
            let (smtp_status, enhanced_status) =
                match e.reason.as_deref().and_then(smtp::extract_status) {
                    Some((code, enhanced)) => (Some(code), enhanced),
                    None => (None, None),
                };
            out.push(DeliveryEvent {
                kind,
                bounce_class,
                recipient: Text::Owned(e.email),
                occurred_at,
                provider: Text::Owned("example".into()),
                provider_event_id: e.id.map(Text::Owned),
                provider_message_id: None,
                message_id: None,
                smtp_status: smtp_status.map(Text::Owned),
                enhanced_status: enhanced_status.map(Text::Owned),
                diagnostic: e.reason.map(Text::Owned),
            });
        }
        Ok(out)
    }
}

mailplug_sdk::export!(Example);
