//! First-party provider webhooks through the real daemon: the shared
//! samples and a few of our own cases posted over HTTP, stored exactly once,
//! and the hostile requests refused with nothing stored.

use std::path::Path;

use serde_json::Value;

use crate::daemon::Daemon;
use crate::webhooks::{NOW, all_events, fixture_headers, fixtures, post_raw, project};

const CONNECTIONS: &str = "\
api_version: mailplug/v1
kind: Connection
name: pm
provider: postmark
smtp: { username: pm-server-token, password: { env: SMTP_PASSWORD } }
options: { message_stream: outbound }
from: { email: news@example.com }
workspaces: [marketing]
webhook: { secret: 'postmark-hook:pm-test-password-5c1d' }
---
api_version: mailplug/v1
kind: Connection
name: rs
provider: resend
smtp: { password: { env: SMTP_PASSWORD } }
from: { email: news@example.com }
workspaces: [marketing]
webhook: { secret: whsec_dxI3KiQrHsD06b2bcIV1aAIgSouRlmi8 }
---
api_version: mailplug/v1
kind: Connection
name: mg
provider: mailgun
smtp: { username: postmaster@mg.example.test, password: { env: SMTP_PASSWORD } }
options: { region: eu }
from: { email: news@example.com }
workspaces: [marketing]
webhook: { secret: mg-test-signing-key-0f3c9a7e5d1b2468ace0 }
---
api_version: mailplug/v1
kind: Connection
name: mj
provider: mailjet
smtp: { username: mj-api-key, password: { env: SMTP_PASSWORD } }
options: { campaign: spring }
from: { email: news@example.com }
workspaces: [marketing]
webhook: { secret: 'mailjet-hook:mj-test-password-8b2e' }
---
api_version: mailplug/v1
kind: Connection
name: sp
provider: sparkpost
smtp: { password: { env: SMTP_PASSWORD } }
options: { region: eu, campaign_id: spring }
from: { email: news@example.com }
workspaces: [marketing]
webhook: { secret: 'sparkpost-hook:sp-test-password-3a7f' }
---
api_version: mailplug/v1
kind: Connection
name: br
provider: brevo
smtp: { username: 9a1b2c001@smtp-brevo.com, password: { env: SMTP_PASSWORD } }
from: { email: news@example.com }
workspaces: [marketing]
webhook: { secret: brevo-test-bearer-token-4d9c1a }
---
api_version: mailplug/v1
kind: Connection
name: md
provider: mandrill
smtp: { password: { env: SMTP_PASSWORD } }
from: { email: news@example.com }
workspaces: [marketing]
webhook:
  secret: mandrill-test-webhook-key-7Qp2Zx
  # Mandrill signs the URL it was given, not the one the daemon sees.
  url: 'https://hooks.example.test/webhooks/mandrill?tenant=acme'
---
api_version: mailplug/v1
kind: Connection
name: md-default
provider: mandrill
smtp: { password: { env: SMTP_PASSWORD } }
from: { email: news@example.com }
workspaces: [transactional]
webhook: { secret: mandrill-test-webhook-key-7Qp2Zx }
";

fn start() -> (tempfile::TempDir, Daemon) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    // Postal's webhook secret is its public key, written inline.
    let postal_key = std::fs::read_to_string(fixtures().join("postal/public_key.pem")).unwrap();
    let postal = format!(
        "---\napi_version: mailplug/v1\nkind: Connection\nname: po\nprovider: postal\n\
         smtp: {{ host: postal.example.net, password: {{ env: SMTP_PASSWORD }} }}\n\
         from: {{ email: news@example.com }}\nworkspaces: [marketing]\n\
         webhook:\n  secret: |\n{}",
        postal_key
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    std::fs::write(dir.join("providers.yaml"), format!("{CONNECTIONS}{postal}")).unwrap();
    let d = Daemon::start_env(
        &dir,
        &[],
        &[("MAILPLUG_FIXED_NOW", NOW), ("SMTP_PASSWORD", "pw")],
    );
    (tmp, d)
}

/// Posts `dir/case.json` (or `.form`) with its headers to `/webhooks/<connection>`.
fn post(d: &Daemon, connection: &str, dir: &Path, case: &str) -> (u16, Value) {
    let form = dir.join(format!("{case}.form"));
    let body = std::fs::read(if form.is_file() {
        form
    } else {
        dir.join(format!("{case}.json"))
    })
    .unwrap();
    let headers = fixture_headers(&dir.join(format!("{case}.headers.json")));
    let (status, _, json) = post_raw(
        &d.public,
        &format!("/webhooks/{connection}"),
        &headers,
        &body,
    );
    (status, json)
}

fn own(provider: &str) -> std::path::PathBuf {
    fixtures().join("../plugins").join(provider)
}

#[test]
fn provider_webhooks_are_stored_once_with_exactly_the_expected_events() {
    let (_tmp, d) = start();
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        ("pm", fixtures().join("postmark"), "hard_bounce"),
        ("pm", fixtures().join("postmark"), "delivery"),
        ("pm", own("postmark"), "spam_complaint"),
        ("pm", own("postmark"), "unicode_recipient"),
        ("rs", fixtures().join("resend"), "bounced"),
        ("rs", fixtures().join("resend"), "delivered"),
        ("rs", own("resend"), "two_recipients"),
        ("rs", own("resend"), "sent"),
        ("mg", fixtures().join("mailgun"), "hard_bounce"),
        ("mg", fixtures().join("mailgun"), "complained"),
        ("mg", own("mailgun"), "failed_temporary"),
        ("mj", fixtures().join("mailjet"), "hard_bounce"),
        ("mj", fixtures().join("mailjet"), "spam"),
        ("mj", own("mailjet"), "grouped_batch"),
        ("mj", own("mailjet"), "message_id_max_i64"),
        ("po", fixtures().join("postal"), "delivery_failed_hard"),
        ("po", fixtures().join("postal"), "sent"),
        ("po", own("postal"), "bounced"),
        ("po", own("postal"), "unicode_recipient"),
        ("sp", fixtures().join("sparkpost"), "hard_bounce"),
        ("sp", fixtures().join("sparkpost"), "ping"),
        ("sp", own("sparkpost"), "mixed_batch"),
        ("sp", own("sparkpost"), "large_batch_1000"),
        ("sp", own("sparkpost"), "event_id_64bit"),
        ("br", fixtures().join("brevo"), "hard_bounce"),
        ("br", fixtures().join("brevo"), "deferred"),
        ("br", own("brevo"), "spam"),
        ("br", own("brevo"), "unicode_recipient"),
        ("md", fixtures().join("mandrill"), "hard_bounce"),
        ("md", fixtures().join("mandrill"), "batch_mixed"),
        ("md", own("mandrill"), "soft_bounce"),
        ("md", own("mandrill"), "unicode_recipient"),
    ];
    let mut total = 0;
    for (conn, dir, case) in &cases {
        let expected: Vec<Value> = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{case}.expected.json"))).unwrap(),
        )
        .unwrap();
        let before = all_events(&d, &format!("&connection={conn}")).len();
        let (status, body) = post(&d, conn, dir, case);
        assert_eq!(status, 200, "{conn}/{case}: {body}");
        assert_eq!(body["stored"], expected.len(), "{conn}/{case}: {body}");
        let stored = all_events(&d, &format!("&connection={conn}"));
        let new = &stored[before..];
        assert_eq!(new.len(), expected.len(), "{conn}/{case}");
        for (got, want) in new.iter().zip(&expected) {
            assert_eq!(&project(got, want), want, "{conn}/{case}");
            assert_eq!(got["connection"], *conn);
        }
        // A retry by the provider stores nothing new.
        let (status, again) = post(&d, conn, dir, case);
        assert_eq!(status, 200, "{conn}/{case}: {again}");
        assert_eq!(again["stored"], 0, "{conn}/{case}: {again}");
        total += expected.len();
    }
    assert_eq!(all_events(&d, "").len(), total);
    // The hard bounces and the complaints suppressed their recipients.
    let (status, list) = d.get_json("/v1/suppressions?workspace=marketing");
    assert_eq!(status, 200, "{list}");
    let addresses: Vec<&str> = list["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["address"].as_str())
        .collect();
    for address in ["no-such-user@example.com", "grumpy@example.com"] {
        assert!(addresses.contains(&address), "{address}: {list}");
    }
}

#[test]
fn refused_provider_requests_get_401_or_400_and_store_nothing() {
    let (_tmp, d) = start();
    let bad = fixtures().join("_bad");
    let shared = [
        ("pm", "postmark__no_auth"),
        ("rs", "resend__garbage_signature_header"),
        ("mg", "mailgun__wrong_signature"),
        ("md", "mandrill__tampered_form"),
    ];
    for (conn, case) in shared {
        let expect: Value = serde_json::from_slice(
            &std::fs::read(bad.join(format!("{case}.expect.json"))).unwrap(),
        )
        .unwrap();
        let (status, body) = post(&d, conn, &bad, case);
        assert_eq!(
            Some(u64::from(status)),
            expect["status"].as_u64(),
            "{case}: {body}"
        );
        assert!(body["error"].is_string(), "{case}: {body}");
    }
    let own_cases = [
        ("pm", "postmark", "wrong_password", 401),
        ("pm", "postmark", "missing_email", 400),
        ("rs", "resend", "tampered_body", 401),
        ("rs", "resend", "old_timestamp", 401),
        ("rs", "resend", "missing_to", 400),
        ("mg", "mailgun", "old_timestamp", 401),
        ("mg", "mailgun", "legacy_form", 401),
        ("mg", "mailgun", "missing_event_data", 400),
        ("mj", "mailjet", "wrong_password", 401),
        ("mj", "mailjet", "missing_email", 400),
        ("mj", "mailjet", "message_id_beyond_u64", 400),
        ("po", "postal", "sha1_only", 401),
        ("po", "postal", "other_key", 401),
        ("po", "postal", "tampered_body", 401),
        ("po", "postal", "missing_uuid", 400),
        ("sp", "sparkpost", "wrong_password", 401),
        ("sp", "sparkpost", "missing_auth", 401),
        ("sp", "sparkpost", "missing_rcpt_to", 400),
        ("sp", "sparkpost", "event_id_beyond_u64", 400),
        ("br", "brevo", "wrong_token", 401),
        ("br", "brevo", "missing_auth", 401),
        ("br", "brevo", "missing_email", 400),
        ("md", "mandrill", "wrong_key", 401),
        ("md", "mandrill", "wrong_url", 401),
        ("md", "mandrill", "tampered_recipient", 401),
        ("md", "mandrill", "missing_events_field", 400),
    ];
    for (conn, provider, case, want) in own_cases {
        let (status, body) = post(&d, conn, &own(provider), case);
        assert_eq!(status, want, "{provider}/{case}: {body}");
    }
    assert!(all_events(&d, "").is_empty());
    let (_, list) = d.get_json("/v1/suppressions?workspace=marketing");
    assert_eq!(list["suppressions"], serde_json::json!([]), "{list}");
}

#[test]
fn mandrill_probes_the_url_with_head_and_nothing_happens() {
    let (_tmp, d) = start();
    let head = |name: &str| {
        ureq::head(&format!("{}/webhooks/{name}", d.public))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(head("md"), 200);
    assert_eq!(head("md-default"), 200);
    assert_eq!(head("no-such-connection"), 404);
    assert!(all_events(&d, "").is_empty());
}

/// Without `webhook.url` the registered URL is the daemon's public URL
/// plus `/webhooks/<name>`: a request signed for it is accepted, the shared
/// sample (signed for another URL) is not.
#[test]
fn mandrill_without_webhook_url_verifies_against_the_public_url() {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let (_tmp, d) = start();
    let dir = fixtures().join("mandrill");
    let (status, body) = post(&d, "md-default", &dir, "hard_bounce");
    assert_eq!(status, 401, "{body}");

    let form = std::fs::read_to_string(dir.join("hard_bounce.form")).unwrap();
    let raw = form.strip_prefix("mandrill_events=").unwrap();
    let value = percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .unwrap()
        .into_owned();
    let url = format!("{}/webhooks/md-default", d.public);
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"mandrill-test-webhook-key-7Qp2Zx").unwrap();
    mac.update(format!("{url}mandrill_events{value}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let headers: Vec<(String, String)> = vec![
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("x-mandrill-signature".into(), signature),
    ];
    let (status, _, json) = post_raw(&d.public, "/webhooks/md-default", &headers, form.as_bytes());
    assert_eq!(
        (status, &json["stored"]),
        (200, &serde_json::json!(1)),
        "{json}"
    );
}

#[test]
fn a_captured_mailgun_signature_cannot_carry_other_event_data() {
    // Mailgun signs timestamp + token, not the event data: only the
    // single-use token stops a captured signature from carrying new events.
    let (_tmp, d) = start();
    let dir = own("mailgun");
    let (status, body) = post(&d, "mg", &dir, "failed_temporary");
    assert_eq!(
        (status, &body["stored"]),
        (200, &serde_json::json!(1)),
        "{body}"
    );
    let (status, body) = post(&d, "mg", &dir, "failed_temporary");
    assert_eq!(
        (status, &body["duplicates"]),
        (200, &serde_json::json!(1)),
        "the same bytes again are Mailgun retrying: {body}"
    );

    let mut forged: Value =
        serde_json::from_slice(&std::fs::read(dir.join("failed_temporary.json")).unwrap()).unwrap();
    forged["event-data"]["recipient"] = "victim@example.org".into();
    forged["event-data"]["id"] = "forged-event".into();
    let headers = fixture_headers(&dir.join("failed_temporary.headers.json"));
    let (status, _, json) = post_raw(
        &d.public,
        "/webhooks/mg",
        &headers,
        &serde_json::to_vec(&forged).unwrap(),
    );
    assert_eq!(status, 401, "{json}");
    assert!(
        json["error"].as_str().unwrap_or("").contains("replayed"),
        "{json}"
    );
    assert!(all_events(&d, "&recipient=victim@example.org").is_empty());
    assert_eq!(all_events(&d, "&connection=mg").len(), 1);
}
