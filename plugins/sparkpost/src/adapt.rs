//! `adapt-connection` for SparkPost: the regional SMTP relay
//! (`smtp.sparkpostmail.com` or `smtp.eu.sparkpostmail.com`, STARTTLS on 587
//! or 2525), the fixed user `SMTP_Injection` (with a subaccount suffix when
//! asked), an API key as password, and the `X-MSYS-API` header that carries
//! campaign, tags, metadata and tracking options of relayed messages.

use std::collections::BTreeMap;

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::{Deserialize, Serialize};

/// SparkPost's relay for US accounts (app.sparkpost.com).
pub const US_HOST: &str = "smtp.sparkpostmail.com";
/// SparkPost's relay for EU accounts (app.eu.sparkpost.com).
pub const EU_HOST: &str = "smtp.eu.sparkpostmail.com";
/// The SMTP user SparkPost's relay expects; the API key is the password.
pub const USERNAME: &str = "SMTP_Injection";
/// The JSON header SparkPost reads per-message settings from (and strips).
pub const API_HEADER: &str = "X-MSYS-API";
/// The ports the relay listens on (2525 for networks that block 587).
pub const PORTS: [u16; 2] = [587, 2525];

/// SparkPost's limit on a campaign id (same as its REST API).
const MAX_CAMPAIGN_ID_LEN: usize = 64;
/// Tags per recipient SparkPost keeps; more are ignored by SparkPost, so
/// they are refused here rather than silently lost.
const MAX_TAGS: usize = 10;
/// Metadata bytes SparkPost makes available in events.
const MAX_METADATA_LEN: usize = 1000;
/// One header line is at most 998 bytes (RFC 5322 §2.1.1), `X-MSYS-API: `
/// included: the JSON value has no spaces to fold at.
const MAX_HEADER_VALUE_LEN: usize = 998 - API_HEADER.len() - 2;

/// SparkPost data region of the account.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum Region {
    /// SparkPost (US), relay smtp.sparkpostmail.com.
    #[default]
    Us,
    /// SparkPost EU, relay smtp.eu.sparkpostmail.com.
    Eu,
}

impl Region {
    fn host(self) -> &'static str {
        match self {
            Region::Us => US_HOST,
            Region::Eu => EU_HOST,
        }
    }
}

/// A metadata value: text, a number or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MetadataValue {
    /// A string.
    Text(String),
    /// A JSON number, kept as written.
    Number(serde_json::Number),
    /// `true` or `false`.
    Flag(bool),
}

/// Options of `provider: sparkpost`. A reference to an API key with the "Send via SMTP" permission is smtp.password (the user is always SMTP_Injection); the webhook's basic-auth credentials (user:password), or bearer:TOKEN for OAuth 2.0 webhooks, are webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sparkpost options")]
pub struct Options {
    /// Data region of the SparkPost account: us (smtp.sparkpostmail.com, the default) or eu (smtp.eu.sparkpostmail.com). An explicit smtp.host replaces the region's relay.
    #[serde(default)]
    pub region: Region,
    /// Send on behalf of this subaccount id: the SMTP user becomes SMTP_Injection:X-MSYS-SUBACCOUNT=<id>; the master account's API key stays the password.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub subaccount: Option<u64>,
    /// Campaign of every message sent over this connection (X-MSYS-API campaign_id, echoed as campaign_id in events). 1 to 64 bytes.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub campaign_id: Option<String>,
    /// Tags of every message sent over this connection (X-MSYS-API tags, echoed as rcpt_tags in events). At most 10, each non-empty.
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub tags: Vec<String>,
    /// Metadata of every message sent over this connection (X-MSYS-API metadata, echoed as rcpt_meta in events): keys mapped to strings, numbers or booleans, at most 1000 bytes as JSON.
    #[serde(default)]
    pub metadata: BTreeMap<String, MetadataValue>,
    /// Open tracking of the messages (X-MSYS-API options.open_tracking), overriding the account setting; unset, the account setting applies.
    #[serde(default)]
    pub open_tracking: Option<bool>,
    /// Click tracking of the messages (X-MSYS-API options.click_tracking), overriding the account setting; unset, the account setting applies.
    #[serde(default)]
    pub click_tracking: Option<bool>,
    /// Mark the messages transactional (X-MSYS-API options.transactional): SparkPost then applies only transactional suppressions to them (not list unsubscribes) and adds no List-Unsubscribe header. Unset, SparkPost's default (non-transactional) applies.
    #[serde(default)]
    pub transactional: Option<bool>,
}

/// The `options` object of the header, in SparkPost's field names.
#[derive(Serialize)]
struct HeaderOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    open_tracking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    click_tracking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transactional: Option<bool>,
}

impl HeaderOptions {
    fn is_empty(&self) -> bool {
        self.open_tracking.is_none()
            && self.click_tracking.is_none()
            && self.transactional.is_none()
    }
}

/// The `X-MSYS-API` value: fields in a fixed order, metadata keys sorted
/// (a `BTreeMap`), so the same options always give the same bytes.
#[derive(Serialize)]
struct ApiHeader<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, MetadataValue>,
    #[serde(skip_serializing_if = "HeaderOptions::is_empty")]
    options: HeaderOptions,
}

/// `json` with every non-ASCII character written as a `\u` escape (a UTF-16
/// surrogate pair beyond the BMP). Outside strings JSON is ASCII already, so
/// the value stays the same JSON; a header of plain ASCII is never RFC 2047
/// encoded on the way, which SparkPost would not decode.
pub fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn json_text<T: Serialize>(value: &T) -> String {
    // Serialising strings, numbers, booleans and maps of them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The `X-MSYS-API` header value the options ask for (`None` when they ask
/// for nothing); every invalid option is an error at its pointer.
fn api_header(options: &Options, errors: &mut Vec<FieldError>) -> Option<String> {
    let before = errors.len();
    if let Some(campaign) = &options.campaign_id
        && (campaign.is_empty() || campaign.len() > MAX_CAMPAIGN_ID_LEN)
    {
        errors.push(error(
            "/options/campaign_id",
            format!("a campaign id is 1 to {MAX_CAMPAIGN_ID_LEN} bytes"),
        ));
    }
    if options.tags.len() > MAX_TAGS {
        errors.push(error(
            "/options/tags",
            format!(
                "SparkPost keeps at most {MAX_TAGS} tags per message, not {}",
                options.tags.len()
            ),
        ));
    }
    for (i, tag) in options.tags.iter().enumerate() {
        if tag.trim().is_empty() {
            errors.push(error(
                &format!("/options/tags/{i}"),
                "a tag must not be empty",
            ));
        }
    }
    if options.metadata.keys().any(|k| k.is_empty()) {
        errors.push(error(
            "/options/metadata",
            "metadata keys must not be empty",
        ));
    }
    let metadata_len = json_text(&options.metadata).len();
    if metadata_len > MAX_METADATA_LEN {
        errors.push(error(
            "/options/metadata",
            format!(
                "metadata is {metadata_len} bytes as JSON; SparkPost keeps at most {MAX_METADATA_LEN}"
            ),
        ));
    }
    if errors.len() > before {
        return None;
    }
    let header = ApiHeader {
        campaign_id: options.campaign_id.as_deref(),
        tags: &options.tags,
        metadata: &options.metadata,
        options: HeaderOptions {
            open_tracking: options.open_tracking,
            click_tracking: options.click_tracking,
            transactional: options.transactional,
        },
    };
    let value = ascii_json(&json_text(&header));
    if value == "{}" {
        return None;
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        errors.push(error(
            "/options",
            format!(
                "campaign_id, tags and metadata make an X-MSYS-API header of {} bytes \
                 (one header line holds {MAX_HEADER_VALUE_LEN}): shorten them",
                value.len()
            ),
        ));
        return None;
    }
    Some(value)
}

/// SparkPost's SMTP settings with the connection's explicit `smtp` fields applied.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let (options, mut errors) = match options::parse::<Options>(options) {
        Ok(options) => (options, Vec::new()),
        Err(errors) => (Options::default(), errors),
    };
    let header = api_header(&options, &mut errors);
    if options.subaccount == Some(0) {
        errors.push(error(
            "/options/subaccount",
            "subaccount ids start at 1 (leave subaccount unset for the master account)",
        ));
    }
    let host = o.host.unwrap_or_else(|| options.region.host().to_owned());
    let on_sparkpost = host.eq_ignore_ascii_case(US_HOST) || host.eq_ignore_ascii_case(EU_HOST);
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::relay_transport_errors(&host, port, security, "the API key", &mut errors);
    if on_sparkpost {
        if !PORTS.contains(&port) {
            errors.push(error(
                "/smtp/port",
                format!("SparkPost's relay listens on 587 and 2525 (STARTTLS), not {port}"),
            ));
        } else if port != 587 && security == Security::Tls {
            // 587 + tls is reported by the shared transport checks.
            errors.push(error(
                "/smtp/security",
                "SparkPost's relay speaks STARTTLS only: use security: starttls",
            ));
        }
    }
    let expected_user = match options.subaccount {
        Some(id) => format!("{USERNAME}:X-MSYS-SUBACCOUNT={id}"),
        None => USERNAME.to_owned(),
    };
    let username = o.username.filter(|u| !u.trim().is_empty());
    if on_sparkpost && let Some(user) = username.as_deref().filter(|u| *u != expected_user) {
        errors.push(error(
            "/smtp/username",
            format!(
                "SparkPost's SMTP user is `{expected_user}`, not `{user}`: remove smtp.username \
                 (use options.subaccount to send for a subaccount)"
            ),
        ));
    }
    smtp::require_password(
        o.has_password,
        "sparkpost needs smtp.password: a reference to an API key with the \"Send via SMTP\" \
         permission, e.g. { env: SPARKPOST_API_KEY }",
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SmtpSettings {
        host,
        port,
        security,
        username: Some(username.unwrap_or(expected_user)),
        password: PasswordSource::SmtpPassword,
        extra_headers: header
            .map(|value| vec![(API_HEADER.to_owned(), value)])
            .unwrap_or_default(),
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

    #[test]
    fn defaults_are_the_us_relay_with_starttls_and_no_header() {
        let s = adapt("", overrides()).unwrap();
        assert_eq!(s.host, US_HOST);
        assert_eq!((s.port, s.security), (587, Security::Starttls));
        assert_eq!(s.username.as_deref(), Some(USERNAME));
        assert_eq!(s.password, PasswordSource::SmtpPassword);
        assert!(s.extra_headers.is_empty());
    }

    #[test]
    fn region_port_and_subaccount_pick_host_port_and_user() {
        let s = adapt(
            r#"{"region": "eu", "subaccount": 123}"#,
            SmtpOverrides {
                port: Some(2525),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(s.host, EU_HOST);
        assert_eq!((s.port, s.security), (2525, Security::Starttls));
        assert_eq!(
            s.username.as_deref(),
            Some("SMTP_Injection:X-MSYS-SUBACCOUNT=123")
        );
        // An explicit host (an enterprise relay) wins, with its own user.
        let s = adapt(
            r#"{"region": "eu"}"#,
            SmtpOverrides {
                host: Some("smtp.acme.e.sparkpost.com".into()),
                username: Some("relay-user".into()),
                ..overrides()
            },
        )
        .unwrap();
        assert_eq!(s.host, "smtp.acme.e.sparkpost.com");
        assert_eq!(s.username.as_deref(), Some("relay-user"));
    }

    #[test]
    fn the_header_is_compact_ascii_json_in_a_fixed_order() {
        let s = adapt(
            r#"{"transactional": true, "metadata": {"tenant": "acmé", "plan": 3, "vip": false},
                "tags": ["receipt", "shop"], "campaign_id": "receipts", "open_tracking": false,
                "click_tracking": true}"#,
            overrides(),
        )
        .unwrap();
        assert_eq!(
            s.extra_headers,
            [(
                API_HEADER.to_owned(),
                r#"{"campaign_id":"receipts","tags":["receipt","shop"],"metadata":{"plan":3,"tenant":"acm\u00e9","vip":false},"options":{"open_tracking":false,"click_tracking":true,"transactional":true}}"#
                    .to_owned()
            )]
        );
        let s = adapt(r#"{"transactional": false}"#, overrides()).unwrap();
        assert_eq!(
            s.extra_headers[0].1,
            r#"{"options":{"transactional":false}}"#
        );
    }

    #[test]
    fn non_ascii_becomes_escapes_including_surrogate_pairs() {
        assert_eq!(ascii_json(r#""é😀\n""#), r#""\u00e9\ud83d\ude00\n""#);
        let round: String = serde_json::from_str(&ascii_json(r#""é😀""#)).unwrap();
        assert_eq!(round, "é😀");
    }

    #[test]
    fn invalid_options_are_each_named() {
        let errors = adapt(
            &format!(
                r#"{{"campaign_id": "{}", "tags": ["a", " ", "c", "d", "e", "f", "g", "h", "i", "j", "k"],
                    "subaccount": 0, "metadata": {{"k": "{}"}}}}"#,
                "c".repeat(65),
                "v".repeat(1000)
            ),
            overrides(),
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "/options/campaign_id",
                "/options/tags",
                "/options/tags/1",
                "/options/metadata",
                "/options/subaccount"
            ]
        );
        let errors = adapt(r#"{"metadata": {"k": {"nested": 1}}}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/metadata"]);
        let errors = adapt(r#"{"region": "apac"}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/region"]);
        let errors = adapt(r#"{"ip_pool": "x"}"#, overrides()).unwrap_err();
        assert_eq!(paths(&errors), ["/options/ip_pool"]);
        // Each field fits its own limit, the header together does not.
        let long = |c: &str| c.repeat(99);
        let tags: Vec<String> = (0..10).map(|i| long(&i.to_string())).collect();
        let errors = adapt(
            &serde_json::json!({ "tags": tags }).to_string(),
            overrides(),
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["/options"]);
    }

    #[test]
    fn sparkpost_hosts_take_their_own_user_ports_and_starttls() {
        let errors = adapt(
            "",
            SmtpOverrides {
                username: Some("apikey".into()),
                port: Some(25),
                has_password: false,
                ..overrides()
            },
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            ["/smtp/port", "/smtp/username", "/smtp/password"]
        );
        for (port, security) in [
            (465, Security::Tls),
            (2525, Security::Tls),
            (587, Security::Tls),
        ] {
            let errors = adapt(
                "",
                SmtpOverrides {
                    port: Some(port),
                    security: Some(security),
                    ..overrides()
                },
            )
            .unwrap_err();
            assert_eq!(errors.len(), 1, "{port}: {errors:?}");
        }
        let errors = adapt(
            "",
            SmtpOverrides {
                security: Some(Security::None),
                ..overrides()
            },
        )
        .unwrap_err();
        assert!(errors[0].message.contains("the API key"), "{errors:?}");
        // The plain user name is accepted when written out.
        assert!(
            adapt(
                "",
                SmtpOverrides {
                    username: Some(USERNAME.into()),
                    ..overrides()
                }
            )
            .is_ok()
        );
    }
}
