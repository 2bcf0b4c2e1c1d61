//! Test-only plugin whose static data makes its initial linear memory
//! 64 MiB: instantiation is refused under the default 32 MiB cap.

use mailplug_sdk::prelude::*;

/// Zero-initialised, so it costs nothing in the file but reserves 64 MiB of
/// initial linear memory. Mutable so it is not folded into read-only data.
static BALLAST: std::sync::Mutex<[u8; 64 << 20]> = std::sync::Mutex::new([0; 64 << 20]);

struct Oversized;

impl Guest for Oversized {
    fn describe() -> PluginInfo {
        // Indexed by run-time values so the optimiser cannot drop the array.
        let index = usize::try_from(host::now()).unwrap_or(0) % (64 << 20);
        let first = BALLAST.lock().map(|b| b[index]).unwrap_or(0);
        PluginInfo {
            id: "oversized".into(),
            version: format!("0.0.{first}"),
            display_name: "Oversized test guest".into(),
            options_schema: "{}".into(),
            capabilities: vec![],
            signature_scheme: None,
        }
    }

    fn adapt_connection(
        _options: String,
        _overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        Err(vec![])
    }

    fn verify_webhook(_request: WebhookRequest, _secret: String) -> Result<(), VerifyError> {
        Ok(())
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let mut b = BALLAST
            .lock()
            .map_err(|_| ParseError::Invalid("poisoned".into()))?;
        let index = request.body.len() % (64 << 20);
        b[index] = b[index].wrapping_add(1);
        Ok(vec![])
    }
}

mailplug_sdk::export!(Oversized);
