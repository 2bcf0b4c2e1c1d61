//! JSON helpers: a nesting-depth limit checked before parsing, and exact
//! rendering of 64-bit integer ids (never through a double).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::ParseError;

/// Nesting depth that every known provider format stays well below.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Fails when `body` nests arrays/objects deeper than `max_depth`.
///
/// A linear byte scan (string contents are skipped), so hostile bodies such
/// as a million `[` are refused before a parser recurses into them.
pub fn check_depth(body: &[u8], max_depth: usize) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ParseError::Malformed(format!(
                        "JSON nests deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses `body` into `T` after the default depth check.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    check_depth(body, DEFAULT_MAX_DEPTH)?;
    serde_json::from_slice(body).map_err(|e| ParseError::Malformed(format!("invalid JSON: {e}")))
}

/// Parses into `T`, borrowing strings from `body` where possible.
///
/// No pre-scan, sparing a pass over the body: a typed target bounds nesting
/// by its own shape (serde_json also stops at 128 levels, and skips ignored
/// values without recursion). Type every field you accept rather than
/// ignoring it, and use [`parse`] for `serde_json::Value` targets.
pub fn parse_borrowed<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError::Malformed(format!("invalid JSON: {e}")))
}

/// A JSON string that borrows from the input when it has no escapes.
///
/// Use `Option<Str<'a>>` (with `#[serde(borrow)]`) for optional fields:
/// serde never borrows into a bare `Option<Cow<str>>`, which silently
/// allocates every value. Borrowed values become zero-copy `text` spans of
/// the request body (see [`crate::text_cow`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Str<'a>(#[serde(borrow)] pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// An id that providers send as a string or as an integer, borrowed when it
/// is an unescaped string; integers are rendered from their exact value
/// (never through a double: Mailjet ids exceed 2^53). Fractions, booleans
/// and the rest are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id<'a>(pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Id<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Id<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use std::borrow::Cow;
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
        }
        d.deserialize_any(Visitor).map(Id)
    }
}

/// First non-whitespace byte of a JSON text: tells an object from an array.
pub fn first_token(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Renders an id that providers send as a string or as an integer.
///
/// Integers are rendered from their exact `u64`/`i64` value (Mailjet ids
/// exceed 2^53); a fractional number is not an id and gives `None`.
pub fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// One JSON Pointer reference token (`~` → `~0`, `/` → `~1`), for field
/// errors that name a key the operator wrote (`/options/<key>`).
pub fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_limit_counts_nesting_but_not_brackets_in_strings() {
        assert!(check_depth(br#"{"a":"[[[[[[[["}"#, 2).is_ok());
        assert!(check_depth(b"[[[]]]", 3).is_ok());
        assert!(check_depth(b"[[[[]]]]", 3).is_err());
        assert!(check_depth(br#"{"a":"\"[[["}"#, 1).is_ok());
    }

    #[test]
    fn optional_strings_borrow_unless_escaped() {
        #[derive(serde::Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            a: Option<Str<'a>>,
            #[serde(borrow)]
            b: Option<Str<'a>>,
        }
        let t: T<'_> = serde_json::from_str(r#"{"a": "plain", "b": "esc\"aped"}"#).unwrap();
        assert!(matches!(
            t.a.unwrap().0,
            std::borrow::Cow::Borrowed("plain")
        ));
        assert!(matches!(t.b.unwrap().0, std::borrow::Cow::Owned(_)));
    }

    #[test]
    fn ids_are_strings_or_exact_integers() {
        // Beyond u64 serde_json has only a double: refused, not rounded.
        assert!(serde_json::from_str::<Id<'_>>("19421777835146490123").is_err());
        let id: Id<'_> = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(&*id, "18446744073709551615");
        let id: Id<'_> = serde_json::from_str(r#""abc""#).unwrap();
        assert!(matches!(id.0, std::borrow::Cow::Borrowed("abc")));
        assert!(serde_json::from_str::<Id<'_>>("1.5").is_err());
        assert!(serde_json::from_str::<Id<'_>>("true").is_err());
    }

    #[test]
    fn integer_ids_stay_exact() {
        let v: Value = serde_json::from_str("19421777835146490").unwrap();
        assert_eq!(id_string(&v).as_deref(), Some("19421777835146490"));
        let v: Value = serde_json::from_str("1.5").unwrap();
        assert_eq!(id_string(&v), None);
    }
}

/// A JSON object deserialised into `T`. serde's derived structs also accept
/// a JSON array of their fields in order, so without this wrapper a batch of
/// arrays would parse as events; providers post objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
            .map(Object)
    }
}
