//! The guest SDK as shipped: its vendored WIT equals the contract the host
//! is built against, and the template stays short.

use std::path::PathBuf;

use mailplug::runtime::{Capability, VerifyError};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The SDK carries a copy of `wit/` so that it packages and builds outside
/// this repository; a change to the contract must reach both.
#[test]
fn sdk_wit_copy_equals_the_top_level_contract() {
    let top = repo().join("wit");
    let sdk = repo().join("plugins/sdk/wit");
    let names = |dir: &PathBuf| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let files = names(&top);
    assert!(!files.is_empty());
    assert_eq!(
        files,
        names(&sdk),
        "plugins/sdk/wit lists other files than wit/"
    );
    for name in &files {
        assert!(
            std::fs::read(top.join(name)).unwrap() == std::fs::read(sdk.join(name)).unwrap(),
            "plugins/sdk/wit/{name} differs from wit/{name}: copy wit/ into plugins/sdk/wit/"
        );
    }
}

/// Lines that are neither blank nor comments.
fn lines_of_code(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

#[test]
fn the_template_plugin_stays_under_60_lines_of_code() {
    let text = std::fs::read_to_string(repo().join("plugins/template/src/lib.rs")).unwrap();
    let loc = lines_of_code(&text);
    assert!(
        loc < 60,
        "plugins/template/src/lib.rs has {loc} lines of code"
    );
    assert!(loc > 20, "the template should still be a complete plugin");
}

/// A webhook-only plugin on SDK v2 writes no `adapt_connection`: it
/// declares no SMTP capability, the default refuses, and the SDK's RSA
/// verifier and event builder work through the host.
#[test]
fn webhook_only_guest_declares_no_smtp_and_verifies_rsa_signatures() {
    let mut rt = super::runtime(super::FIXTURE_NOW);
    let id = super::load_guest(&mut rt, "webhook_only", Default::default());
    let info = rt.describe(&id).unwrap();
    assert_eq!(
        info.capabilities,
        [Capability::VerifiesWebhooks, Capability::ParsesWebhooks]
    );
    assert_eq!(info.signature_scheme.as_deref(), Some("rsa-sha256"));
    let mut instance = rt.plugin(&id).unwrap().instance();
    let overrides = mailplug::runtime::SmtpOverrides {
        host: None,
        port: None,
        security: None,
        username: None,
        has_password: true,
    };
    let errors = instance
        .adapt_connection("", &overrides)
        .unwrap()
        .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "/provider");
    assert!(
        errors[0].message.contains("does not provide SMTP"),
        "{errors:?}"
    );

    let dir = super::webhook_fixtures().join("postal");
    let body = std::fs::read(dir.join("sent.json")).unwrap();
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("sent.headers.json")).unwrap()).unwrap();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let key = std::fs::read_to_string(dir.join("public_key.pem")).unwrap();
    let request = super::request(body.clone(), &headers);
    assert_eq!(instance.verify_webhook(&request, &key).unwrap(), Ok(()));
    let mut tampered = body.clone();
    let at = tampered.iter().position(|&b| b == b'S').unwrap();
    tampered[at] = b's';
    assert_eq!(
        instance
            .verify_webhook(&super::request(tampered, &headers), &key)
            .unwrap(),
        Err(VerifyError::BadSignature)
    );
    assert!(matches!(
        instance.verify_webhook(&request, "not base64!").unwrap(),
        Err(VerifyError::Malformed(_))
    ));

    let events = instance.parse_webhook(&request).unwrap().unwrap();
    let expected: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("sent.expected.json")).unwrap()).unwrap();
    assert_eq!(events.len(), expected.len());
    let got = serde_json::to_value(&events[0]).unwrap();
    for (key, want) in expected[0].as_object().unwrap() {
        assert_eq!(&got[key], want, "{key}: {got}");
    }
}
