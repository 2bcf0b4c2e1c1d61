//! `POST /v1/connections/{name}/check` and `/test`: the staged probe and the
//! test email for one connection, recorded as its last outcome and counted in
//! `mailplug_smtp_outcomes_total`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error;
use crate::mail::{self, Classification, ProbeOptions, SmtpTarget};
use crate::state::AppState;

/// Body of `POST .../check` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    /// Also try `RCPT TO` with this address.
    #[serde(default)]
    rcpt: Option<String>,
}

/// Body of `POST .../test`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// Recipient of the test email.
    to: String,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<Option<T>, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
        ))
    })
}

fn valid_address(addr: &str) -> Result<(), Box<Response>> {
    crate::address::parse(addr)
        .map(|_| ())
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.to_string())))
}

/// The connection's SMTP target, from the snapshot the request started
/// with. Every setting was compiled at reload (provider plugins included);
/// only the password reference is resolved here, on the blocking pool (a
/// `file:` secret is a filesystem read).
async fn target(state: &AppState, name: &str) -> Result<SmtpTarget, Box<Response>> {
    let snapshot = state.snapshot.load_full();
    let Some(conn) = snapshot.connections.get(name).cloned() else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no connection named `{name}`"),
        )));
    };
    let target = tokio::task::spawn_blocking(move || mail::target_for(&conn))
        .await
        .map_err(|e| Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))?
        .map_err(|e| Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())))?;
    target
        .validate()
        .map_err(|e| Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())))?;
    Ok(target)
}

fn record(
    state: &AppState,
    name: &str,
    test: bool,
    classification: &Classification,
    report: &Value,
) {
    state
        .metrics
        .smtp_outcomes
        .get_or_create(&vec![
            ("connection", name.to_owned()),
            ("class", classification.class.as_str().to_owned()),
        ])
        .inc();
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let entry = json!({ "at_unix": at, "report": report });
    if let Ok(mut outcomes) = state.outcomes.lock() {
        let slot = outcomes.entry(name.to_owned()).or_default();
        if test {
            slot.test = Some(entry);
        } else {
            slot.check = Some(entry);
        }
    }
}

pub(super) async fn check(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let run = async {
        let request: CheckRequest = parse(&body)?.unwrap_or_default();
        if let Some(rcpt) = &request.rcpt {
            valid_address(rcpt)?;
        }
        let target = target(&state, &name).await?;
        let report = mail::probe(&target, ProbeOptions { rcpt: request.rcpt }).await;
        let value = serde_json::to_value(&report).unwrap_or(Value::Null);
        record(&state, &name, false, &report.classification, &value);
        Ok::<_, Box<Response>>(Json(value).into_response())
    };
    run.await.unwrap_or_else(|r| *r)
}

pub(super) async fn test(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let run = async {
        let Some(request) = parse::<TestRequest>(&body)? else {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "body must be {\"to\": \"address\"}",
            )));
        };
        valid_address(&request.to)?;
        let target = target(&state, &name).await?;
        let report = mail::test_send(&target, &request.to)
            .await
            .map_err(|e| Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())))?;
        let value = serde_json::to_value(&report).unwrap_or(Value::Null);
        record(&state, &name, true, &report.classification, &value);
        Ok(Json(value).into_response())
    };
    run.await.unwrap_or_else(|r| *r)
}
