//! `adapt-connection` for SendGrid: the SMTP relay `smtp.sendgrid.net`,
//! authenticated as the literal user `apikey` with the API key as password.

use mailplug_sdk::prelude::*;
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
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the API key", &mut errors);
    smtp::fixed_username_errors(
        &host,
        DEFAULT_HOST,
        o.username.as_deref(),
        ("SendGrid", USERNAME),
        &mut errors,
    );
    smtp::require_password(
        o.has_password,
        "sendgrid needs smtp.password: a reference to the API key, e.g. { env: SENDGRID_API_KEY }",
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
