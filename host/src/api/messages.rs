//! `POST /v1/messages` (and `:batch`), `GET /v1/messages[/{id}]`,
//! `DELETE /v1/messages/{id}` and `GET /v1/queue`: applications hand mail
//! to the queue and follow it per recipient. A 202 is sent only after the
//! message is committed to the store (group commit).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::error;
use super::events::{Params, store_error};
use crate::send::worker::lease::LeaseState;
use crate::send::{FieldError, MessageRequest, compose};
use crate::state::AppState;
use crate::store::queue::{Cancel, MessageQuery, NewMessage};
use crate::store::{Applied, Cursor, Write, now_ms};

/// Most messages in one batch.
pub const MAX_BATCH: usize = 1000;

/// A batch as received: each message is parsed into its request on its
/// own (its shape errors name its index), straight from the body's bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

fn invalid(errors: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": "the message is invalid; nothing was queued",
            "errors": errors,
        })),
    )
        .into_response()
}

fn field_errors(index: Option<usize>, errors: Vec<FieldError>) -> Vec<Value> {
    errors
        .into_iter()
        .map(|e| match index {
            Some(i) => json!({ "index": i, "field": e.field, "message": e.message }),
            None => json!({ "field": e.field, "message": e.message }),
        })
        .collect()
}

/// Parses and composes one message; a shape error (unknown field, wrong
/// type) is a 400, a semantic one a 422.
fn prepare(state: &AppState, json: &str) -> Result<NewMessage, Result<Vec<FieldError>, String>> {
    let request: MessageRequest = serde_json::from_str(json).map_err(|e| Err(e.to_string()))?;
    let snapshot = state.snapshot.load_full();
    let sending = state.sending.clone();
    compose(&snapshot, &request, state.compose_limits, &|c| {
        sending.available(c)
    })
    .map_err(Ok)
}

async fn enqueue(state: &AppState, messages: Vec<NewMessage>) -> Result<Vec<Value>, Response> {
    let wake: Vec<String> = messages.iter().map(|m| m.connection.clone()).collect();
    let recipients: Vec<Vec<String>> = messages
        .iter()
        .map(|m| m.recipients.iter().map(|(a, _)| a.clone()).collect())
        .collect();
    match state.store.write(Write::Enqueue { messages }).await {
        Ok(Applied::Enqueued(ids)) => {
            let mut woken = wake.clone();
            woken.sort();
            woken.dedup();
            for c in woken {
                state.sending.wake(&c);
            }
            Ok(ids
                .into_iter()
                .zip(recipients)
                .map(|(e, r)| json!({ "id": e.id, "duplicate": e.duplicate, "recipients": r }))
                .collect())
        }
        Ok(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store answered a different write",
        )),
        Err(e) => Err(store_error(&e)),
    }
}

/// The body checked as JSON, kept as text for the typed parse.
fn body_json(body: &Bytes) -> Result<&RawValue, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
        ))
    })
}

/// `POST /v1/messages`.
pub(super) async fn send(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let value = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let message = match prepare(&state, value.get()) {
        Ok(m) => m,
        Err(Err(shape)) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid message: {shape}"));
        }
        Err(Ok(errors)) => return invalid(field_errors(None, errors)),
    };
    match enqueue(&state, vec![message]).await {
        Ok(mut ids) => (StatusCode::ACCEPTED, Json(ids.remove(0))).into_response(),
        Err(r) => r,
    }
}

/// `POST /v1/messages:batch`: all or nothing.
pub(super) async fn send_batch(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let value = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let batch: Batch<'_> = match serde_json::from_str(value.get()) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"messages\": [...]}}: {e}"),
            );
        }
    };
    if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "a batch holds 1 to {MAX_BATCH} messages, not {}",
                batch.messages.len()
            ),
        );
    }
    let mut ready = Vec::with_capacity(batch.messages.len());
    let mut errors = Vec::new();
    let mut shape = None;
    for (i, value) in batch.messages.into_iter().enumerate() {
        match prepare(&state, value.get()) {
            Ok(m) => ready.push(m),
            Err(Err(e)) => {
                shape.get_or_insert(format!("message {i}: {e}"));
            }
            Err(Ok(e)) => errors.extend(field_errors(Some(i), e)),
        }
    }
    if let Some(shape) = shape {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid message ({shape}); nothing was queued"),
        );
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    match enqueue(&state, ready).await {
        Ok(results) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "ids": results.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
                "messages": results,
            })),
        )
            .into_response(),
        Err(r) => r,
    }
}

fn check_id(id: &str) -> Result<(), Box<Response>> {
    if id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "no message with id `{}`",
                crate::config::diagnostic::excerpt(id)
            ),
        )))
    }
}

/// `GET /v1/messages/{id}`.
pub(super) async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if let Err(r) = check_id(&id) {
        return *r;
    }
    let lookup = id.clone();
    match state.store.read(move |b| b.message(&lookup)).await {
        Ok(Some(m)) => Json(m).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no message with id `{id}`")),
        Err(e) => store_error(&e),
    }
}

/// `DELETE /v1/messages/{id}`: cancels what has not been sent.
pub(super) async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if let Err(r) = check_id(&id) {
        return *r;
    }
    let target = id.clone();
    match state.store.read(move |b| b.cancel(&target, now_ms())).await {
        Ok(Cancel::Cancelled {
            cancelled,
            in_flight,
        }) => Json(json!({ "id": id, "cancelled": cancelled, "in_flight": in_flight }))
            .into_response(),
        Ok(Cancel::Missing) => error(StatusCode::NOT_FOUND, format!("no message with id `{id}`")),
        Err(e) => store_error(&e),
    }
}

const STATUSES: &[&str] = &["pending", "sent", "partial", "failed", "cancelled"];

/// `GET /v1/messages?status=&connection=&workspace=&cursor=&limit=`.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let params = match Params::new(
        raw,
        &["status", "connection", "workspace", "limit", "cursor"],
    ) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let status = params.text("status");
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`status` must be one of {}", STATUSES.join(", ")),
        );
    }
    let query = MessageQuery {
        status,
        connection: params.text("connection"),
        workspace: params.text("workspace"),
        limit: match params.limit() {
            Ok(l) => l,
            Err(r) => return r.into_response(),
        },
        cursor: params.text("cursor").map(Cursor),
    };
    match state.store.read(move |b| b.messages(&query)).await {
        Ok(page) => Json(json!({
            "messages": page.items,
            "next_cursor": page.next.map(|c| c.0),
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// The queue per connection: pending totals from the store joined with
/// each lane's rate, throttling and circuit state. Also refreshes the
/// queue gauges.
pub(super) async fn queue_summary(state: &AppState) -> Result<Value, Response> {
    let totals = state
        .store
        .read(|b| b.queue_totals())
        .await
        .map_err(|e| store_error(&e))?;
    let lanes = state.sending.states();
    let now = now_ms();
    let snapshot = state.snapshot.load_full();
    let mut names: Vec<String> = snapshot.connections.keys().cloned().collect();
    names.extend(totals.iter().map(|t| t.connection.clone()));
    names.sort();
    names.dedup();
    let m = &state.metrics;
    let mut rows = Vec::new();
    for name in names {
        let total = totals
            .iter()
            .find(|t| t.connection == name)
            .cloned()
            .unwrap_or_default();
        let lane = lanes.iter().find(|l| l.connection == name);
        let labels = vec![("connection", name.clone())];
        let oldest = total
            .oldest_queued_at_ms
            .map(|t| (now - t).max(0) as f64 / 1000.0);
        m.queue_pending
            .get_or_create(&labels)
            .set(total.pending as i64);
        m.queue_oldest_seconds
            .get_or_create(&labels)
            .set(oldest.unwrap_or(0.0));
        if let Some(l) = lane {
            m.queue_rate
                .get_or_create(&labels)
                .set(l.rate.effective_per_second.unwrap_or(-1.0));
            m.queue_throttled
                .get_or_create(&labels)
                .set(i64::from(l.rate.throttled));
            m.queue_circuit_open
                .get_or_create(&labels)
                .set(i64::from(!matches!(
                    l.breaker.state,
                    crate::send::breaker::BreakerPhase::Closed
                )));
            if l.lease != LeaseState::NotNeeded {
                m.queue_lease_held
                    .get_or_create(&labels)
                    .set(i64::from(l.lease == LeaseState::Held));
            }
        }
        rows.push(json!({
            "connection": name,
            "configured": snapshot.connections.contains_key(&name),
            "queued": total.queued,
            "sending": total.sending,
            "deferred": total.deferred,
            "pending": total.pending,
            "oldest_age_seconds": oldest,
            "in_flight": lane.map(|l| l.in_flight),
            "rate": lane.map(|l| &l.rate),
            "circuit": lane.map(|l| &l.breaker),
            "lease": lane.map(|l| l.lease),
        }));
    }
    Ok(json!({
        "held": state.sending.held(),
        "total_pending": totals.iter().map(|t| t.pending).sum::<u64>(),
        "recovered_in_flight": state.sending.recovered_in_flight.load(std::sync::atomic::Ordering::Relaxed),
        "connections": rows,
    }))
}

/// `GET /v1/queue`.
pub(super) async fn queue(State(state): State<Arc<AppState>>) -> Response {
    match queue_summary(&state).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}
