//! One document → one compiled object. The schema runs first; then every
//! section that still has a usable shape is typed on its own and checked, so
//! one `validate` run reports a misspelt key *and* a port/security mismatch
//! in the same document. Only a document without errors is compiled into a
//! [`Connection`], [`PluginRegistration`] or [`Forwarder`](super::Forwarder).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::catalog::ProviderCatalog;
use super::check::{self, Ctx};
use super::connection::{
    CUSTOM_SMTP, Connection, DEFAULT_PRIORITY, DEFAULT_WEBHOOK_MAX_BODY, Limits, PluginLimits,
    PluginRegistration, Webhook,
};
use super::diagnostic::{Diagnostic, did_you_mean, excerpt};
use super::model::{
    ForwarderSpec, FromSpec, LimitsSpec, PluginSpec, SmtpSpec, SnsSpec, WebhookSecrets, WebhookSpec,
};
use super::yaml::{Document, pointer_escape, pointer_unescape, scalar_text};
use super::{FileReport, LoadOptions, SourceLocation, schema};
use crate::runtime::DEFAULT_SIGNATURE_TOLERANCE;
use crate::runtime::sns::SnsSettings;

const KINDS: [&str; 4] = ["Connection", "Plugin", "Forwarder", "Workspace"];

/// The sections of a connection document that have a usable shape. A
/// section that is absent takes its default; one that is present but
/// malformed is `None` and its checks are skipped (the schema reported it).
pub(super) struct Sections {
    pub name: Option<String>,
    pub display_name: Option<Option<String>>,
    pub provider: Option<String>,
    pub smtp: Option<Option<SmtpSpec>>,
    pub from: Option<FromSpec>,
    pub workspaces: Option<Vec<String>>,
    pub options: Option<BTreeMap<String, Value>>,
    pub webhook: Option<WebhookSpec>,
    pub limits: Option<LimitsSpec>,
    pub priority: Option<Option<u32>>,
}

fn section<'a, T: Deserialize<'a>>(value: &'a Value, key: &str) -> Option<Option<T>> {
    match value.get(key) {
        None => Some(None),
        Some(v) => T::deserialize(v).ok().map(Some),
    }
}

fn with_default<'a, T: Deserialize<'a> + Default>(value: &'a Value, key: &str) -> Option<T> {
    section(value, key).map(Option::unwrap_or_default)
}

impl Sections {
    fn of(value: &Value) -> Self {
        Self {
            name: value.get("name").and_then(Value::as_str).map(str::to_owned),
            display_name: section(value, "display_name"),
            provider: section::<String>(value, "provider")
                .map(|p| p.unwrap_or_else(|| CUSTOM_SMTP.to_owned())),
            smtp: section(value, "smtp"),
            from: section(value, "from").flatten(),
            workspaces: with_default(value, "workspaces"),
            options: with_default(value, "options"),
            webhook: with_default(value, "webhook"),
            limits: with_default(value, "limits"),
            priority: section(value, "priority"),
        }
    }
}

/// A copy of `value` without the nodes the schema refused, so the sections
/// around them can still be typed. Borrowed when nothing was refused.
fn prune<'a>(value: &'a Value, invalid: &[String]) -> Cow<'a, Value> {
    if invalid.is_empty() {
        return Cow::Borrowed(value);
    }
    let mut copy = value.clone();
    for pointer in invalid {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            // The whole document has the wrong shape: nothing can be typed.
            return Cow::Owned(Value::Null);
        };
        let key = pointer_unescape(last);
        match copy.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&key);
            }
            // A list with a bad item cannot be typed as a list at all.
            Some(list @ Value::Array(_)) => *list = Value::Null,
            _ => {}
        }
    }
    Cow::Owned(copy)
}

/// Checks one document and adds what it defines to `report`.
pub(super) fn document(
    path: &Path,
    doc: &Document,
    opts: &LoadOptions,
    catalog: &dyn ProviderCatalog,
    report: &mut FileReport,
) {
    let out = &mut report.diagnostics;
    let Some(object) = doc.value.as_object() else {
        out.push(Diagnostic::error(
            path,
            doc.start,
            "",
            "expected a mapping (a `kind: Connection`, `kind: Plugin`, `kind: Forwarder` or `kind: Workspace` object)",
        ));
        return;
    };
    let kind = match object.get("kind") {
        None => {
            out.push(
                Diagnostic::error(path, doc.start, "", "missing required field `kind`")
                    .with_hint("add `kind: Connection` (or `kind: Plugin`, `kind: Forwarder`, `kind: Workspace`)"),
            );
            return;
        }
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.as_str(),
        Some(other) => {
            let text = scalar_text(other);
            let d = Diagnostic::error(
                path,
                doc.value_pos("/kind"),
                "/kind",
                format!(
                    "unknown kind `{}`; expected one of: {}",
                    excerpt(&text),
                    KINDS.join(", ")
                ),
            );
            out.push(match did_you_mean(&text, KINDS) {
                Some(m) => d.with_hint(format!("did you mean `{m}`?")),
                None => d,
            });
            return;
        }
    };
    let before = out.len();
    let connection = kind == "Connection";
    let schema = match kind {
        "Connection" => &*schema::CONNECTION,
        "Forwarder" => &*schema::FORWARDER,
        "Workspace" => &*schema::WORKSPACE,
        _ => &*schema::PLUGIN,
    };
    let invalid = schema.check(path, doc, "", out);
    let value = prune(&doc.value, &invalid);
    // Objects are located by their name, which is what an operator searches for.
    let at = doc.value_pos(if kind == "Plugin" { "/id" } else { "/name" });
    let source = SourceLocation {
        file: path.to_path_buf(),
        line: at.line,
        column: at.col,
    };
    let mut ctx = Ctx {
        file: path,
        doc,
        opts,
        out,
        before,
    };
    if connection {
        if let Some(c) = compile_connection(&mut ctx, &value, catalog, source) {
            report.connections.push(c);
        }
    } else if kind == "Workspace" {
        if let Ok(spec) = super::model::WorkspaceSpec::deserialize(&*value)
            && let Some(w) = super::workspace::compile(&mut ctx, spec, source)
        {
            report.workspaces.push(w);
        }
    } else if kind == "Forwarder" {
        if let Some(spec) = forwarder_spec(&value)
            && let Some(f) = super::forwarder::compile(&mut ctx, spec, source)
        {
            report.forwarders.push(f);
        }
    } else if let Some(p) = compile_plugin(&mut ctx, &value, source) {
        report.plugins.push(p);
    }
}

/// The provider whose events arrive through Amazon SNS.
const SES_PROVIDER: &str = "amazon-ses";

/// `webhook.sns`: every certificate URL must be one the host would accept
/// as a `SigningCertURL`; files are resolved against the file's folder.
fn sns_settings(ctx: &mut Ctx<'_>, spec: &SnsSpec) -> SnsSettings {
    let mut certificates = std::collections::BTreeMap::new();
    for (url, path) in &spec.certificates {
        if let Err(why) = crate::runtime::sns::check_certificate_url(url) {
            ctx.error(
                &format!("/webhook/sns/certificates/{}", pointer_escape(url)),
                format!("not an SNS signing-certificate URL: {why}"),
                Some("use the SigningCertURL exactly as SNS sends it: https://sns.<region>.amazonaws.com/<name>.pem"),
            );
            continue;
        }
        certificates.insert(url.clone(), ctx.base_dir().join(path));
    }
    SnsSettings {
        topics: spec.topics.iter().map(|t| t.0.clone()).collect(),
        auto_confirm: spec.auto_confirm,
        certificates,
    }
}

fn compile_connection(
    ctx: &mut Ctx<'_>,
    value: &Value,
    catalog: &dyn ProviderCatalog,
    source: SourceLocation,
) -> Option<Connection> {
    let s = Sections::of(value);
    let provider = check::provider(ctx, &s, catalog);
    let from = s.from.as_ref().and_then(|f| check::sender(ctx, f));
    let tolerance = s.webhook.as_ref().and_then(|w| {
        let default = Duration::from_secs(u64::from(DEFAULT_SIGNATURE_TOLERANCE));
        super::forwarder::duration(
            ctx,
            "/webhook/tolerance",
            w.tolerance.as_deref(),
            default,
            (Duration::from_secs(1), Duration::from_secs(3600)),
        )
    });
    if let Some(webhook) = &s.webhook {
        match &webhook.secret {
            Some(WebhookSecrets::One(secret)) => ctx.webhook_secret("/webhook/secret", secret),
            Some(WebhookSecrets::Many(secrets)) => {
                for (i, secret) in secrets.iter().enumerate() {
                    ctx.webhook_secret(&format!("/webhook/secret/{i}"), secret);
                }
            }
            None => {}
        }
    }
    let sns = s
        .webhook
        .as_ref()
        .and_then(|w| w.sns.as_ref())
        .map(|spec| sns_settings(ctx, spec));
    if provider.as_ref().is_some_and(|p| p.id() == SES_PROVIDER)
        && sns.as_ref().is_none_or(|sns| sns.topics.is_empty())
    {
        ctx.warning(
            "/webhook/sns/topics",
            "no SNS topic is listed, so every SES event delivered to this connection's webhook is refused (401)",
            Some("list the topic of the configuration set's event destination: webhook: { sns: { topics: [\"arn:aws:sns:<region>:<account>:<topic>\"] } }"),
        );
    }
    if let Some(w) = &s.workspaces {
        check::workspaces(ctx, w);
    }
    let smtp = match (&provider, &s.smtp) {
        (Some(provider), Some(smtp)) => {
            check::smtp(ctx, provider, smtp.as_ref(), s.options.as_ref(), catalog)
        }
        _ => None,
    };
    if ctx.has_errors() {
        return None;
    }
    // Every section passed; a `None` left here means the schema and the
    // serde types disagree: a bug, still reported as a located error.
    let (Some(name), Some(display_name), Some(limits), Some(options)) =
        (s.name, s.display_name, s.limits, s.options)
    else {
        ctx.internal("sections missing after a clean check");
        return None;
    };
    let (Some(provider), Some(smtp), Some(from), Some(workspaces), Some(webhook)) =
        (provider, smtp, from, s.workspaces, s.webhook)
    else {
        ctx.internal("sections missing after a clean check");
        return None;
    };
    Some(Connection {
        display_name: display_name.unwrap_or_else(|| name.clone()),
        name,
        provider,
        smtp,
        from,
        workspaces,
        options,
        webhook: Webhook {
            secrets: webhook
                .secret
                .map(WebhookSecrets::into_vec)
                .unwrap_or_default(),
            max_body_bytes: webhook
                .max_body_bytes
                .and_then(|b| usize::try_from(b).ok())
                .unwrap_or(DEFAULT_WEBHOOK_MAX_BODY),
            tolerance_seconds: tolerance
                .and_then(|t| u32::try_from(t.as_secs()).ok())
                .unwrap_or(DEFAULT_SIGNATURE_TOLERANCE),
            url: webhook.url,
            sns: sns.map(std::sync::Arc::new),
        },
        limits: Limits {
            max_connections: limits.max_connections.max(1),
            per_second: limits.per_second,
            per_minute: limits.per_minute,
            per_hour: limits.per_hour,
            per_day: limits.per_day,
            timeout: std::time::Duration::from_secs(u64::from(limits.timeout_seconds.max(1))),
        },
        priority: s.priority.flatten().unwrap_or(DEFAULT_PRIORITY),
        source,
    })
}

/// The forwarder document typed for its semantic checks, even when the
/// schema refused (and `prune` removed) one of its required fields: that
/// field was reported already, and standing in a placeholder lets the other
/// fields be checked in the same run. A document with errors never compiles.
fn forwarder_spec(value: &Value) -> Option<ForwarderSpec> {
    let mut typed = value.as_object()?.clone();
    for (key, placeholder) in [
        ("api_version", "mailplug/v1"),
        ("kind", "Forwarder"),
        ("name", "-"),
        ("workspace", "-"),
    ] {
        typed
            .entry(key)
            .or_insert_with(|| Value::String(placeholder.to_owned()));
    }
    ForwarderSpec::deserialize(Value::Object(typed)).ok()
}

fn compile_plugin(
    ctx: &mut Ctx<'_>,
    value: &Value,
    source: SourceLocation,
) -> Option<PluginRegistration> {
    let spec = PluginSpec::deserialize(value).ok()?;
    check::plugin(ctx, &spec);
    if ctx.has_errors() {
        return None;
    }
    let wasm_path = ctx.base_dir().join(&spec.path);
    Some(PluginRegistration {
        id: spec.id,
        wasm_path,
        sha256: spec.sha256,
        limits: PluginLimits {
            memory_mib: spec.limits.memory_mib,
            deadline_ms: spec.limits.deadline_ms,
        },
        source,
    })
}
