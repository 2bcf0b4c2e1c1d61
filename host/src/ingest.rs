//! The webhook ingest pipeline, one request at a time: find the connection
//! and its plugin, bound the body, `verify-webhook` on the exact bytes with
//! each configured secret, `parse-webhook`, commit the events durably
//! (group commit), and only then answer 2xx.
//!
//! On every path that does not answer 2xx nothing is stored: the store is
//! written only in the last step, and a failed commit stores nothing of the
//! requests it held.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;

use crate::config::Connection;
use crate::config::diagnostic::excerpt;
use crate::event::{NormalizedEvent, PluginStamp};
use crate::runtime::sns::{SnsTrust, SubscriptionRequest};
use crate::runtime::{CallContext, Capability, ParseError, VerifyError, WebhookRequest};
use crate::state::{AppState, Snapshot};
use crate::store::{self, Applied, NewEvent, ReplayToken, StoreError, Write};

/// `Retry-After` seconds sent with a 503.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// What a successful request stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Receipt {
    /// Events parsed from the request.
    pub received: usize,
    /// Ids of the events stored now.
    pub stored: Vec<String>,
    /// Events already stored by an earlier delivery of the same request.
    pub duplicates: usize,
}

/// Why a request was refused; each maps to one status (the README's table).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No connection of that name.
    #[error("no connection named `{0}`")]
    UnknownConnection(String),
    /// The connection's provider does not accept webhooks.
    #[error("connection `{connection}` uses provider `{provider}`, which does not parse webhooks")]
    NoWebhooks {
        /// Connection name.
        connection: String,
        /// Plugin id.
        provider: String,
    },
    /// A content type no provider posts.
    #[error("unsupported content type `{0}`: providers post JSON, form data or text")]
    ContentType(String),
    /// The body exceeds the connection's limit.
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// The body could not be read from the client.
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// The request is not authentic.
    #[error("{0}")]
    Unauthorized(String),
    /// The plugin could not parse the payload.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The plugin failed (trap, deadline, invalid output).
    #[error("the provider plugin failed: {0}")]
    Plugin(String),
    /// A webhook secret reference could not be resolved.
    #[error("the connection's webhook secret is unavailable")]
    SecretUnavailable,
    /// A signing certificate the request names could not be fetched.
    #[error("the signing certificate is unavailable: {0}")]
    CertificateUnavailable(String),
    /// The store could not commit.
    #[error("events could not be stored: {0}")]
    Store(StoreError),
}

impl Rejection {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownConnection(_) | Self::NoWebhooks { .. } => StatusCode::NOT_FOUND,
            Self::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Plugin(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::SecretUnavailable | Self::CertificateUnavailable(_) | Self::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownConnection(_) => "unknown_connection",
            Self::NoWebhooks { .. } => "no_webhooks",
            Self::ContentType(_) => "content_type",
            Self::TooLarge(_) => "too_large",
            Self::Body(_) => "body",
            Self::Unauthorized(_) => "unauthorized",
            Self::Malformed(_) => "malformed",
            Self::Plugin(_) => "plugin_failed",
            Self::SecretUnavailable => "secret_unavailable",
            Self::CertificateUnavailable(_) => "certificate_unavailable",
            Self::Store(StoreError::Full(_)) => "store_full",
            Self::Store(StoreError::Busy(_)) => "store_busy",
            Self::Store(_) => "store_failed",
        }
    }
}

/// Content types a provider posts: JSON (also `+json`), form data (Mandrill,
/// legacy Mailgun) and text (Amazon SNS posts JSON as `text/plain`). A
/// request without one is passed on; the signature still covers the body.
fn acceptable_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let ok = text.parse::<mime::Mime>().is_ok_and(|m| {
        let (ty, sub) = (m.type_(), m.subtype());
        (ty == mime::APPLICATION
            && (sub == mime::JSON
                || sub == mime::WWW_FORM_URLENCODED
                || m.suffix() == Some(mime::JSON)))
            || (ty == mime::TEXT && sub == mime::PLAIN)
    });
    if ok {
        Ok(())
    } else {
        Err(Rejection::ContentType(
            excerpt(&String::from_utf8_lossy(value.as_bytes())).into_owned(),
        ))
    }
}

/// Reads at most `limit` bytes of the body: refused from `Content-Length`
/// before reading, or as soon as the stream passes the limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Rejection> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Rejection::TooLarge(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Rejection::TooLarge(limit))
        }
        Err(e) => Err(Rejection::Body(e.to_string())),
    }
}

fn verify_reason(e: &VerifyError) -> String {
    match e {
        VerifyError::MissingHeader(h) => format!("missing header `{h}`"),
        VerifyError::Malformed(m) => format!("malformed: {m}"),
        VerifyError::TimestampOutOfTolerance(s) => {
            format!("signed timestamp is {s} s off the current time")
        }
        VerifyError::BadSignature => "no signature matched".to_owned(),
    }
}

/// What the plugin imports answer for `connection`.
fn call_context(state: &AppState, connection: &Connection) -> CallContext {
    CallContext {
        tolerance: connection.webhook.tolerance_seconds,
        registered_url: Some(
            connection
                .webhook
                .url
                .clone()
                .unwrap_or_else(|| state.webhook_url(&connection.name)),
        ),
        sns: connection.webhook.sns.as_ref().map(|settings| SnsTrust {
            settings: settings.clone(),
            cache: state.sns.cache.clone(),
        }),
    }
}

/// Verify and parse, on the blocking pool (plugin calls are CPU-bound).
/// A signing certificate the plugin asked for that is not cached yet is
/// fetched here, between two verify calls, never inside one.
fn verify_and_parse(
    snapshot: &Snapshot,
    connection: &Connection,
    request: &WebhookRequest,
    context: &CallContext,
    sns: &crate::sns::SnsHost,
) -> Result<Verified, Rejection> {
    let id = connection.provider.id();
    let plugin = snapshot
        .catalog
        .runtime()
        .plugin(id)
        .ok_or_else(|| Rejection::Plugin(format!("plugin `{id}` is not loaded")))?;
    let info = plugin.info();
    let mut instance = plugin.pooled();
    let mut tokens = Vec::new();
    if info.capabilities.contains(&Capability::VerifiesWebhooks) {
        if connection.webhook.secrets.is_empty() {
            return Err(Rejection::Unauthorized(format!(
                "connection `{}` has no webhook.secret configured, so no request can be verified",
                connection.name
            )));
        }
        let mut last = None;
        let mut resolved_any = false;
        for secret in &connection.webhook.secrets {
            let value = match secret.resolve(connection.base_dir()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(connection = %connection.name, error = %e, "webhook secret unavailable");
                    continue;
                }
            };
            resolved_any = true;
            let mut verified = instance.verify_webhook_with(request, value.expose(), context);
            let mut asked = instance.take_requests();
            if matches!(verified, Ok(Err(_)))
                && let Some(url) = asked.certificate.take()
            {
                let now = snapshot.catalog.runtime().clock().now();
                sns.fetch_certificate(&url, now)
                    .map_err(Rejection::CertificateUnavailable)?;
                verified = instance.verify_webhook_with(request, value.expose(), context);
                asked = instance.take_requests();
            }
            match verified {
                Ok(Ok(())) => {
                    last = None;
                    let used = asked.tokens;
                    if used.is_empty() {
                        break;
                    }
                    // Only requests that name a token pay for the hash.
                    let now = snapshot.catalog.runtime().clock().now();
                    let body_sha256: [u8; 32] = {
                        use sha2::Digest as _;
                        sha2::Sha256::digest(&request.body).into()
                    };
                    tokens = used
                        .into_iter()
                        .map(|t| ReplayToken {
                            connection: connection.name.clone(),
                            token: t.token,
                            body_sha256,
                            used_at: now,
                            expires_at: now.saturating_add(i64::from(t.ttl_seconds)),
                        })
                        .collect();
                    break;
                }
                Ok(Err(e)) => last = Some(Rejection::Unauthorized(verify_reason(&e))),
                Err(e) => last = Some(Rejection::Plugin(e.to_string())),
            }
        }
        if !resolved_any {
            return Err(Rejection::SecretUnavailable);
        }
        if let Some(rejection) = last {
            return Err(rejection);
        }
    }
    let parsed = instance.parse_webhook_with(request, context);
    let confirmations = instance.take_requests().confirmations;
    let events = match parsed {
        Ok(Ok(events)) => events,
        Ok(Err(ParseError::Malformed(m))) => {
            return Err(Rejection::Malformed(excerpt(&m).into_owned()));
        }
        Ok(Err(ParseError::Invalid(m))) => {
            return Err(Rejection::Malformed(format!(
                "invalid payload: {}",
                excerpt(&m)
            )));
        }
        Err(e) => return Err(Rejection::Plugin(e.to_string())),
    };
    let stamp = PluginStamp {
        id: info.id.clone(),
        version: info.version.clone(),
        sha256: plugin.sha256().to_owned(),
    };
    Ok(Verified {
        events,
        stamp,
        tokens,
        confirmations,
    })
}

/// What the plugin made of an authentic request.
struct Verified {
    events: Vec<NormalizedEvent>,
    stamp: PluginStamp,
    /// Single-use tokens to record with the events (`replay.use-token`).
    tokens: Vec<ReplayToken>,
    /// Verified subscription confirmations (`sns.confirm-subscription`).
    confirmations: Vec<SubscriptionRequest>,
}

/// Runs one webhook request through the pipeline.
pub async fn ingest(
    state: &AppState,
    name: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Receipt, Rejection> {
    let started = Instant::now();
    let received_at_ms = store::now_ms();
    let snapshot = state.snapshot.load_full();
    let connection = snapshot
        .connections
        .get(name)
        .cloned()
        .ok_or_else(|| Rejection::UnknownConnection(name.to_owned()))?;
    let provider = connection.provider.id().to_owned();
    let parses = snapshot
        .catalog
        .runtime()
        .describe(&provider)
        .is_some_and(|i| i.capabilities.contains(&Capability::ParsesWebhooks));
    if !parses {
        return Err(Rejection::NoWebhooks {
            connection: name.to_owned(),
            provider,
        });
    }
    acceptable_content_type(headers)?;
    let body = read_body(headers, body, connection.webhook.max_body_bytes).await?;
    let request = WebhookRequest {
        method: "POST".to_owned(),
        path: path_and_query.to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let Verified {
        events,
        stamp,
        tokens,
        confirmations,
    } = {
        let _slot = state
            .plugin_slots
            .acquire()
            .await
            .map_err(|_| Rejection::Store(StoreError::Closed))?;
        let snapshot = snapshot.clone();
        let connection = connection.clone();
        let context = call_context(state, &connection);
        let sns = state.sns.clone();
        tokio::task::spawn_blocking(move || {
            verify_and_parse(&snapshot, &connection, &request, &context, &sns)
        })
        .await
        .map_err(|e| Rejection::Plugin(format!("plugin task failed: {e}")))??
    };
    let received = events.len();
    let soft_bounce_rules: Vec<_> = connection
        .workspaces
        .iter()
        .filter_map(|w| {
            let rule = snapshot.workspaces.get(w)?.soft_bounces?;
            Some((w.clone(), rule))
        })
        .collect();
    let new: Vec<NewEvent> = events
        .into_iter()
        .map(|event| NewEvent {
            connection: connection.name.clone(),
            workspaces: connection.workspaces.clone(),
            plugin: stamp.clone(),
            received_at_ms,
            occurred_at: humantime::parse_rfc3339(&event.occurred_at)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .unwrap_or(0),
            dedupe_key: store::dedupe_key(&connection.name, &event),
            forward_to: crate::forward::forwarders_for(
                &snapshot,
                &connection.workspaces,
                event.kind,
            ),
            soft_bounce_rules: soft_bounce_rules.clone(),
            event,
        })
        .collect();
    // A request without events still records its tokens: its replay is refused too.
    let receipt = if new.is_empty() && tokens.is_empty() {
        Receipt {
            received,
            stored: Vec::new(),
            duplicates: 0,
        }
    } else {
        match state
            .store
            .write(Write::Events {
                events: new,
                tokens,
            })
            .await
        {
            Ok(Applied::Events { stored, duplicates }) => Receipt {
                received,
                stored,
                duplicates,
            },
            Ok(Applied::Replayed) => {
                return Err(Rejection::Unauthorized(
                    "replayed request: its single-use token was used by an earlier request".into(),
                ));
            }
            Ok(other) => {
                return Err(Rejection::Store(StoreError::Backend(format!(
                    "unexpected store answer {other:?}"
                ))));
            }
            Err(e) => return Err(Rejection::Store(e)),
        }
    };
    state
        .metrics
        .observe_ingest(&connection.name, &stamp.id, &receipt, started.elapsed());
    if !confirmations.is_empty() {
        // Not awaited: the answer to SNS does not wait for Amazon.
        let sns = state.sns.clone();
        let now = snapshot.catalog.runtime().clock().now();
        tokio::task::spawn_blocking(move || {
            for request in confirmations {
                sns.confirm(
                    &connection.name,
                    connection.webhook.sns.as_deref(),
                    request,
                    now,
                );
            }
        });
    }
    Ok(receipt)
}

/// Shares the daemon's store handle with request handlers.
pub type SharedStore = Arc<store::Store>;
