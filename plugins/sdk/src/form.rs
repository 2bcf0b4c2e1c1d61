//! `application/x-www-form-urlencoded` bodies, for providers that post forms
//! (Mandrill's `mandrill_events`, Mailgun's legacy webhooks).

use crate::header;
use crate::types::{ParseError, WebhookRequest};

/// Most fields a form may have; a provider form has a handful.
pub const MAX_FIELDS: usize = 1_000;

/// A decoded form: `(name, value)` pairs in body order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// Decoded pairs, duplicates kept, in body order.
    pub pairs: Vec<(String, String)>,
}

impl Form {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every field sorted by name (stable for duplicates), each as name then
    /// value with no separators: the tail of Mandrill's signed string.
    pub fn sorted_name_value_concat(&self) -> Vec<u8> {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, value) in pairs {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }
}

/// Whether the request says it carries a form.
pub fn is_form(request: &WebhookRequest) -> bool {
    header(request, "content-type").is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one name or value (`+` is a space); a `%` not followed by
/// two hex digits stays as it is (as browsers do).
pub fn decode_component(raw: &[u8]) -> Result<String, ParseError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_value);
                let lo = raw.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ParseError::Malformed("form field is not UTF-8 once decoded".into()))
}

/// Decodes a form body. Empty segments (`a=1&&b=2`) are skipped; a segment
/// without `=` is a field with an empty value.
pub fn parse(body: &[u8]) -> Result<Form, ParseError> {
    let mut pairs = Vec::new();
    for segment in body.split(|&b| b == b'&').filter(|s| !s.is_empty()) {
        if pairs.len() == MAX_FIELDS {
            return Err(ParseError::Malformed(format!(
                "form has more than {MAX_FIELDS} fields"
            )));
        }
        let (name, value) = match segment.iter().position(|&b| b == b'=') {
            Some(at) => (&segment[..at], &segment[at + 1..]),
            None => (segment, &[][..]),
        };
        pairs.push((decode_component(name)?, decode_component(value)?));
    }
    Ok(Form { pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_keeps_order_and_duplicates() {
        let form = parse(b"b=2&a=x+y%20z%3D&&a=%E2%82%AC&flag").unwrap();
        assert_eq!(
            form.pairs,
            [
                ("b".into(), "2".into()),
                ("a".into(), "x y z=".into()),
                ("a".into(), "€".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert_eq!(form.get("a"), Some("x y z="));
        assert_eq!(
            form.sorted_name_value_concat(),
            "ax y z=a€b2flag".as_bytes()
        );
    }

    #[test]
    fn stray_percent_stays_and_bad_utf8_is_refused() {
        assert_eq!(parse(b"a=100%&b=%zz%4").unwrap().get("b"), Some("%zz%4"));
        assert_eq!(parse(b"a=100%").unwrap().get("a"), Some("100%"));
        assert!(parse(b"a=%ff%fe").is_err());
        assert_eq!(parse(b"").unwrap(), Form::default());
        let many = vec!["a=1"; MAX_FIELDS + 1].join("&");
        assert!(parse(many.as_bytes()).is_err());
    }
}
