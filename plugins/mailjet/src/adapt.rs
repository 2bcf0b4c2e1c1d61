//! `adapt-connection` for Mailjet: `in-v3.mailjet.com` with STARTTLS (or
//! implicit TLS on 465), the API key as user and the secret key as password,
//! and the `X-Mailjet-*` / `X-MJ-*` headers Mailjet reads from messages it
//! relays (campaign, custom id, event payload, tracking, priority).

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// Mailjet's SMTP relay.
pub const DEFAULT_HOST: &str = "in-v3.mailjet.com";
/// Groups messages into one campaign; echoed as `customcampaign` in events.
pub const CAMPAIGN_HEADER: &str = "X-Mailjet-Campaign";
/// With a campaign: at most one message of it per recipient address.
pub const DEDUPLICATE_HEADER: &str = "X-Mailjet-DeduplicateCampaign";
/// Echoed as `CustomID` in events.
pub const CUSTOM_ID_HEADER: &str = "X-MJ-CustomID";
/// Echoed as `Payload` in events.
pub const EVENT_PAYLOAD_HEADER: &str = "X-MJ-EventPayload";
/// `1` / `0`: open tracking on or off, overriding the account setting.
pub const TRACK_OPEN_HEADER: &str = "X-Mailjet-TrackOpen";
/// `1` / `0`: click tracking on or off, overriding the account setting.
pub const TRACK_CLICK_HEADER: &str = "X-Mailjet-TrackClick";
/// Queue priority, 0 to 3.
pub const PRIORITY_HEADER: &str = "X-Mailjet-Prio";

/// Longest campaign name Mailjet accepts.
const MAX_CAMPAIGN_LEN: usize = 255;
/// Longest custom id or event payload: with the field name it still fits
/// one header line (998 characters, RFC 5322 §2.1.1).
const MAX_HEADER_TEXT_LEN: usize = 900;
/// Mailjet's highest priority level.
const MAX_PRIORITY: u8 = 3;

/// Options of `provider: mailjet`. The API key is smtp.username, a reference to the secret key smtp.password; the event callback URL's basic-auth credentials (user:password) are webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mailjet options")]
pub struct Options {
    /// Campaign of every message sent over this connection, sent as the X-Mailjet-Campaign header: Mailjet groups the messages into one campaign and echoes the name as `customcampaign` in events. Letters, digits, spaces, dashes and underscores, at most 255, not starting or ending with a space.
    #[serde(default)]
    #[schemars(
        length(min = 1, max = 255),
        pattern(r"^[A-Za-z0-9_-]([A-Za-z0-9 _-]*[A-Za-z0-9_-])?$")
    )]
    pub campaign: Option<String>,
    /// With campaign: Mailjet sends the campaign at most once to each recipient address and blocks the duplicates (a `blocked` event, `duplicate in campaign`), sent as X-Mailjet-DeduplicateCampaign: true. Default false.
    #[serde(default)]
    pub deduplicate_campaign: bool,
    /// Custom ID of every message sent over this connection, sent as the X-MJ-CustomID header; Mailjet echoes it as `CustomID` in events. Printable ASCII, at most 900 characters.
    #[serde(default)]
    #[schemars(length(min = 1, max = 900), pattern(r"^[!-~]([ -~]*[!-~])?$"))]
    pub custom_id: Option<String>,
    /// Event payload of every message sent over this connection, in any text format (e.g. JSON), sent as the X-MJ-EventPayload header; Mailjet echoes it as `Payload` in events. Printable ASCII, at most 900 characters.
    #[serde(default)]
    #[schemars(length(min = 1, max = 900), pattern(r"^[!-~]([ -~]*[!-~])?$"))]
    pub event_payload: Option<String>,
    /// Open tracking of the messages, overriding the account setting (X-Mailjet-TrackOpen: 1 for true, 0 for false); unset, the account setting applies.
    #[serde(default)]
    pub track_opens: Option<bool>,
    /// Click tracking of the messages, overriding the account setting (X-Mailjet-TrackClick: 1 for true, 0 for false); unset, the account setting applies.
    #[serde(default)]
    pub track_clicks: Option<bool>,
    /// Queue priority of the messages (X-Mailjet-Prio), 0 to 3, higher first: 0 and 1 go to Mailjet's low-priority queue, 2 and 3 to its high-priority queue (keep 3 for emergencies); unset, Mailjet's default applies.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3))]
    pub priority: Option<u8>,
}

/// Whether `name` is a campaign name Mailjet accepts.
fn is_campaign(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CAMPAIGN_LEN
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'_'))
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

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_owned()
}

/// The headers the options ask for, in a fixed order; every invalid option
/// is an error at its pointer.
fn headers(options: &Options, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut push = |name: &str, value: String| headers.push((name.to_owned(), value));
    match &options.campaign {
        Some(campaign) if !is_campaign(campaign) => errors.push(error(
            "/options/campaign",
            "a campaign name is 1 to 255 letters, digits, spaces, dashes and underscores, \
             not starting or ending with a space",
        )),
        Some(campaign) => push(CAMPAIGN_HEADER, campaign.clone()),
        None => {}
    }
    if options.deduplicate_campaign {
        if options.campaign.is_none() {
            errors.push(error(
                "/options/deduplicate_campaign",
                "deduplicate_campaign needs options.campaign: Mailjet deduplicates within a campaign",
            ));
        } else {
            push(DEDUPLICATE_HEADER, "true".to_owned());
        }
    }
    for (value, header, pointer) in [
        (&options.custom_id, CUSTOM_ID_HEADER, "/options/custom_id"),
        (
            &options.event_payload,
            EVENT_PAYLOAD_HEADER,
            "/options/event_payload",
        ),
    ] {
        match value {
            Some(v) if !is_header_text(v) => errors.push(error(
                pointer,
                "1 to 900 printable ASCII characters, not starting or ending with a space \
                 (no line breaks or non-ASCII text)",
            )),
            Some(v) => push(header, v.clone()),
            None => {}
        }
    }
    if let Some(on) = options.track_opens {
        push(TRACK_OPEN_HEADER, flag(on));
    }
    if let Some(on) = options.track_clicks {
        push(TRACK_CLICK_HEADER, flag(on));
    }
    match options.priority {
        Some(p) if p > MAX_PRIORITY => errors.push(error(
            "/options/priority",
            format!("Mailjet's priority levels are 0 to {MAX_PRIORITY}, not {p}"),
        )),
        Some(p) => push(PRIORITY_HEADER, p.to_string()),
        None => {}
    }
    headers
}

/// Mailjet's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    let extra_headers = headers(&options, &mut errors);
    let host = o.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the secret key", &mut errors);
    // The user name is a plain string in the connection file: the host has
    // no way yet to take it from a secret reference. Mailjet's API key is the
    // public half of the pair; the secret key stays a reference.
    let username = o.username.filter(|u| !u.trim().is_empty());
    if username.is_none() {
        errors.push(error(
            "/smtp/username",
            "set smtp.username: Mailjet's SMTP user is the account's API key (the public key \
             of the pair; the secret key goes in smtp.password)",
        ));
    }
    smtp::require_password(
        o.has_password,
        "mailjet needs smtp.password: a reference to the API secret key, e.g. \
         { env: MAILJET_SECRET_KEY }",
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
            username: Some("0123456789abcdef0123456789abcdef".into()),
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
        assert_eq!(
            s.username.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(s.password, PasswordSource::SmtpPassword);
        assert!(s.extra_headers.is_empty());
        let tls = adapt(
            "",
            SmtpOverrides {
                port: Some(465),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!((tls.port, tls.security), (465, Security::Tls));
    }

    #[test]
    fn every_option_becomes_its_header() {
        let s = adapt(
            r#"{"campaign": "spring sale_2026-A", "deduplicate_campaign": true,
                "custom_id": "tenant-acme", "event_payload": "{\"tenant\": \"acme\"}",
                "track_opens": false, "track_clicks": true, "priority": 2}"#,
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
                ("X-Mailjet-Campaign", "spring sale_2026-A"),
                ("X-Mailjet-DeduplicateCampaign", "true"),
                ("X-MJ-CustomID", "tenant-acme"),
                ("X-MJ-EventPayload", "{\"tenant\": \"acme\"}"),
                ("X-Mailjet-TrackOpen", "0"),
                ("X-Mailjet-TrackClick", "1"),
                ("X-Mailjet-Prio", "2"),
            ]
        );
    }

    #[test]
    fn invalid_options_are_each_named() {
        let errors = adapt(
            r#"{"campaign": " padded", "custom_id": "line\nbreak",
                "event_payload": "ünïcode", "priority": 4}"#,
            overrides(),
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "/options/campaign",
                "/options/custom_id",
                "/options/event_payload",
                "/options/priority"
            ]
        );
        let errors = adapt(r#"{"deduplicate_campaign": true}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/deduplicate_campaign"]);
        let errors = adapt(r#"{"campaign": "x", "tags": ["a"]}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/tags"]);
        assert!(is_campaign(&"a".repeat(255)) && !is_campaign(&"a".repeat(256)));
        assert!(is_header_text(&"a".repeat(900)) && !is_header_text(&"a".repeat(901)));
    }

    #[test]
    fn the_api_key_and_a_secret_key_reference_are_required() {
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
        assert!(errors[0].message.contains("API key"), "{errors:?}");
        assert!(errors[1].message.contains("secret key"), "{errors:?}");
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
        assert!(errors[0].message.contains("the secret key"), "{errors:?}");
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
