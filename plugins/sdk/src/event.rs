//! A builder for unified delivery events:
//!
//! ```ignore
//! DeliveryEvent::bounced(recipient, at)
//!     .hard()
//!     .smtp("550", "5.1.1")
//!     .event_id(id)
//!     .message_id(provider_message_id)
//!     .diagnostic(text)
//! ```
//!
//! Every string setter takes `&str`, `String`, `Cow<str>`, a [`Text`] (a
//! zero-copy span from [`crate::text`]) or an `Option` of one (`None` leaves
//! the field unset). `provider` defaults to the plugin id.

use std::borrow::Cow;

use crate::types::{BounceClass, DeliveryEvent, EventKind, Text};

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Text::Owned(value.to_owned())
    }
}

impl From<String> for Text {
    fn from(value: String) -> Self {
        Text::Owned(value)
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(value: Cow<'_, str>) -> Self {
        Text::Owned(value.into_owned())
    }
}

/// A string value that may be absent: what the event setters accept.
pub trait OptionalText {
    /// `None` leaves the field unset.
    fn into_optional_text(self) -> Option<Text>;
}

macro_rules! optional_text {
    ($($t:ty),*) => {$(
        impl OptionalText for $t {
            fn into_optional_text(self) -> Option<Text> {
                Some(self.into())
            }
        }
        impl OptionalText for Option<$t> {
            fn into_optional_text(self) -> Option<Text> {
                self.map(Into::into)
            }
        }
    )*};
}

optional_text!(&str, String, Cow<'_, str>, Text);

impl DeliveryEvent {
    /// An event of `kind` for `recipient` at `occurred_at` (Unix seconds,
    /// UTC); every optional field unset, `provider` the plugin id.
    pub fn new(kind: EventKind, recipient: impl Into<Text>, occurred_at: i64) -> Self {
        DeliveryEvent {
            kind,
            bounce_class: None,
            recipient: recipient.into(),
            occurred_at,
            // Filled in with the plugin id on the way out (see `Plugin`).
            provider: Text::Owned(String::new()),
            provider_event_id: None,
            provider_message_id: None,
            message_id: None,
            smtp_status: None,
            enhanced_status: None,
            diagnostic: None,
        }
    }

    /// Accepted by the recipient's server.
    pub fn delivered(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Delivered, recipient, occurred_at)
    }

    /// Temporarily refused; the provider will retry.
    pub fn deferred(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Deferred, recipient, occurred_at)
    }

    /// The provider gave up on this recipient; add [`Self::hard`] or
    /// [`Self::soft`] when the provider says which.
    pub fn bounced(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Bounced, recipient, occurred_at)
    }

    /// A spam complaint.
    pub fn complained(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Complained, recipient, occurred_at)
    }

    /// The provider refused to attempt delivery (suppression, policy).
    pub fn dropped(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Dropped, recipient, occurred_at)
    }

    /// An open.
    pub fn opened(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Opened, recipient, occurred_at)
    }

    /// A click.
    pub fn clicked(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Clicked, recipient, occurred_at)
    }

    /// An unsubscribe.
    pub fn unsubscribed(recipient: impl Into<Text>, occurred_at: i64) -> Self {
        Self::new(EventKind::Unsubscribed, recipient, occurred_at)
    }

    /// Bounce class hard (address or permanent cause).
    pub fn hard(self) -> Self {
        self.bounce_class(Some(BounceClass::Hard))
    }

    /// Bounce class soft (transient cause).
    pub fn soft(self) -> Self {
        self.bounce_class(Some(BounceClass::Soft))
    }

    /// Sets or clears the bounce class (the host keeps it for `bounced` only).
    pub fn bounce_class(mut self, class: Option<BounceClass>) -> Self {
        self.bounce_class = class;
        self
    }

    /// The basic SMTP reply code and the RFC 3463 enhanced status.
    pub fn smtp(mut self, code: impl OptionalText, enhanced: impl OptionalText) -> Self {
        self.smtp_status = code.into_optional_text();
        self.enhanced_status = enhanced.into_optional_text();
        self
    }

    /// Fills the reply code and enhanced status still unset from the first
    /// ones in `text` (see [`crate::smtp::extract_status`]). An enhanced
    /// status is taken only beside the code already set (or taken now), so
    /// the two never come from different replies.
    pub fn status_from(mut self, text: Option<&str>) -> Self {
        let Some((code, enhanced)) = text.and_then(crate::smtp::extract_status) else {
            return self;
        };
        let same_code = match &self.smtp_status {
            None => true,
            Some(Text::Owned(existing)) => *existing == code,
            Some(Text::Span(_)) => false,
        };
        if self.smtp_status.is_none() {
            self.smtp_status = Some(Text::Owned(code));
        }
        if self.enhanced_status.is_none() && same_code {
            self.enhanced_status = enhanced.map(Text::Owned);
        }
        self
    }

    /// The remote server's text, verbatim.
    pub fn diagnostic(mut self, text: impl OptionalText) -> Self {
        self.diagnostic = text.into_optional_text();
        self
    }

    /// The provider's id of this event (the dedupe key).
    pub fn event_id(mut self, id: impl OptionalText) -> Self {
        self.provider_event_id = id.into_optional_text();
        self
    }

    /// The provider's id of the message.
    pub fn message_id(mut self, id: impl OptionalText) -> Self {
        self.provider_message_id = id.into_optional_text();
        self
    }

    /// Our own Message-ID header, when the provider echoes it.
    pub fn our_message_id(mut self, id: impl OptionalText) -> Self {
        self.message_id = id.into_optional_text();
        self
    }

    /// The provider name as the payload states it, when it differs from the
    /// plugin id.
    pub fn provider(mut self, name: impl Into<Text>) -> Self {
        self.provider = name.into();
        self
    }
}

/// Limits the host enforces on `parse-webhook` output (host/src/runtime/convert.rs).
/// Output beyond them fails the call as a plugin fault (a 500, so the
/// provider retries in vain); checking input against them turns an
/// authentic but unusable payload into a 400 instead.
pub mod limits {
    use std::borrow::Cow;

    use crate::types::ParseError;

    /// Events in one call.
    pub const MAX_EVENTS: usize = 10_000;
    /// Bytes of a recipient or id.
    pub const MAX_ID_LEN: usize = 1_024;
    /// Bytes of a diagnostic.
    pub const MAX_DIAGNOSTIC_LEN: usize = 16 << 10;
    /// 9999-12-31T23:59:59Z, the last instant the host accepts.
    pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

    fn is_control(c: char) -> bool {
        c.is_control() && c != '\t'
    }

    /// Whether `s` has a control character other than tab (Unicode Cc:
    /// U+0000–U+001F, U+007F, and U+0080–U+009F, encoded `C2 80`–`C2 9F`):
    /// a byte scan, as the host does, rather than decoding every char, which
    /// cost a few per cent of a call under wasm.
    fn has_control(s: &str) -> bool {
        let b = s.as_bytes();
        b.iter().enumerate().any(|(i, &c)| {
            (c < 0x20 && c != b'\t')
                || c == 0x7f
                || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
        })
    }

    /// `value` as a recipient or id: non-empty, at most [`MAX_ID_LEN`]
    /// bytes, no control characters (other than tab).
    pub fn id<'a>(field: &str, value: &'a str) -> Result<&'a str, ParseError> {
        if value.is_empty() {
            return Err(ParseError::Invalid(format!("{field} is empty")));
        }
        if value.len() > MAX_ID_LEN || has_control(value) {
            return Err(ParseError::Invalid(format!(
                "{field} is too long or contains control characters"
            )));
        }
        Ok(value)
    }

    /// Remote server text, verbatim when the host accepts it; otherwise
    /// control characters (a multi-line reply) become spaces and the text is
    /// cut at [`MAX_DIAGNOSTIC_LEN`] bytes on a character boundary.
    pub fn diagnostic(value: &str) -> Cow<'_, str> {
        if value.len() <= MAX_DIAGNOSTIC_LEN && !has_control(value) {
            return Cow::Borrowed(value);
        }
        let mut clean = String::with_capacity(value.len().min(MAX_DIAGNOSTIC_LEN));
        for c in value.chars() {
            if clean.len() + c.len_utf8() > MAX_DIAGNOSTIC_LEN {
                break;
            }
            clean.push(if is_control(c) { ' ' } else { c });
        }
        Cow::Owned(clean)
    }

    /// Unix seconds the host accepts (years 1970 to 9999).
    pub fn unix_seconds(field: &str, seconds: i64) -> Result<i64, ParseError> {
        if (0..=MAX_UNIX_SECONDS).contains(&seconds) {
            Ok(seconds)
        } else {
            Err(ParseError::Invalid(format!(
                "{field} is outside years 1970-9999"
            )))
        }
    }

    /// Unix seconds from a JSON number (fractions truncated), in range.
    pub fn unix_seconds_from_number(
        field: &str,
        n: &serde_json::Number,
    ) -> Result<i64, ParseError> {
        let seconds = match n.as_i64() {
            Some(i) => i,
            // Saturating cast; the range check refuses the extremes.
            None => match n.as_f64().filter(|f| f.is_finite()) {
                Some(f) => f.trunc() as i64,
                None => return Err(ParseError::Invalid(format!("{field} is not a number"))),
            },
        };
        unix_seconds(field, seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(t: &Option<Text>) -> Option<&str> {
        match t {
            Some(Text::Owned(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn builder_sets_what_it_is_given_and_nothing_else() {
        let e = DeliveryEvent::bounced("a@example.com", 5)
            .hard()
            .smtp("550", "5.1.1")
            .event_id(Some("ev"))
            .message_id(None::<&str>)
            .diagnostic(String::from("550 5.1.1 no"));
        assert_eq!(e.kind, EventKind::Bounced);
        assert_eq!(e.bounce_class, Some(BounceClass::Hard));
        assert_eq!(owned(&e.smtp_status), Some("550"));
        assert_eq!(owned(&e.enhanced_status), Some("5.1.1"));
        assert_eq!(owned(&e.provider_event_id), Some("ev"));
        assert!(e.provider_message_id.is_none() && e.message_id.is_none());
        assert_eq!(owned(&e.diagnostic), Some("550 5.1.1 no"));
        assert!(matches!(&e.provider, Text::Owned(p) if p.is_empty()));
    }

    #[test]
    fn limits_refuse_unusable_ids_and_clean_diagnostics() {
        assert!(limits::id("recipient", "").is_err());
        assert!(limits::id("recipient", "a\u{7}@example.com").is_err());
        assert!(limits::id("recipient", &"x".repeat(1025)).is_err());
        assert_eq!(limits::id("recipient", "a\tb"), Ok("a\tb"));
        assert_eq!(limits::diagnostic("550 ok"), "550 ok");
        assert_eq!(limits::diagnostic("550\r\nnext"), "550  next");
        let long = "é".repeat(10_000);
        let cut = limits::diagnostic(&long);
        assert!(cut.len() <= limits::MAX_DIAGNOSTIC_LEN && cut.len() > 16_000);
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        assert_eq!(
            limits::unix_seconds_from_number("t", &n("1767268695.9")),
            Ok(1_767_268_695)
        );
        assert!(limits::unix_seconds_from_number("t", &n("-1")).is_err());
        assert!(limits::unix_seconds_from_number("t", &n("1e300")).is_err());
    }

    #[test]
    fn control_byte_scan_agrees_with_char_is_control() {
        for s in ["plain", "tab\there", "nul\0", "del\u{7f}", "c1\u{85}", "\u{9f}", "\u{a0}é ü €", "\u{100}"] {
            assert_eq!(
                limits::id("f", s).is_err(),
                s.chars().any(|c| c.is_control() && c != '\t'),
                "{s:?}"
            );
        }
    }

    #[test]
    fn status_from_text_fills_only_missing_codes() {
        let e =
            DeliveryEvent::deferred("a@example.com", 0).status_from(Some("smtp;452 4.2.2 full"));
        assert_eq!(owned(&e.smtp_status), Some("452"));
        assert_eq!(owned(&e.enhanced_status), Some("4.2.2"));
        let e = DeliveryEvent::bounced("a@example.com", 0)
            .smtp("550", None::<&str>)
            .status_from(Some("421 4.7.0 later"));
        assert_eq!(owned(&e.smtp_status), Some("550"));
        assert!(e.enhanced_status.is_none());
        let e = DeliveryEvent::bounced("a@example.com", 0)
            .smtp("550", None::<&str>)
            .status_from(Some("550 5.7.1 blocked"));
        assert_eq!(owned(&e.enhanced_status), Some("5.7.1"));
        let e = DeliveryEvent::opened("a@example.com", 0).status_from(None);
        assert!(e.smtp_status.is_none() && e.enhanced_status.is_none());
    }
}
