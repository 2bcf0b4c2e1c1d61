//! SMTP status syntax: reply codes (RFC 5321) and enhanced status codes
//! (RFC 3463). One recogniser for the host, used for server replies
//! (classification) and for what plugins put into unified events.

/// A three-digit reply code whose first digit is 2, 4 or 5 (`550`).
pub fn is_reply_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 3 && matches!(b[0], b'2' | b'4' | b'5') && b[1..].iter().all(u8::is_ascii_digit)
}

/// `class.subject.detail` with class 2, 4 or 5 and 1–3 digits each (`5.1.1`).
pub fn is_enhanced_status(code: &str) -> bool {
    let mut parts = code.split('.');
    let class = parts.next().is_some_and(|p| matches!(p, "2" | "4" | "5"));
    let rest: Vec<&str> = parts.collect();
    class
        && rest.len() == 2
        && rest
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Splits a leading enhanced status off a reply's text, keeping it only when
/// its class digit agrees with the reply code (`550` + `5.1.1 ...`).
pub fn split_enhanced(code: u16, text: &str) -> (Option<String>, String) {
    let text = text.trim();
    let (first, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if is_enhanced_status(first) && first.as_bytes()[0] == b'0' + (code / 100) as u8 {
        (Some(first.to_owned()), rest.trim().to_owned())
    } else {
        (None, text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognisers_accept_rfc_shapes_only() {
        assert!(is_reply_code("550") && is_reply_code("250"));
        assert!(!is_reply_code("650") && !is_reply_code("55") && !is_reply_code("5500"));
        assert!(is_enhanced_status("5.1.1") && is_enhanced_status("4.7.123"));
        for bad in ["5.1", "6.1.1", "5.1.1.1", "5..1", "5.1.1234", "x.1.1"] {
            assert!(!is_enhanced_status(bad), "{bad}");
        }
    }

    #[test]
    fn enhanced_status_is_split_only_when_its_class_matches() {
        assert_eq!(
            split_enhanced(550, "5.1.1 user unknown"),
            (Some("5.1.1".into()), "user unknown".into())
        );
        assert_eq!(split_enhanced(550, "4.1.1 odd").0, None);
        assert_eq!(split_enhanced(250, "1.2.3.4 ok").0, None);
    }
}
