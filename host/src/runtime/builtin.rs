//! First-party plugins compiled from plugins/ by host/build.rs and embedded
//! in the binary, so `mailplug` needs no setup step to use them.

/// An embedded plugin component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Plugin id (what `describe` must report).
    pub id: &'static str,
    /// The component bytes.
    pub wasm: &'static [u8],
}

/// Every first-party plugin.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "custom-smtp",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/custom_smtp.wasm")),
    },
    Builtin {
        id: "sendgrid",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/sendgrid.wasm")),
    },
    Builtin {
        id: "postmark",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/postmark.wasm")),
    },
    Builtin {
        id: "resend",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/resend.wasm")),
    },
    Builtin {
        id: "mailgun",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/mailgun.wasm")),
    },
    Builtin {
        id: "mailjet",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/mailjet.wasm")),
    },
    Builtin {
        id: "postal",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/postal.wasm")),
    },
    Builtin {
        id: "sparkpost",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/sparkpost.wasm")),
    },
    Builtin {
        id: "brevo",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/brevo.wasm")),
    },
    Builtin {
        id: "mandrill",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/mandrill.wasm")),
    },
    Builtin {
        id: "amazon-ses",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/amazon_ses.wasm")),
    },
];
