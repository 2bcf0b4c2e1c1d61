//! Standard Webhooks verification (spec 1.0.0): `v1` HMAC-SHA256 with
//! `whsec_` secrets and `v1a` Ed25519 with `whpk_` public keys, several
//! signatures per header (key rotation), a timestamp tolerance window.
//! Svix (Resend) is the same scheme with `svix-` header names.

use crate::header;
use crate::host::{self, Hash};
use crate::types::{VerifyError, WebhookRequest};

/// The spec's (and the official libraries') default tolerance.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// Header names of one flavour of the scheme.
#[derive(Debug, Clone, Copy)]
pub struct Headers {
    /// Message id header (stable across retries).
    pub id: &'static str,
    /// Unix-seconds timestamp header.
    pub timestamp: &'static str,
    /// Space-separated `version,base64` signature list.
    pub signature: &'static str,
}

/// `webhook-id` / `webhook-timestamp` / `webhook-signature`.
pub const STANDARD: Headers = Headers {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

/// `svix-id` / `svix-timestamp` / `svix-signature`.
pub const SVIX: Headers = Headers {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

enum Key {
    Symmetric(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// Parses the configured secret: one or more whitespace-separated keys
/// (`whsec_…`, bare base64 also accepted as symmetric, or `whpk_…`), so an
/// operator can rotate by listing the new key beside the old one.
fn parse_keys(secret: &str) -> Result<Vec<Key>, VerifyError> {
    let mut keys = Vec::new();
    for item in secret.split_whitespace() {
        let (is_public, b64) = match item.strip_prefix("whpk_") {
            Some(rest) => (true, rest),
            None => (false, item.strip_prefix("whsec_").unwrap_or(item)),
        };
        let bytes = host::base64_decode(b64).map_err(|e| {
            VerifyError::Malformed(format!("webhook secret is not valid base64: {e}"))
        })?;
        if bytes.is_empty() {
            return Err(VerifyError::Malformed("webhook secret is empty".into()));
        }
        keys.push(if is_public {
            Key::Ed25519(bytes)
        } else {
            Key::Symmetric(bytes)
        });
    }
    if keys.is_empty() {
        return Err(VerifyError::Malformed(
            "no webhook secret configured".into(),
        ));
    }
    Ok(keys)
}

/// Verifies `request` against `secret` at time `now` (Unix seconds).
///
/// Every listed signature of a known version is tried against every
/// configured key; unknown versions are skipped; comparison is constant-time.
pub fn verify(
    request: &WebhookRequest,
    secret: &str,
    names: Headers,
    now: i64,
    tolerance: i64,
) -> Result<(), VerifyError> {
    let id =
        header(request, names.id).ok_or_else(|| VerifyError::MissingHeader(names.id.into()))?;
    let ts_text = header(request, names.timestamp)
        .ok_or_else(|| VerifyError::MissingHeader(names.timestamp.into()))?;
    let signatures = header(request, names.signature)
        .ok_or_else(|| VerifyError::MissingHeader(names.signature.into()))?;
    let timestamp: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed(format!("{} is not an integer", names.timestamp)))?;
    let skew = now.saturating_sub(timestamp);
    if skew.saturating_abs() > tolerance {
        return Err(VerifyError::TimestampOutOfTolerance(skew));
    }
    let keys = parse_keys(secret)?;

    let mut signed = Vec::with_capacity(id.len() + ts_text.len() + request.body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(&request.body);

    let macs: Vec<Vec<u8>> = keys
        .iter()
        .filter_map(|k| match k {
            Key::Symmetric(key) => Some(host::hmac(Hash::Sha256, key, &signed)),
            Key::Ed25519(_) => None,
        })
        .collect();
    let mut seen_known_version = false;
    for entry in signatures.split_whitespace() {
        let Some((version, b64)) = entry.split_once(',') else {
            continue;
        };
        let Ok(sig) = host::base64_decode(b64) else {
            continue;
        };
        match version {
            "v1" => {
                seen_known_version = true;
                if macs.iter().any(|mac| host::constant_time_eq(mac, &sig)) {
                    return Ok(());
                }
            }
            "v1a" => {
                seen_known_version = true;
                for key in &keys {
                    if let Key::Ed25519(pk) = key
                        && host::verify_ed25519(pk, &signed, &sig) == Ok(true)
                    {
                        return Ok(());
                    }
                }
            }
            _ => {}
        }
    }
    if seen_known_version {
        Err(VerifyError::BadSignature)
    } else {
        Err(VerifyError::Malformed(format!(
            "{} has no v1/v1a signature",
            names.signature
        )))
    }
}
