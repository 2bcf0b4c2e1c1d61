//! `adapt-connection` for SendGrid: the SMTP relay `smtp.sendgrid.net`,
//! authenticated as the literal user `apikey` with the API key as password.

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// SendGrid's SMTP relay.
pub const DEFAULT_HOST: &str = "smtp.sendgrid.net";
/// SendGrid's SMTP relay takes no real user name: always this literal.
pub const USERNAME: &str = "apikey";

// Deliberately empty: a `region` option is left out until the EU relay host
// is confirmed (only the EU *API* host is documented in our sources); an EU
// connection can set `smtp.host` meanwhile.
/// SendGrid takes no options: put the API key in smtp.password and the Event Webhook verification key in webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sendgrid options")]
pub struct Options {}

/// SendGrid's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(mut e) = options::parse::<Options>(options) {
        errors.append(&mut e);
    }
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
