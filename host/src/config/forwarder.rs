//! `kind: Forwarder`: the compiled [`Forwarder`] every consumer (the
//! forwarding worker, the ingest pipeline's matching, the admin API) reads,
//! the checks a JSON Schema cannot express (one of `url`/`file`, the URL's
//! scheme and shape, durations and their bounds, the `whsec_` secret) and
//! the one place the defaults are resolved.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use super::SourceLocation;
use super::check::Ctx;
use super::diagnostic::excerpt;
use super::model::ForwarderSpec;
use super::secret::SecretRef;
use crate::event::EventKind;

/// Default of `max_age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default of `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default of `retry.initial_delay`.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Default of `retry.max_delay`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(600);

/// Where a forwarder sends events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// POST each event to this `http`/`https` URL, signed.
    Url(String),
    /// Append each event as one line to this file (absolute path).
    File(PathBuf),
}

impl Target {
    /// `url` or `file`, for the API and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Url(_) => "url",
            Self::File(_) => "file",
        }
    }
}

/// Backoff bounds: the wait after attempt `n` is drawn uniformly from
/// `0..=min(max_delay, initial_delay * 2^(n-1))` (full jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Upper bound of the first wait.
    pub initial_delay: Duration,
    /// Largest upper bound of any wait.
    pub max_delay: Duration,
}

/// A validated, compiled forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    /// Unique name; the outbox keys queued events on it.
    pub name: String,
    /// The workspace whose events it receives.
    pub workspace: String,
    /// Where events go.
    pub target: Target,
    /// The `whsec_` signing secret (always set for [`Target::Url`]).
    pub secret: Option<SecretRef>,
    /// Kinds forwarded; `None`: every kind.
    pub kinds: Option<BTreeSet<KindName>>,
    /// Retried until this long after being queued, then dead-lettered.
    pub max_age: Duration,
    /// Bound on one attempt.
    pub timeout: Duration,
    /// Recipients delivered at once.
    pub concurrency: usize,
    /// Backoff bounds.
    pub retry: Retry,
    /// Where it was defined.
    pub source: SourceLocation,
}

/// An event kind by its wire name (ordered, so filters print stably).
pub type KindName = &'static str;

impl Forwarder {
    /// Whether an event of `kind`, stored for a connection serving
    /// `workspaces`, is forwarded here.
    pub fn accepts(&self, workspaces: &[String], kind: EventKind) -> bool {
        workspaces.contains(&self.workspace)
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.contains(kind.as_str()))
    }

    /// Directory relative secret paths are resolved against.
    pub fn base_dir(&self) -> &std::path::Path {
        self.source
            .file
            .parent()
            .unwrap_or(std::path::Path::new("."))
    }
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, &'static str> {
    let Some(encoded) = secret.trim().strip_prefix("whsec_") else {
        return Err("a Standard Webhooks secret starts with `whsec_`");
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if key.is_empty() => Err("the key after `whsec_` is empty"),
        Ok(key) => Ok(key),
        Err(_) => Err("the part after `whsec_` is not valid base64"),
    }
}

/// What is wrong with a forwarder URL, or `None`.
pub fn url_problem(url: &str) -> Option<String> {
    let uri: axum::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("not a valid URL: {e}")),
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Some(format!(
                "scheme `{}` is not supported; use `https` (or `http`)",
                excerpt(other)
            ));
        }
        None => {
            return Some("expected an absolute URL such as `https://app.example.com/hooks`".into());
        }
    }
    let Some(authority) = uri.authority() else {
        return Some("the URL has no host".into());
    };
    if authority.as_str().contains('@') {
        return Some("credentials in the URL are not supported; the receiver authenticates requests by their signature".into());
    }
    if authority.host().is_empty() {
        return Some("the URL has no host".into());
    }
    None
}

fn is_loopback_host(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("");
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses a duration field within bounds, reporting at `pointer`.
pub(super) fn duration(
    ctx: &mut Ctx<'_>,
    pointer: &str,
    text: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Option<Duration> {
    let Some(text) = text else {
        return Some(default);
    };
    let bounds = format!(
        "between {} and {}",
        humantime::format_duration(min),
        humantime::format_duration(max)
    );
    match humantime::parse_duration(text) {
        Ok(d) if d >= min && d <= max => Some(d),
        Ok(_) => {
            ctx.error(pointer, format!("must be {bounds}"), None);
            None
        }
        Err(_) => {
            ctx.error(
                pointer,
                format!("`{}` is not a duration", excerpt(text)),
                Some("write a number and a unit, e.g. `500ms`, `10s`, `15m`, `24h`, `7days`"),
            );
            None
        }
    }
}

/// Checks a forwarder document and compiles it when it is clean.
pub(super) fn compile(
    ctx: &mut Ctx<'_>,
    spec: ForwarderSpec,
    source: SourceLocation,
) -> Option<Forwarder> {
    let target = match (&spec.url, &spec.file) {
        (Some(_), Some(_)) => {
            ctx.error(
                "/file",
                "`url` and `file` are both set",
                Some("a forwarder has one destination: keep `url` or `file`, and define a second forwarder for the other"),
            );
            None
        }
        (None, None) => {
            ctx.missing(
                "",
                "missing `url` or `file`",
                Some("add `url: https://...` (signed HTTP POST) or `file: /absolute/path.ndjson`"),
            );
            None
        }
        (Some(url), None) => match url_problem(url) {
            Some(problem) => {
                ctx.error("/url", problem, None);
                None
            }
            None => {
                if url.starts_with("http://") && !is_loopback_host(url) {
                    ctx.warning(
                        "/url",
                        "events are sent unencrypted over `http`",
                        Some("use `https` unless the receiver is on a trusted network"),
                    );
                }
                Some(Target::Url(url.clone()))
            }
        },
        (None, Some(file)) => {
            if file.is_absolute() {
                Some(Target::File(file.clone()))
            } else {
                ctx.error(
                    "/file",
                    "`file` must be an absolute path",
                    Some("the daemon's working directory is not a stable place for a log; write e.g. `/var/log/mailplug/events.ndjson`"),
                );
                None
            }
        }
    };
    match (&spec.secret, &target) {
        (None, Some(Target::Url(_))) => ctx.missing(
            "",
            "missing `secret`: events sent to a `url` are signed",
            Some(
                "add `secret: { env: NAME }` holding a Standard Webhooks secret (`whsec_<base64>`)",
            ),
        ),
        (Some(_), Some(Target::File(_))) => ctx.warning(
            "/secret",
            "`secret` has no effect with `file` (lines are not signed)",
            None,
        ),
        (Some(secret), _) => {
            ctx.secret("/secret", secret);
            if let SecretRef::Literal(value) = secret
                && !value.is_empty()
                && let Err(problem) = signing_key(value)
            {
                ctx.error("/secret", problem, Some("copy the secret as the receiver shows it, e.g. `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`"));
            }
            if !secret.is_literal()
                && ctx.opts.check_secrets
                && let Ok(value) = secret.resolve(ctx.base_dir())
                && let Err(problem) = signing_key(value.expose())
            {
                ctx.error(
                    "/secret",
                    format!("the resolved secret is unusable: {problem}"),
                    None,
                );
            }
        }
        (None, _) => {}
    }
    let max_age = duration(
        ctx,
        "/max_age",
        spec.max_age.as_deref(),
        DEFAULT_MAX_AGE,
        (Duration::from_secs(1), Duration::from_secs(30 * 24 * 3600)),
    );
    let timeout = duration(
        ctx,
        "/timeout",
        spec.timeout.as_deref(),
        DEFAULT_TIMEOUT,
        (Duration::from_millis(100), Duration::from_secs(300)),
    );
    let retry = spec.retry.clone().unwrap_or_default();
    let initial_delay = duration(
        ctx,
        "/retry/initial_delay",
        retry.initial_delay.as_deref(),
        DEFAULT_INITIAL_DELAY,
        (Duration::from_millis(10), Duration::from_secs(3600)),
    );
    let max_delay = duration(
        ctx,
        "/retry/max_delay",
        retry.max_delay.as_deref(),
        DEFAULT_MAX_DELAY.max(initial_delay.unwrap_or_default()),
        (Duration::from_millis(10), Duration::from_secs(24 * 3600)),
    );
    if let (Some(initial), Some(max)) = (initial_delay, max_delay)
        && max < initial
    {
        ctx.error(
            "/retry/max_delay",
            "`max_delay` is shorter than `initial_delay`",
            None,
        );
    }
    let mut kinds = None;
    if let Some(list) = &spec.kinds {
        let mut set = BTreeSet::new();
        for (i, kind) in list.iter().enumerate() {
            if !set.insert(kind.as_str()) {
                ctx.warning(
                    &format!("/kinds/{i}"),
                    format!("kind `{}` is listed twice", kind.as_str()),
                    None,
                );
            }
        }
        kinds = Some(set);
    }
    if ctx.has_errors() {
        return None;
    }
    let (Some(target), Some(max_age), Some(timeout), Some(initial_delay), Some(max_delay)) =
        (target, max_age, timeout, initial_delay, max_delay)
    else {
        ctx.internal("forwarder fields missing after a clean check");
        return None;
    };
    Some(Forwarder {
        name: spec.name,
        workspace: spec.workspace,
        target,
        secret: spec.secret,
        kinds,
        max_age,
        timeout,
        concurrency: spec
            .concurrency
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(DEFAULT_CONCURRENCY)
            .clamp(1, 64),
        retry: Retry {
            initial_delay,
            max_delay,
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_are_the_base64_after_whsec() {
        assert_eq!(signing_key("whsec_AAEC").unwrap(), vec![0, 1, 2]);
        assert!(signing_key("AAEC").is_err());
        assert!(signing_key("whsec_").is_err());
        assert!(signing_key("whsec_not base64!").is_err());
    }

    #[test]
    fn only_absolute_http_urls_without_credentials_pass() {
        assert_eq!(url_problem("https://app.example.com/hooks?x=1"), None);
        assert_eq!(url_problem("http://127.0.0.1:9/x"), None);
        for bad in [
            "ftp://example.com/",
            "/relative",
            "https://user:pw@example.com/",
            "not a url",
        ] {
            assert!(url_problem(bad).is_some(), "{bad}");
        }
        assert!(is_loopback_host("http://[::1]:80/"));
        assert!(!is_loopback_host("http://example.com/"));
    }
}
