//! Semantic checks the schema cannot express: port vs security, credentials
//! over plaintext, sender syntax, literal secrets, resolvable references.

use std::path::Path;

use super::diagnostic::{Diagnostic, did_you_mean};
use super::model::{ConnectionSpec, PluginSpec, Security, SmtpSpec};
use super::secret::SecretRef;
use super::yaml::Document;
use super::{LoadOptions, ProviderCatalog};

/// Context shared by the checks of one document.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub doc: &'a Document,
    pub opts: &'a LoadOptions,
    pub out: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, pointer: &str, message: impl Into<String>, hint: Option<&str>) {
        let mut d = Diagnostic::error(self.file, self.doc.value_pos(pointer), pointer, message);
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        self.out.push(d);
    }

    fn warning(&mut self, pointer: &str, message: impl Into<String>, hint: Option<&str>) {
        let mut d = Diagnostic::warning(self.file, self.doc.value_pos(pointer), pointer, message);
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        self.out.push(d);
    }

    fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    fn secret(&mut self, pointer: &str, secret: &SecretRef) {
        if secret.is_literal() {
            self.warning(
                pointer,
                "secret written inline; it will end up in Git history",
                Some("use `{ env: NAME }` or `{ file: PATH }`"),
            );
        }
        if self.opts.check_secrets
            && let Err(e) = secret.resolve(self.base_dir())
        {
            self.error(pointer, format!("cannot resolve secret: {e}"), None);
        }
    }
}

/// Checks one connection that already passed the schema.
pub(super) fn connection(
    ctx: &mut Ctx<'_>,
    spec: &ConnectionSpec,
    catalog: Option<&dyn ProviderCatalog>,
) {
    provider(ctx, spec, catalog);
    if let Some(smtp) = &spec.smtp {
        smtp_settings(ctx, smtp, spec.provider == "custom-smtp");
    }
    sender(ctx, spec);
    if let Some(secret) = spec.webhook.as_ref().and_then(|w| w.secret.as_ref()) {
        ctx.secret("/webhook/secret", secret);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, w) in spec.workspaces.iter().enumerate() {
        if !seen.insert(w) {
            ctx.warning(
                &format!("/workspaces/{i}"),
                format!("workspace `{w}` is listed twice"),
                None,
            );
        }
    }
}

fn provider(ctx: &mut Ctx<'_>, spec: &ConnectionSpec, catalog: Option<&dyn ProviderCatalog>) {
    if spec.provider == "custom-smtp" && spec.smtp.as_ref().and_then(|s| s.host.as_ref()).is_none()
    {
        let pointer = if spec.smtp.is_some() { "/smtp" } else { "" };
        ctx.error(
            pointer,
            "missing required field `smtp.host` for provider `custom-smtp`",
            Some("add `smtp: { host: ..., port: ..., security: ... }`, or set `provider:` to a named provider"),
        );
    }
    let Some(catalog) = catalog else { return };
    if !catalog.is_known(&spec.provider) {
        let ids = catalog.ids();
        let hint = match did_you_mean(&spec.provider, ids.iter().map(String::as_str)) {
            Some(m) => format!("did you mean `{m}`?"),
            None => format!("installed providers: {}", ids.join(", ")),
        };
        ctx.error(
            "/provider",
            format!("unknown provider `{}`", spec.provider),
            Some(&hint),
        );
        return;
    }
    let before = ctx.out.len();
    if let Some(schema) = catalog.options_schema(&spec.provider) {
        schema.check(ctx.file, ctx.doc, "/options", ctx.out);
    }
    if spec.provider == "custom-smtp" || ctx.out[before..].iter().any(Diagnostic::is_error) {
        return;
    }
    // Ask the plugin itself: it knows which settings it can turn into SMTP.
    let conn = super::Connection {
        spec: spec.clone(),
        source: super::SourceLocation {
            file: ctx.file.to_path_buf(),
            line: ctx.doc.start.line,
            column: ctx.doc.start.col,
        },
    };
    for (pointer, message) in catalog.adapt_errors(&conn) {
        ctx.error(
            &pointer,
            format!("provider `{}`: {message}", spec.provider),
            None,
        );
    }
}

/// `complete` is true when these are the full settings (custom SMTP) rather
/// than overrides of what a provider plugin fills in.
fn smtp_settings(ctx: &mut Ctx<'_>, smtp: &SmtpSpec, complete: bool) {
    match (smtp.port, smtp.security) {
        (Some(465), Some(Security::Starttls)) => ctx.error(
            "/smtp/security",
            "port 465 speaks implicit TLS, not STARTTLS",
            Some("use `security: tls` with port 465, or port 587 with `security: starttls`"),
        ),
        (Some(587), Some(Security::Tls)) => ctx.error(
            "/smtp/security",
            "port 587 is the STARTTLS submission port, not implicit TLS",
            Some("use `security: starttls` with port 587, or port 465 with `security: tls`"),
        ),
        (Some(25), Some(Security::Tls)) => ctx.warning(
            "/smtp/security",
            "port 25 normally speaks plain SMTP with STARTTLS, not implicit TLS",
            Some("use `security: starttls` unless this server really wraps port 25 in TLS"),
        ),
        (Some(p @ (465 | 587)), Some(Security::None)) => ctx.warning(
            "/smtp/security",
            format!("port {p} normally requires encryption but `security: none` is set"),
            Some(if p == 465 {
                "use `security: tls`"
            } else {
                "use `security: starttls`"
            }),
        ),
        _ => {}
    }
    let plaintext = smtp.security == Some(Security::None);
    let has_credentials = smtp.username.is_some() || smtp.password.is_some();
    if plaintext && has_credentials {
        if smtp.allow_insecure_auth {
            ctx.warning(
                "/smtp/allow_insecure_auth",
                "credentials will be sent unencrypted (`security: none` with `allow_insecure_auth: true`)",
                Some("only acceptable for a relay on a trusted local network"),
            );
        } else {
            let pointer = if smtp.password.is_some() {
                "/smtp/password"
            } else {
                "/smtp/username"
            };
            ctx.error(
                pointer,
                "credentials with `security: none` would be sent unencrypted",
                Some("use `security: starttls` or `tls`, or set `allow_insecure_auth: true` for a trusted local relay"),
            );
        }
    }
    match (&smtp.username, &smtp.password) {
        _ if !complete => {}
        (Some(_), None) => ctx.error(
            "/smtp/username",
            "`username` without `password`",
            Some(
                "add `password: { env: NAME }`, or remove `username` if the server needs no login",
            ),
        ),
        (None, Some(_)) => ctx.error("/smtp/password", "`password` without `username`", None),
        _ => {}
    }
    if let Some(password) = &smtp.password {
        ctx.secret("/smtp/password", password);
    }
    if let Some(tls) = &smtp.tls {
        if tls.verify == Some(false) {
            ctx.warning(
                "/smtp/tls/verify",
                "TLS certificate verification is disabled; anyone on the path can impersonate the server",
                Some("add the server's CA with `tls.ca_file` instead"),
            );
        }
        if plaintext {
            ctx.warning(
                "/smtp/tls",
                "`tls` settings have no effect with `security: none`",
                None,
            );
        }
        if let Some(ca) = &tls.ca_file
            && ctx.opts.check_secrets
            && let Err(e) = std::fs::metadata(ctx.base_dir().join(ca))
        {
            ctx.error(
                "/smtp/tls/ca_file",
                format!("cannot read CA file {}: {e}", ca.display()),
                None,
            );
        }
    }
    if smtp.allow_insecure_auth && !plaintext {
        ctx.warning(
            "/smtp/allow_insecure_auth",
            "`allow_insecure_auth` has no effect unless `security: none`",
            None,
        );
    }
}

fn sender(ctx: &mut Ctx<'_>, spec: &ConnectionSpec) {
    let email = spec.from.email.trim();
    if email.contains('<') {
        ctx.error(
            "/from/email",
            "`from.email` must be a bare address",
            Some("put the display name in `from.name` and only `user@domain` in `from.email`"),
        );
    } else if !email_address::EmailAddress::is_valid(email)
        || !email.contains('@')
        || email != spec.from.email
    {
        ctx.error(
            "/from/email",
            format!("`{}` is not a valid email address", spec.from.email),
            Some("expected `user@domain`, e.g. `news@example.com`"),
        );
    }
    if let Some(name) = &spec.from.name
        && name.chars().any(|c| c == '\r' || c == '\n')
    {
        ctx.error("/from/name", "`from.name` must be a single line", None);
    }
}

/// Checks one plugin registration: the file exists and matches its pin.
pub(super) fn plugin(ctx: &mut Ctx<'_>, spec: &PluginSpec) {
    let path = ctx.base_dir().join(&spec.path);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let actual = crate::runtime::sha256_hex(&bytes);
            if actual != spec.sha256 {
                ctx.error(
                    "/sha256",
                    format!(
                        "{} has sha256 {actual}, not the pinned value",
                        path.display()
                    ),
                    Some("if the new build is intended, update `sha256`"),
                );
            }
        }
        Err(e) => ctx.error(
            "/path",
            format!("cannot read plugin {}: {e}", path.display()),
            None,
        ),
    }
}
