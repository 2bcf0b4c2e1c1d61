//! The [`Plugin`] trait (only the exports a provider has; the others refuse)
//! and [`Info`], the `describe` facts built from a few calls.
//!
//! Capabilities follow from what `info()` declares, never from which methods
//! are overridden (Rust cannot tell). The declarations fail closed: a
//! declared but unimplemented export refuses every call, and the only way to
//! get webhooks parsed without verification is the explicit
//! [`Info::unsigned_webhooks`].

use crate::bindings::Guest;
use crate::options;
use crate::smtp::field_error;
use crate::types::{
    Capability, DeliveryEvent, FieldError, ParseError, PluginInfo, SmtpOverrides, SmtpSettings,
    Text, VerifyError, WebhookRequest,
};
use schemars::JsonSchema;

/// A provider plugin. Implement `info` and the exports the provider has, then
/// `mailplug_sdk::export!(YourType);` once.
pub trait Plugin {
    /// Plugin id, `[a-z0-9][a-z0-9-]*`: what a connection's `provider:` names.
    /// Also the `provider` of every event that does not set one.
    const ID: &'static str;

    /// Static facts: display name, version, options schema, capabilities.
    fn info() -> Info;

    /// Options (JSON text, possibly empty) and the connection's explicit
    /// `smtp:` fields → SMTP settings, or every field error at once.
    ///
    /// Default: refuses, for webhook-only plugins (declare no
    /// [`Info::adapts_smtp`] and the host never calls it).
    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        let _ = (options, overrides);
        Err(vec![field_error(
            "/provider",
            format!(
                "plugin `{}` does not provide SMTP settings: use provider: custom-smtp with smtp: fields",
                Self::ID
            ),
        )])
    }

    /// Authenticity of `request` with one configured webhook secret.
    ///
    /// Default: refuses every request (fails closed).
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        let _ = (request, secret);
        Err(VerifyError::Malformed(format!(
            "plugin `{}` does not verify webhooks",
            Self::ID
        )))
    }

    /// The unified events of a verified request (possibly none).
    ///
    /// Default: refuses (declare no webhooks and the host answers 404).
    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let _ = request;
        Err(ParseError::Invalid(format!(
            "plugin `{}` does not parse webhooks",
            Self::ID
        )))
    }
}

/// What `describe` reports, minus the id (that is [`Plugin::ID`]).
#[derive(Debug, Clone)]
pub struct Info {
    display_name: String,
    version: String,
    options_schema: String,
    capabilities: Vec<Capability>,
    signature_scheme: Option<String>,
}

impl Info {
    /// A plugin with no capabilities yet and no options (a closed, empty
    /// object schema). Pass `env!("CARGO_PKG_VERSION")` as `version`.
    pub fn new(display_name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            display_name: display_name.into(),
            version: version.into(),
            options_schema: options::schema_for::<options::NoOptions>(),
            capabilities: Vec::new(),
            signature_scheme: None,
        }
    }

    /// The options schema, derived from the type the plugin parses its
    /// options into (see [`crate::options`]).
    pub fn options<T: JsonSchema>(mut self) -> Self {
        self.options_schema = options::schema_for::<T>();
        self
    }

    /// A hand-written options schema (JSON text, draft 2020-12), for what
    /// a derive cannot express.
    pub fn options_schema_json(mut self, schema: impl Into<String>) -> Self {
        self.options_schema = schema.into();
        self
    }

    /// The plugin implements `adapt_connection`.
    pub fn adapts_smtp(mut self) -> Self {
        self.add(Capability::AdaptsSmtp);
        self
    }

    /// The plugin implements `verify_webhook` and `parse_webhook`;
    /// `scheme` names the signature scheme (e.g. `"svix-v1"`, `"basic-auth"`).
    pub fn webhooks(mut self, scheme: impl Into<String>) -> Self {
        self.add(Capability::VerifiesWebhooks);
        self.add(Capability::ParsesWebhooks);
        self.signature_scheme = Some(scheme.into());
        self
    }

    /// The plugin parses webhooks that carry no authenticity at all: the
    /// host stores whatever reaches the endpoint. Prefer [`Info::webhooks`]
    /// with a shared secret ([`crate::verify::basic_auth`] or `bearer`).
    pub fn unsigned_webhooks(mut self) -> Self {
        self.add(Capability::ParsesWebhooks);
        self
    }

    fn add(&mut self, capability: Capability) {
        if !self.capabilities.contains(&capability) {
            self.capabilities.push(capability);
        }
    }

    /// The WIT record for plugin `id`.
    pub fn into_plugin_info(self, id: &str) -> PluginInfo {
        PluginInfo {
            id: id.to_owned(),
            version: self.version,
            display_name: self.display_name,
            options_schema: self.options_schema,
            capabilities: self.capabilities,
            signature_scheme: self.signature_scheme,
        }
    }
}

impl<T: Plugin> Guest for T {
    fn describe() -> PluginInfo {
        T::info().into_plugin_info(T::ID)
    }

    fn adapt_connection(
        options: String,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        T::adapt_connection(&options, overrides)
    }

    fn verify_webhook(request: WebhookRequest, secret: String) -> Result<(), VerifyError> {
        T::verify_webhook(&request, &secret)
    }

    fn parse_webhook(request: WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        let mut events = T::parse_webhook(&request)?;
        for event in &mut events {
            if matches!(&event.provider, Text::Owned(p) if p.is_empty()) {
                event.provider = Text::Owned(T::ID.to_owned());
            }
        }
        Ok(events)
    }
}
