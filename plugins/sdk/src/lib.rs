//! Guest SDK for mailplug provider plugins: the generated WIT bindings plus
//! the helpers most providers need, so a plugin is one short `lib.rs`.
//!
//! ```ignore
//! use mailplug_sdk::prelude::*;
//! struct MyProvider;
//! impl Guest for MyProvider { /* describe, adapt_connection, verify_webhook, parse_webhook */ }
//! mailplug_sdk::export!(MyProvider);
//! ```

/// Bindings generated from `wit/provider.wit` (world `provider`).
#[allow(
    unsafe_code,
    clippy::too_many_arguments,
    reason = "generated canonical-ABI glue"
)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "provider",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "mailplug_sdk::bindings",
    });
}

pub mod host;
pub mod json;
pub mod smtp;
pub mod standard_webhooks;
pub mod time;

pub use bindings::mailplug::provider::types;
pub use bindings::{Guest, export};

/// Everything a plugin usually needs in scope.
pub mod prelude {
    pub use crate::bindings::Guest;
    pub use crate::host::{self, log_debug, log_info, log_warn};
    pub use crate::json;
    pub use crate::smtp;
    pub use crate::standard_webhooks;
    pub use crate::time;
    pub use crate::types::{
        BounceClass, Capability, DeliveryEvent, EventKind, FieldError, ParseError, PasswordSource,
        PluginInfo, Security, SmtpOverrides, SmtpSettings, Text, VerifyError, WebhookRequest,
    };
    pub use crate::{text, text_cow};
}

/// A `text` value for `parse-webhook` output: a span of `body` when `value`
/// lies inside it (zero-copy, e.g. a string borrowed by serde_json), else an
/// owned copy.
pub fn text(body: &[u8], value: &str) -> types::Text {
    let base = body.as_ptr() as usize;
    let start = value.as_ptr() as usize;
    match (start.checked_sub(base), u32::try_from(value.len())) {
        (Some(offset), Ok(len)) if offset + value.len() <= body.len() => {
            match u32::try_from(offset) {
                Ok(offset) => types::Text::Span((offset, len)),
                Err(_) => types::Text::Owned(value.to_owned()),
            }
        }
        _ => types::Text::Owned(value.to_owned()),
    }
}

/// Like [`text`] for a `Cow` from serde_json: borrowed → span, owned → owned.
pub fn text_cow(body: &[u8], value: std::borrow::Cow<'_, str>) -> types::Text {
    match value {
        std::borrow::Cow::Borrowed(s) => text(body, s),
        std::borrow::Cow::Owned(s) => types::Text::Owned(s),
    }
}

/// Returns the value of the first header named `name` (ASCII case-insensitive).
pub fn header<'a>(request: &'a types::WebhookRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
