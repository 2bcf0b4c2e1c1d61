//! Webhook paths that need a purpose-built plugin: single-use tokens
//! (`replay.use-token`, Mailgun's scheme) refused on reuse with nothing
//! stored, across concurrent requests and a restart; and a provider that
//! parses no webhooks (404).

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::daemon::Daemon;
use crate::plugins::guest;
use crate::webhooks::{all_events, post_raw};

const SECRET: &str = "nonce-signing-key";

fn register(dir: &Path, id: &str, wasm: &str) {
    let wasm = guest(wasm);
    let sha = mailplug::digest::sha256_hex(&std::fs::read(&wasm).unwrap());
    std::fs::write(
        dir.join(format!("{id}-plugin.yaml")),
        format!(
            "api_version: mailplug/v1\nkind: Plugin\nid: {id}\npath: {}\nsha256: {sha}\n",
            wasm.display()
        ),
    )
    .unwrap();
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    register(&dir, "nonce", "nonce");
    register(&dir, "smtp-only", "smtp_only");
    std::fs::write(
        dir.join("connections.yaml"),
        "api_version: mailplug/v1\nkind: Connection\nname: mg\nprovider: nonce\nsmtp: { host: smtp.example.net, username: u, password: { env: PW } }\nfrom: { email: a@example.com }\nworkspaces: [w]\nwebhook:\n  secret: { env: NONCE_SECRET }\n---\napi_version: mailplug/v1\nkind: Connection\nname: plain\nprovider: smtp-only\nsmtp: { username: u, password: { env: PW } }\nfrom: { email: a@example.com }\n",
    )
    .unwrap();
    (tmp, dir)
}

fn start(dir: &Path) -> Daemon {
    Daemon::start_env(dir, &[], &[("PW", "pw"), ("NONCE_SECRET", SECRET)])
}

/// A signed request with `token`: `(status, body)`.
fn post(d: &Daemon, token: &str, id: &str) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"id":"{id}","recipient":"{id}@example.org"}}"#);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(token.as_bytes());
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let headers = vec![
        ("X-Token".to_owned(), token.to_owned()),
        ("X-Signature".to_owned(), signature),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let (status, _, json) = post_raw(&d.public, "/webhooks/mg", &headers, body.as_bytes());
    (status, json)
}

fn stored_ids(d: &Daemon) -> Vec<String> {
    let mut ids: Vec<String> = all_events(d, "&connection=mg")
        .iter()
        .map(|e| {
            e["provider_event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_reused_single_use_token_is_refused_and_stores_nothing() {
    let (_tmp, dir) = setup();
    let d = start(&dir);
    assert_eq!(post(&d, "tok-1", "a").0, 200);
    // The provider retrying the same request (its answer was lost) is fine.
    let (status, json) = post(&d, "tok-1", "a");
    assert_eq!(
        (status, &json["duplicates"]),
        (200, &serde_json::json!(1)),
        "{json}"
    );
    // The same token with other bytes is a replay.
    let (status, json) = post(&d, "tok-1", "b");
    assert_eq!(status, 401, "{json}");
    assert!(
        json["error"].as_str().unwrap_or("").contains("replayed"),
        "{json}"
    );
    assert_eq!(stored_ids(&d), ["a"], "the replay stored nothing");
    assert_eq!(post(&d, "tok-2", "b").0, 200, "a new token is accepted");

    // Concurrent requests with one fresh token: exactly one wins, whether
    // they land in one group commit or several.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let d = &d;
                s.spawn(move || post(d, "tok-3", &format!("c{i}")).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    let ids = stored_ids(&d);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        d.metric(
            "mailplug_webhooks_rejected_total{connection=\"mg\",provider=\"nonce\",reason=\"unauthorized\"}"
        ) >= 6.0
    );

    // Remembered across a restart.
    drop(d);
    let d = start(&dir);
    assert_eq!(post(&d, "tok-1", "d").0, 401);
    assert_eq!(post(&d, "tok-4", "d").0, 200);
    assert_eq!(stored_ids(&d).len(), 4);
}

#[test]
fn a_provider_that_parses_no_webhooks_has_no_endpoint() {
    let (_tmp, dir) = setup();
    let d = start(&dir);
    let (status, _, json) = post_raw(&d.public, "/webhooks/plain", &[], b"{}");
    assert_eq!(status, 404, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not parse webhooks"),
        "{json}"
    );
    assert!(all_events(&d, "").is_empty());
    assert_eq!(
        d.metric(
            "mailplug_webhooks_rejected_total{connection=\"plain\",provider=\"smtp-only\",reason=\"no_webhooks\"}"
        ),
        1.0
    );
}
