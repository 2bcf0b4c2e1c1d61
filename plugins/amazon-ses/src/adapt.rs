//! `adapt-connection` for Amazon SES: the region's SMTP endpoint
//! `email-smtp.<region>.amazonaws.com` with STARTTLS on 587 (implicit TLS
//! on 465; 25 and 2587 STARTTLS, 2465 TLS when set explicitly), the SES
//! SMTP credentials, and the `X-SES-CONFIGURATION-SET` /
//! `X-SES-MESSAGE-TAGS` headers SES reads from messages it relays.

use std::collections::BTreeMap;

use mailplug_sdk::json::pointer_token;
use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

use super::sns::is_region;

/// Selects the configuration set (event destinations, IP pool, tracking).
pub const CONFIGURATION_SET_HEADER: &str = "X-SES-CONFIGURATION-SET";
/// Message tags, `name=value, name=value`, published with every event.
pub const MESSAGE_TAGS_HEADER: &str = "X-SES-MESSAGE-TAGS";

/// Longest configuration set name SES accepts.
const MAX_CONFIGURATION_SET_LEN: usize = 64;
/// Longest tag name or value SES accepts.
const MAX_TAG_LEN: usize = 256;
/// Most tags SES accepts on one message.
const MAX_TAGS: usize = 50;
/// The tags header must fit one header line (998 bytes, RFC 5322 §2.1.1)
/// with its name and `: `.
const MAX_TAGS_HEADER_LEN: usize = 998 - MESSAGE_TAGS_HEADER.len() - 2;

/// Options of `provider: amazon-ses`. The SES SMTP user name is smtp.username and a reference to the SES SMTP password is smtp.password (SMTP credentials, not the IAM access key pair); the basic-auth credentials of the SNS subscription URL (user:password) are webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "amazon-ses options")]
pub struct Options {
    /// AWS region of the SES account, e.g. us-east-1 or eu-west-1: mail goes to email-smtp.<region>.amazonaws.com (smtp.host overrides, e.g. a FIPS or VPC endpoint). SES SMTP credentials are valid in the region they were created for. Required.
    #[schemars(required, pattern(r"^[a-z]+(-[a-z]+){1,2}-[0-9]{1,2}$"))]
    pub region: Option<String>,
    /// Configuration set of every message sent over this connection, sent as the X-SES-CONFIGURATION-SET header: its event destinations (e.g. the SNS topic of this connection's webhook) publish the events of these messages. 1 to 64 letters, digits, dashes and underscores.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub configuration_set: Option<String>,
    /// Message tags of every message sent over this connection, sent as the X-SES-MESSAGE-TAGS header (`name=value, ...`); SES publishes them with each event and the configuration set's CloudWatch dimensions can use them. Names and values: 1 to 256 letters, digits, dashes and underscores; at most 50 tags, and together they must fit one header line.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

/// Whether `name` is made of the characters SES allows in configuration
/// set names and message tags, with a length in `1..=max`.
fn is_ses_token(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The headers the options ask for; every invalid option is an error at
/// its pointer.
fn headers(options: &Options, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match &options.configuration_set {
        Some(set) if !is_ses_token(set, MAX_CONFIGURATION_SET_LEN) => errors.push(error(
            "/options/configuration_set",
            "a configuration set name is 1 to 64 letters, digits, dashes and underscores",
        )),
        Some(set) => headers.push((CONFIGURATION_SET_HEADER.to_owned(), set.clone())),
        None => {}
    }
    let Some(tags) = options.tags.as_ref().filter(|t| !t.is_empty()) else {
        return headers;
    };
    let before = errors.len();
    if tags.len() > MAX_TAGS {
        errors.push(error(
            "/options/tags",
            format!(
                "SES accepts at most {MAX_TAGS} tags per message, not {}",
                tags.len()
            ),
        ));
    }
    for (name, value) in tags {
        let pointer = format!("/options/tags/{}", pointer_token(name));
        if !is_ses_token(name, MAX_TAG_LEN) {
            errors.push(error(
                &pointer,
                format!(
                    "tag name {name:?}: SES tag names are 1 to 256 letters, digits, dashes and \
                     underscores"
                ),
            ));
        } else if !is_ses_token(value, MAX_TAG_LEN) {
            errors.push(error(
                &pointer,
                "SES tag values are 1 to 256 letters, digits, dashes and underscores",
            ));
        }
    }
    if errors.len() > before {
        return headers;
    }
    let value = tags
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ");
    if value.len() > MAX_TAGS_HEADER_LEN {
        errors.push(error(
            "/options/tags",
            format!(
                "the tags take {} characters, more than the {MAX_TAGS_HEADER_LEN} of one \
                 {MESSAGE_TAGS_HEADER} header line: use fewer or shorter tags",
                value.len()
            ),
        ));
    } else {
        headers.push((MESSAGE_TAGS_HEADER.to_owned(), value));
    }
    headers
}

/// The security each port of the SES SMTP endpoint speaks.
fn ses_port_security(port: u16) -> Option<Security> {
    match port {
        25 | 587 | 2587 => Some(Security::Starttls),
        465 | 2465 => Some(Security::Tls),
        _ => None,
    }
}

/// SES's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    let region = match options.region.as_deref() {
        Some(region) if is_region(region) => Some(region),
        Some(region) => {
            errors.push(error(
                "/options/region",
                format!("{region:?} is not an AWS region name such as us-east-1 or eu-west-1"),
            ));
            None
        }
        None if errors.iter().any(|e| e.path == "/options/region") => None,
        None => {
            errors.push(error(
                "/options/region",
                "amazon-ses needs options.region, the AWS region of the SES account \
                 (e.g. us-east-1): it selects email-smtp.<region>.amazonaws.com",
            ));
            None
        }
    };
    let extra_headers = headers(&options, &mut errors);
    let host = o
        .host
        .clone()
        .or_else(|| region.map(|r| format!("email-smtp.{r}.amazonaws.com")))
        .unwrap_or_default();
    // 2465 is implicit TLS at SES although the general rule reads any port
    // but 465 as STARTTLS: say so rather than pick a mode that cannot work.
    if o.port == Some(2465) && o.security.is_none() {
        errors.push(error(
            "/smtp/security",
            "SES speaks implicit TLS on port 2465: set security: tls",
        ));
    }
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    if region.is_some() || o.host.is_some() {
        smtp::relay_transport_errors(&host, port, security, "the SMTP password", &mut errors);
    }
    match ses_port_security(port) {
        Some(expected)
            if o.security.is_some()
                && expected != security
                && !errors.iter().any(|e| e.path == "/smtp/security") =>
        {
            errors.push(error(
                "/smtp/security",
                format!(
                    "SES speaks {} on port {port}",
                    if expected == Security::Tls {
                        "implicit TLS (security: tls)"
                    } else {
                        "STARTTLS (security: starttls)"
                    }
                ),
            ))
        }
        _ => {}
    }
    let username = o.username.filter(|u| !u.trim().is_empty());
    match &username {
        None => errors.push(error(
            "/smtp/username",
            "set smtp.username: the SES SMTP user name (an access key id, AKIA..., shown when the \
             SMTP credentials are created in the SES console)",
        )),
        Some(user) if user.contains('@') || user.chars().any(char::is_whitespace) => {
            errors.push(error(
                "/smtp/username",
                "the SES SMTP user name is the access key id of the SMTP credentials \
                 (AKIA..., no spaces), not an email address or IAM user name",
            ))
        }
        Some(_) => {}
    }
    smtp::require_password(
        o.has_password,
        "amazon-ses needs smtp.password: a reference to the SES SMTP password (derived from the \
         IAM secret access key, not the secret key itself), e.g. { env: SES_SMTP_PASSWORD }",
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

    fn overrides() -> SmtpOverrides {
        SmtpOverrides {
            host: None,
            port: None,
            security: None,
            username: Some("AKIAIOSFODNN7EXAMPLE".into()),
            has_password: true,
        }
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    const REGION: &str = r#"{"region": "eu-west-1"}"#;

    #[test]
    fn region_selects_the_endpoint_with_starttls_on_587() {
        let s = adapt(REGION, overrides()).unwrap();
        assert_eq!(s.host, "email-smtp.eu-west-1.amazonaws.com");
        assert_eq!((s.port, s.security), (587, Security::Starttls));
        assert_eq!(s.username.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(s.password, PasswordSource::SmtpPassword);
        assert!(s.extra_headers.is_empty());
        for (port, security) in [
            (465, Security::Tls),
            (2587, Security::Starttls),
            (25, Security::Starttls),
        ] {
            let s = adapt(
                REGION,
                SmtpOverrides {
                    port: Some(port),
                    ..overrides()
                },
            )
            .unwrap();
            assert_eq!((s.port, s.security), (port, security));
        }
        let s = adapt(
            REGION,
            SmtpOverrides {
                port: Some(2465),
                security: Some(Security::Tls),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!((s.port, s.security), (2465, Security::Tls));
        let s = adapt(
            REGION,
            SmtpOverrides {
                host: Some("email-smtp-fips.us-east-1.amazonaws.com".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(s.host, "email-smtp-fips.us-east-1.amazonaws.com");
    }

    #[test]
    fn region_is_required_and_checked() {
        for options in ["", "{}", r#"{"region": null}"#] {
            let errors = adapt(options, overrides()).unwrap_err();
            assert_eq!(paths(&errors), ["/options/region"], "{options}: {errors:?}");
        }
        for bad in [
            "US-EAST-1",
            "us-east",
            "email-smtp.us-east-1.amazonaws.com",
            "us_east_1",
        ] {
            let errors = adapt(&format!(r#"{{"region": "{bad}"}}"#), overrides()).unwrap_err();
            assert_eq!(paths(&errors), ["/options/region"], "{bad}");
        }
        let errors = adapt(r#"{"region": 1}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/region"], "{errors:?}");
    }

    #[test]
    fn configuration_set_and_tags_become_headers() {
        let s = adapt(
            r#"{"region": "us-east-1", "configuration_set": "mailplug-events",
                "tags": {"tenant": "acme", "campaign_id": "spring-2026"}}"#,
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
                ("X-SES-CONFIGURATION-SET", "mailplug-events"),
                ("X-SES-MESSAGE-TAGS", "campaign_id=spring-2026, tenant=acme"),
            ]
        );
    }

    #[test]
    fn invalid_sets_and_tags_are_each_named() {
        let errors = adapt(
            r#"{"region": "us-east-1", "configuration_set": "has space",
                "tags": {"ok": "fine", "bad/name": "x", "v": "a=b", "empty": ""}}"#,
            overrides(),
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "/options/configuration_set",
                "/options/tags/bad~1name",
                "/options/tags/empty",
                "/options/tags/v"
            ]
        );
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("t{i}"), "v".to_owned())).collect();
        let options = serde_json::json!({"region": "us-east-1", "tags": many}).to_string();
        assert_eq!(
            paths(&adapt(&options, overrides()).unwrap_err()),
            ["/options/tags"]
        );
        let long: BTreeMap<String, String> =
            (0..5).map(|i| (format!("t{i}"), "v".repeat(256))).collect();
        let options = serde_json::json!({"region": "us-east-1", "tags": long}).to_string();
        let errors = adapt(&options, overrides()).unwrap_err();
        assert!(errors[0].message.contains("header line"), "{errors:?}");
        assert!(is_ses_token(&"a".repeat(64), 64) && !is_ses_token(&"a".repeat(65), 64));
    }

    #[test]
    fn credentials_and_port_rules() {
        let errors = adapt(
            REGION,
            SmtpOverrides {
                username: None,
                has_password: false,
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/username", "/smtp/password"]);
        assert!(
            errors[1].message.contains("not the secret key itself"),
            "{errors:?}"
        );
        let errors = adapt(
            REGION,
            SmtpOverrides {
                username: Some("me@example.com".into()),
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/username"]);
        for (port, security) in [
            (Some(2465), None),
            (Some(2465), Some(Security::Starttls)),
            (Some(2587), Some(Security::Tls)),
            (Some(465), Some(Security::Starttls)),
        ] {
            let errors = adapt(
                REGION,
                SmtpOverrides {
                    port,
                    security,
                    ..overrides()
                },
            )
            .unwrap_err();
            assert!(
                paths(&errors).iter().all(|p| *p == "/smtp/security"),
                "{port:?}: {errors:?}"
            );
        }
        let errors = adapt(
            REGION,
            SmtpOverrides {
                security: Some(Security::None),
                ..overrides()
            },
        )
        .unwrap_err();
        assert!(errors[0].message.contains("SMTP password"), "{errors:?}");
    }
}
