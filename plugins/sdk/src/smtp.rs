//! SMTP helpers for plugins: status extraction from diagnostic text, and the
//! port/security defaults and checks `adapt-connection` implementations share.

use crate::types::{FieldError, PasswordSource, Security, SmtpOverrides, SmtpSettings};

/// Whether `s` is exactly an SMTP reply code: three digits, the first 2, 4
/// or 5, the classes that report an outcome (RFC 5321 §4.2.1: SMTP uses no
/// 1xx, and 3xx is an intermediate reply).
pub fn is_reply_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && matches!(b[0], b'2' | b'4' | b'5') && b[1..].iter().all(u8::is_ascii_digit)
}

/// Whether `s` is exactly an RFC 3463 enhanced status code:
/// `class.subject.detail`, class 2, 4 or 5, the others one to three digits.
pub fn is_enhanced_status(s: &str) -> bool {
    let mut parts = s.split('.');
    matches!(parts.next(), Some("2" | "4" | "5"))
        && parts.clone().count() == 2
        && parts.all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The first SMTP reply code (`2xx`/`4xx`/`5xx`) in `text`, with the RFC 3463
/// enhanced status that directly follows it (after one space or hyphen).
///
/// Same result as the first match of
/// `(?<![\d.])([245]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?(?![\d.])`.
pub fn extract_status(text: &str) -> Option<(String, Option<String>)> {
    let b = text.as_bytes();
    // Candidates are whole runs of digits and dots, so a code or status is
    // never read out of a longer number ("5500", "192.0.2.250", "5.1.1.").
    // A run starts at an ASCII byte and ends after one (or is empty), both
    // char boundaries, so slicing `text` at its ends cannot panic.
    let token_end = |from: usize| {
        from + b[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'.')
            .count()
    };
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
            continue;
        }
        let end = token_end(i);
        let code = &text[i..end];
        if is_reply_code(code) {
            let enhanced = match b.get(end) {
                Some(b' ' | b'-') => Some(&text[end + 1..token_end(end + 1)]),
                _ => None,
            }
            .filter(|s| is_enhanced_status(s));
            return Some((code.to_owned(), enhanced.map(str::to_owned)));
        }
        i = end;
    }
    None
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

/// The transport checks every provider relay with a login shares, in the
/// order they are reported: a non-empty host, a port that fits its security
/// mode, and no `security: none` (`secret` names what would travel in clear,
/// e.g. "the API key").
pub fn relay_transport_errors(
    host: &str,
    port: u16,
    security: Security,
    secret: &str,
    errors: &mut Vec<FieldError>,
) {
    if host.trim().is_empty() {
        errors.push(field_error("/smtp/host", "smtp.host is empty"));
    }
    port_security_errors(port, security, errors);
    if security == Security::None {
        errors.push(field_error(
            "/smtp/security",
            format!("{secret} would be sent in clear text with security: none"),
        ));
    }
}

/// On the provider's own host (`default_host`) the SMTP user is the literal
/// `fixed`: another `smtp.username` there is an error naming `provider`.
pub fn fixed_username_errors(
    host: &str,
    default_host: &str,
    username: Option<&str>,
    (provider, fixed): (&str, &str),
    errors: &mut Vec<FieldError>,
) {
    if host == default_host
        && let Some(user) = username.filter(|u| *u != fixed)
    {
        errors.push(field_error(
            "/smtp/username",
            format!(
                "{provider}'s SMTP user is always `{fixed}`, not `{user}`: remove smtp.username"
            ),
        ));
    }
}

/// `smtp.password` must be set; `message` says what it holds.
pub fn require_password(has_password: bool, message: &str, errors: &mut Vec<FieldError>) {
    if !has_password {
        errors.push(field_error("/smtp/password", message));
    }
}

impl SmtpSettings {
    /// A provider's SMTP relay as most providers need it: `default_host`
    /// unless `smtp.host` is set, port and security by the host's rule
    /// ([`port_security_defaults`]), user `smtp.username` or
    /// `default_username`, password from `smtp.password`, no extra headers.
    /// Check the result (e.g. [`port_security_errors`]) where the provider
    /// has rules of its own.
    pub fn relay(o: SmtpOverrides, default_host: &str, default_username: Option<&str>) -> Self {
        let (port, security) = port_security_defaults(o.port, o.security);
        SmtpSettings {
            host: o.host.unwrap_or_else(|| default_host.to_owned()),
            port,
            security,
            username: o.username.or_else(|| default_username.map(str::to_owned)),
            password: PasswordSource::SmtpPassword,
            extra_headers: Vec::new(),
        }
    }

    /// Adds a header to every message sent over the connection.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{extract_status, is_enhanced_status, is_reply_code, port_security_defaults};
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

    #[test]
    fn enhanced_status_must_be_the_whole_value_and_follow_at_once() {
        assert_eq!(st("550 5.1.1234 x"), Some(("550".into(), None)));
        assert_eq!(st("550  5.1.1"), Some(("550".into(), None)));
        assert_eq!(st("550 6.1.1"), Some(("550".into(), None)));
        assert_eq!(st("550 5.1.1x"), Some(("550".into(), Some("5.1.1".into()))));
        assert_eq!(st("550-"), Some(("550".into(), None)));
        assert_eq!(
            st("é550 5.0.0é"),
            Some(("550".into(), Some("5.0.0".into())))
        );
        assert_eq!(st("5.1.1 then 250"), Some(("250".into(), None)));
    }

    /// The values SendGrid's `status` field carries (see
    /// tests/fixtures/plugins/sendgrid): an enhanced status normally, a
    /// synthetic `5.0.0` on `dropped`, and anything else when a custom
    /// argument named `status` collides with it.
    #[test]
    fn enhanced_status_recogniser() {
        for ok in [
            "5.0.0",
            "5.1.1",
            "5.7.1",
            "4.2.2",
            "2.0.0",
            "5.123.456",
            "5.1.10",
        ] {
            assert!(is_enhanced_status(ok), "{ok}");
        }
        for bad in [
            "", "5", "5.1", "5.1.1.1", "5.1.1.", ".5.1.1", "5..1", "5.1.", "5.1000.1", "5.1.1234",
            "6.1.1", "1.1.1", "55.1.1", "05.1.1", " 5.1.1", "5.1.1 ", "5.a.1", "5.1.+1", "vip",
            "550", "５.1.1", "5.１.1",
        ] {
            assert!(!is_enhanced_status(bad), "{bad:?}");
        }
    }

    #[test]
    fn reply_code_recogniser() {
        for ok in ["250", "421", "450", "550", "554", "299", "599"] {
            assert!(is_reply_code(ok), "{ok}");
        }
        for bad in [
            "", "5", "55", "5500", "150", "354", "650", "050", "5a0", "5.0", " 550", "550 ",
            "5.0.0", "vip", "５50", "5５0",
        ] {
            assert!(!is_reply_code(bad), "{bad:?}");
        }
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
