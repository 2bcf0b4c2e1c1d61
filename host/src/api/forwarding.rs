//! Forwarding routes of the admin API: forwarders with their outbox totals,
//! the outbox itself (cursor-paginated), and retrying a dead letter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error;
use super::events::{Params, refuse, store_error};
use crate::config::Forwarder;
use crate::config::diagnostic::excerpt;
use crate::config::forwarder::Target;
use crate::state::AppState;
use crate::store::outbox::{ForwarderStats, OutboxQuery, OutboxState, Requeue};
use crate::store::{Cursor, now_ms};

/// A URL as the API shows it: the query string may carry a token, so it is
/// replaced by `?...`.
fn shown_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_owned(),
    }
}

fn describe(f: &Forwarder) -> Value {
    let (url, file) = match &f.target {
        Target::Url(u) => (Some(shown_url(u)), None),
        Target::File(p) => (None, Some(p.display().to_string())),
    };
    json!({
        "name": f.name,
        "configured": true,
        "workspace": f.workspace,
        "target": f.target.kind(),
        "url": url,
        "file": file,
        "secret": f.secret.as_ref().map(|s| format!("<redacted: {}>", s.describe())),
        "kinds": f.kinds.as_ref().map(|k| k.iter().collect::<Vec<_>>()),
        "max_age_seconds": f.max_age.as_secs(),
        "timeout_ms": u64::try_from(f.timeout.as_millis()).unwrap_or(u64::MAX),
        "concurrency": f.concurrency,
        "retry": {
            "initial_delay_ms": u64::try_from(f.retry.initial_delay.as_millis()).unwrap_or(u64::MAX),
            "max_delay_ms": u64::try_from(f.retry.max_delay.as_millis()).unwrap_or(u64::MAX),
        },
        "source": f.source.to_string(),
    })
}

fn with_stats(mut v: Value, s: Option<&ForwarderStats>) -> Value {
    let default = ForwarderStats::default();
    let s = s.unwrap_or(&default);
    v["pending"] = json!(s.pending);
    v["delivered"] = json!(s.delivered);
    v["dead"] = json!(s.dead);
    v["next_attempt_at"] = json!(s.next_attempt_at);
    v["last_error"] = json!(s.last_error);
    v["last_error_at"] = json!(s.last_error_at);
    v
}

/// `GET /v1/forwarders`: every configured forwarder, then every name that
/// still has outbox rows but is no longer configured (`configured: false`;
/// its rows wait, untouched, until a forwarder of that name returns).
pub(super) async fn list_forwarders(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.snapshot.load_full();
    let stats = match state.store.read(|b| b.outbox_stats()).await {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let mut by_name: BTreeMap<String, ForwarderStats> = stats
        .into_iter()
        .map(|s| (s.forwarder.clone(), s))
        .collect();
    let mut items: Vec<Value> = snapshot
        .forwarders
        .values()
        .map(|f| with_stats(describe(f), by_name.remove(&f.name).as_ref()))
        .collect();
    for (name, s) in by_name {
        items.push(with_stats(
            json!({ "name": name, "configured": false }),
            Some(&s),
        ));
    }
    Json(json!({ "generation": snapshot.generation, "forwarders": items })).into_response()
}

/// `GET /v1/outbox?forwarder=&state=&limit=&cursor=`: rows oldest first.
pub(super) async fn list_outbox(
    State(state): State<Arc<AppState>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let params = match Params::new(raw, &["forwarder", "state", "limit", "cursor"]) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let row_state = match params.text("state") {
        None => None,
        Some(s) => match OutboxState::parse(&s) {
            Some(s) => Some(s),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "`state` must be one of pending, delivered, dead",
                )
                .into_response();
            }
        },
    };
    let limit = match params.limit() {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let query = OutboxQuery {
        forwarder: params.text("forwarder"),
        state: row_state,
        limit,
        cursor: params.text("cursor").map(Cursor),
    };
    match state.store.read(move |b| b.outbox(&query)).await {
        Ok(page) => Json(json!({
            "outbox": page.items,
            "next_cursor": page.next.map(|c| c.0),
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// `POST /v1/outbox/{id}/retry`: a dead letter becomes pending, due now,
/// with a fresh `max_age`. 404 for no such row, 409 for a row not dead.
pub(super) async fn retry_outbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let lookup = id.clone();
    match state
        .store
        .read(move |b| b.requeue(&lookup, now_ms()))
        .await
    {
        Ok(Requeue::Requeued) => {
            state.store.outbox_queued().notify_one();
            Json(json!({ "id": id, "state": "pending" })).into_response()
        }
        Ok(Requeue::NotDead(s)) => error(
            StatusCode::CONFLICT,
            format!(
                "outbox row `{}` is {}, not dead: only dead letters are retried",
                excerpt(&id),
                s.as_str()
            ),
        ),
        Ok(Requeue::Missing) => error(
            StatusCode::NOT_FOUND,
            format!("no outbox row with id `{}`", excerpt(&id)),
        ),
        Err(e) => store_error(&e),
    }
}

/// The forwarding part of `/v1/status`.
pub(super) async fn summary(state: &AppState) -> Value {
    let configured = state.snapshot.load().forwarders.len();
    match state.store.read(|b| b.outbox_stats()).await {
        Ok(stats) => {
            state.metrics.set_outbox(&stats);
            json!({
                "forwarders": configured,
                "pending": stats.iter().map(|s| s.pending).sum::<u64>(),
                "dead": stats.iter().map(|s| s.dead).sum::<u64>(),
            })
        }
        Err(e) => json!({ "forwarders": configured, "error": e.to_string() }),
    }
}

/// Refreshes the outbox gauges before a scrape.
pub(super) async fn refresh_metrics(state: &AppState) {
    match state.store.read(|b| b.outbox_stats()).await {
        Ok(stats) => state.metrics.set_outbox(&stats),
        Err(e) => tracing::warn!(error = %e, "outbox totals unavailable for /metrics"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_shown_without_their_query() {
        assert_eq!(
            super::shown_url("https://a.example/h?token=s3cret"),
            "https://a.example/h?..."
        );
        assert_eq!(
            super::shown_url("https://a.example/h"),
            "https://a.example/h"
        );
    }
}
