//! The plugin-output converter (`runtime::convert`) as one function of
//! bytes, for the cargo-fuzz target `plugin_output` (fuzz/) and the property
//! test below, which call the same entry point: arbitrary bytes are decoded
//! into what a hostile guest could return (a request body and the events of
//! `parse-events` with spans into it, the settings of `adapt-connection`,
//! the info of `describe`) and handed to the checks real plugin output
//! goes through.
//!
//! The decoding is total (missing bytes read as zero), so every input
//! reaches the converter; the byte layout is documented on [`plugin_output`]
//! so seed files can be written by hand.

use super::bindings::mailplug::provider::types as wit;
use super::convert::{self, MAX_EVENTS, PluginInfo};
use crate::event::NormalizedEvent;

/// What the converter made of one decoded output.
#[derive(Debug)]
pub struct Converted {
    /// `parse-events`: the accepted events, or why the call was refused.
    pub events: Result<Vec<NormalizedEvent>, String>,
    /// `adapt-connection`: whether the settings were accepted.
    pub settings: Result<(), String>,
    /// `describe`: the accepted info, or why it was refused.
    pub info: Result<PluginInfo, String>,
}

/// Decodes `data` and runs the converter on it. Layout (integers little
/// endian; a *string* is a length byte and that many bytes, decoded lossily
/// as UTF-8, where length 255 means a `u16` × 64 bytes of `a` instead; a
/// *text* is a byte whose low bit picks a span — two `u32`, offset and
/// length into the body — or an owned string; an *optional* is a byte whose
/// low bit says whether the value follows):
///
/// 1. body: `u16` length (mod 4096) and that many bytes;
/// 2. events: a count byte (255: [`MAX_EVENTS`] + 1 copies of one event;
///    else mod 16), then per event: kind byte (mod 8), bounce class byte
///    (mod 3: none, hard, soft), recipient text, `i64` occurred-at,
///    provider text, six optional texts (provider event id, provider
///    message id, message id, SMTP status, enhanced status, diagnostic);
/// 3. settings: host string, `u16` port, security byte (mod 3), optional
///    username string, password byte (mod 3: none, smtp password, options
///    field + string), header count byte (mod 4) and name/value strings;
/// 4. info: id, version, display name and options schema strings,
///    capability count byte (mod 8) and a byte (mod 3) each, optional
///    signature scheme string.
///
/// What the `plugin_output` fuzz target does with each input (this example
/// compiles it from outside the crate, as the target is):
///
/// ```
/// use mailplug::runtime::fuzz::{accepted_events_are_clean, plugin_output};
///
/// // An empty body and one event whose recipient span points past it.
/// let out = plugin_output(b"\x00\x00\x01\x02\x00\x00\x05\x00\x00\x00\x01\x00\x00\x00");
/// assert!(out.events.as_ref().unwrap_err().contains("outside"));
/// if let Ok(events) = &out.events {
///     assert!(accepted_events_are_clean(events));
/// }
/// ```
pub fn plugin_output(data: &[u8]) -> Converted {
    let mut input = Input(data);
    let body_len = usize::from(input.u16() % 4096);
    let body = input.take(body_len).to_vec();
    let events = input.events();
    let settings = input.settings();
    let info = input.info();
    Converted {
        events: convert::delivery_events(&body, events),
        settings: convert::smtp_settings(&settings),
        info: convert::plugin_info(info),
    }
}

/// The rest of the input; reads past its end yield zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.take(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    fn byte(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }

    fn string(&mut self) -> String {
        match self.byte() {
            // Long values without long inputs: length limits get exercised.
            255 => "a".repeat(usize::from(self.u16()) * 64),
            n => String::from_utf8_lossy(self.take(usize::from(n))).into_owned(),
        }
    }

    fn optional_string(&mut self) -> Option<String> {
        self.flag().then(|| self.string())
    }

    fn text(&mut self) -> wit::Text {
        if self.flag() {
            wit::Text::Owned(self.string())
        } else {
            wit::Text::Span((self.u32(), self.u32()))
        }
    }

    fn optional_text(&mut self) -> Option<wit::Text> {
        self.flag().then(|| self.text())
    }

    fn event(&mut self) -> wit::DeliveryEvent {
        use wit::EventKind as K;
        let kind = [
            K::Delivered,
            K::Deferred,
            K::Bounced,
            K::Complained,
            K::Dropped,
            K::Opened,
            K::Clicked,
            K::Unsubscribed,
        ][usize::from(self.byte() % 8)];
        let bounce_class = [
            None,
            Some(wit::BounceClass::Hard),
            Some(wit::BounceClass::Soft),
        ][usize::from(self.byte() % 3)];
        wit::DeliveryEvent {
            kind,
            bounce_class,
            recipient: self.text(),
            occurred_at: self.i64(),
            provider: self.text(),
            provider_event_id: self.optional_text(),
            provider_message_id: self.optional_text(),
            message_id: self.optional_text(),
            smtp_status: self.optional_text(),
            enhanced_status: self.optional_text(),
            diagnostic: self.optional_text(),
        }
    }

    fn events(&mut self) -> Vec<wit::DeliveryEvent> {
        match self.byte() {
            255 => vec![self.event(); MAX_EVENTS + 1],
            n => (0..n % 16).map(|_| self.event()).collect(),
        }
    }

    fn settings(&mut self) -> wit::SmtpSettings {
        let host = self.string();
        let port = self.u16();
        let security = [
            wit::Security::Starttls,
            wit::Security::Tls,
            wit::Security::None,
        ][usize::from(self.byte() % 3)];
        let username = self.optional_string();
        let password = match self.byte() % 3 {
            0 => wit::PasswordSource::None,
            1 => wit::PasswordSource::SmtpPassword,
            _ => wit::PasswordSource::OptionsField(self.string()),
        };
        let extra_headers = (0..self.byte() % 4)
            .map(|_| (self.string(), self.string()))
            .collect();
        wit::SmtpSettings {
            host,
            port,
            security,
            username,
            password,
            extra_headers,
        }
    }

    fn info(&mut self) -> wit::PluginInfo {
        let id = self.string();
        let version = self.string();
        let display_name = self.string();
        let options_schema = self.string();
        let capabilities = (0..self.byte() % 8)
            .map(|_| {
                [
                    wit::Capability::AdaptsSmtp,
                    wit::Capability::VerifiesWebhooks,
                    wit::Capability::ParsesWebhooks,
                ][usize::from(self.byte() % 3)]
            })
            .collect();
        wit::PluginInfo {
            id,
            version,
            display_name,
            options_schema,
            capabilities,
            signature_scheme: self.optional_string(),
        }
    }
}

/// What must hold of every accepted event, whatever the plugin returned:
/// no control character (other than tab) in any text field. The fuzz target
/// and the property test both assert it.
pub fn accepted_events_are_clean(events: &[NormalizedEvent]) -> bool {
    events.iter().all(|e| {
        [
            Some(&e.recipient),
            Some(&e.provider),
            e.provider_event_id.as_ref(),
            e.provider_message_id.as_ref(),
            e.message_id.as_ref(),
            e.smtp_status.as_ref(),
            e.enhanced_status.as_ref(),
            e.diagnostic.as_ref(),
        ]
        .into_iter()
        .flatten()
        .all(|s| !s.chars().any(|c| c.is_control() && c != '\t'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The committed seed corpus of the fuzz target.
    fn corpus() -> Vec<(String, Vec<u8>)> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/plugin_output");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        seeds
    }

    #[test]
    fn plugin_info_with_control_characters_is_refused() {
        let mut seed = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/corpus/plugin_output/valid-owned-event"),
        )
        .unwrap();
        // The display name `Example` is near the end; give it an ESC.
        let at = seed.windows(7).rposition(|w| w == b"Example").unwrap();
        seed[at] = 0x1b;
        let err = plugin_output(&seed).info.unwrap_err();
        assert!(
            err.contains("display_name contains control characters"),
            "{err}"
        );
    }

    #[test]
    fn the_seed_corpus_reaches_acceptance_and_each_refusal_it_is_named_for() {
        let seeds = corpus();
        assert!(seeds.len() >= 4, "{seeds:?}");
        for (name, bytes) in &seeds {
            let out = plugin_output(bytes);
            match name.as_str() {
                "valid-span-event" | "valid-owned-event" => {
                    let events = out
                        .events
                        .as_ref()
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(events.len(), 1, "{name}");
                    assert_eq!(events[0].recipient, "user@example.com", "{name}");
                    assert!(out.settings.is_ok(), "{name}: {:?}", out.settings);
                    assert!(out.info.is_ok(), "{name}: {:?}", out.info);
                }
                "span-outside-body" => {
                    assert!(out.events.unwrap_err().contains("outside"), "{name}");
                }
                "control-character" => {
                    assert!(out.events.unwrap_err().contains("control"), "{name}");
                }
                "too-many-events" => {
                    assert!(out.events.unwrap_err().contains("limit"), "{name}");
                }
                other => panic!("seed {other} has no expectation here"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_are_converted_or_refused_and_accepted_events_are_clean(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let out = plugin_output(&data);
            if let Ok(events) = &out.events {
                prop_assert!(accepted_events_are_clean(events), "{events:?}");
            }
            if let Ok(info) = &out.info {
                let texts = [Some(&info.version), Some(&info.display_name), info.signature_scheme.as_ref()];
                prop_assert!(
                    texts.into_iter().flatten().all(|t| !t.chars().any(|c| c.is_control() && c != '\t')),
                    "{info:?}"
                );
            }
        }

        #[test]
        fn seed_mutations_are_converted_or_refused_and_accepted_events_are_clean(
            seed in 0usize..8,
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let seeds = corpus();
            let (_, mut bytes) = seeds[seed % seeds.len()].clone();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let out = plugin_output(&bytes);
            if let Ok(events) = &out.events {
                prop_assert!(accepted_events_are_clean(events), "{events:?}");
            }
        }
    }
}
