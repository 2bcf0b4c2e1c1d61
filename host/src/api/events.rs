//! Webhook ingest (public listener), and the events and suppressions
//! routes of the admin API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error;
use crate::ingest::{self, RETRY_AFTER_SECONDS, Rejection};
use crate::state::AppState;
use crate::store::{Applied, Cursor, EventQuery, Order, StoreError, SuppressionQuery, Write};

/// Default page size of listings.
const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
const MAX_LIMIT: usize = 1000;

fn unavailable(message: String) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

pub(super) fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::BadCursor => error(StatusCode::BAD_REQUEST, e.to_string()),
        _ => {
            tracing::error!(error = %e, "store request failed");
            unavailable(e.to_string())
        }
    }
}

/// `POST /webhooks/{name}`: the ingest pipeline (see [`crate::ingest`]).
pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match ingest::ingest(&state, &name, path, &headers, body).await {
        Ok(receipt) => (
            StatusCode::OK,
            Json(json!({
                "received": receipt.received,
                "stored": receipt.stored.len(),
                "duplicates": receipt.duplicates,
            })),
        )
            .into_response(),
        Err(rejection) => {
            let snapshot = state.snapshot.load();
            let (connection, provider) = match snapshot.connections.get(&name) {
                Some(c) => (name.as_str(), c.provider.id()),
                None => ("", ""),
            };
            state
                .metrics
                .observe_rejection(connection, provider, rejection.reason());
            let status = rejection.status();
            if !connection.is_empty() {
                state.refusals.record(
                    connection,
                    status.as_u16(),
                    rejection.reason(),
                    &rejection.to_string(),
                );
            }
            if status.is_server_error() {
                tracing::warn!(connection, reason = rejection.reason(), error = %rejection, "webhook refused; the provider will retry");
            } else {
                tracing::debug!(connection, reason = rejection.reason(), error = %rejection, "webhook refused");
            }
            match rejection {
                Rejection::Store(_)
                | Rejection::SecretUnavailable
                | Rejection::CertificateUnavailable(_) => unavailable(rejection.to_string()),
                other => error(status, other.to_string()),
            }
        }
    }
}

/// `HEAD /webhooks/{name}`: providers (Mandrill) probe the URL when a
/// webhook is added. 200 for a connection that parses webhooks, 404
/// otherwise; nothing is verified, stored or counted as an event.
pub(super) async fn probe(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> StatusCode {
    let snapshot = state.snapshot.load();
    let parses = snapshot.connections.get(&name).is_some_and(|c| {
        snapshot
            .catalog
            .runtime()
            .describe(c.provider.id())
            .is_some_and(|i| {
                i.capabilities
                    .contains(&crate::runtime::Capability::ParsesWebhooks)
            })
    });
    if parses {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// A request refused before it reaches the store: status and reason.
pub(super) struct Refusal(StatusCode, String);

pub(super) fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Query parameters, checked by hand so every mistake gets a precise 400.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, Refusal> {
        if let Some(unknown) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown query parameter `{}`; known: {}",
                    crate::config::diagnostic::excerpt(unknown),
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Self(raw))
    }

    pub(super) fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub(super) fn limit(&self) -> Result<usize, Refusal> {
        match self.0.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("`limit` must be a number from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// RFC 3339 or Unix seconds.
    fn time(&self, name: &str) -> Result<Option<i64>, Refusal> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        if let Ok(n) = v.parse::<i64>() {
            return Ok(Some(n));
        }
        humantime::parse_rfc3339_weak(&v)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .map(Some)
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("`{name}` must be RFC 3339 (2026-01-31T12:00:00Z) or Unix seconds"),
                )
            })
    }
}

/// `GET /v1/events`.
pub(super) async fn list_events(
    State(state): State<Arc<AppState>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let params = match Params::new(
        raw,
        &[
            "connection",
            "workspace",
            "kind",
            "recipient",
            "since",
            "until",
            "after",
            "order",
            "limit",
            "cursor",
        ],
    ) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let query = match event_query(&params) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    match state.store.read(move |b| b.events(&query)).await {
        Ok(page) => Json(json!({
            "events": page.items,
            "next_cursor": page.next.map(|c| c.0),
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

fn event_query(p: &Params) -> Result<EventQuery, Refusal> {
    let kind = match p.text("kind") {
        None => None,
        Some(k) => Some(crate::event::EventKind::parse(&k).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "`kind` must be one of delivered, deferred, bounced, complained, dropped, opened, clicked, unsubscribed",
            )
        })?),
    };
    let order = match p.text("order").as_deref() {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "`order` must be `asc` or `desc`",
            ));
        }
    };
    Ok(EventQuery {
        connection: p.text("connection"),
        workspace: p.text("workspace"),
        kind,
        recipient: p.text("recipient"),
        since: p.time("since")?,
        until: p.time("until")?,
        after: p.text("after"),
        order,
        limit: p.limit()?,
        cursor: p.text("cursor").map(Cursor),
    })
}

/// `GET /v1/events/{id}`.
pub(super) async fn get_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let lookup = id.clone();
    match state.store.read(move |b| b.event(&lookup)).await {
        Ok(Some(event)) => Json(event).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no event with id `{}`",
                crate::config::diagnostic::excerpt(&id)
            ),
        ),
        Err(e) => store_error(&e),
    }
}

/// `GET /v1/suppressions`.
pub(super) async fn list_suppressions(
    State(state): State<Arc<AppState>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let params = match Params::new(raw, &["workspace", "address", "limit", "cursor"]) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let query = SuppressionQuery {
        workspace: params.text("workspace"),
        address: params.text("address"),
        limit: match params.limit() {
            Ok(l) => l,
            Err(r) => return r.into_response(),
        },
        cursor: params.text("cursor").map(Cursor),
    };
    match state.store.read(move |b| b.suppressions(&query)).await {
        Ok(page) => Json(json!({
            "suppressions": page.items,
            "next_cursor": page.next.map(|c| c.0),
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

fn check_workspace(workspace: &str) -> Result<(), Refusal> {
    let ok = (1..=63).contains(&workspace.len())
        && workspace
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && workspace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "`workspace` `{}` is not a workspace name ([A-Za-z0-9][A-Za-z0-9_.-]{{0,62}})",
                crate::config::diagnostic::excerpt(workspace)
            ),
        ))
    }
}

fn check_address(address: &str) -> Result<(), Refusal> {
    crate::address::parse(address).map(drop).map_err(|e| {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "`address` `{}` is not an email address: {e}",
                crate::config::diagnostic::excerpt(address)
            ),
        )
    })
}

/// `POST /v1/suppressions` `{"workspace", "address", "note"?}`: 201 when
/// added, 200 when the address was already suppressed (the first entry stays).
pub(super) async fn add_suppression(
    State(state): State<Arc<AppState>>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(unknown) = body.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["workspace", "address", "note"].contains(&k.as_str()))
    }) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "unknown field `{}`; known: workspace, address, note",
                crate::config::diagnostic::excerpt(unknown)
            ),
        );
    }
    let (Some(workspace), Some(address)) = (field("workspace"), field("address")) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`workspace` and `address` are required strings",
        );
    };
    if let Err(r) = check_workspace(&workspace).and_then(|()| check_address(&address)) {
        return r.into_response();
    }
    let note = field("note").map(|n| n.chars().take(500).collect());
    let write = Write::Suppress {
        workspace: workspace.clone(),
        address: address.clone(),
        note,
    };
    match state.store.write(write).await {
        Ok(Applied::Suppressed(added)) => (
            if added {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(json!({ "workspace": workspace, "address": address, "added": added })),
        )
            .into_response(),
        Ok(other) => store_error(&StoreError::Backend(format!("unexpected answer {other:?}"))),
        Err(e) => store_error(&e),
    }
}

/// `DELETE /v1/suppressions/{workspace}/{address}`: 204, or 404 when not suppressed.
pub(super) async fn remove_suppression(
    State(state): State<Arc<AppState>>,
    Path((workspace, address)): Path<(String, String)>,
) -> Response {
    let write = Write::Unsuppress {
        workspace: workspace.clone(),
        address: address.clone(),
    };
    match state.store.write(write).await {
        Ok(Applied::Unsuppressed(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Applied::Unsuppressed(false)) => error(
            StatusCode::NOT_FOUND,
            format!(
                "`{}` is not suppressed in workspace `{}`",
                crate::config::diagnostic::excerpt(&address),
                crate::config::diagnostic::excerpt(&workspace)
            ),
        ),
        Ok(other) => store_error(&StoreError::Backend(format!("unexpected answer {other:?}"))),
        Err(e) => store_error(&e),
    }
}
