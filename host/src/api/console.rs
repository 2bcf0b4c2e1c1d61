//! The web console: the page at `/` on the admin listener (hand-written
//! HTML, CSS and ES modules embedded in the binary, so it works offline and
//! needs no build step), and the JSON routes only it needs:
//! `GET /v1/console/state` (everything the page shows, in one poll),
//! `GET /v1/console/providers` (the installed provider plugins with their
//! options schemas, for the new-connection form) and
//! `POST /v1/console/validate` (posted YAML text through the same validator
//! as `mailplug validate`). The console never writes configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error;
use crate::config::{self, LoadOptions};
use crate::state::AppState;

/// One embedded file: its URL path, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the console. The page loads nothing else: no CDN, no fonts.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../console/index.html"),
    },
    Asset {
        path: "/console/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/style.css"),
    },
    Asset {
        path: "/console/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/app.js"),
    },
    Asset {
        path: "/console/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/api.js"),
    },
    Asset {
        path: "/console/views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/views.js"),
    },
    Asset {
        path: "/console/form.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/form.js"),
    },
    Asset {
        path: "/console/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../console/favicon.svg"),
    },
];

/// Whether a request is for one of the console's static files. These hold
/// no data, so they are served without the admin token: a browser cannot
/// attach a bearer token to a navigation, and the page asks for the token
/// before it calls the API. Everything else keeps the admin API's rules.
pub(super) fn is_asset_request(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD) && ASSETS.iter().any(|a| a.path == path)
}

/// The console's routes, to be merged into the admin router.
pub(super) fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new()
        .route("/v1/console/state", get(console_state))
        .route("/v1/console/providers", get(console_providers))
        .route("/v1/console/validate", post(validate));
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            // Assets change with the binary; a stale page after an upgrade
            // would call routes that moved, so the browser always revalidates.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // Only our own files run; the page cannot be framed.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                ),
            ),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        asset.body,
    )
        .into_response()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `GET /v1/console/state`: the status document (as `GET /v1/status`), every
/// connection with its effective SMTP target, provider version and last
/// check/test outcome, and the workspaces with their connections in
/// sending order. One request per poll keeps the page consistent: all of it
/// comes from the same snapshot.
async fn console_state(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snapshot = state.snapshot.load_full();
    let status = super::handlers::status(State(state.clone())).await.0;
    let outcomes = state.outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let runtime = snapshot.catalog.runtime();
    let connections: Vec<Value> = snapshot
        .connections
        .values()
        .map(|c| {
            let plugin = runtime.plugin(c.provider.id()).map(|p| p.info());
            let last = outcomes.get(&c.name).cloned().unwrap_or_default();
            json!({
                "name": c.name,
                "display_name": c.display_name,
                "provider": {
                    "id": c.provider.id(),
                    "version": plugin.map(|p| p.version.clone()),
                    "display_name": plugin.map(|p| p.display_name.clone()),
                    "capabilities": plugin.map(|p| p.capabilities.clone()),
                    "signature_scheme": plugin.and_then(|p| p.signature_scheme.clone()),
                },
                "smtp": {
                    "host": c.smtp.host,
                    "port": c.smtp.port,
                    "security": c.smtp.security.as_str(),
                    "username": c.smtp.username,
                    "username_field": c.smtp.username_secret.as_ref().map(|p| p.pointer.clone()),
                },
                "from": { "name": c.from.name, "email": c.from.email.to_string() },
                "workspaces": c.workspaces,
                "priority": c.priority,
                "webhook_url": c.webhook.url.clone().unwrap_or_else(|| state.webhook_url(&c.name)),
                "webhook_secret_configured": !c.webhook.secrets.is_empty(),
                "source": {
                    "file": c.source.file.display().to_string(),
                    "line": c.source.line,
                    "column": c.source.column,
                },
                "last_check": last.check,
                "last_test": last.test,
            })
        })
        .collect();
    let mut workspaces: std::collections::BTreeMap<&str, Vec<&config::Connection>> =
        std::collections::BTreeMap::new();
    for c in snapshot.connections.values() {
        for w in &c.workspaces {
            workspaces.entry(w.as_str()).or_default().push(c);
        }
    }
    for name in snapshot.workspaces.keys() {
        workspaces.entry(name.as_str()).or_default();
    }
    let workspaces: Vec<Value> = workspaces
        .into_iter()
        .map(|(name, mut list)| {
            // The order the sending queue tries them in (send/route.rs).
            list.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
            json!({
                "name": name,
                "configured": snapshot.workspaces.contains_key(name),
                "connections": list.iter().map(|c| json!({"name": c.name, "priority": c.priority})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "now_unix": now_unix(),
        "generation": snapshot.generation,
        "status": status,
        "connections": connections,
        "workspaces": workspaces,
    }))
}

/// `GET /v1/console/providers`: every installed provider plugin (first-party
/// ones and `kind: Plugin` registrations), with what the new-connection form
/// builds its fields from: id, display name, version and the options JSON
/// Schema exactly as the plugin's `describe` returned it (the schema the
/// validator checks `options` against). Read once when the form opens.
async fn console_providers(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snapshot = state.snapshot.load_full();
    let mut providers: Vec<Value> = snapshot
        .catalog
        .runtime()
        .plugins()
        .map(|p| {
            let info = p.info();
            json!({
                "id": info.id,
                "display_name": info.display_name,
                "version": info.version,
                "options_schema": info.options_schema,
                "capabilities": info.capabilities,
            })
        })
        .collect();
    providers.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    providers.dedup_by(|a, b| a["id"] == b["id"]);
    Json(json!({ "providers": providers }))
}

/// Body of `POST /v1/console/validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    /// The name the file would have in the config directory (diagnostics
    /// are reported against it, as `mailplug validate` would).
    path: String,
    /// The file's text.
    text: String,
}

/// Largest text accepted, the same as a config file (`config::source`).
const MAX_TEXT_BYTES: usize = 1 << 20;

/// `POST /v1/console/validate`: checks posted YAML text with the validator
/// of `mailplug validate` (schema, semantic checks, provider plugins) and
/// answers its diagnostics, both as JSON and as the lines `validate` prints.
/// Nothing is written and the live configuration is not touched. Only
/// `kind: Connection` documents are accepted: a `kind: Plugin` document
/// would make the daemon read a file the poster names.
async fn validate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: ValidateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    if request.text.len() > MAX_TEXT_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "a configuration file may hold at most 1 MiB",
        );
    }
    let path = PathBuf::from(request.path.trim());
    if path.as_os_str().is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "`path` may not be empty");
    }
    let text = request
        .text
        .strip_prefix('\u{feff}')
        .unwrap_or(&request.text)
        .to_owned();
    let opts = LoadOptions::default();
    if let Ok(docs) = config::yaml::parse(&text, opts.yaml_limits) {
        let other = docs.iter().find_map(|d| {
            d.value
                .get("kind")
                .and_then(Value::as_str)
                .filter(|k| *k != "Connection")
        });
        if let Some(kind) = other {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the console validates `kind: Connection` documents only (found `{}`); run `mailplug validate` for the others",
                    config::diagnostic::excerpt(kind)
                ),
            );
        }
    }
    let snapshot = state.snapshot.load_full();
    let report = tokio::task::spawn_blocking(move || {
        config::check_text(&path, &text, &opts, &*snapshot.catalog)
    })
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let snapshot = state.snapshot.load_full();
    // What `validate` of the whole directory would add: a name already in use.
    let duplicates: Vec<Value> = report
        .connections
        .iter()
        .filter_map(|c| snapshot.connections.get(&c.name))
        .map(|live| json!({"name": live.name, "source": live.source.to_string()}))
        .collect();
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    Json(json!({
        "valid": errors == 0,
        "errors": errors,
        "warnings": report.diagnostics.len() - errors,
        "connections": report.connections.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "lines": report.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "diagnostics": report.diagnostics,
        "existing": duplicates,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use tower_service::Service as _;

    use super::*;

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    /// The asset routes alone (they need no state).
    fn assets() -> Router {
        let mut router = Router::new();
        for asset in ASSETS {
            router = router.route(asset.path, get(move || async move { serve(asset) }));
        }
        router
    }

    #[tokio::test]
    async fn assets_are_served_with_their_content_types() {
        let mut router = assets();
        for (path, prefix, needle) in [
            ("/", "text/html", "<title>"),
            ("/console/style.css", "text/css", "body"),
            ("/console/app.js", "text/javascript", "import"),
            ("/console/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let response = router.call(request("GET", path, &[])).await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let headers = response.headers().clone();
            let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
            assert!(content_type.starts_with(prefix), "{path}: {content_type}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(
                headers[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'self'")
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            assert!(
                String::from_utf8_lossy(&body).contains(needle),
                "{path} lacks {needle}"
            );
        }
    }

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in asset.body.lines() {
                let Some(rest) = line.trim().strip_prefix("import ") else {
                    continue;
                };
                let Some(spec) = rest.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let path = format!("/console/{}", spec.trim_start_matches("./"));
                assert!(served.contains(&path.as_str()), "{}: {path}", asset.path);
            }
        }
    }

    #[test]
    fn only_asset_reads_skip_the_token_and_the_api_still_needs_it() {
        let token = Some("s3cret");
        // The page and its files: no token needed, with or without one configured.
        for path in ["/", "/console/app.js", "/console/style.css"] {
            assert_eq!(
                super::super::admit(token, &request("GET", path, &[])),
                Ok(()),
                "{path}"
            );
            assert_eq!(
                super::super::admit(token, &request("HEAD", path, &[])),
                Ok(()),
                "{path}"
            );
        }
        // Everything else, the console's own JSON routes included, keeps the rule.
        for (method, path) in [
            ("GET", "/v1/console/state"),
            ("POST", "/v1/console/validate"),
            ("GET", "/v1/console/providers"),
            ("GET", "/v1/connections"),
            ("POST", "/"),
            ("GET", "/console/other.js"),
            ("GET", "/console/"),
        ] {
            assert_eq!(
                super::super::admit(token, &request(method, path, &[])),
                Err(super::super::Denial::Token),
                "{method} {path}"
            );
        }
        assert_eq!(
            super::super::admit(
                token,
                &request(
                    "GET",
                    "/v1/console/state",
                    &[("authorization", "Bearer s3cret")]
                )
            ),
            Ok(())
        );
        // Without a token the loopback Host rule applies to the page as well.
        assert_eq!(
            super::super::admit(None, &request("GET", "/", &[("host", "evil.example")])),
            Err(super::super::Denial::Host)
        );
        assert_eq!(
            super::super::admit(None, &request("GET", "/", &[("host", "127.0.0.1:8025")])),
            Ok(())
        );
    }

    #[test]
    fn the_page_posts_from_its_own_origin_even_off_loopback() {
        // Bound to a LAN address with a token: the console's POSTs carry
        // Origin http://<that address>, which is the request's own origin.
        let headers = [
            ("authorization", "Bearer s3cret"),
            ("host", "10.0.0.5:8025"),
            ("origin", "http://10.0.0.5:8025"),
            ("content-type", "application/json"),
            ("content-length", "2"),
        ];
        assert_eq!(
            super::super::admit(
                Some("s3cret"),
                &request("POST", "/v1/connections/x/check", &headers)
            ),
            Ok(())
        );
        let foreign = [
            ("authorization", "Bearer s3cret"),
            ("host", "10.0.0.5:8025"),
            ("origin", "http://10.0.0.6:8025"),
        ];
        assert_eq!(
            super::super::admit(
                Some("s3cret"),
                &request("POST", "/v1/connections/x/check", &foreign)
            ),
            Err(super::super::Denial::Origin)
        );
    }
}
