//! Test-only plugin that claims the `mailplug:provider` package but exports
//! every export with the wrong types: the host must refuse
//! it at load (type check), before any call.

// The export macro expands here, outside the bindings module.
#![allow(unsafe_code, reason = "generated canonical-ABI glue")]

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package mailplug:provider@0.1.0;
            world provider {
                export describe: func() -> string;
                export adapt-connection: func(options: string) -> string;
                export verify-webhook: func() -> bool;
                export parse-webhook: func(body: list<u8>) -> u32;
            }
        ",
    });
}

struct WrongShape;

impl bindings::Guest for WrongShape {
    fn describe() -> String {
        "{\"id\": \"wrong-shape\"}".into()
    }

    fn adapt_connection(options: String) -> String {
        options
    }

    fn verify_webhook() -> bool {
        true
    }

    fn parse_webhook(body: Vec<u8>) -> u32 {
        u32::try_from(body.len()).unwrap_or(u32::MAX)
    }
}

bindings::export!(WrongShape with_types_in bindings);
