//! `describe`, `adapt-connection` and verification edge cases of the
//! `postmark`, `resend` and `mailgun` plugins through the runtime.

use mailplug::runtime::{
    Capability, FieldError, PasswordSource, Security, SmtpOverrides, SmtpSettings, VerifyError,
};

use super::{FIXTURE_NOW, request, runtime};

fn overrides(username: Option<&str>, password: bool) -> SmtpOverrides {
    SmtpOverrides {
        host: None,
        port: None,
        security: None,
        username: username.map(str::to_owned),
        has_password: password,
    }
}

fn adapt(plugin: &str, options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    runtime(FIXTURE_NOW)
        .plugin(plugin)
        .unwrap()
        .instance()
        .adapt_connection(options, &o)
        .unwrap()
}

fn paths(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn describe_reports_typed_closed_options_schemas_and_every_capability() {
    let rt = runtime(FIXTURE_NOW);
    for (id, scheme, option) in [
        ("postmark", "basic-auth", Some("message_stream")),
        ("resend", "svix-v1", None),
        ("mailgun", "mailgun-hmac-sha256", Some("region")),
    ] {
        let info = rt.describe(id).unwrap();
        assert_eq!(info.signature_scheme.as_deref(), Some(scheme), "{id}");
        for c in [
            Capability::AdaptsSmtp,
            Capability::VerifiesWebhooks,
            Capability::ParsesWebhooks,
        ] {
            assert!(info.capabilities.contains(&c), "{id}: {c:?}");
        }
        let schema = &info.options_schema;
        assert_eq!(schema["additionalProperties"], false, "{id}: {schema}");
        assert_eq!(schema["type"], "object", "{id}: {schema}");
        if let Some(option) = option {
            assert!(
                schema["properties"][option]["description"].is_string(),
                "{id}: {schema}"
            );
        }
    }
    let mailgun = rt.describe("mailgun").unwrap();
    assert_eq!(
        mailgun.options_schema["properties"]["region"]["enum"],
        serde_json::json!(["us", "eu"])
    );
}

#[test]
fn postmark_reads_the_user_from_the_password_secret_unless_one_is_set() {
    let rt = runtime(FIXTURE_NOW);
    let mut pm = rt.plugin("postmark").unwrap().instance();
    // The server token is user and password: the plugin names the
    // password's secret for the user instead of a plain string.
    let s = pm
        .adapt_connection("", &overrides(None, true))
        .unwrap()
        .unwrap();
    assert_eq!(s.username, None);
    assert_eq!(
        pm.take_requests().username_secret,
        Some(PasswordSource::SmtpPassword)
    );
    // An SMTP token's access key as explicit user: no secret user. The
    // first call's request is not taken, so this also shows it is reset.
    pm.adapt_connection("", &overrides(None, true))
        .unwrap()
        .unwrap();
    let s = pm
        .adapt_connection("", &overrides(Some("access-key"), true))
        .unwrap()
        .unwrap();
    assert_eq!(s.username.as_deref(), Some("access-key"));
    assert_eq!(pm.take_requests().username_secret, None);
    // A plugin without a secret user names none.
    let mut resend = rt.plugin("resend").unwrap().instance();
    resend
        .adapt_connection("", &overrides(None, true))
        .unwrap()
        .unwrap();
    assert_eq!(resend.take_requests().username_secret, None);
}

#[test]
fn postmark_uses_its_host_the_token_and_the_message_stream_header() {
    let s = adapt(
        "postmark",
        r#"{"message_stream": "broadcast"}"#,
        overrides(Some("server-token-user"), true),
    )
    .unwrap();
    assert_eq!(s.host, "smtp.postmarkapp.com");
    assert_eq!((s.port, s.security), (587, Security::Starttls));
    assert_eq!(s.username.as_deref(), Some("server-token-user"));
    assert!(matches!(s.password, PasswordSource::SmtpPassword));
    assert_eq!(
        s.extra_headers,
        [("X-PM-Message-Stream".to_owned(), "broadcast".to_owned())]
    );
    let s = adapt("postmark", "", overrides(Some("u"), true)).unwrap();
    assert!(s.extra_headers.is_empty());
    let errors = adapt(
        "postmark",
        r#"{"message_stream": "has space", "stream": 1}"#,
        overrides(None, false),
    )
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        ["/options/stream", "/smtp/password"],
        "{errors:?}"
    );
    let errors = adapt(
        "postmark",
        r#"{"message_stream": "has space"}"#,
        overrides(None, false),
    )
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        ["/options/message_stream", "/smtp/password"],
        "{errors:?}"
    );
}

#[test]
fn resend_uses_the_literal_user_and_knows_its_second_tls_port() {
    let s = adapt("resend", "{}", overrides(None, true)).unwrap();
    assert_eq!(s.host, "smtp.resend.com");
    assert_eq!(s.username.as_deref(), Some("resend"));
    assert_eq!((s.port, s.security), (587, Security::Starttls));
    let tls = SmtpOverrides {
        port: Some(2465),
        ..overrides(None, true)
    };
    let s = adapt("resend", "", tls).unwrap();
    assert_eq!((s.port, s.security), (2465, Security::Tls));
    let errors = adapt(
        "resend",
        r#"{"region": "eu"}"#,
        overrides(Some("me"), false),
    )
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        ["/options/region", "/smtp/username", "/smtp/password"],
        "{errors:?}"
    );
}

#[test]
fn mailgun_picks_the_region_host_and_sends_tags_as_headers() {
    let login = Some("postmaster@mg.example.com");
    let s = adapt("mailgun", "", overrides(login, true)).unwrap();
    assert_eq!(s.host, "smtp.mailgun.org");
    let s = adapt(
        "mailgun",
        r#"{"region": "eu", "tags": ["news", "weekly"]}"#,
        overrides(login, true),
    )
    .unwrap();
    assert_eq!(s.host, "smtp.eu.mailgun.org");
    assert_eq!(s.username.as_deref(), login);
    assert_eq!(
        s.extra_headers,
        [
            ("X-Mailgun-Tag".to_owned(), "news".to_owned()),
            ("X-Mailgun-Tag".to_owned(), "weekly".to_owned())
        ]
    );
    let errors = adapt("mailgun", r#"{"region": "mars"}"#, overrides(login, true)).unwrap_err();
    assert_eq!(paths(&errors), ["/options/region"], "{errors:?}");
    let errors = adapt(
        "mailgun",
        r#"{"tags": ["a", "b", "c", "d", ""]}"#,
        overrides(None, true),
    )
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        ["/options/tags", "/options/tags/4", "/smtp/username"],
        "{errors:?}"
    );
}

fn verify(
    plugin: &str,
    headers: &[(&str, &str)],
    body: &str,
    secret: &str,
) -> Result<(), VerifyError> {
    runtime(FIXTURE_NOW)
        .plugin(plugin)
        .unwrap()
        .instance()
        .verify_webhook(&request(body, headers), secret)
        .unwrap()
}

#[test]
fn postmark_basic_auth_accepts_only_the_exact_pair() {
    // base64("postmark-hook:pm-test-password-5c1d")
    let good = "cG9zdG1hcmstaG9vazpwbS10ZXN0LXBhc3N3b3JkLTVjMWQ=";
    let secret = "postmark-hook:pm-test-password-5c1d";
    for header in [format!("Basic {good}"), format!("basic  {good} ")] {
        assert_eq!(
            verify("postmark", &[("authorization", &header)], "{}", secret),
            Ok(()),
            "{header}"
        );
    }
    // base64("postmark-hook:pm-test-password-5c1") and "...5c1dX"
    for wrong in [
        "Basic cG9zdG1hcmstaG9vazpwbS10ZXN0LXBhc3N3b3JkLTVjMQ==",
        "Basic cG9zdG1hcmstaG9vazpwbS10ZXN0LXBhc3N3b3JkLTVjMWRY",
        "Bearer pm-test-password-5c1d",
        "Basic",
    ] {
        assert_eq!(
            verify("postmark", &[("authorization", wrong)], "{}", secret),
            Err(VerifyError::BadSignature),
            "{wrong}"
        );
    }
    assert_eq!(
        verify("postmark", &[], "{}", secret),
        Err(VerifyError::MissingHeader("authorization".into()))
    );
    assert!(matches!(
        verify(
            "postmark",
            &[("authorization", &format!("Basic {good}"))],
            "{}",
            "no-colon"
        ),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn resend_accepts_a_secret_listing_the_old_and_the_new_key() {
    let dir = super::webhook_fixtures().join("resend");
    let body = std::fs::read_to_string(dir.join("delivered.json")).unwrap();
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("delivered.headers.json")).unwrap())
            .unwrap();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let current = "whsec_dxI3KiQrHsD06b2bcIV1aAIgSouRlmi8";
    let retired = "whsec_cmV0aXJlZC10ZXN0LW9ubHkta2V5LTAwMDE=";
    assert_eq!(
        verify("resend", &headers, &body, &format!("{retired} {current}")),
        Ok(())
    );
    assert_eq!(
        verify("resend", &headers, &body, retired),
        Err(VerifyError::BadSignature)
    );
}
