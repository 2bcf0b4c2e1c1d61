//! HTTP listeners: the admin API (connections, status, reload, health,
//! metrics) with who may call it (bearer token, or loopback Host without
//! one; JSON-only, same-origin state changes), the public listener, which
//! serves webhook routes only, and the JSON body of every error either sends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::daemon::Routers;
use crate::state::AppState;

mod console;
mod events;
mod forwarding;
mod handlers;
mod messages;
mod smtp;

/// Both routers over one shared state (what `daemon::run` serves).
pub fn routers(state: Arc<AppState>) -> Routers {
    Routers {
        admin: admin_router(state.clone()),
        public: public_router(state),
    }
}

/// A JSON error body with a status.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// The admin router.
pub fn admin_router(state: Arc<AppState>) -> Router {
    let guard = Guard {
        state: state.clone(),
        log: Arc::new(DenialLog::default()),
    };
    Router::new()
        .route("/v1/connections", get(handlers::list_connections))
        .route("/v1/connections/{name}", get(handlers::get_connection))
        .route("/v1/connections/{name}/check", post(smtp::check))
        .route("/v1/connections/{name}/test", post(smtp::test))
        .route(
            "/v1/connections/{name}/refusals",
            get(handlers::connection_refusals),
        )
        .route("/v1/events", get(events::list_events))
        .route("/v1/events/{id}", get(events::get_event))
        .route(
            "/v1/suppressions",
            get(events::list_suppressions).post(events::add_suppression),
        )
        .route(
            "/v1/suppressions/{workspace}/{address}",
            delete(events::remove_suppression),
        )
        .route(
            "/v1/messages",
            post(messages::send)
                .get(messages::list)
                .layer(axum::extract::DefaultBodyLimit::max(
                    state
                        .compose_limits
                        .max_message_bytes
                        .saturating_mul(2)
                        .max(1 << 20),
                )),
        )
        .route(
            "/v1/messages:batch",
            post(messages::send_batch).layer(axum::extract::DefaultBodyLimit::max(256 << 20)),
        )
        .route(
            "/v1/messages/{id}",
            get(messages::get).delete(messages::cancel),
        )
        .route("/v1/queue", get(messages::queue))
        .route("/v1/forwarders", get(forwarding::list_forwarders))
        .route("/v1/outbox", get(forwarding::list_outbox))
        .route("/v1/outbox/{id}/retry", post(forwarding::retry_outbox))
        .route("/v1/status", get(handlers::status))
        .route("/v1/reload", post(handlers::reload))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .merge(console::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), count_admin))
        .fallback(not_found_admin)
        .layer(middleware::from_fn_with_state(guard, guard_admin))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The public router: provider webhooks only.
pub fn public_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/webhooks/{name}",
            post(events::webhook).head(events::probe),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), count_public))
        .fallback(not_found_public)
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Gives every error response a JSON body: the framework's own rejections
/// (405, 413, a bad path parameter) are plain text or empty, so their text
/// (or the status's reason) is moved into `{"error": ...}`.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.subtype() == mime::JSON);
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is cut rather than buffered.
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
        });
    let replacement = error(status, text);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, replacement.into_body())
}

/// Why the admin listener refused a request before routing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// A token is configured and the request lacks it (401).
    Token,
    /// No token, and the Host is not a loopback name (421): DNS rebinding.
    Host,
    /// A state-changing request from a foreign web origin (403).
    Origin,
    /// A state-changing request with a body that is not JSON (415).
    ContentType,
}

impl Denial {
    fn reason(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Host => "host",
            Self::Origin => "origin",
            Self::ContentType => "content_type",
        }
    }

    fn response(self) -> Response {
        match self {
            Self::Token => {
                let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"mailplug\""),
                );
                response
            }
            Self::Host => error(
                StatusCode::MISDIRECTED_REQUEST,
                "without an admin token the admin API answers only requests addressed to localhost, 127.0.0.0/8 or [::1]",
            ),
            Self::Origin => error(
                StatusCode::FORBIDDEN,
                "cross-origin requests may not change anything",
            ),
            Self::ContentType => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request bodies must be sent as Content-Type: application/json",
            ),
        }
    }
}

/// The admin router's gatekeeper and its log limiter.
#[derive(Debug, Clone)]
struct Guard {
    state: Arc<AppState>,
    log: Arc<DenialLog>,
}

/// Remembers when a refusal was last logged per client address, so a
/// client hammering the API with bad requests logs once a minute.
#[derive(Debug, Default)]
struct DenialLog {
    last: Mutex<HashMap<Option<IpAddr>, Instant>>,
}

impl DenialLog {
    const WINDOW: Duration = Duration::from_secs(60);
    /// Bounds the memory many distinct addresses can take; past it, new
    /// addresses go unlogged until old entries expire (they are still counted).
    const MAX_CLIENTS: usize = 4096;

    fn should_log(&self, client: Option<IpAddr>, now: Instant) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        if let Some(at) = last.get(&client)
            && now.duration_since(*at) < Self::WINDOW
        {
            return false;
        }
        if last.len() >= Self::MAX_CLIENTS {
            last.retain(|_, at| now.duration_since(*at) < Self::WINDOW);
            if last.len() >= Self::MAX_CLIENTS {
                return false;
            }
        }
        last.insert(client, now);
        true
    }
}

async fn guard_admin(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Err(denial) = admit(guard.state.admin_token.as_deref(), &request) else {
        return next.run(request).await;
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    guard
        .state
        .metrics
        .http_denied
        .get_or_create(&vec![
            ("listener", "admin".to_owned()),
            ("reason", denial.reason().to_owned()),
        ])
        .inc();
    let response = denial.response();
    if guard.log.should_log(client, Instant::now()) {
        tracing::warn!(
            client = %client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            reason = denial.reason(),
            status = response.status().as_u16(),
            method = %request.method(),
            path = request.uri().path(),
            "admin request refused (further refusals of this client are not logged for a minute)"
        );
    }
    response
}

/// Who may call the admin API: with a token, whoever presents it; without
/// one, only requests addressed to a loopback name, so a web page whose
/// host name was re-pointed at 127.0.0.1 cannot. State changes must come
/// with a JSON body (or none) and from no foreign web origin, which a
/// cross-site form or `fetch` without CORS cannot satisfy. The console's
/// static files need no token (they hold no data; the page asks for it).
fn admit(token: Option<&str>, request: &Request) -> Result<(), Denial> {
    let headers = request.headers();
    match token {
        Some(_) if console::is_asset_request(request.method(), request.uri().path()) => {}
        Some(expected) => {
            if !bearer_matches(headers, expected) {
                return Err(Denial::Token);
            }
        }
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri().authority().map(|a| a.as_str()));
            if !host.is_some_and(is_loopback_authority) {
                return Err(Denial::Host);
            }
        }
    }
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|o| is_loopback_origin(o) || is_same_origin(o, headers))
    {
        return Err(Denial::Origin);
    }
    if !json_or_no_body(headers) {
        return Err(Denial::ContentType);
    }
    Ok(())
}

/// `Authorization: Bearer <token>`, the scheme name in any case.
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once([' ', '\t']))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    presented.is_some_and(|p| {
        use subtle::ConstantTimeEq as _;
        p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
    })
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let Ok(authority) = authority.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An `Origin` of a page served from this machine (`null` and every
/// other origin are foreign).
fn is_loopback_origin(origin: &str) -> bool {
    let Ok(uri) = origin.parse::<axum::http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri
            .authority()
            .is_some_and(|a| is_loopback_authority(a.as_str()))
}

/// An `Origin` naming the authority the request was sent to: the console's
/// own page when the admin listener is bound beyond loopback (with a token).
fn is_same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Ok(uri) = origin.parse::<axum::http::Uri>() else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri
            .authority()
            .zip(host)
            .is_some_and(|(a, h)| a.as_str().eq_ignore_ascii_case(h))
}

/// `Content-Type: application/json` (any parameters), or no body at all
/// (`POST /v1/reload` and `.../check` need none).
fn json_or_no_body(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| m.type_() == mime::APPLICATION && m.subtype() == mime::JSON),
        None => {
            !headers.contains_key(header::TRANSFER_ENCODING)
                && headers
                    .get(header::CONTENT_LENGTH)
                    .is_none_or(|len| len.as_bytes() == b"0")
        }
    }
}

async fn not_found_admin(State(state): State<Arc<AppState>>) -> Response {
    not_found(&state, "admin")
}

async fn not_found_public(State(state): State<Arc<AppState>>) -> Response {
    not_found(&state, "public")
}

fn not_found(state: &AppState, listener: &'static str) -> Response {
    state
        .metrics
        .http_requests
        .get_or_create(&labels(listener, "unmatched".to_owned(), 404))
        .inc();
    error(StatusCode::NOT_FOUND, "no such route")
}

fn labels(listener: &'static str, route: String, status: u16) -> crate::metrics::Labels {
    vec![
        ("listener", listener.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ]
}

async fn count_admin(state: State<Arc<AppState>>, request: Request, next: Next) -> Response {
    count(state, "admin", request, next).await
}

async fn count_public(state: State<Arc<AppState>>, request: Request, next: Next) -> Response {
    count(state, "public", request, next).await
}

async fn count(
    State(state): State<Arc<AppState>>,
    listener: &'static str,
    request: Request,
    next: Next,
) -> Response {
    // Label by route template, never the raw path, so label cardinality stays bounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&labels(listener, route, response.status().as_u16()))
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri("/v1/reload");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_host_names_are_served() {
        for host in [
            "localhost",
            "LOCALHOST:8025",
            "127.0.0.1",
            "127.3.4.5:1",
            "[::1]",
            "[::1]:8025",
        ] {
            assert_eq!(
                admit(None, &request("GET", &[("host", host)])),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "example.com",
            "evil.example:8025",
            "10.0.0.1",
            "[::2]",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert_eq!(
                admit(None, &request("GET", &[("host", host)])),
                Err(Denial::Host),
                "{host}"
            );
        }
        assert_eq!(admit(None, &request("GET", &[])), Err(Denial::Host));
    }

    #[test]
    fn the_bearer_scheme_name_is_case_insensitive_and_the_token_exact() {
        for value in ["Bearer tok", "bearer tok", "BEARER  tok ", "bEaReR\ttok"] {
            assert_eq!(
                admit(Some("tok"), &request("GET", &[("authorization", value)])),
                Ok(()),
                "{value}"
            );
        }
        for value in [
            "Bearer tok2",
            "Basic tok",
            "tok",
            "Bearer",
            "Bearertok",
            "Bearer TOK",
        ] {
            assert_eq!(
                admit(Some("tok"), &request("GET", &[("authorization", value)])),
                Err(Denial::Token),
                "{value}"
            );
        }
    }

    #[test]
    fn state_changes_need_json_or_no_body_and_no_foreign_origin() {
        let host = ("host", "127.0.0.1:8025");
        let ok = |headers: &[(&str, &str)]| admit(None, &request("POST", headers));
        assert_eq!(ok(&[host]), Ok(()));
        assert_eq!(ok(&[host, ("content-length", "0")]), Ok(()));
        assert_eq!(
            ok(&[host, ("content-type", "application/json; charset=utf-8")]),
            Ok(())
        );
        assert_eq!(
            ok(&[
                host,
                ("content-type", "text/plain"),
                ("content-length", "2")
            ]),
            Err(Denial::ContentType)
        );
        assert_eq!(
            ok(&[host, ("content-length", "2")]),
            Err(Denial::ContentType)
        );
        assert_eq!(
            ok(&[host, ("transfer-encoding", "chunked")]),
            Err(Denial::ContentType)
        );
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8025",
        ] {
            assert_eq!(ok(&[host, ("origin", origin)]), Ok(()), "{origin}");
        }
        for origin in ["https://evil.example", "null", "http://10.0.0.1", "file://"] {
            assert_eq!(
                ok(&[host, ("origin", origin)]),
                Err(Denial::Origin),
                "{origin}"
            );
        }
        // Reading is not a state change: a foreign Origin on GET is served
        // (without CORS headers the page cannot read the answer).
        assert_eq!(
            admit(
                None,
                &request("GET", &[host, ("origin", "https://evil.example")])
            ),
            Ok(())
        );
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_client() {
        let log = DenialLog::default();
        let start = Instant::now();
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        assert!(log.should_log(a, start));
        assert!(!log.should_log(a, start + Duration::from_secs(59)));
        assert!(log.should_log(b, start + Duration::from_secs(1)));
        assert!(log.should_log(a, start + Duration::from_secs(61)));
    }
}

#[cfg(test)]
mod json_error_tests {
    use axum::body::{Body, Bytes};
    use serde_json::Value;
    use tower_service::Service as _;

    use super::*;

    async fn call(router: &mut Router, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let response = router.call(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn framework_rejections_get_json_error_bodies() {
        let mut router = Router::new()
            .route("/echo", post(|body: Bytes| async move { body }))
            .route(
                "/teapot",
                get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
            )
            .layer(middleware::from_fn(json_errors));
        // Over axum's default 2 MB body limit.
        let (status, body) = call(&mut router, "POST", "/echo", vec![b'x'; 3 << 20]).await;
        assert_eq!(status, 413);
        assert!(body["error"].is_string(), "{body}");
        let (status, body) = call(&mut router, "GET", "/echo", Vec::new()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (405, Some("method not allowed"))
        );
        let (status, body) = call(&mut router, "GET", "/nowhere", Vec::new()).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("not found")));
        let (status, body) = call(&mut router, "GET", "/teapot", Vec::new()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (418, Some("short and stout"))
        );
        // Successes are left alone.
        let (status, _) = call(&mut router, "POST", "/echo", b"{}".to_vec()).await;
        assert_eq!(status, 200);
    }
}
