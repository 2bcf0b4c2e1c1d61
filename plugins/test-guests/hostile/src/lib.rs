//! Test-only hostile plugin. The request body picks the misbehaviour of
//! `parse-webhook`: `loop`, `grow`, `panic`, `flood:<events>:<recipient-bytes>`,
//! `invalid:<case>`, `print`, `log-spam`, `recurse`, anything else answers one valid event.

use mailplug_sdk::prelude::*;

struct Hostile;

fn event(recipient: String) -> DeliveryEvent {
    DeliveryEvent {
        kind: EventKind::Delivered,
        bounce_class: None,
        recipient: Text::Owned(recipient),
        occurred_at: 1_767_268_800,
        provider: Text::Owned("hostile".into()),
        provider_event_id: None,
        provider_message_id: None,
        message_id: None,
        smtp_status: None,
        enhanced_status: None,
        diagnostic: None,
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Unbounded recursion: exhausts the wasm call stack.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0; // never reached: the stack runs out first
    }
    std::hint::black_box(recurse(std::hint::black_box(depth + 1))) + 1
}

fn grow() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the growth is real, not just reserved.
        hoard.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn flood(spec: &str) -> Vec<DeliveryEvent> {
    let mut parts = spec.split(':');
    let count: usize = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let len: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    (0..count)
        .map(|i| event(format!("{i:0>len$}@example.com")))
        .collect()
}

fn invalid(case: &str) -> Vec<DeliveryEvent> {
    let mut e = event("someone@example.com".into());
    match case {
        "empty-recipient" => e.recipient = Text::Owned(String::new()),
        "bounce-class-on-delivered" => e.bounce_class = Some(BounceClass::Hard),
        "time-out-of-range" => e.occurred_at = i64::MAX,
        "control-chars" => e.recipient = Text::Owned("a\u{0}b\r\n@example.com".into()),
        "huge-field" => e.diagnostic = Some(Text::Owned("x".repeat(1 << 20))),
        "span-out-of-bounds" => e.recipient = Text::Span((u32::MAX - 2, 10)),
        _ => e.provider = Text::Owned(String::new()),
    }
    vec![e]
}

impl Guest for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "hostile".into(),
            version: "0.0.0".into(),
            display_name: "Hostile test guest".into(),
            options_schema: "{}".into(),
            capabilities: vec![Capability::ParsesWebhooks, Capability::VerifiesWebhooks],
            signature_scheme: None,
        }
    }

    /// Only what the connection sets explicitly: a connection names
    /// `smtp.host` to get a connection whose webhooks reach this guest.
    fn adapt_connection(
        _options: String,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        let Some(host) = overrides.host else {
            return Err(vec![FieldError {
                path: "/".into(),
                message: "hostile guest adapts nothing without smtp.host".into(),
            }]);
        };
        Ok(SmtpSettings {
            host,
            port: overrides.port.unwrap_or(587),
            security: overrides.security.unwrap_or(Security::Starttls),
            username: overrides.username,
            password: PasswordSource::None,
            extra_headers: vec![],
        })
    }

    fn verify_webhook(request: WebhookRequest, _secret: String) -> Result<(), VerifyError> {
        match request.body.as_slice() {
            b"loop" => spin(),
            _ => Ok(()),
        }
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let body = String::from_utf8_lossy(&request.body).into_owned();
        match body.as_str() {
            "loop" => spin(),
            "grow" => grow(),
            "recurse" => Ok(vec![event(format!("{}@example.com", recurse(0)))]),
            "panic" => panic!("hostile guest panics on purpose"),
            "log-spam" => {
                for i in 0..100_000 {
                    log_info(&format!("spam line {i} {}", "x".repeat(i % 10_000)));
                }
                Ok(vec![event("logged@example.com".into())])
            }
            "print" => {
                println!("hello from the guest's stdout");
                eprintln!("hello from the guest's stderr");
                Ok(vec![event("printed@example.com".into())])
            }
            b if b.starts_with("flood:") => Ok(flood(&b["flood:".len()..])),
            b if b.starts_with("invalid:") => Ok(invalid(&b["invalid:".len()..])),
            _ => Ok(vec![event("ok@example.com".into())]),
        }
    }
}

mailplug_sdk::export!(Hostile);
