//! Semantic checks the schema cannot express — port vs security, credentials
//! over plaintext, sender syntax, EHLO name, literal secrets, resolvable
//! references, the provider's own options schema and field errors — and the
//! effective SMTP settings they establish. The rules the SMTP runtime also
//! enforces come from `schema`'s shared rule functions, never restated here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

use super::LoadOptions;
use super::catalog::{AdaptFailure, PasswordSource, ProviderCatalog, SmtpOverrides};
use super::compile::Sections;
use super::connection::{
    Mailbox, OWNED_HEADERS, PasswordRef, Provider, Security, Smtp, effective_port_security,
};
use super::diagnostic::{Diagnostic, PLUGIN_MESSAGE_CHARS, did_you_mean, excerpt, truncated};

use super::model::{FromSpec, PluginSpec, SmtpSpec};
use super::schema::{credentials_problem, helo_name_problem, insecure_auth_refused};
use super::secret::SecretRef;
use super::yaml::Document;
use crate::address::{self, AddressError};

/// Field errors of one plugin call reported per connection; a plugin that
/// returns thousands cannot flood the output.
const MAX_PLUGIN_FIELD_ERRORS: usize = 20;

/// Context shared by the checks of one document.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub doc: &'a Document,
    pub opts: &'a LoadOptions,
    pub out: &'a mut Vec<Diagnostic>,
    /// Diagnostics before this index belong to earlier documents.
    pub before: usize,
}

impl Ctx<'_> {
    fn push(&mut self, d: Diagnostic, hint: Option<&str>) {
        self.out.push(match hint {
            Some(h) => d.with_hint(h),
            None => d,
        });
    }

    pub(super) fn error(&mut self, pointer: &str, message: impl Into<String>, hint: Option<&str>) {
        let d = Diagnostic::error(self.file, self.doc.value_pos(pointer), pointer, message);
        self.push(d, hint);
    }

    /// An error about a field that is missing: located at its parent's key.
    pub(super) fn missing(&mut self, parent: &str, message: impl Into<String>, hint: Option<&str>) {
        let d = Diagnostic::error(self.file, self.doc.key_pos(parent), parent, message);
        self.push(d, hint);
    }

    pub(super) fn warning(
        &mut self,
        pointer: &str,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        let d = Diagnostic::warning(self.file, self.doc.value_pos(pointer), pointer, message);
        self.push(d, hint);
    }

    /// Whether this document has errors so far.
    pub fn has_errors(&self) -> bool {
        self.out[self.before..].iter().any(Diagnostic::is_error)
    }

    /// The schema and the serde types disagree: a bug, reported, not a panic.
    pub fn internal(&mut self, what: &str) {
        let d = Diagnostic::error(
            self.file,
            self.doc.start,
            "",
            format!("invalid document ({what})"),
        );
        self.out.push(d);
    }

    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// A webhook verification key: like [`Ctx::secret`], except that a
    /// public key written inline is no secret and gets no warning.
    pub fn webhook_secret(&mut self, pointer: &str, secret: &SecretRef) {
        if let SecretRef::Literal(value) = secret
            && looks_like_public_key(value)
        {
            return;
        }
        self.secret(pointer, secret);
    }

    pub fn secret(&mut self, pointer: &str, secret: &SecretRef) {
        if *secret == SecretRef::Literal(String::new()) {
            // An empty environment variable or file is refused when resolved;
            // an empty literal is the same mistake, written down.
            self.error(
                pointer,
                "secret is empty",
                Some("use `{ env: NAME }` or `{ file: PATH }` holding the real value"),
            );
            return;
        }
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

/// The provider, when it is installed and its `options` pass its schema.
pub(super) fn provider(
    ctx: &mut Ctx<'_>,
    s: &Sections,
    catalog: &dyn ProviderCatalog,
) -> Option<Provider> {
    let id = s.provider.as_deref()?;
    if !catalog.is_known(id) {
        let ids = catalog.ids();
        let hint = match did_you_mean(id, ids.iter().map(String::as_str)) {
            Some(m) => format!("did you mean `{m}`?"),
            None => format!("installed providers: {}", ids.join(", ")),
        };
        ctx.error(
            "/provider",
            format!("unknown provider `{}`", excerpt(id)),
            Some(&hint),
        );
        return None;
    }
    let before = ctx.out.len();
    if let Some(schema) = catalog.options_schema(id) {
        schema.check(ctx.file, ctx.doc, "/options", ctx.out);
    }
    if ctx.out[before..].iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(Provider::from_id(id))
}

/// Checks the `smtp:` section and works out the effective settings: the
/// host's rule for Custom SMTP, the plugin's `adapt-connection` answer
/// with the explicit fields on top for every other provider.
pub(super) fn smtp(
    ctx: &mut Ctx<'_>,
    provider: &Provider,
    spec: Option<&SmtpSpec>,
    options: Option<&BTreeMap<String, Value>>,
    catalog: &dyn ProviderCatalog,
) -> Option<Smtp> {
    let default = SmtpSpec::default();
    let explicit = spec.unwrap_or(&default);
    let custom = *provider == Provider::CustomSmtp;
    let before = ctx.out.len();
    explicit_pair(ctx, explicit);
    if custom {
        credentials_pairing(ctx, explicit);
    }
    if let Some(password) = &explicit.password {
        ctx.secret("/smtp/password", password);
    }
    tls(ctx, explicit);
    if let Some(helo) = &explicit.helo_name
        && let Some(problem) = helo_name_problem(helo)
    {
        ctx.error(
            "/smtp/helo_name",
            format!("`helo_name` {problem}"),
            Some("it is sent in EHLO as is: use this machine's DNS name, e.g. `mail.example.com`"),
        );
    }
    let explicit_ok = !ctx.out[before..].iter().any(Diagnostic::is_error);

    let smtp_password = explicit.password.clone().map(|secret| PasswordRef {
        secret,
        pointer: "/smtp/password".to_owned(),
    });
    let mut extra_headers = Vec::new();
    let (host, port, security, username, password, username_secret) = match provider {
        Provider::CustomSmtp => {
            // `options.headers` (name → value): the custom-smtp plugin's
            // schema, applied here by the host like a plugin's answer.
            if let Some(Value::Object(headers)) = options.and_then(|o| o.get("headers")) {
                for (name, value) in headers {
                    let pointer = format!("/options/headers/{}", super::yaml::pointer_escape(name));
                    let value = value.as_str().unwrap_or_default();
                    let valid_name =
                        !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                    if !valid_name || value.contains(['\r', '\n']) {
                        ctx.error(
                            &pointer,
                            "not a header name, or a value with a line break",
                            None,
                        );
                        return None;
                    }
                    extra_headers.push((name.clone(), value.to_owned()));
                }
            }
            let Some(host) = explicit.host.clone() else {
                let parent = if spec.is_some() { "/smtp" } else { "" };
                ctx.missing(
                    parent,
                    "missing required field `smtp.host` for provider `custom-smtp`",
                    Some("add `smtp: { host: ..., port: ..., security: ... }`, or set `provider:` to a named provider"),
                );
                return None;
            };
            let (port, security) = effective_port_security(explicit.port, explicit.security);
            (
                host,
                port,
                security,
                explicit.username.clone(),
                smtp_password,
                None,
            )
        }
        // Field errors in `smtp:` would only be reported twice by the plugin.
        Provider::Plugin(_) if !explicit_ok => return None,
        Provider::Plugin(id) => {
            let options = options?;
            let overrides = SmtpOverrides {
                host: explicit.host.clone(),
                port: explicit.port,
                security: explicit.security,
                username: explicit.username.clone(),
                has_password: explicit.password.is_some(),
            };
            let adapted = match catalog.adapt(id, options, &overrides) {
                Ok(a) => a,
                Err(AdaptFailure::Fields(fields)) => {
                    // The plugin's words, not ours: cut (the text output
                    // escapes them), and only the first few of a flood.
                    let total = fields.len();
                    for (pointer, message) in fields.into_iter().take(MAX_PLUGIN_FIELD_ERRORS) {
                        ctx.error(
                            &pointer,
                            format!(
                                "provider `{id}`: {}",
                                truncated(&message, PLUGIN_MESSAGE_CHARS)
                            ),
                            None,
                        );
                    }
                    if total > MAX_PLUGIN_FIELD_ERRORS {
                        ctx.error(
                            "/provider",
                            format!(
                                "provider `{id}`: {} more field errors not shown",
                                total - MAX_PLUGIN_FIELD_ERRORS
                            ),
                            None,
                        );
                    }
                    return None;
                }
                Err(AdaptFailure::Failed(reason)) => {
                    ctx.error(
                        "/provider",
                        format!("provider `{id}`: adapt-connection failed: {reason}"),
                        Some("the plugin could not turn these settings into SMTP; see its documentation (`mailplug plugin inspect`)"),
                    );
                    return None;
                }
            };
            // A user name the plugin takes from a secret: the file's own
            // `smtp.username` still wins, then the secret, then the
            // plugin's plain one.
            let username_secret = match (&explicit.username, adapted.username_secret) {
                (Some(_), _) | (None, PasswordSource::None) => None,
                (None, PasswordSource::SmtpPassword) => {
                    let Some(password) = smtp_password.clone() else {
                        ctx.error(
                            "/smtp/password",
                            format!("provider `{id}` takes the SMTP user name from smtp.password, which is not set"),
                            Some("add `password: { env: NAME }` to `smtp:`"),
                        );
                        return None;
                    };
                    Some(password)
                }
                (None, PasswordSource::OptionsField(field)) => {
                    Some(options_secret(ctx, id, options, &field, "user name")?)
                }
            };
            let password = match (smtp_password, adapted.password) {
                (Some(p), _) => Some(p),
                (None, PasswordSource::None | PasswordSource::SmtpPassword) => None,
                (None, PasswordSource::OptionsField(field)) => {
                    Some(options_secret(ctx, id, options, &field, "password")?)
                }
            };
            let username = if username_secret.is_some() {
                None
            } else {
                explicit.username.clone().or(adapted.username)
            };
            extra_headers = adapted.extra_headers;
            (
                explicit.host.clone().unwrap_or(adapted.host),
                explicit.port.unwrap_or(adapted.port),
                explicit.security.unwrap_or(adapted.security),
                username,
                password,
                username_secret,
            )
        }
    };
    for (name, _) in &extra_headers {
        if OWNED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            let pointer = if custom {
                format!("/options/headers/{}", super::yaml::pointer_escape(name))
            } else {
                "/provider".to_owned()
            };
            ctx.error(
                &pointer,
                format!("the header `{}` is one mailplug sets itself", excerpt(name)),
                Some("extra headers may add fields, not replace From, To, Subject, Message-ID and the like"),
            );
            return None;
        }
    }
    if !custom {
        // A provider may fill in one half of the login; the runtime refuses
        // half a login whoever wrote it.
        let has_username = username.is_some() || username_secret.is_some();
        effective_credentials(ctx, explicit, has_username, password.is_some());
    }
    plaintext_credentials(
        ctx,
        explicit,
        security,
        username.is_some() || username_secret.is_some() || password.is_some(),
    );
    // TLS needs a host the certificate can be checked against, which the
    // runtime refuses otherwise (`mail::tls`): say so at validation time.
    if security != Security::None && rustls_pki_types::ServerName::try_from(host.as_str()).is_err()
    {
        let pointer = if explicit.host.is_some() {
            "/smtp/host"
        } else {
            "/provider"
        };
        ctx.error(
            pointer,
            format!(
                "`{}` is not a valid host name or IP address for TLS",
                excerpt(&host)
            ),
            Some("use the server's DNS name (the one on its certificate) or an IP address"),
        );
        return None;
    }
    let tls = explicit.tls.clone().unwrap_or_default();
    let base = ctx.base_dir().to_path_buf();
    Some(Smtp {
        host,
        port,
        security,
        username,
        username_secret,
        password,
        ca_file: tls
            .ca_file
            .map(|p| if p.is_absolute() { p } else { base.join(p) }),
        verify_tls: tls.verify.unwrap_or(true),
        helo_name: explicit.helo_name.clone(),
        allow_insecure_auth: explicit.allow_insecure_auth,
        extra_headers,
    })
}

/// The secret reference a plugin designated inside `options`.
fn options_secret(
    ctx: &mut Ctx<'_>,
    id: &str,
    options: &BTreeMap<String, Value>,
    field: &str,
    what: &str,
) -> Option<PasswordRef> {
    let pointer = format!("/options{field}");
    let tree = Value::Object(
        options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    let node = tree.pointer(field);
    match node.map(SecretRef::deserialize) {
        Some(Ok(secret)) => {
            ctx.secret(&pointer, &secret);
            Some(PasswordRef { secret, pointer })
        }
        _ => {
            ctx.error(
                &pointer,
                format!("provider `{id}` reads the SMTP {what} from here, but it is not a secret reference"),
                Some("write `{ env: NAME }` or `{ file: PATH }`"),
            );
            None
        }
    }
}

/// Explicit port/security pairs that cannot work.
fn explicit_pair(ctx: &mut Ctx<'_>, smtp: &SmtpSpec) {
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
}

/// Custom SMTP logs in with both fields or neither (providers may fill one
/// in; [`effective_credentials`] checks what they leave).
fn credentials_pairing(ctx: &mut Ctx<'_>, smtp: &SmtpSpec) {
    let (user, pass) = (smtp.username.is_some(), smtp.password.is_some());
    if let Some(problem) = credentials_problem(user, pass) {
        let (pointer, hint) = if user {
            (
                "/smtp/username",
                Some(
                    "add `password: { env: NAME }`, or remove `username` if the server needs no login",
                ),
            )
        } else {
            ("/smtp/password", None)
        };
        ctx.error(pointer, problem, hint);
    }
}

/// The login a provider connection ends up with, explicit fields and the
/// plugin's answer together.
fn effective_credentials(ctx: &mut Ctx<'_>, smtp: &SmtpSpec, user: bool, pass: bool) {
    let Some(problem) = credentials_problem(user, pass) else {
        return;
    };
    let pointer = if smtp.username.is_some() {
        "/smtp/username"
    } else if smtp.password.is_some() {
        "/smtp/password"
    } else {
        "/provider"
    };
    ctx.error(
        pointer,
        format!("{problem} once the provider's settings are applied"),
        Some("set both `smtp.username` and `smtp.password`, or neither"),
    );
}

fn plaintext_credentials(
    ctx: &mut Ctx<'_>,
    smtp: &SmtpSpec,
    security: Security,
    has_credentials: bool,
) {
    let refused = insecure_auth_refused(security, has_credentials, smtp.allow_insecure_auth);
    if security != Security::None || !has_credentials {
        if smtp.allow_insecure_auth && security != Security::None {
            ctx.warning(
                "/smtp/allow_insecure_auth",
                "`allow_insecure_auth` has no effect unless `security: none`",
                None,
            );
        }
        return;
    }
    if smtp.allow_insecure_auth {
        ctx.warning(
            "/smtp/allow_insecure_auth",
            "credentials will be sent unencrypted (`security: none` with `allow_insecure_auth: true`)",
            Some("only acceptable for a relay on a trusted local network"),
        );
    }
    if refused {
        let pointer = if smtp.password.is_some() {
            "/smtp/password"
        } else if smtp.username.is_some() {
            "/smtp/username"
        } else {
            "/smtp/security"
        };
        ctx.error(
            pointer,
            "credentials with `security: none` would be sent unencrypted",
            Some("use `security: starttls` or `tls`, or set `allow_insecure_auth: true` for a trusted local relay"),
        );
    }
}

fn tls(ctx: &mut Ctx<'_>, smtp: &SmtpSpec) {
    let Some(tls) = &smtp.tls else { return };
    if tls.verify == Some(false) {
        ctx.warning(
            "/smtp/tls/verify",
            "TLS certificate verification is disabled; anyone on the path can impersonate the server",
            Some("add the server's CA with `tls.ca_file` instead"),
        );
    }
    if smtp.security == Some(Security::None) {
        ctx.warning(
            "/smtp/tls",
            "`tls` settings have no effect with `security: none`",
            None,
        );
    }
    if let Some(ca) = &tls.ca_file
        && ctx.opts.check_secrets
        && let Err(e) = crate::mail::read_ca_file(&ctx.base_dir().join(ca))
    {
        ctx.error(
            "/smtp/tls/ca_file",
            format!(
                "cannot read CA file {}: {e}",
                excerpt(&ca.to_string_lossy())
            ),
            None,
        );
    }
}

/// The From identity, parsed.
pub(super) fn sender(ctx: &mut Ctx<'_>, from: &FromSpec) -> Option<Mailbox> {
    let mut ok = true;
    if let Some(name) = &from.name
        && name.chars().any(|c| c == '\r' || c == '\n')
    {
        ctx.error("/from/name", "`from.name` must be a single line", None);
        ok = false;
    }
    match address::parse(&from.email) {
        Ok(email) => ok.then(|| Mailbox {
            name: from.name.clone(),
            email,
        }),
        Err(AddressError::NotBare(_)) => {
            ctx.error(
                "/from/email",
                "`from.email` must be a bare address",
                Some("put the display name in `from.name` and only `user@domain` in `from.email`"),
            );
            None
        }
        Err(AddressError::Invalid(_)) => {
            ctx.error(
                "/from/email",
                format!("`{}` is not a valid email address", excerpt(&from.email)),
                Some("expected `user@domain`, e.g. `news@example.com`"),
            );
            None
        }
    }
}

pub(super) fn workspaces(ctx: &mut Ctx<'_>, workspaces: &[String]) {
    let mut seen = std::collections::HashSet::new();
    for (i, w) in workspaces.iter().enumerate() {
        if !seen.insert(w) {
            ctx.warning(
                &format!("/workspaces/{i}"),
                format!("workspace `{}` is listed twice", excerpt(w)),
                None,
            );
        }
    }
}

/// Checks one plugin registration: the file exists and matches its pin.
pub(super) fn plugin(ctx: &mut Ctx<'_>, spec: &PluginSpec) {
    let path = ctx.base_dir().join(&spec.path);
    match crate::fsread::read_bounded(&path, crate::runtime::MAX_PLUGIN_BYTES) {
        Ok(bytes) => {
            let actual = crate::digest::sha256_hex(&bytes);
            if actual != spec.sha256 {
                ctx.error(
                    "/sha256",
                    format!(
                        "{} has sha256 {actual}, not the pinned value",
                        excerpt(&path.to_string_lossy())
                    ),
                    Some("if the new build is intended, update `sha256`"),
                );
            }
        }
        Err(e) => ctx.error(
            "/path",
            format!(
                "cannot read plugin {}: {e}",
                excerpt(&path.to_string_lossy())
            ),
            None,
        ),
    }
}

/// Whether an inline value is a public verification key: PEM `PUBLIC KEY`,
/// a Standard Webhooks `whpk_` key, or base64 DER SubjectPublicKeyInfo of an
/// EC, RSA or Ed25519 key (what SendGrid's dashboard shows).
pub(super) fn looks_like_public_key(value: &str) -> bool {
    use base64::Engine as _;
    let v = value.trim();
    if v.starts_with("-----BEGIN PUBLIC KEY-----")
        || v.starts_with("-----BEGIN RSA PUBLIC KEY-----")
    {
        return true;
    }
    if v.starts_with("whpk_") {
        return true;
    }
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(v) else {
        return false;
    };
    const OIDS: [&[u8]; 3] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
        &[0x06, 0x03, 0x2b, 0x65, 0x70],
    ];
    der.first() == Some(&0x30)
        && OIDS
            .iter()
            .any(|oid| der.windows(oid.len()).take(32).any(|w| w == *oid))
}
