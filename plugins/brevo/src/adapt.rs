//! `adapt-connection` for Brevo: `smtp-relay.brevo.com` with STARTTLS on 587
//! (2525 also speaks STARTTLS, 465 implicit TLS), the account's SMTP login as
//! user and its SMTP key as password, and the `X-Mailin-Tag` /
//! `X-Mailin-custom` headers Brevo reads from relayed messages and echoes in
//! its webhook events.

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// Brevo's SMTP relay.
pub const DEFAULT_HOST: &str = "smtp-relay.brevo.com";
/// Tags a message; echoed as `tag` in webhook events.
pub const TAG_HEADER: &str = "X-Mailin-Tag";
/// Free text echoed as `X-Mailin-custom` in webhook events.
pub const CUSTOM_HEADER: &str = "X-Mailin-custom";

/// Longest tag or custom value: with the field name it still fits one header
/// line (998 characters, RFC 5322 §2.1.1).
const MAX_HEADER_TEXT_LEN: usize = 900;

/// Prefixes of Brevo's secret keys (`xsmtpsib-` SMTP keys, `xkeysib-` API
/// keys): a user name starting with one is a key pasted in the wrong field.
const KEY_PREFIXES: [&str; 2] = ["xsmtpsib-", "xkeysib-"];

/// Options of `provider: brevo`. The SMTP login (e.g. 1a2b3c001@smtp-brevo.com, shown under SMTP & API > SMTP) is smtp.username, a reference to the SMTP key smtp.password; the webhook's bearer token, or the user:password of basic auth in its URL, is webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "brevo options")]
pub struct Options {
    /// Tag of every message sent over this connection, sent as the X-Mailin-Tag header; Brevo files the messages under it in its logs and statistics and echoes it as `tag` in webhook events. Printable ASCII without commas, at most 900 characters, not starting or ending with a space.
    #[serde(default)]
    #[schemars(
        length(min = 1, max = 900),
        pattern(r"^[!-+\--~]([ -+\--~]*[!-+\--~])?$")
    )]
    pub tag: Option<String>,
    /// Custom value of every message sent over this connection, in any text format (e.g. JSON), sent as the X-Mailin-custom header; Brevo echoes it as `X-Mailin-custom` in webhook events. Printable ASCII, at most 900 characters, not starting or ending with a space.
    #[serde(default)]
    #[schemars(length(min = 1, max = 900), pattern(r"^[!-~]([ -~]*[!-~])?$"))]
    pub custom: Option<String>,
}

/// Whether `value` fits one header line as printable ASCII (spaces inside
/// only: a receiver drops them at either end).
fn is_header_text(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_HEADER_TEXT_LEN
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// The headers the options ask for, in a fixed order; every invalid option
/// is an error at its pointer.
fn headers(options: &Options, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match &options.tag {
        // Brevo has been seen reading a comma-separated value as several
        // tags (not in its reference docs): a comma is refused so the tag
        // stays the one tag the operator wrote.
        Some(tag) if !is_header_text(tag) || tag.contains(',') => errors.push(error(
            "/options/tag",
            "a tag is 1 to 900 printable ASCII characters without commas, not starting or \
             ending with a space (no line breaks or non-ASCII text)",
        )),
        Some(tag) => headers.push((TAG_HEADER.to_owned(), tag.clone())),
        None => {}
    }
    match &options.custom {
        Some(custom) if !is_header_text(custom) => errors.push(error(
            "/options/custom",
            "1 to 900 printable ASCII characters, not starting or ending with a space \
             (no line breaks or non-ASCII text)",
        )),
        Some(custom) => headers.push((CUSTOM_HEADER.to_owned(), custom.clone())),
        None => {}
    }
    headers
}

/// The SMTP login from `smtp.username`, or an error saying what it is.
fn username(given: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let Some(user) = given.filter(|u| !u.trim().is_empty()) else {
        errors.push(error(
            "/smtp/username",
            "set smtp.username: Brevo's SMTP user is the account's SMTP login shown under \
             SMTP & API > SMTP (e.g. 1a2b3c001@smtp-brevo.com, or the account's email address \
             on older accounts)",
        ));
        return None;
    };
    let lower = user.to_ascii_lowercase();
    if KEY_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        errors.push(error(
            "/smtp/username",
            "smtp.username looks like a Brevo key: the user is the SMTP login (an address such \
             as 1a2b3c001@smtp-brevo.com); the SMTP key goes in smtp.password as a secret \
             reference",
        ));
        return None;
    }
    // Both forms of the login are addresses; anything else cannot log in.
    // The value is not echoed: a secret pasted in the wrong field would land
    // in CI logs.
    let is_address = user
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !user.chars().any(|c| c.is_whitespace() || c.is_control());
    if !is_address {
        errors.push(error(
            "/smtp/username",
            "smtp.username is not a Brevo SMTP login: the login is an address such as \
             1a2b3c001@smtp-brevo.com (or the account's email address)",
        ));
        return None;
    }
    Some(user)
}

/// Brevo's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    let extra_headers = headers(&options, &mut errors);
    let host = o.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
    // 2525 is not a well-known port: the SDK's rule already gives it STARTTLS.
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the SMTP key", &mut errors);
    let username = username(o.username, &mut errors);
    smtp::require_password(
        o.has_password,
        "brevo needs smtp.password: a reference to an SMTP key (not an API key), e.g. \
         { env: BREVO_SMTP_KEY }",
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

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: &str = "1a2b3c001@smtp-brevo.com";

    fn overrides() -> SmtpOverrides {
        SmtpOverrides {
            host: None,
            port: None,
            security: None,
            username: Some(LOGIN.into()),
            has_password: true,
        }
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn defaults_are_the_relay_with_starttls_and_no_headers() {
        let s = adapt("", overrides()).unwrap();
        assert_eq!(s.host, DEFAULT_HOST);
        assert_eq!((s.port, s.security), (587, Security::Starttls));
        assert_eq!(s.username.as_deref(), Some(LOGIN));
        assert_eq!(s.password, PasswordSource::SmtpPassword);
        assert!(s.extra_headers.is_empty());
    }

    #[test]
    fn port_465_is_implicit_tls_and_2525_starttls() {
        let with_port = |port| SmtpOverrides {
            port: Some(port),
            ..overrides()
        };
        let tls = adapt("", with_port(465)).unwrap();
        assert_eq!((tls.port, tls.security), (465, Security::Tls));
        let alt = adapt("", with_port(2525)).unwrap();
        assert_eq!((alt.port, alt.security), (2525, Security::Starttls));
        let explicit = adapt(
            "",
            SmtpOverrides {
                security: Some(Security::Tls),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!((explicit.port, explicit.security), (465, Security::Tls));
    }

    #[test]
    fn options_become_the_mailin_headers() {
        let s = adapt(
            r#"{"tag": "password reset", "custom": "{\"tenant\": \"acme\"}"}"#,
            overrides(),
        )
        .unwrap();
        let headers: Vec<(&str, &str)> = s
            .extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("X-Mailin-Tag", "password reset"),
                ("X-Mailin-custom", "{\"tenant\": \"acme\"}"),
            ]
        );
    }

    #[test]
    fn invalid_options_are_each_named() {
        let errors = adapt(r#"{"tag": "a,b", "custom": "line\nbreak"}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/tag", "/options/custom"]);
        let errors = adapt(r#"{"tag": " padded", "custom": "ünï"}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/tag", "/options/custom"]);
        let errors = adapt(r#"{"tags": ["a"]}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/tags"]);
        let errors = adapt(r#"{"tag": 5}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/tag"]);
        assert!(is_header_text(&"a".repeat(900)) && !is_header_text(&"a".repeat(901)));
    }

    #[test]
    fn the_login_and_an_smtp_key_reference_are_required() {
        let errors = adapt(
            "",
            SmtpOverrides {
                username: Some("  ".into()),
                has_password: false,
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/username", "/smtp/password"]);
        assert!(errors[0].message.contains("SMTP login"), "{errors:?}");
        assert!(errors[1].message.contains("SMTP key"), "{errors:?}");
        let errors = adapt(
            "",
            SmtpOverrides {
                username: None,
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/username"]);
    }

    #[test]
    fn a_key_or_a_non_address_as_user_is_refused() {
        for user in [
            "xsmtpsib-0123abcd-XyZ",
            "XKEYSIB-0123",
            "apikey",
            "@relay.example",
            "a b@c",
        ] {
            let errors = adapt(
                "",
                SmtpOverrides {
                    username: Some(user.into()),
                    ..overrides()
                },
            )
            .unwrap_err();
            assert_eq!(paths(&errors), ["/smtp/username"], "{user}");
            assert!(!errors[0].message.contains(user), "{errors:?}");
        }
        // The account's email address is the login of older accounts.
        let s = adapt(
            "",
            SmtpOverrides {
                username: Some("ops@example.org".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(s.username.as_deref(), Some("ops@example.org"));
    }

    #[test]
    fn transport_rules_apply() {
        let errors = adapt(
            "",
            SmtpOverrides {
                port: Some(465),
                security: Some(Security::Starttls),
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/security"]);
        let errors = adapt(
            "",
            SmtpOverrides {
                security: Some(Security::None),
                ..overrides()
            },
        )
        .unwrap_err();
        assert!(errors[0].message.contains("the SMTP key"), "{errors:?}");
        let errors = adapt(
            "",
            SmtpOverrides {
                host: Some(" ".into()),
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/host"]);
        let s = adapt(
            "",
            SmtpOverrides {
                host: Some("smtp-relay.sendinblue.com".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(s.host, "smtp-relay.sendinblue.com");
    }
}
