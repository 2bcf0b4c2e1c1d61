//! SMTP helpers for plugins: status extraction from diagnostic text, and the
//! port/security defaults and checks `adapt-connection` implementations share.

use crate::types::{FieldError, Security};

/// The first SMTP reply code (`2xx`/`4xx`/`5xx`) in `text`, with the RFC 3463
/// enhanced status that directly follows it (after one space or hyphen).
///
/// Same result as the first match of
/// `(?<![\d.])([245]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?(?![\d.])`.
pub fn extract_status(text: &str) -> Option<(String, Option<String>)> {
    let b = text.as_bytes();
    let boundary = |i: usize| b.get(i).is_none_or(|c| !c.is_ascii_digit() && *c != b'.');
    for i in 0..b.len().saturating_sub(2) {
        if !matches!(b[i], b'2' | b'4' | b'5')
            || !b[i + 1].is_ascii_digit()
            || !b[i + 2].is_ascii_digit()
        {
            continue;
        }
        if i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.') {
            continue;
        }
        let code = &text[i..i + 3];
        if let Some(end) = enhanced_end(b, i + 3)
            && boundary(end)
        {
            return Some((code.to_owned(), Some(text[i + 4..end].to_owned())));
        }
        if boundary(i + 3) {
            return Some((code.to_owned(), None));
        }
    }
    None
}

/// End of `[ -][245].\d{1,3}.\d{1,3}` starting at `start`, with maximal digit runs.
fn enhanced_end(b: &[u8], start: usize) -> Option<usize> {
    if !matches!(b.get(start), Some(b' ' | b'-'))
        || !matches!(b.get(start + 1), Some(b'2' | b'4' | b'5'))
    {
        return None;
    }
    if b.get(start + 2) != Some(&b'.') {
        return None;
    }
    let run = |from: usize| {
        let n = b[from.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        (1..=3).contains(&n).then_some(from + n)
    };
    let mid = run(start + 3)?;
    if b.get(mid) != Some(&b'.') {
        return None;
    }
    run(mid + 1)
}

/// A field error at a JSON Pointer of the connection document.
pub fn field_error(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

/// Fills in port and security from each other: a mode's conventional port
/// (587 STARTTLS, 465 implicit TLS, 25 plaintext) and the mode a well-known
/// port implies (465 → TLS, any other → STARTTLS).
pub fn port_security_defaults(port: Option<u16>, security: Option<Security>) -> (u16, Security) {
    match (port, security) {
        (Some(p), Some(s)) => (p, s),
        (None, Some(Security::Tls)) | (Some(465), None) => (465, Security::Tls),
        (None, Some(Security::None)) => (25, Security::None),
        (None, Some(Security::Starttls)) | (None, None) => (587, Security::Starttls),
        (Some(p), None) => (p, Security::Starttls),
    }
}

/// Field errors for a port that cannot work or contradicts its security mode.
pub fn port_security_errors(port: u16, security: Security, errors: &mut Vec<FieldError>) {
    if port == 0 {
        errors.push(field_error("/smtp/port", "port 0 is not a valid SMTP port"));
    }
    match (port, security) {
        (465, Security::Starttls) => errors.push(field_error(
            "/smtp/security",
            "port 465 speaks implicit TLS: use security: tls (or port 587 for starttls)",
        )),
        (587, Security::Tls) => errors.push(field_error(
            "/smtp/security",
            "port 587 expects STARTTLS: use security: starttls (or port 465 for tls)",
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{extract_status, port_security_defaults};
    use crate::types::Security;

    fn st(t: &str) -> Option<(String, Option<String>)> {
        extract_status(t)
    }

    #[test]
    fn finds_code_and_enhanced_status() {
        assert_eq!(
            st("550 5.1.1 user unknown"),
            Some(("550".into(), Some("5.1.1".into())))
        );
        assert_eq!(
            st("smtp;550-5.7.1 blocked"),
            Some(("550".into(), Some("5.7.1".into())))
        );
        assert_eq!(st("421 try later"), Some(("421".into(), None)));
        assert_eq!(st("550 5.1.1. oops"), Some(("550".into(), None)));
    }

    #[test]
    fn ignores_numbers_inside_other_numbers() {
        assert_eq!(st("192.0.2.250 said no"), None);
        assert_eq!(st("code 5500"), None);
        assert_eq!(
            st("id 1550 then 452 4.2.2 full"),
            Some(("452".into(), Some("4.2.2".into())))
        );
        assert_eq!(st("nothing here"), None);
    }

    /// The shared table the host's implementation is tested against too.
    #[test]
    fn port_security_defaults_match_the_shared_table() {
        #[derive(serde::Deserialize)]
        struct Table {
            cases: Vec<Case>,
        }
        // Unknown fields fail the test: a new input column would otherwise be
        // silently ignored here while the host honours it.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Case {
            port: Option<u16>,
            security: Option<String>,
            effective_port: u16,
            effective_security: String,
        }
        fn security(name: &str) -> Security {
            match name {
                "starttls" => Security::Starttls,
                "tls" => Security::Tls,
                "none" => Security::None,
                other => panic!("unknown security {other:?} in the table"),
            }
        }
        let table: Table = serde_json::from_str(include_str!(
            "../../../tests/fixtures/port-security-defaults.json"
        ))
        .expect("tests/fixtures/port-security-defaults.json parses");
        assert!(!table.cases.is_empty());
        for case in &table.cases {
            let security_in = case.security.as_deref().map(security);
            assert_eq!(
                port_security_defaults(case.port, security_in),
                (case.effective_port, security(&case.effective_security)),
                "port {:?}, security {:?}",
                case.port,
                case.security
            );
        }
    }
}
