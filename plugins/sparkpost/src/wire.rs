//! SparkPost's webhook body as borrowed serde types: the array elements,
//! the `msys` wrapper with one entry per event class, and the fields of an
//! event that the mapping reads. Everything else is skipped unparsed.

use std::borrow::Cow;
use std::fmt;

use mailplug_sdk::json::{Id, Object, Str};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

/// Classes whose events can have a unified kind.
const READ_CLASSES: [&str; 4] = [
    "message_event",
    "track_event",
    "gen_event",
    "unsubscribe_event",
];

/// One array element: `{"msys": {...}}` (other keys are ignored).
#[derive(Deserialize)]
pub struct Element<'a> {
    #[serde(borrow)]
    pub msys: Option<Msys<'a>>,
}

/// The entries of `msys` in body order: empty for the validation ping
/// (`{"msys": {}}`), normally one.
pub struct Msys<'a>(pub Vec<Entry<'a>>);

/// One `msys` entry.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every entry is `Read`: boxing it would allocate once per event"
)]
pub enum Entry<'a> {
    /// An event of a class in [`READ_CLASSES`] (the class name, the event).
    Read(&'static str, Object<Event<'a>>),
    /// An event of another class (relay, A/B test, ingest, or one SparkPost
    /// adds): only its `type` is read, for the log.
    Skipped(Cow<'a, str>, Option<Str<'a>>),
}

/// The fields of one SparkPost event that the mapping reads.
#[derive(Deserialize)]
pub struct Event<'a> {
    /// Event type (`delivery`, `bounce`, `open`, ...).
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    /// Recipient, lower-cased by SparkPost (`raw_rcpt_to` is as submitted).
    #[serde(borrow)]
    pub rcpt_to: Option<Str<'a>>,
    /// Unix seconds of the event, as a string.
    #[serde(borrow)]
    pub timestamp: Option<RawTime<'a>>,
    /// Per-event id, a decimal string beyond 2^53: kept as written.
    #[serde(borrow)]
    pub event_id: Option<Id<'a>>,
    /// The id the Transmissions API returns (also for SMTP injections).
    #[serde(borrow)]
    pub transmission_id: Option<Id<'a>>,
    /// SparkPost's internal per-message id (used without a transmission id).
    #[serde(borrow)]
    pub message_id: Option<Id<'a>>,
    /// Bounce classification code, a string such as `"10"`.
    #[serde(borrow)]
    pub bounce_class: Option<Id<'a>>,
    /// The SMTP reply code, a string such as `"550"`.
    #[serde(borrow)]
    pub error_code: Option<Id<'a>>,
    /// The remote server's reply, unredacted.
    #[serde(borrow)]
    pub raw_reason: Option<Str<'a>>,
    /// The same reply with the address masked.
    #[serde(borrow)]
    pub reason: Option<Str<'a>>,
    /// On `spam_complaint`: the feedback type (`abuse`, `not-spam`, ...).
    #[serde(borrow)]
    pub fbtype: Option<Str<'a>>,
}

/// Just the `type` of an event of a class without unified kinds.
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
}

/// A `timestamp` as sent: a string (normally digits), or a JSON number.
#[derive(Debug, Clone, PartialEq)]
pub enum RawTime<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Float(f64),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTime<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTime<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Unix seconds as a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawTime::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTime::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawTime::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                // Beyond i64 is beyond year 9999 anyway: refused later.
                Ok(RawTime::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawTime::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Msys<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Msys<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an msys object of event classes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(1);
                while let Some(Str(class)) = map.next_key::<Str<'de>>()? {
                    match READ_CLASSES.iter().find(|c| **c == class) {
                        Some(known) => entries.push(Entry::Read(known, map.next_value()?)),
                        None if matches!(
                            &*class,
                            "relay_event" | "ab_test_event" | "ingest_event"
                        ) =>
                        {
                            let Object(TypeOnly { kind }) = map.next_value()?;
                            entries.push(Entry::Skipped(class, kind));
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            entries.push(Entry::Skipped(class, None));
                        }
                    }
                }
                Ok(Msys(entries))
            }
        }
        d.deserialize_map(V)
    }
}
