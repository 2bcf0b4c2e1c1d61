//! Property tests over the HTTP request paths: arbitrary methods, paths,
//! queries, headers and bodies sent in-process to the real admin and public
//! routers (the ones `mailplug serve` serves, over a real loaded
//! configuration). Whatever arrives, a router answers without panicking,
//! never with a 500, and every error carries a JSON `{"error": "..."}` body.
//!
//! The case counts are fixed so the suite takes seconds in CI. The
//! configured SMTP server is a closed local port, so a generated request
//! that reaches `.../check` or `.../test` fails fast instead of sending.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use mailplug::config::LoadOptions;
use mailplug::daemon::reload::Reloader;
use mailplug::metrics::Metrics;
use mailplug::state::{AppState, ReloadRequest, Snapshot};
use proptest::prelude::*;
use serde_json::Value;
use tokio::sync::mpsc;
use tower_service::Service as _;

const ALPHA: &str = "api_version: mailplug/v1\nkind: Connection\nname: alpha\nsmtp: { host: 127.0.0.1, port: 9, security: none }\nfrom: { email: a@example.com }\nlimits: { timeout_seconds: 1 }\n";
const SENDGRID: &str = "api_version: mailplug/v1\nkind: Connection\nname: sg\nprovider: sendgrid\nsmtp:\n  host: 127.0.0.1\n  port: 9\n  security: tls\n  password: { env: MAILPLUG_PROPTEST_UNSET }\nfrom: { email: a@example.com }\nwebhook: { secret: { env: MAILPLUG_PROPTEST_UNSET } }\nlimits: { timeout_seconds: 1 }\n";

/// Both routers over one state loaded from a real config directory, and
/// the runtime they run on. A stand-in for the daemon's reload loop answers
/// `POST /v1/reload` with the current snapshot.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    open: Router,
    guarded: Router,
    public: Router,
    /// Every status seen (0: a request `http` refused to build), so the
    /// test can show the generated requests got past the guard into the
    /// handlers.
    seen: std::sync::Mutex<std::collections::BTreeMap<u16, usize>>,
    _dir: tempfile::TempDir,
}

fn state(
    snapshot: &Arc<ArcSwap<Snapshot>>,
    token: Option<&str>,
    store: &Arc<mailplug::store::Store>,
) -> (Arc<AppState>, mpsc::Receiver<ReloadRequest>) {
    let (reload, requests) = mpsc::channel(16);
    let state = Arc::new(AppState {
        snapshot: snapshot.clone(),
        metrics: Arc::new(Metrics::new()),
        reload,
        admin_token: token.map(str::to_owned),
        public_url: "http://127.0.0.1:8080".to_owned(),
        ready: AtomicBool::new(true),
        outcomes: std::sync::Mutex::default(),
        refusals: mailplug::state::Refusals::default(),
        store: store.clone(),
        plugin_slots: tokio::sync::Semaphore::new(2),
        sns: Arc::default(),
        sending: Arc::new(mailplug::send::Sending::new(Default::default())),
        compose_limits: Default::default(),
    });
    (state, requests)
}

fn answer_reloads(mut requests: mpsc::Receiver<ReloadRequest>, live: Arc<ArcSwap<Snapshot>>) {
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if let Some(reply) = request.reply {
                let _ = reply.send(Ok(live.load_full()));
            }
        }
    });
}

fn fixture() -> Fixture {
    let dir = crate::support::tree(&[
        ("alpha.yaml", ALPHA.as_bytes()),
        ("sg.yaml", SENDGRID.as_bytes()),
    ]);
    let mut reloader = Reloader::new(
        dir.path().to_path_buf(),
        LoadOptions::default(),
        Some(crate::plugins::cache_dir()),
    )
    .unwrap();
    let snapshot = reloader.reload();
    assert_eq!(snapshot.connections.len(), 2, "{:?}", snapshot.diagnostics);
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    // A real SQLite store: generated webhooks, event and suppression
    // requests reach it like the daemon's.
    let backend = mailplug::store::sqlite::Sqlite::open(&mailplug::store::sqlite::SqliteOptions {
        path: dir.path().join("data").join("mailplug.db"),
        max_size: None,
        soft_bounces: mailplug::store::SoftBouncePolicy::default(),
    })
    .unwrap();
    let store = Arc::new(mailplug::store::Store::start(
        Arc::new(backend),
        Box::new(|_, _, _, _| {}),
    ));
    let (open, open_reloads) = state(&snapshot, None, &store);
    let (guarded, guarded_reloads) = state(&snapshot, Some("tok"), &store);
    answer_reloads(open_reloads, snapshot.clone());
    answer_reloads(guarded_reloads, snapshot.clone());
    Fixture {
        open: mailplug::api::admin_router(open.clone()),
        guarded: mailplug::api::admin_router(guarded),
        public: mailplug::api::public_router(open),
        runtime,
        seen: std::sync::Mutex::default(),
        _dir: dir,
    }
}

/// One generated request, kept as parts so a failing case prints readably.
#[derive(Debug, Clone)]
struct Generated {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"])
            .prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
    ]
}

/// A path segment: names, empty, dots, percent escapes valid and not, and
/// characters that are legal in a path but unusual.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["alpha", "sg", "alpha", "sg", "nobody", "", ".", "..", "%00", "%zz", "%2F", "%C3%A9", "check", "test"])
            .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._~!$&'()*+,;=:@%-]{0,16}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "/v1/connections",
        "/v1/connections/{}",
        "/v1/connections/{}/check",
        "/v1/connections/{}/test",
        "/v1/status",
        "/v1/reload",
        "/v1/events",
        "/v1/events/{}",
        "/v1/suppressions",
        "/v1/suppressions/{}/{}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/webhooks/{}",
        "/{}",
        "/v1/{}/{}",
    ]);
    let query = prop::option::weighted(0.3, "[a-zA-Z0-9=&%+._-]{0,24}");
    (
        known,
        segment(),
        segment(),
        query,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(t, a, b, q, slash)| {
            let mut p = t.replacen("{}", &a, 1).replacen("{}", &b, 1);
            if slash {
                p.push('/');
            }
            if let Some(q) = q {
                p.push('?');
                p.push_str(&q);
            }
            p
        })
}

/// Mostly values `http` accepts (visible ASCII, tab, obs-text); some raw
/// bytes, which the request builder refuses like a client library would.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff], 0..40),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let host = prop::option::weighted(
        0.9,
        prop_oneof![
            6 => prop::sample::select(vec!["127.0.0.1:8025", "localhost", "[::1]:1"])
                .prop_map(|h| h.as_bytes().to_vec()),
            1 => prop::sample::select(vec!["evil.example", "127.0.0.1.nip.io", ""])
                .prop_map(|h| h.as_bytes().to_vec()),
            1 => header_value(),
        ],
    );
    let content_type = prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x"
        ])
        .prop_map(|h| h.as_bytes().to_vec()),
        header_value(),
    ]);
    let origin = prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "http://localhost:3000",
            "https://evil.example",
            "null"
        ])
        .prop_map(|h| h.as_bytes().to_vec()),
        header_value(),
    ]);
    let auth = prop::option::weighted(
        0.8,
        prop_oneof![
            4 => prop::sample::select(vec!["Bearer tok", "bearer tok"])
                .prop_map(|h| h.as_bytes().to_vec()),
            1 => prop::sample::select(vec!["Bearer nope", "Basic dG9rOg=="])
                .prop_map(|h| h.as_bytes().to_vec()),
            1 => header_value(),
        ],
    );
    let extra = prop::collection::vec(("[a-z][a-z0-9-]{0,12}", header_value()), 0..3);
    (host, content_type, origin, auth, extra).prop_map(|(host, ct, origin, auth, extra)| {
        let mut all = Vec::new();
        for (name, value) in [
            ("host", host),
            ("content-type", ct),
            ("origin", origin),
            ("authorization", auth),
        ] {
            if let Some(v) = value {
                all.push((name.to_owned(), v));
            }
        }
        all.extend(extra);
        all
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::sample::select(vec![
            "{}",
            "{\"to\":\"b@example.com\"}",
            "{\"to\":\"not an address\"}",
            "[]",
            "null",
            "{\"to\":",
            "{\"to\":\"b@example.com\",\"subject\":\"\\u0000\\r\\nBcc: x@y\"}",
        ])
        .prop_map(|b| b.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    (method(), path(), headers(), body()).prop_map(|(method, path, headers, body)| Generated {
        method,
        path,
        headers,
        body,
    })
}

/// Builds the request, or `None` when `http` itself refuses the parts (a
/// client could not send such a request either).
fn build(g: &Generated) -> Option<Request<Body>> {
    let mut builder = Request::builder()
        .method(g.method.as_str())
        .uri(g.path.as_str());
    for (name, value) in &g.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder.body(Body::from(g.body.clone())).ok()
}

/// Sends `g` to `router` and checks the answer's shape.
fn check(fx: &Fixture, router: &Router, g: &Generated) -> Result<(), TestCaseError> {
    let Some(request) = build(g) else {
        *fx.seen.lock().unwrap().entry(0).or_default() += 1;
        return Ok(());
    };
    let is_head = g.method == "HEAD";
    let (status, content_type, bytes) = fx.runtime.block_on(async {
        let response = router.clone().call(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .unwrap();
        (status, content_type, bytes)
    });
    *fx.seen.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    prop_assert!(
        status.is_success() || status.is_client_error() || status.is_server_error(),
        "{status} for {g:?}"
    );
    prop_assert_ne!(
        status.as_u16(),
        500,
        "internal error for {:?}: {:?}",
        g,
        bytes
    );
    if status.is_success() || is_head {
        return Ok(());
    }
    prop_assert!(
        content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{status} with content-type {content_type:?} for {g:?}"
    );
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        TestCaseError::fail(format!(
            "{status}: body is not JSON ({e}): {bytes:?} for {g:?}"
        ))
    })?;
    prop_assert!(body["error"].is_string(), "{status}: {body} for {g:?}");
    Ok(())
}

#[test]
fn any_request_to_any_router_gets_a_valid_status_and_json_errors() {
    let fx = fixture();
    let config = ProptestConfig {
        cases: 256,
        // Failures are reported with the shrunk request; no files are
        // written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(g in generated())| {
        check(&fx, &fx.open, &g)?;
        check(&fx, &fx.guarded, &g)?;
        check(&fx, &fx.public, &g)?;
    });
    let seen = fx.seen.lock().unwrap().clone();
    eprintln!("statuses: {seen:?}");
    // The requests reach the handlers, not only the guard's refusals.
    for status in [200, 401, 404, 405, 421] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
}
