//! The first-party `custom-smtp` plugin through the runtime: SMTP settings
//! and Standard Webhooks verification edge cases.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};
use mailplug::runtime::{FieldError, PasswordSource, Security, SmtpOverrides, VerifyError};

use super::{FIXTURE_NOW, SW_SECRET, request, runtime, webhook_fixtures};

fn overrides(
    host: Option<&str>,
    port: Option<u16>,
    security: Option<Security>,
    user: bool,
) -> SmtpOverrides {
    SmtpOverrides {
        host: host.map(Into::into),
        port,
        security,
        username: user.then(|| "relay@example.com".into()),
        has_password: user,
    }
}

fn adapt(
    options: &str,
    o: SmtpOverrides,
) -> Result<mailplug::runtime::SmtpSettings, Vec<FieldError>> {
    let rt = runtime(FIXTURE_NOW);
    rt.plugin("custom-smtp")
        .unwrap()
        .instance()
        .adapt_connection(options, &o)
        .unwrap()
}

#[test]
fn adapt_fills_usual_port_and_security_defaults() {
    let s = adapt("{}", overrides(Some("smtp.example.com"), None, None, true)).unwrap();
    assert_eq!((s.port, s.security), (587, Security::Starttls));
    assert!(matches!(s.password, PasswordSource::SmtpPassword));
    let s = adapt(
        "",
        overrides(Some("smtp.example.com"), Some(465), None, false),
    )
    .unwrap();
    assert_eq!((s.port, s.security), (465, Security::Tls));
    let s = adapt(
        "{}",
        overrides(Some("smtp.example.com"), None, Some(Security::Tls), false),
    )
    .unwrap();
    assert_eq!(s.port, 465);
    let s = adapt(
        r#"{"headers": {"X-Campaign": "spring"}}"#,
        overrides(
            Some("mx.example.com"),
            Some(25),
            Some(Security::None),
            false,
        ),
    )
    .unwrap();
    assert_eq!(
        s.extra_headers,
        vec![("X-Campaign".to_owned(), "spring".to_owned())]
    );
}

#[test]
fn adapt_reports_every_field_error_with_its_pointer() {
    let errors = adapt(
        r#"{"headers": {"Bad Name": "x", "X-Ok": "a\r\nBcc: evil"}}"#,
        overrides(None, Some(465), Some(Security::Starttls), false),
    )
    .unwrap_err();
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"/smtp/host"), "{errors:?}");
    assert!(paths.contains(&"/smtp/security"), "{errors:?}");
    assert!(paths.contains(&"/options/headers/Bad Name"), "{errors:?}");
    assert!(paths.contains(&"/options/headers/X-Ok"), "{errors:?}");
    let errors = adapt(
        r#"{"unknown": 1}"#,
        overrides(Some("h"), Some(25), Some(Security::None), true),
    )
    .unwrap_err();
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/options", "/smtp/security"], "{errors:?}");
}

fn fixture(case: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let dir = webhook_fixtures().join("standard_webhooks");
    let body = std::fs::read(dir.join(format!("{case}.json"))).unwrap();
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.headers.json"))).unwrap())
            .unwrap();
    (
        body,
        headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_owned()))
            .collect(),
    )
}

fn verify(
    now: i64,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    secret: &str,
) -> Result<(), VerifyError> {
    let rt = runtime(now);
    let req = mailplug::runtime::WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers,
        body,
    };
    rt.plugin("custom-smtp")
        .unwrap()
        .instance()
        .verify_webhook(&req, secret)
        .unwrap()
}

#[test]
fn standard_webhooks_signatures_verify_within_tolerance_only() {
    let (body, headers) = fixture("hard_bounce_v1");
    assert_eq!(
        verify(FIXTURE_NOW, body.clone(), headers.clone(), SW_SECRET),
        Ok(())
    );
    assert_eq!(
        verify(
            1_767_268_800 + 300,
            body.clone(),
            headers.clone(),
            SW_SECRET
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            1_767_268_800 + 301,
            body.clone(),
            headers.clone(),
            SW_SECRET
        ),
        Err(VerifyError::TimestampOutOfTolerance(301))
    );
    assert_eq!(
        verify(1_767_268_800 - 3_600, body, headers, SW_SECRET),
        Err(VerifyError::TimestampOutOfTolerance(-3_600))
    );
}

#[test]
fn rotated_keys_match_any_listed_signature() {
    let (body, headers) = fixture("complaint_rotated_keys");
    assert_eq!(
        verify(FIXTURE_NOW, body.clone(), headers.clone(), SW_SECRET),
        Ok(())
    );
    // The rotated-out key still matches its own signature in the list ...
    let old = "whsec_/EVND64fLHXD4tZWWKSdXEjDzqD8M362";
    assert_eq!(
        verify(FIXTURE_NOW, body.clone(), headers.clone(), old),
        Ok(())
    );
    // ... an operator can configure both during a rotation ...
    assert_eq!(
        verify(
            FIXTURE_NOW,
            body.clone(),
            headers.clone(),
            &format!("{old} {SW_SECRET}")
        ),
        Ok(())
    );
    // ... and an unrelated key matches none.
    let other = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    assert_eq!(
        verify(FIXTURE_NOW, body, headers, &other),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn missing_and_garbage_headers_are_rejected_not_crashing() {
    let (body, headers) = fixture("hard_bounce_v1");
    let without = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k != name)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        verify(FIXTURE_NOW, body.clone(), without("webhook-id"), SW_SECRET),
        Err(VerifyError::MissingHeader("webhook-id".into()))
    );
    let mut garbage = without("webhook-signature");
    garbage.push(("webhook-signature".into(), "v1 garbage".into()));
    assert!(matches!(
        verify(FIXTURE_NOW, body.clone(), garbage, SW_SECRET),
        Err(VerifyError::Malformed(_))
    ));
    let mut bad_ts = without("webhook-timestamp");
    bad_ts.push(("webhook-timestamp".into(), "soon".into()));
    assert!(matches!(
        verify(FIXTURE_NOW, body.clone(), bad_ts, SW_SECRET),
        Err(VerifyError::Malformed(_))
    ));
    assert!(matches!(
        verify(FIXTURE_NOW, body, headers, "whsec_***"),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn ed25519_v1a_signatures_verify_with_a_whpk_key() {
    // TEST-ONLY seed from the webhook fixtures' secrets.txt.
    let seed: [u8; 32] = STANDARD
        .decode("dZXW7jKpdBYEFR3JMa2jqfnavdXBhL+/92u6ZQluh4o=")
        .unwrap()
        .try_into()
        .unwrap();
    let key = SigningKey::from_bytes(&seed);
    let public = format!("whpk_{}", STANDARD.encode(key.verifying_key().as_bytes()));
    assert_eq!(public, "whpk_HK1j7pkNn9MD5P57q95CBcHlTCfhawCIjG4j67I7GtU=");
    let body = br#"{"type":"email.delivered","timestamp":"2026-01-01T11:59:00Z","data":{"recipient":"a@example.com"}}"#;
    let signed = [b"msg_ed.1767268800.".as_slice(), body].concat();
    let sig = format!(
        "v1,bm90IGl0 v1a,{}",
        STANDARD.encode(key.sign(&signed).to_bytes())
    );
    let headers = |sig: &str| {
        vec![
            ("webhook-id".to_owned(), "msg_ed".to_owned()),
            ("webhook-timestamp".to_owned(), "1767268800".to_owned()),
            ("webhook-signature".to_owned(), sig.to_owned()),
        ]
    };
    assert_eq!(
        verify(FIXTURE_NOW, body.to_vec(), headers(&sig), &public),
        Ok(())
    );
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert_eq!(
        verify(FIXTURE_NOW, tampered, headers(&sig), &public),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn parse_accepts_one_object_or_an_array_of_unified_events() {
    let rt = runtime(FIXTURE_NOW);
    let mut instance = rt.plugin("custom-smtp").unwrap().instance();
    let one =
        r#"{"kind":"delivered","recipient":"a@example.com","occurred_at":"2026-01-01T12:00:00Z"}"#;
    let events = instance.parse_webhook(&request(one, &[])).unwrap().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].provider, "custom-smtp");
    let many = format!("[{one},{one}]");
    assert_eq!(
        instance
            .parse_webhook(&request(many, &[]))
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        instance
            .parse_webhook(&request("[]", &[]))
            .unwrap()
            .unwrap()
            .len(),
        0
    );
    for bad in [
        "",
        "42",
        r#"{"kind":"delivered"}"#,
        r#"{"kind":"delivered","recipient":"a@example.com","occurred_at":"yesterday"}"#,
    ] {
        assert!(
            instance.parse_webhook(&request(bad, &[])).unwrap().is_err(),
            "{bad:?}"
        );
    }
}
