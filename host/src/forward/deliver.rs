//! One delivery attempt, blocking (run on the blocking pool): a signed POST
//! through an agent that follows no redirects and uses no proxy, so a
//! request only ever goes to the configured URL; or one NDJSON line
//! appended and synced.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use crate::config::diagnostic::truncated;

/// Longest error text kept for an attempt (it lands in the store and API).
const MAX_ERROR_CHARS: usize = 300;

fn short(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncated(&one_line, MAX_ERROR_CHARS).into_owned()
}

/// An HTTP agent for forwarders with this attempt timeout.
pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A 3xx is an answer like any other non-2xx: a failed attempt.
        .max_redirects(0)
        // Outbound requests go to the configured URL only, never through
        // an HTTP(S)_PROXY the process environment happens to name.
        .proxy(None)
        .timeout_global(Some(timeout))
        .user_agent(concat!("mailplug/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The Standard Webhooks headers of one attempt.
pub(super) struct Signed<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
}

/// POSTs `body`; `Ok` on a 2xx answer.
pub(super) fn post(
    agent: &ureq::Agent,
    url: &str,
    signed: &Signed<'_>,
    body: &[u8],
) -> Result<(), String> {
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", signed.id)
        .header("webhook-timestamp", signed.timestamp.to_string())
        .header("webhook-signature", signed.signature)
        .send(body);
    match response {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) if r.status().is_redirection() => Err(format!(
            "HTTP {} (redirects are not followed; configure the final URL)",
            r.status().as_u16()
        )),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(short(&e.to_string())),
    }
}

/// Appends `line` and a newline to `path` and syncs it to disk.
pub(super) fn append(path: &Path, line: &[u8]) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Err(short(&format!("{what} {}: {e}", path.display())))
    };
    let mut file = match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        // A FIFO without a reader fails at once instead of blocking.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return fail("opening", &e),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return fail("not a regular file:", &"refusing to write"),
        Err(e) => return fail("inspecting", &e),
    }
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    if let Err(e) = file.write_all(&buf) {
        return fail("writing", &e);
    }
    if let Err(e) = file.sync_data() {
        return fail("syncing", &e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_whole_lines_and_refuses_what_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        append(&path, b"{\"a\":1}").unwrap();
        append(&path, b"{\"a\":2}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        let err = append(dir.path(), b"{}").unwrap_err();
        assert!(
            err.contains("events") || err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        let missing = append(&dir.path().join("no/such/dir.ndjson"), b"{}").unwrap_err();
        assert!(missing.starts_with("opening"), "{missing}");
    }

    #[test]
    fn error_texts_are_one_short_line() {
        let long = format!("a\nb{}", "x".repeat(1000));
        let s = short(&long);
        assert!(!s.contains('\n'));
        assert_eq!(
            s.chars().count(),
            MAX_ERROR_CHARS + 1,
            "cut, with an ellipsis"
        );
    }
}
