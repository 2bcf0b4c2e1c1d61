//! The Amazon SNS envelope of an HTTPS delivery: its parsing, the checks
//! that come before any certificate is looked at, the canonical
//! string-to-sign and the X.509 signature check through the host.
//!
//! Order matters: everything cheap and local (envelope shape, headers,
//! topic allowlist, signature version, timestamp window, the shape of
//! `SigningCertURL`) is checked before the host is asked for a signing key,
//! so a forged request never makes the host fetch anything.

use mailplug_sdk::json::Str;
use mailplug_sdk::prelude::*;
use serde::Deserialize;

/// Oldest accepted `Timestamp`, in seconds before now. SNS retries for up
/// to an hour by default; older messages are refused as replays.
pub const MAX_AGE_SECONDS: i64 = 3600;

/// What SNS posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A message published to the topic (an SES event, or SES's setup text).
    Notification,
    /// The subscription was created and awaits confirmation.
    SubscriptionConfirmation,
    /// The subscription was deleted.
    UnsubscribeConfirmation,
}

impl MessageType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "Notification" => Self::Notification,
            "SubscriptionConfirmation" => Self::SubscriptionConfirmation,
            "UnsubscribeConfirmation" => Self::UnsubscribeConfirmation,
            _ => return None,
        })
    }
}

/// The fields of the SNS envelope this plugin reads. Each is a string
/// where present; a duplicated key is refused by serde, so a signed value
/// cannot be shadowed by a second copy.
#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow, rename = "Type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow, rename = "MessageId")]
    pub message_id: Option<Str<'a>>,
    #[serde(borrow, rename = "TopicArn")]
    pub topic_arn: Option<Str<'a>>,
    /// Notifications only, and only when the publisher set one.
    #[serde(borrow, rename = "Subject")]
    pub subject: Option<Str<'a>>,
    /// For notifications the SES event, JSON text inside the JSON string.
    #[serde(borrow, rename = "Message")]
    pub message: Option<Str<'a>>,
    #[serde(borrow, rename = "Timestamp")]
    pub timestamp: Option<Str<'a>>,
    #[serde(borrow, rename = "SignatureVersion")]
    pub signature_version: Option<Str<'a>>,
    #[serde(borrow, rename = "Signature")]
    pub signature: Option<Str<'a>>,
    #[serde(borrow, rename = "SigningCertURL")]
    pub signing_cert_url: Option<Str<'a>>,
    /// Confirmations only.
    #[serde(borrow, rename = "SubscribeURL")]
    pub subscribe_url: Option<Str<'a>>,
    /// Confirmations only.
    #[serde(borrow, rename = "Token")]
    pub token: Option<Str<'a>>,
}

impl<'a> Envelope<'a> {
    /// Parses the body (posted as `text/plain`, JSON regardless): one
    /// object, nesting depth limited.
    pub fn parse(body: &'a [u8]) -> Result<Self, String> {
        if json::first_token(body) != Some(b'{') {
            return Err("the SNS envelope is not a JSON object".into());
        }
        json::check_depth(body, json::DEFAULT_MAX_DEPTH).map_err(super::error_text)?;
        json::parse_borrowed(body).map_err(|e| format!("SNS envelope: {}", super::error_text(e)))
    }

    /// The message type (`Type`), which must be one SNS sends.
    pub fn message_type(&self) -> Result<MessageType, String> {
        let name = self
            .kind
            .as_deref()
            .ok_or("the SNS envelope has no `Type`")?;
        MessageType::parse(name).ok_or_else(|| format!("unknown SNS message Type {name:?}"))
    }

    /// The canonical string SNS signs: `Name\nValue\n` for each field of
    /// the type's fixed list, in that order (Subject only when present).
    pub fn string_to_sign(&self, kind: MessageType) -> Result<String, String> {
        let fields: &[(&str, &Option<Str<'_>>, bool)] = match kind {
            MessageType::Notification => &[
                ("Message", &self.message, true),
                ("MessageId", &self.message_id, true),
                ("Subject", &self.subject, false),
                ("Timestamp", &self.timestamp, true),
                ("TopicArn", &self.topic_arn, true),
                ("Type", &self.kind, true),
            ],
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => &[
                ("Message", &self.message, true),
                ("MessageId", &self.message_id, true),
                ("SubscribeURL", &self.subscribe_url, true),
                ("Timestamp", &self.timestamp, true),
                ("Token", &self.token, true),
                ("TopicArn", &self.topic_arn, true),
                ("Type", &self.kind, true),
            ],
        };
        let mut signed = String::new();
        for (name, value, required) in fields {
            match value.as_deref() {
                Some(value) => {
                    signed.push_str(name);
                    signed.push('\n');
                    signed.push_str(value);
                    signed.push('\n');
                }
                None if *required => return Err(format!("the SNS envelope has no `{name}`")),
                None => {}
            }
        }
        Ok(signed)
    }
}

/// A field the message type requires.
pub fn required<'s>(value: &'s Option<Str<'_>>, name: &str) -> Result<&'s str, String> {
    value
        .as_deref()
        .ok_or_else(|| format!("the SNS envelope has no `{name}`"))
}

/// The hash of a `SignatureVersion`: "1" SHA1withRSA, "2" SHA256withRSA.
pub fn signature_hash(version: &str) -> Option<host::Hash> {
    match version {
        "1" => Some(host::Hash::Sha1),
        "2" => Some(host::Hash::Sha256),
        _ => None,
    }
}

/// Refuses a `Timestamp` older than [`MAX_AGE_SECONDS`] or more than
/// `tolerance` seconds ahead of `now` (the error carries `now - sent`).
pub fn check_window(sent: i64, now: i64, tolerance: i64) -> Result<(), VerifyError> {
    let skew = now.saturating_sub(sent);
    if skew > MAX_AGE_SECONDS || skew < -tolerance {
        return Err(VerifyError::TimestampOutOfTolerance(skew));
    }
    Ok(())
}

/// Whether `url` has the only shape SNS signing certificates have:
/// `https://sns.<region>.amazonaws.com/<name>.pem`, no port, user, query or
/// fragment, one path segment. The host applies its own check again; this
/// one keeps a forged URL from ever reaching it.
pub fn check_cert_url(url: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("SigningCertURL {url:?} {why}"));
    let Some(rest) = url.strip_prefix("https://") else {
        return refuse("is not an https:// URL");
    };
    let Some((host, name)) = rest.split_once('/') else {
        return refuse("has no path");
    };
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"));
    if !region.is_some_and(is_region) {
        return refuse("is not on an Amazon SNS host (sns.<region>.amazonaws.com)");
    }
    let plain_name = name.len() > ".pem".len()
        && name.ends_with(".pem")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !plain_name {
        return refuse("does not name a .pem file at the root of the SNS host");
    }
    Ok(())
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`: lower-case
/// words and a number, joined by dashes.
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.len() <= 4
        && region.len() <= 32
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Verifies the SNS signature of `request` (after basic auth, see lib.rs).
pub fn verify(request: &WebhookRequest) -> Result<(), VerifyError> {
    let malformed = VerifyError::Malformed;
    let envelope = Envelope::parse(&request.body).map_err(malformed)?;
    let kind = envelope.message_type().map_err(malformed)?;
    let type_name = required(&envelope.kind, "Type").map_err(malformed)?;
    let message_id = required(&envelope.message_id, "MessageId").map_err(malformed)?;
    for (header, body_field, value) in [
        ("x-amz-sns-message-type", "Type", type_name),
        ("x-amz-sns-message-id", "MessageId", message_id),
    ] {
        if verify::required_header(request, header)? != value {
            return Err(malformed(format!(
                "header {header} does not match the body's {body_field}"
            )));
        }
    }
    let topic = required(&envelope.topic_arn, "TopicArn").map_err(malformed)?;
    if header(request, "x-amz-sns-topic-arn").is_some_and(|h| h != topic) {
        return Err(malformed(
            "header x-amz-sns-topic-arn does not match the body's TopicArn".into(),
        ));
    }
    if !host::sns_topic_allowed(topic) {
        return Err(malformed(format!(
            "topic {topic:?} is not in webhook.sns.topics"
        )));
    }
    let version = required(&envelope.signature_version, "SignatureVersion").map_err(malformed)?;
    let hash = signature_hash(version).ok_or_else(|| {
        malformed(format!(
            "SignatureVersion {version:?} is not 1 (SHA1withRSA) or 2 (SHA256withRSA)"
        ))
    })?;
    let timestamp = required(&envelope.timestamp, "Timestamp").map_err(malformed)?;
    let sent = time::parse_rfc3339(timestamp)
        .ok_or_else(|| malformed(format!("Timestamp {timestamp:?} is not RFC 3339")))?;
    check_window(sent, host::now(), host::signature_tolerance())?;
    let signed = envelope.string_to_sign(kind).map_err(malformed)?;
    let signature = required(&envelope.signature, "Signature").map_err(malformed)?;
    let signature = host::base64_decode(signature)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("Signature is not base64".into()))?;
    let cert_url = required(&envelope.signing_cert_url, "SigningCertURL").map_err(malformed)?;
    check_cert_url(cert_url).map_err(malformed)?;
    let key = match host::sns_signing_key(cert_url) {
        Ok(key) => key,
        Err(host::SnsKeyError::Refused(why)) => {
            return Err(malformed(format!(
                "signing certificate {cert_url} refused: {why}"
            )));
        }
        // The host loads the certificate after this call and verifies again.
        Err(host::SnsKeyError::NotLoaded) => return Err(VerifyError::BadSignature),
    };
    match host::verify_rsa_pkcs1v15(hash, &key, signed.as_bytes(), &signature) {
        Ok(true) => Ok(()),
        Ok(false) => Err(VerifyError::BadSignature),
        Err(why) => Err(malformed(format!("signing key unusable: {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFICATION: &str = r#"{"Type":"Notification","MessageId":"m-1","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"{\"a\":1}","Timestamp":"2026-01-01T12:00:00.000Z","SignatureVersion":"2","Signature":"c2ln","SigningCertURL":"https://sns.us-east-1.amazonaws.com/x.pem"}"#;

    #[test]
    fn notification_string_to_sign_skips_an_absent_subject() {
        let e = Envelope::parse(NOTIFICATION.as_bytes()).unwrap();
        assert_eq!(e.message_type(), Ok(MessageType::Notification));
        assert_eq!(
            e.string_to_sign(MessageType::Notification).unwrap(),
            "Message\n{\"a\":1}\nMessageId\nm-1\nTimestamp\n2026-01-01T12:00:00.000Z\n\
             TopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
        );
        let with_subject = NOTIFICATION.replace(r#""Timestamp""#, r#""Subject":"Hi","Timestamp""#);
        let e = Envelope::parse(with_subject.as_bytes()).unwrap();
        assert!(
            e.string_to_sign(MessageType::Notification)
                .unwrap()
                .contains("MessageId\nm-1\nSubject\nHi\nTimestamp\n")
        );
    }

    #[test]
    fn confirmation_string_to_sign_needs_url_and_token() {
        let body = r#"{"Type":"SubscriptionConfirmation","MessageId":"m","Token":"tok","TopicArn":"arn","Message":"line1\nline2","SubscribeURL":"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription","Timestamp":"t"}"#;
        let e = Envelope::parse(body.as_bytes()).unwrap();
        assert_eq!(
            e.string_to_sign(MessageType::SubscriptionConfirmation)
                .unwrap(),
            "Message\nline1\nline2\nMessageId\nm\nSubscribeURL\n\
             https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\nt\nToken\ntok\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
        let no_token = body.replace(r#""Token":"tok","#, "");
        let e = Envelope::parse(no_token.as_bytes()).unwrap();
        assert_eq!(
            e.string_to_sign(MessageType::UnsubscribeConfirmation),
            Err("the SNS envelope has no `Token`".into())
        );
    }

    #[test]
    fn envelopes_that_are_not_one_flat_object_are_refused() {
        for bad in [
            "[1]",
            "",
            "{\"Type\":",
            "{\"Type\":\"Notification\",\"Type\":\"Notification\"}",
            "{\"Message\":{\"nested\":true}}",
        ] {
            assert!(Envelope::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(Envelope::parse(deep.as_bytes()).is_err());
        let e = Envelope::parse(br#"{"Type":"Bogus"}"#).unwrap();
        assert_eq!(
            e.message_type(),
            Err("unknown SNS message Type \"Bogus\"".into())
        );
    }

    #[test]
    fn only_sns_certificate_urls_are_accepted() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000test.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(check_cert_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://certs.attacker.example.net/SimpleNotificationService.pem",
            "https://sns.us-east-1.amazonaws.com.attacker.example/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?y=1",
            "https://sns.us-east-1.amazonaws.com/a/x.pem",
            "https://sns.us-east-1.amazonaws.com/../x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com/.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://SNS.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com",
        ] {
            assert!(check_cert_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-1",
            "ap-southeast-2",
            "us-gov-west-1",
            "il-central-1",
        ] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "US-EAST-1",
            "us-east-123",
            "us--1",
            "us-east-1.",
            "-us-east-1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps_may_be_an_hour_old_but_only_tolerance_ahead() {
        assert_eq!(check_window(1000, 1000 + 3600, 300), Ok(()));
        assert_eq!(
            check_window(1000, 1000 + 3601, 300),
            Err(VerifyError::TimestampOutOfTolerance(3601))
        );
        assert_eq!(check_window(1300, 1000, 300), Ok(()));
        assert_eq!(
            check_window(1301, 1000, 300),
            Err(VerifyError::TimestampOutOfTolerance(-301))
        );
        assert_eq!(signature_hash("1"), Some(host::Hash::Sha1));
        assert_eq!(signature_hash("2"), Some(host::Hash::Sha256));
        assert_eq!(signature_hash("3"), None);
    }
}
