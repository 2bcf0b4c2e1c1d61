//! `adapt-connection` for Custom SMTP: the connection's own `smtp:` fields,
//! checked, with the usual port/security defaults filled in.

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// JSON Schema of `options` for `provider: custom-smtp`.
pub const OPTIONS_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "custom-smtp options",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "headers": {
      "description": "Extra headers added to every message sent over this connection.",
      "type": "object",
      "propertyNames": { "pattern": "^[!-9;-~]+$" },
      "additionalProperties": { "type": "string", "pattern": "^[^\r\n]*$" }
    }
  }
}"#;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
}

fn headers(options: Options, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(options.headers.len());
    for (name, value) in options.headers {
        let path = format!(
            "/options/headers/{}",
            mailplug_sdk::json::pointer_token(&name)
        );
        let valid_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        match value {
            serde_json::Value::String(v) if valid_name && !v.contains(['\r', '\n']) => {
                out.push((name, v))
            }
            serde_json::Value::String(_) if valid_name => {
                errors.push(error(&path, "header values cannot contain CR or LF"))
            }
            serde_json::Value::String(_) => errors.push(error(&path, "not a valid header name")),
            _ => errors.push(error(&path, "header values must be strings")),
        }
    }
    out
}

/// Checks the Custom SMTP fields and returns the settings the host will use.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let mut errors = Vec::new();
    let options: Options = if options.trim().is_empty() {
        Options::default()
    } else {
        json::parse(options.as_bytes()).unwrap_or_else(|e| {
            let detail = match e {
                ParseError::Malformed(m) | ParseError::Invalid(m) => m,
            };
            errors.push(error("/options", detail));
            Options::default()
        })
    };
    let extra_headers = headers(options, &mut errors);
    let host = o.host.unwrap_or_default();
    if host.trim().is_empty() {
        errors.push(error("/smtp/host", "custom-smtp needs smtp.host"));
    }
    let (port, security) = smtp::port_security_defaults(o.port, o.security);
    smtp::port_security_errors(port, security, &mut errors);
    if o.has_password && o.username.is_none() {
        errors.push(error(
            "/smtp/username",
            "a password is configured but no username",
        ));
    }
    if o.username.is_some() && !o.has_password {
        errors.push(error(
            "/smtp/password",
            "a username is configured but no password reference",
        ));
    }
    if o.has_password && security == Security::None {
        errors.push(error(
            "/smtp/security",
            "credentials would be sent in clear text with security: none",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SmtpSettings {
        host,
        port,
        security,
        username: o.username,
        password: if o.has_password {
            PasswordSource::SmtpPassword
        } else {
            PasswordSource::None
        },
        extra_headers,
    })
}
