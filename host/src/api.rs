//! HTTP listeners: the admin API (connections, status, reload, health,
//! metrics; bearer-token protected when not on loopback) and the public
//! listener, which serves webhook routes only.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::daemon::Routers;
use crate::state::AppState;

mod handlers;
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
    Router::new()
        .route("/v1/connections", get(handlers::list_connections))
        .route("/v1/connections/{name}", get(handlers::get_connection))
        .route("/v1/connections/{name}/check", post(smtp::check))
        .route("/v1/connections/{name}/test", post(smtp::test))
        .route("/v1/status", get(handlers::status))
        .route("/v1/reload", post(handlers::reload))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), count_admin))
        .fallback(not_found_admin)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// The public router: provider webhooks only.
pub fn public_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhooks/{name}", post(handlers::webhook))
        .route_layer(middleware::from_fn_with_state(state.clone(), count_public))
        .fallback(not_found_public)
        .with_state(state)
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.admin_token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = presented.is_some_and(|p| {
        use subtle::ConstantTimeEq as _;
        p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes()))
    });
    if ok {
        return next.run(request).await;
    }
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mailplug\""),
    );
    response
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
