//! Admin and public route handlers.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::error;
use crate::config::{Connection, SecretRef};
use crate::state::{AppState, ReloadFailure, ReloadRequest, Snapshot};

fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn summary(state: &AppState, c: &Connection) -> Value {
    json!({
        "name": c.name,
        "display_name": c.display_name,
        "provider": c.provider.id(),
        "from": { "name": c.from.name, "email": c.from.email.to_string() },
        "workspaces": c.workspaces,
        "webhook_url": state.webhook_url(&c.name),
        "source": c.source.to_string(),
    })
}

fn detail(state: &AppState, c: &Connection) -> Value {
    let mut v = summary(state, c);
    // Secrets are shown only as where they come from.
    let redacted = |s: Option<&SecretRef>| s.map(|r| format!("<redacted: {}>", r.describe()));
    let smtp = &c.smtp;
    v["smtp"] = json!({
        "host": smtp.host,
        "port": smtp.port,
        "security": smtp.security.as_str(),
        "username": smtp.username,
        "username_secret": redacted(smtp.username_secret.as_ref().map(|p| &p.secret)),
        "username_field": smtp.username_secret.as_ref().map(|p| p.pointer.clone()),
        "password": redacted(smtp.password.as_ref().map(|p| &p.secret)),
        "password_field": smtp.password.as_ref().map(|p| p.pointer.clone()),
        "tls": {
            "ca_file": smtp.ca_file,
            "verify": smtp.verify_tls,
        },
        "helo_name": smtp.helo_name,
        "allow_insecure_auth": smtp.allow_insecure_auth,
        "extra_headers": smtp.extra_headers.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
    });
    v["options"] = json!(c.options);
    v["webhook"] = json!({
        "secrets": c.webhook.secrets.iter().map(|s| redacted(Some(s))).collect::<Vec<_>>(),
        "max_body_bytes": c.webhook.max_body_bytes,
    });
    v["limits"] = json!(c.limits);
    v
}

pub(super) async fn list_connections(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snapshot = state.snapshot.load_full();
    let items: Vec<Value> = snapshot
        .connections
        .values()
        .map(|c| summary(&state, c))
        .collect();
    Json(json!({ "generation": snapshot.generation, "connections": items }))
}

pub(super) async fn get_connection(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    let snapshot = state.snapshot.load_full();
    match snapshot.connections.get(&name) {
        Some(c) => {
            let mut v = detail(&state, c);
            v["generation"] = json!(snapshot.generation);
            let last = state
                .outcomes
                .lock()
                .ok()
                .and_then(|o| o.get(&name).cloned())
                .unwrap_or_default();
            v["last_check"] = last.check.unwrap_or(Value::Null);
            v["last_test"] = last.test.unwrap_or(Value::Null);
            Json(v).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no connection named `{name}`"),
        ),
    }
}

/// `GET /v1/connections/{name}/refusals`: the last refused webhook
/// requests of a connection, newest first (in memory since start).
pub(super) async fn connection_refusals(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    if !state.snapshot.load().connections.contains_key(&name) {
        return error(
            StatusCode::NOT_FOUND,
            format!("no connection named `{name}`"),
        );
    }
    Json(json!({
        "connection": name,
        "kept": crate::state::Refusals::KEEP,
        "refusals": state.refusals.recent(&name),
    }))
    .into_response()
}

/// The status document (also returned by `POST /v1/reload`).
pub fn status_json(snapshot: &Snapshot) -> Value {
    let invalid = snapshot.files.values().filter(|f| f.errors > 0).count();
    json!({
        "generation": snapshot.generation,
        "connections": snapshot.connections.len(),
        "plugins": snapshot.plugins.keys().collect::<Vec<_>>(),
        "git_commit": snapshot.git_commit,
        "last_reload": {
            "at_unix": unix_seconds(snapshot.loaded_at),
            "duration_ms": snapshot.duration.as_secs_f64() * 1e3,
            "result": snapshot.result,
        },
        "files": {
            "total": snapshot.files.len(),
            "invalid": invalid,
            "detail": snapshot.files.iter().map(|(p, s)| json!({
                "path": p.display().to_string(), "live": s.live, "errors": s.errors, "warnings": s.warnings,
            })).collect::<Vec<_>>(),
        },
        "errors": snapshot.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "diagnostics": snapshot.diagnostics,
    })
}

pub(super) async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut status = status_json(&state.snapshot.load_full());
    // Read now, not at startup: an operator may change it with prlimit(1).
    let (soft, hard) = crate::daemon::fd_limit();
    status["fd_limit"] = json!({ "soft": soft, "hard": hard });
    let kind = state.store.kind();
    status["store"] = match state.store.read(|b| b.counts()).await {
        Ok(counts) => {
            json!({ "backend": kind, "ok": true, "events": counts.events, "suppressions": counts.suppressions })
        }
        Err(e) => json!({ "backend": kind, "ok": false, "error": e.to_string() }),
    };
    status["forwarding"] = super::forwarding::summary(&state).await;
    // Verified SNS subscription confirmations: pending ones name the URL to open.
    status["sns_subscriptions"] = json!(state.sns.confirmations());
    Json(status)
}

pub(super) async fn reload(State(state): State<Arc<AppState>>) -> Response {
    let (tx, rx) = oneshot::channel();
    let request = ReloadRequest {
        cause: "api",
        reply: Some(tx),
    };
    if state.reload.send(request).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(Ok(snapshot))) => Json(status_json(&snapshot)).into_response(),
        Ok(Ok(Err(failure @ ReloadFailure::Panicked(_)))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string())
        }
        Ok(Ok(Err(ReloadFailure::ShuttingDown)) | Err(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload did not complete within 60 s",
        ),
    }
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.is_ready() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    }
    match store_check(&state).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

/// How long `/readyz` and a scrape wait for the store's answer.
const STORE_CHECK: Duration = Duration::from_secs(2);

/// Asks the store a trivial query and sets `mailplug_store_up`.
pub(super) async fn store_check(state: &AppState) -> Result<(), String> {
    let result = match tokio::time::timeout(STORE_CHECK, state.store.read(|b| b.ping())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the store is unreachable: {e}")),
        Err(_) => Err(format!(
            "the store did not answer within {} s",
            STORE_CHECK.as_secs()
        )),
    };
    state.metrics.store_up.set(i64::from(result.is_ok()));
    result
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.snapshot.load_full();
    state
        .metrics
        .config_errors
        .set(snapshot.error_count() as i64);
    state
        .metrics
        .config_generation
        .set(snapshot.generation as i64);
    state
        .metrics
        .connections
        .set(snapshot.connections.len() as i64);
    let _ = store_check(&state).await;
    super::forwarding::refresh_metrics(&state).await;
    let _ = super::messages::queue_summary(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(snapshot.catalog.runtime(), state.store.pool()),
    )
        .into_response()
}
