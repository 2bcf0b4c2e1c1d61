//! `adapt-connection` for SendGrid: the SMTP relay `smtp.sendgrid.net`,
//! authenticated as the literal user `apikey` with the API key as password.

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;

/// SendGrid's SMTP relay.
pub const DEFAULT_HOST: &str = "smtp.sendgrid.net";
/// SendGrid's SMTP relay takes no real user name: always this literal.
pub const USERNAME: &str = "apikey";

/// JSON Schema of `options` for `provider: sendgrid`.
///
/// Deliberately empty: the API key is `smtp.password` and the webhook key is
/// `webhook.secret`. A `region` option is left out until the EU relay host is
/// confirmed (only the EU *API* host is documented in our sources); an EU
/// connection can set `smtp.host` meanwhile.
pub const OPTIONS_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "sendgrid options",
  "description": "SendGrid takes no options: put the API key in smtp.password and the Event Webhook verification key in webhook.secret.",
  "type": "object",
  "additionalProperties": false,
  "properties": {}
}"#;

/// Every key of `options` is an error: the schema allows none.
fn check_options(options: &str, errors: &mut Vec<FieldError>) {
    if options.trim().is_empty() {
        return;
    }
    match json::parse::<serde_json::Value>(options.as_bytes()) {
        Ok(serde_json::Value::Object(map)) => {
            for key in map.keys() {
                let path = format!("/options/{}", mailplug_sdk::json::pointer_token(key));
                errors.push(error(
                    &path,
                    "unknown option: sendgrid takes none (API key: smtp.password)",
                ));
            }
        }
        Ok(serde_json::Value::Null) => {}
        Ok(_) => errors.push(error("/options", "options must be a mapping")),
        Err(ParseError::Malformed(m) | ParseError::Invalid(m)) => {
            errors.push(error("/options", m));
        }
    }
}

/// SendGrid's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_options(options, &mut errors);
    let host = o.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
    if host.trim().is_empty() {
        errors.push(error("/smtp/host", "smtp.host is empty"));
    }
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::port_security_errors(port, security, &mut errors);
    if security == Security::None {
        errors.push(error(
            "/smtp/security",
            "the API key would be sent in clear text with security: none",
        ));
    }
    if host == DEFAULT_HOST
        && let Some(user) = o.username.as_deref().filter(|u| *u != USERNAME)
    {
        errors.push(error(
            "/smtp/username",
            format!(
                "SendGrid's SMTP user is always `{USERNAME}`, not `{user}`: remove smtp.username"
            ),
        ));
    }
    if !o.has_password {
        errors.push(error(
            "/smtp/password",
            "sendgrid needs smtp.password: a reference to the API key, e.g. { env: SENDGRID_API_KEY }",
        ));
    }
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
