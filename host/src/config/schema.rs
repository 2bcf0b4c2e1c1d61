//! JSON Schemas generated from the configuration types, their compiled
//! validators, the translation of schema violations into diagnostics that
//! point at the right key or value with a useful hint, and the field rules
//! a JSON Schema cannot express, shared by `validate` (config's semantic
//! checks) and the SMTP runtime so the two can never disagree.

use std::path::Path;
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::connection::Security;
use super::diagnostic::{Diagnostic, did_you_mean, excerpt};
use super::model::{ConnectionSpec, ForwarderSpec, PluginSpec, WorkspaceSpec};
use super::yaml::{Document, pointer_push, scalar_text};

/// A generated schema and its compiled validator.
#[derive(Debug)]
pub struct CompiledSchema {
    /// The schema document (what `mailplug schema` writes).
    pub schema: Value,
    validator: jsonschema::Validator,
}

impl CompiledSchema {
    /// Compiles a schema document.
    pub fn new(schema: Value) -> anyhow::Result<Self> {
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .map_err(|e| anyhow::anyhow!("invalid JSON Schema: {e}"))?;
        Ok(Self { schema, validator })
    }

    /// Validates `doc.value`, or the subtree at `base` (e.g. `/options`),
    /// pushing one diagnostic per violation. Returns the JSON Pointers of the
    /// offending nodes (unknown keys, values of the wrong shape; not the
    /// parents of missing fields), so later checks can run on the rest.
    pub fn check(
        &self,
        file: &Path,
        doc: &Document,
        base: &str,
        out: &mut Vec<Diagnostic>,
    ) -> Vec<String> {
        let mut invalid = Vec::new();
        let instance = if base.is_empty() {
            &doc.value
        } else {
            match doc.value.pointer(base) {
                Some(v) => v,
                None => return invalid,
            }
        };
        for error in self.validator.iter_errors(instance) {
            let pointer = format!("{base}{}", error.instance_path().as_str());
            match error.kind() {
                ValidationErrorKind::Required { .. } => {}
                ValidationErrorKind::AdditionalProperties { unexpected }
                | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    invalid.extend(unexpected.iter().map(|key| pointer_push(&pointer, key)))
                }
                _ => invalid.push(pointer.clone()),
            }
            let local = error.instance_path().as_str().to_owned();
            // `masked` renders the message without the offending value, which
            // may be a secret.
            let fallback = error.masked().to_string();
            describe(
                self,
                file,
                doc,
                &pointer,
                &local,
                error.kind(),
                &fallback,
                out,
            );
        }
        invalid
    }
}

fn generate<T: schemars::JsonSchema>() -> Value {
    // Optional fields are simply omitted; an explicit `null` (e.g. a key with
    // no value) is an error rather than silently meaning "unset". This also
    // keeps `anyOf [T, null]` wrappers out of the schema, whose errors would
    // hide the precise problem inside `T`.
    let schema = schemars::schema_for!(T);
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    strip_null(&mut value);
    value
}

/// Removes the `null` alternative schemars adds for `Option<T>`.
fn strip_null(node: &mut Value) {
    let Some(obj) = node.as_object_mut() else {
        if let Some(items) = node.as_array_mut() {
            items.iter_mut().for_each(strip_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let single = types.remove(0);
            obj.insert("type".to_owned(), single);
        }
    }
    if let Some(Value::Array(alts)) = obj.get("anyOf") {
        let rest: Vec<Value> = alts
            .iter()
            .filter(|a| a.get("type") != Some(&Value::from("null")))
            .cloned()
            .collect();
        if rest.len() == 1 && alts.len() == 2 {
            obj.remove("anyOf");
            if let Some(Value::Object(inner)) = rest.into_iter().next() {
                for (k, v) in inner {
                    obj.entry(k).or_insert(v);
                }
            }
        }
    }
    obj.values_mut().for_each(strip_null);
}

/// Every schema `mailplug schema` writes: (file name, schema).
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("connection.schema.json", CONNECTION.schema.clone()),
        ("plugin.schema.json", PLUGIN.schema.clone()),
        ("forwarder.schema.json", FORWARDER.schema.clone()),
        ("workspace.schema.json", WORKSPACE.schema.clone()),
        (
            "delivery-event.schema.json",
            crate::event::delivery_event_schema(),
        ),
    ]
}

/// The compiled schema of `kind: Connection`.
pub static CONNECTION: LazyLock<CompiledSchema> =
    LazyLock::new(|| compile(generate::<ConnectionSpec>()));
/// The compiled schema of `kind: Plugin`.
pub static PLUGIN: LazyLock<CompiledSchema> = LazyLock::new(|| compile(generate::<PluginSpec>()));
/// The compiled schema of `kind: Forwarder`.
pub static FORWARDER: LazyLock<CompiledSchema> =
    LazyLock::new(|| compile(generate::<ForwarderSpec>()));
/// The compiled schema of `kind: Workspace`.
pub static WORKSPACE: LazyLock<CompiledSchema> =
    LazyLock::new(|| compile(generate::<WorkspaceSpec>()));

fn compile(schema: Value) -> CompiledSchema {
    match CompiledSchema::new(schema) {
        Ok(c) => c,
        // The schemas are generated from our own types at build time; a
        // failure here is a programming error caught by every test run.
        #[allow(
            clippy::panic,
            reason = "generated schema is a compile-time constant in spirit"
        )]
        Err(e) => panic!("generated schema does not compile: {e:#}"),
    }
}

fn deref<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let Some(target) = node.get("$ref").and_then(Value::as_str) else {
            return node;
        };
        let Some(path) = target.strip_prefix('#') else {
            return node;
        };
        match root.pointer(path) {
            Some(next) => node = next,
            None => return node,
        }
    }
    node
}

fn alternatives(node: &Value) -> impl Iterator<Item = &Value> {
    ["anyOf", "oneOf", "allOf"]
        .into_iter()
        .filter_map(|k| node.get(k).and_then(Value::as_array))
        .flatten()
}

fn step<'a>(root: &'a Value, node: &'a Value, token: &str, depth: usize) -> Option<&'a Value> {
    let node = deref(root, node);
    if let Some(p) = node.get("properties").and_then(|p| p.get(token)) {
        return Some(p);
    }
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        return Some(items);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
        return Some(extra);
    }
    if depth > 8 {
        return None;
    }
    alternatives(node).find_map(|alt| step(root, alt, token, depth + 1))
}

/// The subschema that describes the instance at `pointer` (best effort).
fn subschema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = root;
    for raw in pointer.split('/').skip(1) {
        let token = super::yaml::pointer_unescape(raw);
        node = step(root, node, &token, 0)?;
    }
    Some(deref(root, node))
}

/// Collects a value from the node and its `anyOf`/`oneOf` alternatives.
fn collect<'a>(root: &'a Value, node: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    let node = deref(root, node);
    out.push(node);
    if depth < 4 {
        for alt in alternatives(node) {
            collect(root, alt, out, depth + 1);
        }
    }
}

fn allowed_keys(root: &Value, pointer: &str) -> Vec<String> {
    let mut nodes = Vec::new();
    if let Some(n) = subschema_at(root, pointer) {
        collect(root, n, &mut nodes, 0);
    }
    nodes
        .iter()
        .filter_map(|n| n.get("properties").and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect()
}

fn allowed_values(root: &Value, pointer: &str) -> Vec<String> {
    let mut nodes = Vec::new();
    if let Some(n) = subschema_at(root, pointer) {
        collect(root, n, &mut nodes, 0);
    }
    let mut out = Vec::new();
    for n in nodes {
        if let Some(values) = n.get("enum").and_then(Value::as_array) {
            out.extend(values.iter().filter(|v| !v.is_null()).map(scalar_text));
        }
        if let Some(c) = n.get("const") {
            out.push(scalar_text(c));
        }
    }
    out.dedup();
    out
}

fn expected_type(root: &Value, pointer: &str) -> String {
    let mut nodes = Vec::new();
    if let Some(n) = subschema_at(root, pointer) {
        collect(root, n, &mut nodes, 0);
    }
    let mut types: Vec<String> = Vec::new();
    for n in nodes {
        match n.get("type") {
            Some(Value::String(t)) => types.push(t.clone()),
            Some(Value::Array(ts)) => {
                types.extend(ts.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    types.retain(|t| t != "null");
    types.dedup();
    let named: Vec<String> = types
        .into_iter()
        .map(|t| match t.as_str() {
            "object" => "a mapping".to_owned(),
            "array" => "a list".to_owned(),
            "integer" => "an integer".to_owned(),
            other => format!("a {other}"),
        })
        .collect();
    if named.is_empty() {
        "another type".to_owned()
    } else {
        named.join(" or ")
    }
}

fn found_type(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "nothing (null)",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(n)) if n.is_f64() => "a number",
        Some(Value::Number(_)) => "an integer",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "a mapping",
    }
}

fn is_secret(root: &Value, pointer: &str) -> bool {
    let target = root.pointer("/$defs/SecretRef");
    matches!((subschema_at(root, pointer), target), (Some(a), Some(b)) if std::ptr::eq(a, b))
}

const SECRET_HINT: &str =
    "write `{ env: NAME }` or `{ file: PATH }` (a literal string works but is discouraged)";

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename the arguments"
)]
fn describe(
    schema: &CompiledSchema,
    file: &Path,
    doc: &Document,
    pointer: &str,
    local: &str,
    kind: &ValidationErrorKind,
    fallback: &str,
    out: &mut Vec<Diagnostic>,
) {
    let root = &schema.schema;
    let value = doc.value.pointer(pointer);
    let at_value = doc.value_pos(pointer);
    let d = match kind {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed = allowed_keys(root, local);
            for key in unexpected {
                let child = pointer_push(pointer, key);
                let mut d = Diagnostic::error(
                    file,
                    doc.key_pos(&child),
                    &child,
                    format!("unknown field `{}`", excerpt(key)),
                );
                d = match did_you_mean(key, allowed.iter().map(String::as_str)) {
                    Some(m) => d.with_hint(format!("did you mean `{m}`?")),
                    None if !allowed.is_empty() => {
                        d.with_hint(format!("allowed fields: {}", allowed.join(", ")))
                    }
                    None => d,
                };
                out.push(d);
            }
            return;
        }
        ValidationErrorKind::Required { property } => {
            let name = scalar_text(property);
            let d = Diagnostic::error(
                file,
                doc.key_pos(pointer),
                pointer,
                format!("missing required field `{name}`"),
            );
            if pointer.is_empty() && name == "kind" {
                d.with_hint(
                    "add `kind: Connection` (or `kind: Plugin`, `kind: Forwarder`, `kind: Workspace`)",
                )
            } else {
                d
            }
        }
        ValidationErrorKind::Enum { .. }
        | ValidationErrorKind::Constant { .. }
        | ValidationErrorKind::OneOfNotValid { .. }
            if !allowed_values(root, local).is_empty() =>
        {
            let allowed = allowed_values(root, local);
            let text = value.map(scalar_text).unwrap_or_default();
            let d = Diagnostic::error(
                file,
                at_value,
                pointer,
                format!("`{}` is not one of: {}", excerpt(&text), allowed.join(", ")),
            );
            match did_you_mean(&text, allowed.iter().map(String::as_str)) {
                Some(m) => d.with_hint(format!("did you mean `{m}`?")),
                None => d,
            }
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
            if is_secret(root, local) =>
        {
            Diagnostic::error(file, at_value, pointer, "expected a secret reference")
                .with_hint(SECRET_HINT)
        }
        ValidationErrorKind::Type { .. } => Diagnostic::error(
            file,
            at_value,
            pointer,
            format!(
                "expected {}, found {}",
                expected_type(root, local),
                found_type(value)
            ),
        ),
        ValidationErrorKind::Pattern { pattern } => {
            let d = Diagnostic::error(
                file,
                at_value,
                pointer,
                format!("does not match the pattern `{pattern}`"),
            );
            if pattern.contains("[a-z0-9-]") {
                d.with_hint("use lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters")
            } else {
                d
            }
        }
        ValidationErrorKind::Minimum { limit } => {
            Diagnostic::error(file, at_value, pointer, format!("must be at least {limit}"))
        }
        ValidationErrorKind::Maximum { limit } => {
            Diagnostic::error(file, at_value, pointer, format!("must be at most {limit}"))
        }
        ValidationErrorKind::MinLength { limit } => Diagnostic::error(
            file,
            at_value,
            pointer,
            format!(
                "must be at least {limit} character{}",
                if *limit == 1 { "" } else { "s" }
            ),
        ),
        ValidationErrorKind::MaxLength { limit } => Diagnostic::error(
            file,
            at_value,
            pointer,
            format!("must be at most {limit} characters"),
        ),
        _ => Diagnostic::error(file, at_value, pointer, fallback.to_owned()),
    };
    out.push(d);
}

// Field rules beyond the JSON Schema. Each answers "what is wrong", or
// `None`; `config`'s checks turn the answer into a located diagnostic and
// `mail::SmtpTarget::validate` into a refusal, so a file that validates is
// one the runtime accepts.

/// What is wrong with an EHLO name, which goes into the SMTP dialogue as is:
/// it must be one non-empty token without spaces or control characters.
pub fn helo_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must be a single host name, without spaces or control characters")
    } else {
        None
    }
}

/// What is wrong with the effective credentials: SMTP AUTH needs both a
/// user name and a password, or neither.
pub fn credentials_problem(has_username: bool, has_password: bool) -> Option<&'static str> {
    match (has_username, has_password) {
        (true, false) => Some("`username` without `password`"),
        (false, true) => Some("`password` without `username`"),
        _ => None,
    }
}

/// Whether credentials would go over plaintext SMTP without the explicit
/// `allow_insecure_auth` opt-in (refused everywhere).
pub fn insecure_auth_refused(
    security: Security,
    has_credentials: bool,
    allow_insecure_auth: bool,
) -> bool {
    security == Security::None && has_credentials && !allow_insecure_auth
}

/// What is wrong with a pool size; the schema's `minimum` says the same
/// for `limits.max_connections`.
pub fn max_connections_problem(max_connections: u64) -> Option<&'static str> {
    (max_connections == 0).then_some("must be at least 1")
}
