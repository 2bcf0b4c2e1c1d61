//! `POST /v1/messages` bodies: parsed, checked against the live
//! configuration (workspace, connection, allowed From) and formatted into
//! the RFC 5322 bytes the queue stores. Every problem is collected as a
//! field error, so one answer lists them all.

use std::collections::BTreeMap;

use base64::Engine as _;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde::{Deserialize, Serialize};

use super::route;
use crate::config::connection::OWNED_HEADERS;
use crate::state::Snapshot;
use crate::store::queue::{Field, NewMessage};

/// Most recipients (to + cc + bcc) of one message.
pub const MAX_RECIPIENTS: usize = 100;
/// Most custom headers of one message.
pub const MAX_HEADERS: usize = 50;

/// The sender: an address, or an address with a display name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Sender {
    /// `"news@example.com"`.
    Address(String),
    /// `{"email": "news@example.com", "name": "Example News"}`.
    Mailbox {
        /// Address.
        email: String,
        /// Display name.
        #[serde(default)]
        name: Option<String>,
    },
}

/// An attachment in a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRequest {
    /// File name shown to the recipient.
    pub filename: String,
    /// MIME type (`application/pdf`); default `application/octet-stream`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The bytes, base64 (standard alphabet, padding optional).
    pub content: String,
}

/// The body of `POST /v1/messages` (and each item of a batch).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// Workspace it is sent for; its connections are used in priority order.
    #[serde(default)]
    pub workspace: Option<String>,
    /// A connection to use (and only this one: no failover).
    #[serde(default)]
    pub connection: Option<String>,
    /// From; default: the first connection's `from`.
    #[serde(default)]
    pub from: Option<Sender>,
    /// Recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Blind-copy recipients (in no header).
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Reply-To address.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// Extra header fields (not ones mailplug writes itself).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<AttachmentRequest>,
    /// Repeating a key (within the workspace) returns the first message's
    /// id and queues nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// One problem with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON Pointer of the field (`/to/1`), or `""` for the whole message.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Size limits of composed messages.
#[derive(Debug, Clone, Copy)]
pub struct ComposeLimits {
    /// Largest formatted message in bytes (attachments included).
    pub max_message_bytes: usize,
}

impl Default for ComposeLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 10 << 20,
        }
    }
}

/// A message's body before attachments: one part, or text and HTML as
/// alternatives.
enum Body {
    Single(SinglePart),
    Alternative(MultiPart),
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// Checks a request against the live configuration and formats it.
/// `available` says whether a connection may take new mail now (its
/// circuit is not open); the first available one of the workspace gets it.
pub fn compose(
    snapshot: &Snapshot,
    request: &MessageRequest,
    limits: ComposeLimits,
    available: &dyn Fn(&str) -> bool,
) -> Result<NewMessage, Vec<FieldError>> {
    let mut errors = Vec::new();
    // Where it goes.
    let from_email = match &request.from {
        Some(Sender::Address(a) | Sender::Mailbox { email: a, .. }) => Some(a.trim().to_owned()),
        None => None,
    };
    let route = route::for_request(
        snapshot,
        request.workspace.as_deref(),
        request.connection.as_deref(),
        from_email.as_deref(),
    );
    let connections = match route {
        Ok(c) => c,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let first = connections
        .iter()
        .find(|c| available(&c.name))
        .or(connections.first());
    // Who sends it.
    let from = match (&request.from, first) {
        (Some(sender), _) => {
            let (email, name) = match sender {
                Sender::Address(a) => (a.trim(), None),
                Sender::Mailbox { email, name } => (email.trim(), name.clone()),
            };
            if name.as_deref().is_some_and(has_line_break) {
                errors.push(err("/from/name", "must not contain line breaks"));
            }
            match crate::address::parse(email) {
                Ok(a) => Some(Mailbox::new(name, a)),
                Err(e) => {
                    errors.push(err("/from", e.to_string()));
                    None
                }
            }
        }
        (None, Some(c)) => Some(Mailbox::new(c.from.name.clone(), c.from.email.clone())),
        (None, None) => None,
    };
    // Recipients; an address listed twice (to and cc) gets one copy, under
    // its first field.
    let mut recipients: Vec<(Mailbox, Field)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (list, field, name) in [
        (&request.to, Field::To, "to"),
        (&request.cc, Field::Cc, "cc"),
        (&request.bcc, Field::Bcc, "bcc"),
    ] {
        for (i, r) in list.iter().enumerate() {
            match r.trim().parse::<Mailbox>() {
                Ok(m) if !has_line_break(r) => {
                    if seen.insert(crate::store::address_key(m.email.as_ref())) {
                        recipients.push((m, field));
                    }
                }
                Ok(_) => errors.push(err(format!("/{name}/{i}"), "must not contain line breaks")),
                Err(e) => errors.push(err(
                    format!("/{name}/{i}"),
                    format!("{:?} is not a valid address: {e}", r),
                )),
            }
        }
    }
    if request.to.is_empty() && request.cc.is_empty() && request.bcc.is_empty() {
        errors.push(err(
            "/to",
            "at least one recipient (to, cc or bcc) is required",
        ));
    }
    if recipients.len() > MAX_RECIPIENTS {
        errors.push(err(
            "/to",
            format!("at most {MAX_RECIPIENTS} recipients per message (to + cc + bcc)"),
        ));
    }
    let reply_to = match &request.reply_to {
        Some(r) => match r.trim().parse::<Mailbox>() {
            Ok(m) if !has_line_break(r) => Some(m),
            _ => {
                errors.push(err("/reply_to", format!("{r:?} is not a valid address")));
                None
            }
        },
        None => None,
    };
    if has_line_break(&request.subject) {
        errors.push(err("/subject", "must not contain line breaks"));
    }
    if request.text.is_none() && request.html.is_none() {
        errors.push(err("/text", "a text or an html body is required"));
    }
    if request.headers.len() > MAX_HEADERS {
        errors.push(err("/headers", format!("at most {MAX_HEADERS} headers")));
    }
    let provider_headers: Vec<String> = first
        .map(|c| {
            c.smtp
                .extra_headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    for (name, value) in &request.headers {
        let pointer = format!("/headers/{}", name.replace('~', "~0").replace('/', "~1"));
        let lower = name.to_ascii_lowercase();
        let valid_name = !name.is_empty()
            && name.len() <= 76
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !valid_name {
            errors.push(err(pointer, "not a valid header field name"));
        } else if OWNED_HEADERS.contains(&lower.as_str()) || provider_headers.contains(&lower) {
            errors.push(err(
                pointer,
                format!(
                    "{name} is set by mailplug (or the provider plugin) and cannot be overridden"
                ),
            ));
        } else if has_line_break(value) || value.contains('\0') {
            errors.push(err(pointer, "header values must not contain line breaks"));
        } else if value.len() > 998 {
            errors.push(err(pointer, "header values are limited to 998 characters"));
        }
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        errors.push(err("/idempotency_key", "must be 1 to 200 characters"));
    }
    let mut attachments = Vec::new();
    let mut attached = 0usize;
    for (i, a) in request.attachments.iter().enumerate() {
        let content_type = a
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let ct = match ContentType::parse(content_type) {
            Ok(ct) => ct,
            Err(_) => {
                errors.push(err(
                    format!("/attachments/{i}/content_type"),
                    format!("{content_type:?} is not a MIME type"),
                ));
                continue;
            }
        };
        if a.filename.is_empty()
            || a.filename.len() > 255
            || a.filename.chars().any(char::is_control)
        {
            errors.push(err(
                format!("/attachments/{i}/filename"),
                "must be 1 to 255 characters without control characters",
            ));
            continue;
        }
        let engine = base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let cleaned: String = a.content.chars().filter(|c| !c.is_whitespace()).collect();
        match engine.decode(cleaned.as_bytes()) {
            Ok(bytes) => {
                attached = attached.saturating_add(bytes.len());
                attachments.push(Attachment::new(a.filename.clone()).body(bytes, ct));
            }
            Err(e) => errors.push(err(
                format!("/attachments/{i}/content"),
                format!("not valid base64: {e}"),
            )),
        }
    }
    if attached > limits.max_message_bytes {
        errors.push(err(
            "/attachments",
            format!(
                "attachments total {attached} bytes, more than the {} allowed per message",
                limits.max_message_bytes
            ),
        ));
    }
    let (Some(from), Some(first)) = (from, first) else {
        if errors.is_empty() {
            errors.push(err("", "no connection can send this message"));
        }
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let message_id = crate::mail::new_message_id(from.email.as_ref());
    let header_id = message_id
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(request.subject.clone())
        .date_now()
        .message_id(Some(message_id))
        .user_agent(format!("mailplug/{}", env!("CARGO_PKG_VERSION")));
    for (m, field) in &recipients {
        builder = match field {
            Field::To => builder.to(m.clone()),
            Field::Cc => builder.cc(m.clone()),
            Field::Bcc => builder,
        };
    }
    if let Some(r) = reply_to {
        builder = builder.reply_to(r);
    }
    // The envelope is per delivery; this one only satisfies the builder.
    let envelope = lettre::address::Envelope::new(
        Some(from.email.clone()),
        vec![recipients[0].0.email.clone()],
    );
    let Ok(envelope) = envelope else {
        return Err(vec![err("", "cannot build the envelope")]);
    };
    builder = builder.envelope(envelope);
    // Each part is built once (building a part encodes its body); one body
    // part alone needs no multipart wrapper.
    let body = match (&request.text, &request.html) {
        (Some(t), Some(h)) => {
            Body::Alternative(MultiPart::alternative_plain_html(t.clone(), h.clone()))
        }
        (Some(t), None) => Body::Single(SinglePart::plain(t.clone())),
        (None, Some(h)) => Body::Single(SinglePart::html(h.clone())),
        (None, None) => return Err(vec![err("/text", "a text or an html body is required")]),
    };
    let built = match body {
        Body::Single(part) if attachments.is_empty() => builder.singlepart(part),
        Body::Alternative(parts) if attachments.is_empty() => builder.multipart(parts),
        body => {
            let mut mixed = match body {
                Body::Single(part) => MultiPart::mixed().singlepart(part),
                Body::Alternative(parts) => MultiPart::mixed().multipart(parts),
            };
            for a in attachments {
                mixed = mixed.singlepart(a);
            }
            builder.multipart(mixed)
        }
    };
    let message = built.map_err(|e| vec![err("", format!("cannot build the message: {e}"))])?;
    let custom: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let raw = crate::mail::message::with_extra_headers(&custom, message.formatted())
        .map_err(|e| vec![err("/headers", e.to_string())])?;
    if raw.len() > limits.max_message_bytes.saturating_add(64 << 10) {
        return Err(vec![err(
            "",
            format!(
                "the message is {} bytes, more than the {} allowed",
                raw.len(),
                limits.max_message_bytes
            ),
        )]);
    }
    let workspace = request.workspace.clone().unwrap_or_default();
    Ok(NewMessage {
        workspace,
        pinned_connection: request.connection.clone(),
        connection: first.name.clone(),
        idempotency_key: request.idempotency_key.clone(),
        from_email: from.email.to_string(),
        subject: request.subject.clone(),
        message_id_header: header_id,
        raw,
        recipients: recipients
            .into_iter()
            .map(|(m, f)| (m.email.to_string(), f))
            .collect(),
    })
}
