//! Typed connection `options`: the JSON Schema `describe` reports is derived
//! from the same type `adapt_connection` parses into, so the two cannot
//! disagree.
//!
//! ```ignore
//! /// Options of `provider: acme`.
//! #[derive(Default, Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Options {
//!     /// Data region of the account.
//!     #[serde(default)]
//!     region: Region,
//! }
//! // Info::new(..).options::<Options>(), and in adapt_connection:
//! let options: Options = options::parse(options_json)?;
//! ```
//!
//! Doc comments become the schema's descriptions (what editors show). Mark
//! enum types `#[schemars(inline)]` so the schema names their values in place.

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::json::pointer_token;
use crate::smtp::field_error;
use crate::types::FieldError;

/// The options type of a plugin that takes none.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "no options", description = "This provider takes no options.")]
pub struct NoOptions {}

/// The JSON Schema (draft 2020-12) of `T`, as JSON text.
pub fn schema_for<T: JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    // Serialising a schema value cannot fail; if it ever did, a closed empty
    // object is the safe answer (every option refused rather than accepted).
    serde_json::to_string(&schema)
        .unwrap_or_else(|_| r#"{"type":"object","additionalProperties":false}"#.to_owned())
}

/// Property names `T` accepts, when its schema is a closed object.
fn closed_properties<T: JsonSchema>() -> Option<Vec<String>> {
    let schema = schemars::schema_for!(T);
    let value = schema.as_value();
    if value.get("additionalProperties") != Some(&Value::Bool(false)) {
        return None;
    }
    Some(
        value
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default(),
    )
}

/// Parses the `options` JSON text the host passes (empty or `null` when the
/// connection sets none) into `T`.
///
/// Every unknown key is its own error at `/options/<key>` (the schema's
/// `additionalProperties: false`); other problems are one error naming the
/// field when serde does.
pub fn parse<T>(options: &str) -> Result<T, Vec<FieldError>>
where
    T: DeserializeOwned + Default + JsonSchema,
{
    if options.trim().is_empty() {
        return Ok(T::default());
    }
    let value: Value = crate::json::parse(options.as_bytes()).map_err(|e| {
        let (crate::types::ParseError::Malformed(m) | crate::types::ParseError::Invalid(m)) = e;
        vec![field_error("/options", m)]
    })?;
    let map = match value {
        Value::Null => return Ok(T::default()),
        Value::Object(map) => map,
        _ => return Err(vec![field_error("/options", "options must be a mapping")]),
    };
    if let Some(allowed) = closed_properties::<T>() {
        let unknown: Vec<FieldError> = map
            .keys()
            .filter(|k| !allowed.contains(k))
            .map(|k| {
                let hint = if allowed.is_empty() {
                    "this provider takes no options".to_owned()
                } else {
                    format!("known options: {}", allowed.join(", "))
                };
                field_error(
                    &format!("/options/{}", pointer_token(k)),
                    format!("unknown option `{k}` ({hint})"),
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
    }
    serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
        let path = match the_failing_key::<T>(&map) {
            Some(key) => format!("/options/{}", pointer_token(&key)),
            None => "/options".to_owned(),
        };
        vec![field_error(&path, e.to_string())]
    })
}

/// The key whose value fails to deserialise on its own, if exactly one does:
/// serde_json's messages do not carry the field path, so this finds it by
/// trying each key alone against `T`.
fn the_failing_key<T: DeserializeOwned>(map: &serde_json::Map<String, Value>) -> Option<String> {
    let mut failing = map.iter().filter(|(k, v)| {
        let mut one = serde_json::Map::new();
        one.insert((*k).clone(), (*v).clone());
        serde_json::from_value::<T>(Value::Object(one))
            .err()
            .is_some_and(|e| !e.to_string().starts_with("missing field"))
    });
    let first = failing.next()?;
    failing.next().is_none().then(|| first.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        /// The region.
        #[serde(default)]
        region: Region,
        #[serde(default)]
        stream: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "lowercase")]
    #[schemars(inline)]
    enum Region {
        #[default]
        Us,
        Eu,
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn schema_is_closed_with_inline_enums_and_descriptions() {
        let schema: Value = serde_json::from_str(&schema_for::<Opts>()).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["region"]["enum"][0], "us");
        assert_eq!(schema["properties"]["region"]["description"], "The region.");
        let none: Value = serde_json::from_str(&schema_for::<NoOptions>()).unwrap();
        assert_eq!(none["additionalProperties"], false);
    }

    #[test]
    fn empty_or_null_options_are_the_defaults() {
        assert_eq!(parse::<Opts>("").unwrap(), Opts::default());
        assert_eq!(parse::<Opts>(" null ").unwrap(), Opts::default());
        assert_eq!(
            parse::<Opts>(r#"{"region":"eu"}"#).unwrap().region,
            Region::Eu
        );
    }

    #[test]
    fn every_unknown_key_and_the_bad_field_are_named() {
        let errors = parse::<Opts>(r#"{"a": 1, "b/c": 2, "region": "eu"}"#).unwrap_err();
        assert_eq!(paths(&errors), ["/options/a", "/options/b~1c"]);
        assert!(errors[0].message.contains("region, stream"), "{errors:?}");
        let errors = parse::<Opts>(r#"{"region": "mars"}"#).unwrap_err();
        assert_eq!(paths(&errors), ["/options/region"], "{errors:?}");
        let errors = parse::<NoOptions>(r#"{"x": 1}"#).unwrap_err();
        assert!(errors[0].message.contains("takes no options"), "{errors:?}");
        assert_eq!(paths(&parse::<Opts>("[1]").unwrap_err()), ["/options"]);
        assert_eq!(paths(&parse::<Opts>("{").unwrap_err()), ["/options"]);
    }
}
