//! Plugin runtime and author CLI, against real components built from
//! plugins/ (first-party and hostile test guests).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly on broken fixtures"
)]

mod cli_golden;
mod custom_smtp;
mod first_party;
mod first_party_adapt;
mod fixtures_cli;
mod hostile;
mod loading;
mod new_project;
mod sdk;
mod sendgrid;

use std::path::PathBuf;

use mailplug::runtime::{
    EngineOptions, Limits, PluginLimits, PluginSource, Runtime, RuntimeOptions, WasmSource,
    WebhookRequest,
};

/// Directory of the test guests staged by host/build.rs.
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("MAILPLUG_TEST_GUESTS_DIR")).join(format!("{name}.wasm"))
}

/// Compiled components shared by every test (and every run): each component
/// is compiled once, which also exercises the cache under concurrency.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("plugin-data")
        .join("plugin-cache")
}

/// The provider webhook fixtures (`tests/fixtures/webhooks`).
pub fn webhook_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/webhooks")
}

/// This repository's plugin fixtures.
pub fn own_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/plugins")
}

/// A small runtime with the first-party plugins and a pinned clock.
pub fn runtime(now: i64) -> Runtime {
    let options = RuntimeOptions {
        engine: EngineOptions {
            max_instances: 16,
            ..EngineOptions::default()
        },
        cache_dir: Some(cache_dir()),
        clock: mailplug::runtime::Clock::Fixed(now),
        default_limits: Limits::default(),
    };
    Runtime::with_builtins(options).expect("runtime with first-party plugins")
}

/// Registers a test guest by path.
pub fn load_guest(runtime: &mut Runtime, name: &str, limits: PluginLimits) -> String {
    let source = PluginSource {
        id: None,
        wasm: WasmSource::Path(guest(name)),
        expected_sha256: None,
        limits,
    };
    runtime.load(source).expect("guest loads").info().id.clone()
}

/// A POST request with `body` and `headers`.
pub fn request(body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.into(),
    }
}

/// The fixed clock of the webhook fixtures (T+30 s).
pub const FIXTURE_NOW: i64 = 1_767_268_830;
/// The current TEST-ONLY Standard Webhooks secret of the webhook fixtures.
pub const SW_SECRET: &str = "whsec_b6o9cjOxW7gNB+wD3OHJIK6jrmph6jGr4ZMmyKZmoWA=";
/// The TEST-ONLY SendGrid verification key of the webhook fixtures (base64 DER SPKI).
pub const SG_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEITo5nIXhAdcsmjpIOE7HH6RCUZZmDDKUqj9f12HbYH7XApERotJxdo8yKEXz4F1d/OMriXBzm6eCoajRITBxMA==";
