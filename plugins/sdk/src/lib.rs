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
        PluginInfo, Security, SmtpOverrides, SmtpSettings, VerifyError, WebhookRequest,
    };
}

/// Returns the value of the first header named `name` (ASCII case-insensitive).
pub fn header<'a>(request: &'a types::WebhookRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
