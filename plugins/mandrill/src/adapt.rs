//! `adapt-connection` for Mailchimp Transactional (Mandrill):
//! `smtp.mandrillapp.com` with STARTTLS on 587 (or implicit TLS on 465), an
//! API key as the password (Mandrill ignores the user name), and the
//! `X-MC-*` headers Mandrill reads from messages it relays (tags, metadata,
//! subaccount, tracking).

use std::collections::BTreeMap;

use mailplug_sdk::json::pointer_token;
use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// Mandrill's SMTP service (one host for every account).
pub const DEFAULT_HOST: &str = "smtp.mandrillapp.com";
/// The user name sent when `smtp.username` is unset: Mandrill authenticates
/// by the API key alone and does not read the user name.
pub const DEFAULT_USERNAME: &str = "mailplug";
/// Comma-separated tags of the message.
pub const TAGS_HEADER: &str = "X-MC-Tags";
/// A JSON object of metadata, echoed as `msg.metadata` in webhook events.
pub const METADATA_HEADER: &str = "X-MC-Metadata";
/// The subaccount the message is sent from.
pub const SUBACCOUNT_HEADER: &str = "X-MC-Subaccount";
/// Comma-separated tracking Mandrill turns on for the message.
pub const TRACK_HEADER: &str = "X-MC-Track";

/// Longest tag Mandrill accepts.
const MAX_TAG_LEN: usize = 50;
/// Mandrill keeps at most this many bytes of JSON-encoded metadata per message.
const MAX_METADATA_LEN: usize = 200;
/// Longest subaccount id Mandrill accepts.
const MAX_SUBACCOUNT_LEN: usize = 255;
/// Longest header value: with the field name it still fits one header line
/// (998 characters, RFC 5322 §2.1.1).
const MAX_HEADER_LEN: usize = 900;

/// Options of `provider: mandrill`. A reference to a Mandrill API key is smtp.password; the webhook's key (shown beside each webhook at Mandrill) is webhook.secret, and the URL registered there is webhook.url.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mandrill options")]
pub struct Options {
    /// Tags of every message sent over this connection, sent as the X-MC-Tags header (comma-separated); Mandrill aggregates its statistics by tag and echoes them as `msg.tags` in events. Each tag is 1 to 50 printable ASCII characters without commas, not starting with an underscore (Mandrill reserves those) and not starting or ending with a space.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata of every message sent over this connection, sent as the X-MC-Metadata header (a JSON object); Mandrill echoes it as `msg.metadata` in events and can index it for search. Keys are ASCII letters, digits and underscores, not starting with an underscore; values are strings (quote numbers); the JSON encoding is at most 200 bytes.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Subaccount id every message is sent from, sent as the X-MC-Subaccount header; the subaccount must exist at Mandrill. 1 to 255 printable ASCII characters, not starting or ending with a space.
    #[serde(default)]
    #[schemars(length(min = 1, max = 255), pattern(r"^[!-~]([ -~]*[!-~])?$"))]
    pub subaccount: Option<String>,
    /// Tracking Mandrill turns on for every message, overriding the account's sending defaults, sent as the X-MC-Track header: `opens`, and at most one click mode (`clicks_all`, `clicks_htmlonly` or `clicks_textonly`). Empty (the default): no header, the account's sending defaults apply.
    #[serde(default)]
    pub track: Vec<Track>,
}

/// One value of X-MC-Track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum Track {
    /// Open tracking.
    Opens,
    /// Click tracking in HTML and text messages.
    ClicksAll,
    /// Click tracking in HTML messages only.
    ClicksHtmlonly,
    /// Click tracking in text messages only.
    ClicksTextonly,
}

impl Track {
    fn header_value(self) -> &'static str {
        match self {
            Track::Opens => "opens",
            Track::ClicksAll => "clicks_all",
            Track::ClicksHtmlonly => "clicks_htmlonly",
            Track::ClicksTextonly => "clicks_textonly",
        }
    }
}

/// Printable ASCII (spaces inside only: a receiver drops them at either end).
fn is_header_text(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn is_tag(tag: &str) -> bool {
    is_header_text(tag, MAX_TAG_LEN) && !tag.starts_with('_') && !tag.contains(',')
}

fn is_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('_')
        && key.len() <= MAX_METADATA_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `value` as a JSON string in ASCII only (every other character as a
/// `\u` escape), so the header needs no MIME encoding.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// The metadata as one compact JSON object, keys sorted.
fn metadata_json(metadata: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in metadata.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, key);
        out.push(':');
        push_json_string(&mut out, value);
    }
    out.push('}');
    out
}

/// The headers the options ask for, in a fixed order; every invalid option
/// is an error at its pointer.
fn headers(options: &Options, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let bad_tags: Vec<usize> = (0..options.tags.len())
        .filter(|&i| !is_tag(&options.tags[i]))
        .collect();
    for &i in &bad_tags {
        errors.push(error(
            &format!("/options/tags/{i}"),
            "a tag is 1 to 50 printable ASCII characters without commas, not starting with an \
             underscore (reserved by Mandrill) or a space, and not ending with a space",
        ));
    }
    if !options.tags.is_empty() && bad_tags.is_empty() {
        let value = options.tags.join(",");
        if value.len() > MAX_HEADER_LEN {
            errors.push(error(
                "/options/tags",
                format!("the tags add up to {} characters; at most {MAX_HEADER_LEN} fit the X-MC-Tags header", value.len()),
            ));
        } else {
            headers.push((TAGS_HEADER.to_owned(), value));
        }
    }
    let bad_keys: Vec<&String> = options
        .metadata
        .keys()
        .filter(|k| !is_metadata_key(k))
        .collect();
    for key in &bad_keys {
        errors.push(error(
            &format!("/options/metadata/{}", pointer_token(key)),
            "a metadata key is ASCII letters, digits and underscores, not starting with an \
             underscore",
        ));
    }
    if !options.metadata.is_empty() && bad_keys.is_empty() {
        let value = metadata_json(&options.metadata);
        if value.len() > MAX_METADATA_LEN {
            errors.push(error(
                "/options/metadata",
                format!(
                    "the metadata is {} bytes as JSON; Mandrill keeps at most {MAX_METADATA_LEN}",
                    value.len()
                ),
            ));
        } else {
            headers.push((METADATA_HEADER.to_owned(), value));
        }
    }
    match &options.subaccount {
        Some(s) if !is_header_text(s, MAX_SUBACCOUNT_LEN) => errors.push(error(
            "/options/subaccount",
            "a subaccount id is 1 to 255 printable ASCII characters, not starting or ending \
             with a space",
        )),
        Some(s) => headers.push((SUBACCOUNT_HEADER.to_owned(), s.clone())),
        None => {}
    }
    let opens = options.track.iter().filter(|t| **t == Track::Opens).count();
    let clicks = options.track.len() - opens;
    if opens > 1 || clicks > 1 {
        errors.push(error(
            "/options/track",
            "track lists `opens` at most once and at most one click mode (clicks_all, \
             clicks_htmlonly or clicks_textonly)",
        ));
    } else if !options.track.is_empty() {
        let value: Vec<&str> = options.track.iter().map(|t| t.header_value()).collect();
        headers.push((TRACK_HEADER.to_owned(), value.join(",")));
    }
    headers
}

/// Mandrill's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    let extra_headers = headers(&options, &mut errors);
    let host = o.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
    // 587, 2525 and 25 speak STARTTLS, 465 implicit TLS: the host's rule.
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the API key", &mut errors);
    // Mandrill does not read the user name, but SMTP AUTH needs one; the
    // connection file's own value (Mailchimp suggests the account's primary
    // contact email) wins.
    let username = o
        .username
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_USERNAME.to_owned());
    smtp::require_password(
        o.has_password,
        "mandrill needs smtp.password: a reference to a Mandrill API key, e.g. \
         { env: MANDRILL_API_KEY }",
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SmtpSettings {
        host,
        port,
        security,
        username: Some(username),
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
            username: None,
            has_password: true,
        }
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    fn headers_of(s: &SmtpSettings) -> Vec<(&str, &str)> {
        s.extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn defaults_are_the_relay_with_starttls_a_fixed_user_and_no_headers() {
        let s = adapt("", overrides()).unwrap();
        assert_eq!(s.host, DEFAULT_HOST);
        assert_eq!((s.port, s.security), (587, Security::Starttls));
        assert_eq!(s.username.as_deref(), Some("mailplug"));
        assert_eq!(s.password, PasswordSource::SmtpPassword);
        assert!(s.extra_headers.is_empty());
        for (port, security) in [(465, Security::Tls), (2525, Security::Starttls)] {
            let s = adapt(
                "",
                SmtpOverrides {
                    port: Some(port),
                    ..overrides()
                },
            )
            .unwrap();
            assert_eq!((s.port, s.security), (port, security));
        }
        let s = adapt(
            "null",
            SmtpOverrides {
                username: Some("owner@example.com".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(s.username.as_deref(), Some("owner@example.com"));
    }

    #[test]
    fn every_option_becomes_its_header() {
        let s = adapt(
            r#"{"tags": ["receipt", "shop 2026"], "metadata": {"tenant": "acme", "user_id": "45829"},
                "subaccount": "acme-eu", "track": ["clicks_htmlonly", "opens"]}"#,
            overrides(),
        )
        .unwrap();
        assert_eq!(
            headers_of(&s),
            [
                ("X-MC-Tags", "receipt,shop 2026"),
                ("X-MC-Metadata", r#"{"tenant":"acme","user_id":"45829"}"#),
                ("X-MC-Subaccount", "acme-eu"),
                ("X-MC-Track", "clicks_htmlonly,opens"),
            ]
        );
    }

    #[test]
    fn metadata_is_ascii_json() {
        let mut m = BTreeMap::new();
        m.insert("city".to_owned(), "Zürich \"HQ\" \\ 😀\n".to_owned());
        assert_eq!(
            metadata_json(&m),
            r#"{"city":"Z\u00fcrich \"HQ\" \\ \ud83d\ude00\u000a"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&metadata_json(&m)).unwrap();
        assert_eq!(v["city"], "Zürich \"HQ\" \\ 😀\n");
        assert_eq!(metadata_json(&BTreeMap::new()), "{}");
    }

    #[test]
    fn invalid_options_are_each_named() {
        let errors = adapt(
            r#"{"tags": ["ok", "_internal", "a,b", "x"], "metadata": {"_rcpt": "a", "bad key": "b"},
                "subaccount": " padded", "track": ["clicks_all", "clicks_textonly"]}"#,
            overrides(),
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "/options/tags/1",
                "/options/tags/2",
                "/options/metadata/_rcpt",
                "/options/metadata/bad key",
                "/options/subaccount",
                "/options/track"
            ]
        );
        let long = format!(r#"{{"metadata": {{"k": "{}"}}}}"#, "v".repeat(200));
        assert_eq!(
            paths(&adapt(&long, overrides()).unwrap_err()),
            ["/options/metadata"]
        );
        let tags: Vec<String> = (0..30).map(|i| format!("{i:0>49}")).collect();
        let many = serde_json::json!({ "tags": tags }).to_string();
        assert_eq!(
            paths(&adapt(&many, overrides()).unwrap_err()),
            ["/options/tags"]
        );
        assert!(is_tag(&"a".repeat(50)) && !is_tag(&"a".repeat(51)));
        let errors = adapt(r#"{"track": ["clicks"]}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/track"]);
        let errors = adapt(r#"{"metadata": {"n": 1}}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/metadata"]);
        let errors = adapt(r#"{"template": "x"}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/template"]);
    }

    #[test]
    fn an_api_key_reference_and_a_secure_transport_are_required() {
        let errors = adapt(
            "",
            SmtpOverrides {
                has_password: false,
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/password"]);
        assert!(errors[0].message.contains("API key"), "{errors:?}");
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
        assert!(errors[0].message.contains("the API key"), "{errors:?}");
        let errors = adapt(
            "",
            SmtpOverrides {
                host: Some(" ".into()),
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/host"]);
    }
}
