//! `adapt-connection` for Mailgun: the region's SMTP host, the domain's SMTP
//! login and password, tags as `X-Mailgun-Tag` headers.

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// The header Mailgun reads a message's tags from (one header per tag).
pub const TAG_HEADER: &str = "X-Mailgun-Tag";
/// Tags Mailgun keeps per message.
const MAX_TAGS: usize = 3;

/// Options of `provider: mailgun`. The domain's SMTP login is smtp.username, its SMTP password smtp.password, the HTTP webhook signing key webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mailgun options")]
pub struct Options {
    /// Region of the Mailgun account: us (smtp.mailgun.org) or eu (smtp.eu.mailgun.org).
    #[serde(default)]
    pub region: Region,
    /// Tags added to every message sent over this connection (X-Mailgun-Tag headers; Mailgun keeps at most three per message).
    #[serde(default)]
    #[schemars(
        length(max = 3),
        inner(length(min = 1, max = 128), pattern(r"^[ -~]+$"))
    )]
    pub tags: Vec<String>,
}

/// Mailgun account region.
#[derive(Default, Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum Region {
    // No doc comments on the variants: with them the schema would be a
    // `oneOf` of constants instead of a plain `enum` editors complete.
    #[default]
    Us,
    Eu,
}

impl Region {
    fn host(self) -> &'static str {
        match self {
            Region::Us => "smtp.mailgun.org",
            Region::Eu => "smtp.eu.mailgun.org",
        }
    }
}

/// Mailgun's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    if options.tags.len() > MAX_TAGS {
        errors.push(error(
            "/options/tags",
            format!("Mailgun keeps at most {MAX_TAGS} tags per message"),
        ));
    }
    let mut extra_headers = Vec::new();
    for (i, tag) in options.tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > 128 || !tag.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            errors.push(error(
                &format!("/options/tags/{i}"),
                "a tag is 1 to 128 printable ASCII characters",
            ));
        } else {
            extra_headers.push((TAG_HEADER.to_owned(), tag.clone()));
        }
    }
    let host = o.host.unwrap_or_else(|| options.region.host().to_owned());
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the SMTP password", &mut errors);
    let username = o.username.filter(|u| !u.trim().is_empty());
    if username.is_none() {
        errors.push(error(
            "/smtp/username",
            "mailgun needs smtp.username: the domain's SMTP login, e.g. postmaster@mg.example.com",
        ));
    }
    smtp::require_password(
        o.has_password,
        "mailgun needs smtp.password: a reference to the SMTP password, e.g. { env: MAILGUN_SMTP_PASSWORD }",
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
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
