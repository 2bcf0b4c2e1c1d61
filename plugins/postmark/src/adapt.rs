//! `adapt-connection` for Postmark: `smtp.postmarkapp.com` with STARTTLS,
//! the server API token as password and, unless `smtp.username` names an
//! SMTP token's access key, as user name too (read by the host from the
//! same secret), the message stream as the `X-PM-Message-Stream` header.

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// Postmark's SMTP service.
pub const DEFAULT_HOST: &str = "smtp.postmarkapp.com";
/// The header that picks the message stream of a message sent over SMTP.
pub const STREAM_HEADER: &str = "X-PM-Message-Stream";

/// Options of `provider: postmark`. The server API token is smtp.password; the webhook's basic-auth credentials (user:password) are webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "postmark options")]
pub struct Options {
    /// Message stream ID of every message sent over this connection, sent as the X-PM-Message-Stream header; unset, Postmark uses the server's default transactional stream.
    #[serde(default)]
    #[schemars(length(min = 1, max = 100), pattern(r"^[!-~]+$"))]
    pub message_stream: Option<String>,
}

/// Postmark's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    let mut extra_headers = Vec::new();
    if let Some(stream) = options.message_stream {
        if stream.is_empty() || !stream.bytes().all(|b| b.is_ascii_graphic()) {
            errors.push(error(
                "/options/message_stream",
                "a message stream ID is printable ASCII without spaces",
            ));
        } else {
            extra_headers.push((STREAM_HEADER.to_owned(), stream));
        }
    }
    let host = o.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the server token", &mut errors);
    // Without an explicit user (an SMTP token's access key), the user is
    // the server token itself: the same secret as the password, which the
    // host reads at login, so the token is written nowhere in plain text.
    let username = o.username.filter(|u| !u.trim().is_empty());
    smtp::require_password(
        o.has_password,
        "postmark needs smtp.password: a reference to the server API token (or an SMTP \
         token's secret key), e.g. { env: POSTMARK_SERVER_TOKEN }",
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    if username.is_none() {
        host::username_secret(PasswordSource::SmtpPassword);
    }
    Ok(SmtpSettings {
        host,
        port,
        security,
        username,
        password: PasswordSource::SmtpPassword,
        extra_headers,
    })
}
