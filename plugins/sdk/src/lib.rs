//! Guest SDK for mailplug provider plugins: the generated WIT bindings plus
//! what most providers need, so a plugin is one short `lib.rs`.
//!
//! Implement [`Plugin`] (only the exports the provider has: the others have
//! defaults that refuse), describe it with [`Info`], build events with
//! [`DeliveryEvent::bounced`] and friends, derive the options schema from a
//! type ([`options`]) and pick a ready verifier ([`verify`]):
//!
//! ```ignore
//! use mailplug_sdk::prelude::*;
//! struct Acme;
//! impl Plugin for Acme {
//!     const ID: &'static str = "acme";
//!     fn info() -> Info {
//!         Info::new("Acme Mail", env!("CARGO_PKG_VERSION")).webhooks("basic-auth")
//!     }
//!     fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
//!         verify::basic_auth(request, secret)
//!     }
//!     fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
//!         /* json::parse, DeliveryEvent::delivered(recipient, at)... */
//!     }
//! }
//! mailplug_sdk::export!(Acme);
//! ```
//!
//! A type implementing the generated [`Guest`] trait directly (SDK 0.1
//! style) still exports as before.

/// Bindings generated from `wit/provider.wit` (world `provider`).
#[allow(
    unsafe_code,
    clippy::too_many_arguments,
    reason = "generated canonical-ABI glue"
)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "provider",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "mailplug_sdk::bindings",
        // Lets plugin tests compare events and errors with `assert_eq!`.
        additional_derives: [PartialEq],
    });
}

pub mod event;
pub mod form;
pub mod host;
pub mod json;
pub mod options;
mod plugin;
pub mod smtp;
pub mod standard_webhooks;
pub mod time;
pub mod verify;

pub use bindings::Guest;
pub use bindings::mailplug::provider::types;

/// Exports a [`Plugin`] (or [`Guest`]) type as the component's
/// implementation of the `provider` world: `mailplug_sdk::export!(Acme);`
/// once per plugin. Off wasm it exports no symbols, so several plugins can
/// be linked into one native program (unit tests, the native baseline of
/// the benchmarks) without their export symbols clashing; it still names
/// the exports, so they count as used.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!($ty with_types_in $crate::bindings);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            #[allow(dead_code, reason = "names the exports a wasm build would export")]
            fn exports() {
                let _ = <$ty as $crate::Guest>::describe;
                let _ = <$ty as $crate::Guest>::adapt_connection;
                let _ = <$ty as $crate::Guest>::verify_webhook;
                let _ = <$ty as $crate::Guest>::parse_webhook;
            }
        };
    };
}
pub use plugin::{Info, Plugin};
pub use schemars::{self, JsonSchema};

/// Everything a plugin usually needs in scope.
pub mod prelude {
    pub use crate::bindings::Guest;
    pub use crate::host::{self, log_debug, log_info, log_warn};
    pub use crate::standard_webhooks;
    pub use crate::types::{
        BounceClass, Capability, DeliveryEvent, EventKind, FieldError, ParseError, PasswordSource,
        PluginInfo, Security, SmtpOverrides, SmtpSettings, Text, VerifyError, WebhookRequest,
    };
    pub use crate::{Info, JsonSchema, Plugin};
    pub use crate::{form, json, options, smtp, time, verify};
    pub use crate::{header, text, text_cow};
    /// The derive most plugins use for their payload types (the crate
    /// itself must still be a dependency: the derive expands to `serde::`).
    pub use serde::Deserialize;
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
