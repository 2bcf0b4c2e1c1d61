//! The first-party `sendgrid` plugin through the runtime: SMTP settings,
//! Signed Event Webhook edge cases (signed here with the TEST-ONLY key) and
//! parsing limits.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mailplug::runtime::{
    FieldError, PasswordSource, Security, SmtpOverrides, SmtpSettings, VerifyError,
};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};

use super::{FIXTURE_NOW, SG_PUBLIC_KEY, request, runtime, webhook_fixtures};

const TS: &str = "x-twilio-email-event-webhook-timestamp";
const SIG: &str = "x-twilio-email-event-webhook-signature";
const SIGNED_AT: i64 = 1_767_268_800;

fn overrides(port: Option<u16>, security: Option<Security>, password: bool) -> SmtpOverrides {
    SmtpOverrides {
        host: None,
        port,
        security,
        username: None,
        has_password: password,
    }
}

fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    runtime(FIXTURE_NOW)
        .plugin("sendgrid")
        .unwrap()
        .instance()
        .adapt_connection(options, &o)
        .unwrap()
}

fn paths(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn adapt_targets_the_sendgrid_relay_with_the_api_key_as_password() {
    let s = adapt("{}", overrides(None, None, true)).unwrap();
    assert_eq!(s.host, "smtp.sendgrid.net");
    assert_eq!((s.port, s.security), (587, Security::Starttls));
    assert_eq!(s.username.as_deref(), Some("apikey"));
    assert!(matches!(s.password, PasswordSource::SmtpPassword));
    assert!(s.extra_headers.is_empty());
    let s = adapt("", overrides(Some(465), None, true)).unwrap();
    assert_eq!((s.port, s.security), (465, Security::Tls));
    let s = adapt("{}", overrides(None, Some(Security::Tls), true)).unwrap();
    assert_eq!(s.port, 465);
    let s = adapt("{}", overrides(Some(2525), None, true)).unwrap();
    assert_eq!((s.port, s.security), (2525, Security::Starttls));
    let relay = SmtpOverrides {
        host: Some("relay.example.net".into()),
        username: Some("relay-user".into()),
        ..overrides(Some(25), Some(Security::Starttls), true)
    };
    let s = adapt("{}", relay).unwrap();
    assert_eq!(
        (s.host.as_str(), s.port, s.username.as_deref()),
        ("relay.example.net", 25, Some("relay-user"))
    );
}

#[test]
fn adapt_reports_every_field_error_with_its_pointer() {
    let errors = adapt(r#"{"region": "eu"}"#, overrides(None, None, false)).unwrap_err();
    assert_eq!(
        paths(&errors),
        ["/options/region", "/smtp/password"],
        "{errors:?}"
    );
    let errors = adapt("[1]", overrides(Some(465), Some(Security::Starttls), true)).unwrap_err();
    assert_eq!(paths(&errors), ["/options", "/smtp/security"], "{errors:?}");
    let errors = adapt("{}", overrides(None, Some(Security::None), true)).unwrap_err();
    assert_eq!(paths(&errors), ["/smtp/security"], "{errors:?}");
    let wrong_user = SmtpOverrides {
        username: Some("me@example.com".into()),
        ..overrides(None, None, true)
    };
    let errors = adapt("{}", wrong_user).unwrap_err();
    assert_eq!(paths(&errors), ["/smtp/username"], "{errors:?}");
    assert!(errors[0].message.contains("apikey"), "{errors:?}");
}

#[test]
fn describe_lists_every_capability_and_an_empty_closed_options_schema() {
    let rt = runtime(FIXTURE_NOW);
    let info = rt.describe("sendgrid").unwrap();
    assert_eq!(info.display_name, "SendGrid");
    assert_eq!(info.capabilities.len(), 3);
    assert_eq!(
        info.signature_scheme.as_deref(),
        Some("sendgrid-ecdsa-p256-sha256")
    );
    assert_eq!(info.options_schema["additionalProperties"], false);
}

fn test_key() -> SigningKey {
    let pem = std::fs::read_to_string(
        webhook_fixtures().join("sendgrid/TEST_ONLY_ecdsa_p256_private_key.pem"),
    )
    .unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

/// Headers of `body` signed by `key` at `timestamp`.
fn signed(key: &SigningKey, timestamp: &str, body: &[u8]) -> Vec<(String, String)> {
    let sig: DerSignature = key.sign(&[timestamp.as_bytes(), body].concat());
    vec![
        (TS.to_owned(), timestamp.to_owned()),
        (SIG.to_owned(), STANDARD.encode(sig.as_bytes())),
    ]
}

fn verify(
    now: i64,
    body: &[u8],
    headers: Vec<(String, String)>,
    secret: &str,
) -> Result<(), VerifyError> {
    let mut req = request(body.to_vec(), &[]);
    req.headers = headers;
    runtime(now)
        .plugin("sendgrid")
        .unwrap()
        .instance()
        .verify_webhook(&req, secret)
        .unwrap()
}

const BODY: &[u8] = br#"[{"email":"a@example.com","timestamp":1767268790,"event":"delivered","response":"250 ok"}]"#;

#[test]
fn signatures_verify_within_300_seconds_either_way() {
    let key = test_key();
    let headers = signed(&key, "1767268800", BODY);
    assert_eq!(
        verify(FIXTURE_NOW, BODY, headers.clone(), SG_PUBLIC_KEY),
        Ok(())
    );
    assert_eq!(
        verify(SIGNED_AT + 300, BODY, headers.clone(), SG_PUBLIC_KEY),
        Ok(())
    );
    assert_eq!(
        verify(SIGNED_AT - 300, BODY, headers.clone(), SG_PUBLIC_KEY),
        Ok(())
    );
    assert_eq!(
        verify(SIGNED_AT + 301, BODY, headers.clone(), SG_PUBLIC_KEY),
        Err(VerifyError::TimestampOutOfTolerance(301))
    );
    assert_eq!(
        verify(SIGNED_AT - 3_600, BODY, headers, SG_PUBLIC_KEY),
        Err(VerifyError::TimestampOutOfTolerance(-3_600))
    );
}

#[test]
fn keys_as_pem_or_during_a_rotation_verify_and_a_foreign_key_does_not() {
    let key = test_key();
    let headers = signed(&key, "1767268800", BODY);
    let other = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let other_public = STANDARD.encode(
        other
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes(),
    );
    let pem = std::fs::read_to_string(webhook_fixtures().join("sendgrid/public_key.pem")).unwrap();
    assert_eq!(verify(FIXTURE_NOW, BODY, headers.clone(), &pem), Ok(()));
    assert_eq!(
        verify(
            FIXTURE_NOW,
            BODY,
            headers.clone(),
            &format!("{other_public} {SG_PUBLIC_KEY}")
        ),
        Ok(())
    );
    assert_eq!(
        verify(FIXTURE_NOW, BODY, headers, &other_public),
        Err(VerifyError::BadSignature)
    );
    // Signed by the other key: our key rejects it.
    let forged = signed(&other, "1767268800", BODY);
    assert_eq!(
        verify(FIXTURE_NOW, BODY, forged, SG_PUBLIC_KEY),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn missing_or_garbage_headers_and_secrets_are_rejected_not_crashing() {
    let headers = signed(&test_key(), "1767268800", BODY);
    let without = |name: &str| -> Vec<(String, String)> {
        headers.iter().filter(|(k, _)| k != name).cloned().collect()
    };
    assert_eq!(
        verify(FIXTURE_NOW, BODY, without(SIG), SG_PUBLIC_KEY),
        Err(VerifyError::MissingHeader(SIG.into()))
    );
    assert_eq!(
        verify(FIXTURE_NOW, BODY, without(TS), SG_PUBLIC_KEY),
        Err(VerifyError::MissingHeader(TS.into()))
    );
    for ts in [
        "",
        "soon",
        "+1767268800",
        "1767268800.5",
        "99999999999999999999",
    ] {
        let mut bad = without(TS);
        bad.push((TS.into(), ts.into()));
        assert!(
            matches!(
                verify(FIXTURE_NOW, BODY, bad, SG_PUBLIC_KEY),
                Err(VerifyError::Malformed(_))
            ),
            "{ts:?}"
        );
    }
    for sig in ["***", "", "AAAA"] {
        let mut bad = without(SIG);
        bad.push((SIG.into(), sig.into()));
        assert!(
            matches!(
                verify(FIXTURE_NOW, BODY, bad, SG_PUBLIC_KEY),
                Err(VerifyError::Malformed(_))
            ),
            "{sig:?}"
        );
    }
    for secret in ["", "not base64!", "AAAA", "whsec_AAAA"] {
        assert!(
            matches!(
                verify(FIXTURE_NOW, BODY, headers.clone(), secret),
                Err(VerifyError::Malformed(_))
            ),
            "{secret:?}"
        );
    }
}

#[test]
fn oversized_batches_and_hostile_strings_are_refused_or_cleaned_not_failing_the_host() {
    let rt = runtime(FIXTURE_NOW);
    let mut instance = rt.plugin("sendgrid").unwrap().instance();
    let one = r#"{"email":"a@example.com","timestamp":1767268790,"event":"open"}"#;
    let many = format!("[{}]", vec![one; 10_001].join(","));
    let err = instance
        .parse_webhook(&request(many, &[]))
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:?}").contains("10001 events"), "{err:?}");
    for bad in [
        r#"[{"email":"a\u0007@example.com","timestamp":1767268790,"event":"open"}]"#,
        r#"[{"email":"a@example.com","timestamp":-5,"event":"open"}]"#,
        r#"[{"email":"a@example.com","timestamp":"1767268790","event":"open"}]"#,
        r#"[{"email":"a@example.com","timestamp":1e300,"event":"open"}]"#,
        r#"[{"email":"","timestamp":1767268790,"event":"open"}]"#,
        r#"[{"timestamp":1767268790,"email":"a@example.com"}]"#,
        r#"[{"email":"a@example.com","timestamp":1767268790,"event":"open","sg_event_id":1.5}]"#,
        "[1]",
        "",
    ] {
        assert!(
            instance.parse_webhook(&request(bad, &[])).unwrap().is_err(),
            "{bad}"
        );
    }
    let long = "x".repeat(20_000);
    let body = format!(
        r#"[{{"email":"a@example.com","timestamp":1767268790,"event":"bounce","type":"bounce","reason":"550 5.1.1 {long}","status":"5.1.1.1"}}]"#
    );
    let events = instance
        .parse_webhook(&request(body, &[]))
        .unwrap()
        .unwrap();
    let diagnostic = events[0].diagnostic.as_deref().unwrap();
    assert_eq!(diagnostic.len(), 16 << 10);
    assert!(diagnostic.starts_with("550 5.1.1 xxx"));
    assert_eq!(events[0].enhanced_status.as_deref(), Some("5.1.1"));
    assert_eq!(events[0].smtp_status.as_deref(), Some("550"));
}
