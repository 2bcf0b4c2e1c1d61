//! Ready webhook verifiers for the common schemes. Every comparison of a
//! secret or MAC goes through the host's constant-time equality; every
//! malformed input is a [`VerifyError`], never a panic.
//!
//! - [`Hmac`]: HMAC (SHA-256 or SHA-1), hex or base64, over chosen parts
//!   (timestamp, body, headers, literals) with a timestamp window.
//! - [`hmac_matches`] and [`check_timestamp`] for schemes that sign fields
//!   inside the body (Mailgun).
//! - [`basic_auth`] and [`bearer`] for providers that sign nothing.
//! - [`svix`] and [`standard_webhooks`] (key rotation, several signatures).
//! - [`ecdsa_p256_sha256`] and [`rsa_pkcs1v15`] over public keys parsed by
//!   [`public_keys`].

use crate::header;
use crate::host::{self, Hash};
use crate::standard_webhooks;
use crate::types::{VerifyError, WebhookRequest};

/// The tolerance most providers document or imply (5 minutes either way).
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// The header `name`, or `MissingHeader(name)`.
pub fn required_header<'a>(
    request: &'a WebhookRequest,
    name: &str,
) -> Result<&'a str, VerifyError> {
    header(request, name).ok_or_else(|| VerifyError::MissingHeader(name.to_ascii_lowercase()))
}

/// Unix seconds written as plain ASCII digits (what `what` holds).
pub fn parse_unix_seconds(text: &str, what: &str) -> Result<i64, VerifyError> {
    let text = text.trim();
    Some(text)
        .filter(|t| !t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| VerifyError::Malformed(format!("{what} is not Unix seconds")))
}

/// Refuses a signed time more than `tolerance` seconds from `now`, in
/// either direction (the error carries `now - sent`).
pub fn check_timestamp(sent: i64, now: i64, tolerance: i64) -> Result<(), VerifyError> {
    let skew = now.saturating_sub(sent);
    if skew.saturating_abs() > tolerance {
        return Err(VerifyError::TimestampOutOfTolerance(skew));
    }
    Ok(())
}

/// How a MAC or signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64, padding optional.
    Base64,
}

/// Decodes hexadecimal (either case); `None` on odd length or a non-hex digit.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn decode(text: &str, encoding: Encoding, what: &str) -> Result<Vec<u8>, VerifyError> {
    let text = text.trim();
    let decoded = match encoding {
        Encoding::Hex => hex_decode(text),
        Encoding::Base64 => host::base64_decode(text).ok(),
    };
    match decoded {
        Some(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(VerifyError::Malformed(format!(
            "{what} is not {}",
            match encoding {
                Encoding::Hex => "hexadecimal",
                Encoding::Base64 => "base64",
            }
        ))),
    }
}

/// Whether `signature` (as written, in `encoding`) is the HMAC of `message`
/// under `key`; `Malformed` when it cannot be decoded.
pub fn hmac_matches(
    hash: Hash,
    key: &[u8],
    message: &[u8],
    signature: &str,
    encoding: Encoding,
    what: &str,
) -> Result<bool, VerifyError> {
    let given = decode(signature, encoding, what)?;
    let mac = host::hmac(hash, key, message);
    Ok(host::constant_time_eq(&mac, &given))
}

/// One piece of the bytes an HMAC scheme signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The timestamp header's value exactly as sent.
    Timestamp,
    /// The raw body.
    Body,
    /// A header's value exactly as sent (missing → `MissingHeader`).
    Header(&'static str),
    /// Fixed bytes, e.g. a separator.
    Literal(&'static str),
    /// The request path and query as received.
    Path,
}

/// An HMAC signature scheme: which header holds the signature, how it is
/// written, what it signs, and the timestamp window.
///
/// ```ignore
/// // X-Sig: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>
/// verify::Hmac::sha256("x-sig", Encoding::Hex)
///     .prefix("sha256=")
///     .timestamp("x-sig-timestamp")
///     .signs(&[Part::Timestamp, Part::Literal("."), Part::Body])
///     .verify(request, secret.as_bytes(), host::now())
/// ```
#[derive(Debug, Clone)]
pub struct Hmac {
    hash: Hash,
    encoding: Encoding,
    signature_header: &'static str,
    prefix: &'static str,
    timestamp_header: Option<&'static str>,
    /// `None`: the connection's `webhook.tolerance` from the host.
    tolerance: Option<i64>,
    parts: Vec<Part>,
}

impl Hmac {
    /// HMAC-SHA256 in `signature_header`, signing the body alone until
    /// [`Hmac::signs`] says otherwise.
    pub fn sha256(signature_header: &'static str, encoding: Encoding) -> Self {
        Self::new(Hash::Sha256, signature_header, encoding)
    }

    /// HMAC-SHA1 (legacy providers).
    pub fn sha1(signature_header: &'static str, encoding: Encoding) -> Self {
        Self::new(Hash::Sha1, signature_header, encoding)
    }

    fn new(hash: Hash, signature_header: &'static str, encoding: Encoding) -> Self {
        Self {
            hash,
            encoding,
            signature_header,
            prefix: "",
            timestamp_header: None,
            tolerance: None,
            parts: vec![Part::Body],
        }
    }

    /// A prefix the signature header value starts with (e.g. `sha256=`).
    pub fn prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }

    /// The header with the signed Unix-seconds timestamp, checked against
    /// the window before any MAC is computed.
    pub fn timestamp(mut self, header: &'static str) -> Self {
        self.timestamp_header = Some(header);
        self
    }

    /// A fixed timestamp window in seconds, instead of the connection's
    /// `webhook.tolerance` ([`crate::host::signature_tolerance`], default
    /// 300) which applies otherwise.
    pub fn tolerance(mut self, seconds: i64) -> Self {
        self.tolerance = Some(seconds);
        self
    }

    /// The signed bytes, concatenated in this order.
    pub fn signs(mut self, parts: &[Part]) -> Self {
        self.parts = parts.to_vec();
        self
    }

    /// Verifies `request` with `key` at `now`.
    pub fn verify(
        &self,
        request: &WebhookRequest,
        key: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        if key.is_empty() {
            return Err(VerifyError::Malformed("webhook secret is empty".into()));
        }
        let signature = required_header(request, self.signature_header)?;
        let timestamp = match self.timestamp_header {
            Some(name) => {
                let text = required_header(request, name)?;
                let tolerance = self
                    .tolerance
                    .unwrap_or_else(crate::host::signature_tolerance);
                check_timestamp(parse_unix_seconds(text, name)?, now, tolerance)?;
                Some(text)
            }
            None => None,
        };
        let signature = signature.trim().strip_prefix(self.prefix).ok_or_else(|| {
            VerifyError::Malformed(format!(
                "{} does not start with {:?}",
                self.signature_header, self.prefix
            ))
        })?;
        let mut signed = Vec::with_capacity(request.body.len() + 64);
        for part in &self.parts {
            match part {
                Part::Timestamp => signed.extend_from_slice(
                    timestamp
                        .ok_or_else(|| {
                            VerifyError::Malformed(
                                "scheme signs a timestamp but names no timestamp header".into(),
                            )
                        })?
                        .as_bytes(),
                ),
                Part::Body => signed.extend_from_slice(&request.body),
                Part::Header(name) => {
                    signed.extend_from_slice(required_header(request, name)?.as_bytes())
                }
                Part::Literal(bytes) => signed.extend_from_slice(bytes.as_bytes()),
                Part::Path => signed.extend_from_slice(request.path.as_bytes()),
            }
        }
        if hmac_matches(
            self.hash,
            key,
            &signed,
            signature,
            self.encoding,
            self.signature_header,
        )? {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// HTTP basic auth against `secret` written as `user:password` (what the
/// provider's webhook URL embeds). The decoded credentials are compared in
/// constant time; a wrong scheme, bad base64 or wrong pair is `BadSignature`.
pub fn basic_auth(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
    if !secret.contains(':') {
        return Err(VerifyError::Malformed(
            "webhook secret for basic auth must be written user:password".into(),
        ));
    }
    let given = required_header(request, "authorization")?;
    let Some(encoded) = strip_scheme(given, "basic") else {
        return Err(VerifyError::BadSignature);
    };
    let decoded = host::base64_decode(encoded).map_err(|_| {
        VerifyError::Malformed("authorization: basic credentials are not base64".into())
    })?;
    if host::constant_time_eq(&decoded, secret.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// `Authorization: Bearer <secret>`, compared in constant time.
pub fn bearer(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::Malformed("webhook secret is empty".into()));
    }
    let given = required_header(request, "authorization")?;
    match strip_scheme(given, "bearer") {
        Some(token) if host::constant_time_eq(token.as_bytes(), secret.as_bytes()) => Ok(()),
        _ => Err(VerifyError::BadSignature),
    }
}

/// The credentials after an auth scheme name (case-insensitive) and spaces.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let value = value.trim();
    let (name, rest) = value.split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Svix signatures (`svix-id`, `svix-timestamp`, `svix-signature`) within
/// the connection's `webhook.tolerance` (default 300 s); `secret` may list
/// several `whsec_` keys.
pub fn svix(request: &WebhookRequest, secret: &str, now: i64) -> Result<(), VerifyError> {
    standard_webhooks::verify(
        request,
        secret,
        standard_webhooks::SVIX,
        now,
        crate::host::signature_tolerance(),
    )
}

/// Standard Webhooks signatures (`webhook-*` headers), `v1` and `v1a`,
/// within the connection's `webhook.tolerance` (default 300 s).
pub fn standard_webhooks(
    request: &WebhookRequest,
    secret: &str,
    now: i64,
) -> Result<(), VerifyError> {
    standard_webhooks::verify(
        request,
        secret,
        standard_webhooks::STANDARD,
        now,
        crate::host::signature_tolerance(),
    )
}

/// Public keys from a configured secret: one PEM block, or base64 DER keys
/// separated by whitespace (several during a rotation).
pub fn public_keys(secret: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
    if secret.contains("-----BEGIN") {
        return Ok(vec![secret.as_bytes().to_vec()]);
    }
    let keys = secret
        .split_whitespace()
        .map(|k| {
            host::base64_decode(k).map_err(|e| {
                VerifyError::Malformed(format!(
                    "webhook secret is not base64 (a DER public key): {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(VerifyError::Malformed(
            "no webhook verification key configured".into(),
        ));
    }
    Ok(keys)
}

/// Tries every key; `Malformed` only when no key was usable at all.
fn any_key(
    keys: &[Vec<u8>],
    mut check: impl FnMut(&[u8]) -> Result<bool, String>,
) -> Result<(), VerifyError> {
    let mut unusable = None;
    let mut mismatched = false;
    for key in keys {
        match check(key) {
            Ok(true) => return Ok(()),
            Ok(false) => mismatched = true,
            Err(e) => unusable = Some(e),
        }
    }
    match unusable {
        Some(e) if !mismatched => Err(VerifyError::Malformed(e)),
        _ => Err(VerifyError::BadSignature),
    }
}

/// ECDSA P-256 / SHA-256 (DER signature) under any of `keys`.
pub fn ecdsa_p256_sha256(
    keys: &[Vec<u8>],
    message: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    any_key(keys, |key| {
        host::verify_ecdsa_p256_sha256(key, message, signature)
    })
}

/// RSA PKCS#1 v1.5 with `hash` under any of `keys`.
pub fn rsa_pkcs1v15(
    hash: Hash,
    keys: &[Vec<u8>],
    message: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    any_key(keys, |key| {
        host::verify_rsa_pkcs1v15(hash, key, message, signature)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_either_case_and_refuses_junk() {
        assert_eq!(hex_decode("00ffAb"), Some(vec![0, 255, 0xab]));
        assert_eq!(hex_decode(""), Some(vec![]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_decode("é1"), None);
    }

    #[test]
    fn timestamps_are_plain_digits_inside_the_window() {
        assert_eq!(parse_unix_seconds(" 1767268800 ", "t"), Ok(1_767_268_800));
        for bad in ["", "+1", "-1", "1.5", "1e9", "9999999999999999999"] {
            assert!(
                matches!(parse_unix_seconds(bad, "t"), Err(VerifyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(check_timestamp(1000, 1300, 300), Ok(()));
        assert_eq!(check_timestamp(1000, 700, 300), Ok(()));
        assert_eq!(
            check_timestamp(1000, 1301, 300),
            Err(VerifyError::TimestampOutOfTolerance(301))
        );
        assert_eq!(
            check_timestamp(i64::MAX, i64::MIN, 300),
            Err(VerifyError::TimestampOutOfTolerance(i64::MIN))
        );
    }

    #[test]
    fn auth_scheme_names_are_case_insensitive() {
        assert_eq!(strip_scheme("Basic abc", "basic"), Some("abc"));
        assert_eq!(strip_scheme("bearer  tok ", "bearer"), Some("tok"));
        assert_eq!(strip_scheme("Bearer", "bearer"), None);
        assert_eq!(strip_scheme("Digest x", "basic"), None);
    }
}
