//! Thin wrappers over the host imports: logging, the clock, replay tokens,
//! the registered endpoint URL, SMTP credentials, Amazon SNS support and
//! crypto.

use crate::bindings::mailplug::provider::{clock, credentials, crypto, endpoint, log, replay, sns};
use crate::types::PasswordSource;

pub use crypto::{Base64Alphabet, Hash};
pub use sns::KeyError as SnsKeyError;

/// Off wasm (a plugin's unit tests, the native baseline of the benchmarks)
/// there is no host: the logging, clock, replay, endpoint and credentials
/// wrappers below then log nothing, read the system clock, answer the
/// default tolerance, remember no token, know no URL and name no secret.
/// Crypto and SNS have no stand-in.
const HOSTED: bool = cfg!(target_arch = "wasm32");

/// Logs at debug level into the host log (tagged with the plugin id by the host).
pub fn log_debug(message: &str) {
    if HOSTED {
        log::log(log::Level::Debug, message);
    }
}

/// Logs at info level.
pub fn log_info(message: &str) {
    if HOSTED {
        log::log(log::Level::Info, message);
    }
}

/// Logs at warn level.
pub fn log_warn(message: &str) {
    if HOSTED {
        log::log(log::Level::Warn, message);
    }
}

/// The host clock in Unix seconds; pinned by `mailplug plugin test --now`.
pub fn now() -> i64 {
    if HOSTED {
        clock::now()
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Seconds a signed timestamp may be off [`now`]: the connection's
/// `webhook.tolerance` (default 300). Use it instead of a constant.
pub fn signature_tolerance() -> i64 {
    if HOSTED {
        i64::from(clock::signature_tolerance())
    } else {
        300
    }
}

/// From `verify-webhook`: this request carries a single-use `token` (e.g.
/// Mailgun's), to be remembered for `ttl_seconds`. The host refuses the
/// request if a stored request already used it (a replay).
pub fn use_token(token: &str, ttl_seconds: u32) {
    if HOSTED {
        replay::use_token(token, ttl_seconds);
    }
}

/// From `adapt-connection`: the SMTP user name is the secret `source` names
/// (`PasswordSource::SmtpPassword`: the same secret as the password, as
/// for Postmark's server token), not `SmtpSettings::username`. The host
/// resolves it at login; the value never enters the plugin. An explicit
/// `smtp.username` in the connection file still wins.
pub fn username_secret(source: PasswordSource) {
    if HOSTED {
        credentials::username_secret(&source);
    }
}

/// The URL the provider calls for this connection, exactly as registered
/// there: `webhook.url`, else `--public-url` + `/webhooks/<connection>`.
/// `None` when the operator configured neither.
pub fn registered_url() -> Option<String> {
    if HOSTED {
        endpoint::registered_url()
    } else {
        None
    }
}

/// Public key (SPKI DER) of the Amazon SNS signing certificate at
/// `cert_url`. [`SnsKeyError::NotLoaded`]: answer `bad-signature`, the
/// host fetches it and verifies again; [`SnsKeyError::Refused`]: the URL
/// or certificate is not acceptable, refuse the request.
pub fn sns_signing_key(cert_url: &str) -> Result<Vec<u8>, SnsKeyError> {
    sns::signing_key(cert_url)
}

/// Whether the connection's `webhook.sns.topics` lists `topic_arn`.
pub fn sns_topic_allowed(topic_arn: &str) -> bool {
    sns::topic_allowed(topic_arn)
}

/// From `parse-webhook`: ask the host to confirm an SNS subscription (it
/// checks the URL, the topic and `webhook.sns.auto_confirm` itself).
pub fn sns_confirm_subscription(topic_arn: &str, subscribe_url: &str) {
    sns::confirm_subscription(topic_arn, subscribe_url);
}

/// HMAC over `data` with `key`.
pub fn hmac(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    crypto::hmac(hash, key, data)
}

/// Message digest of `data`.
pub fn digest(hash: Hash, data: &[u8]) -> Vec<u8> {
    crypto::digest(hash, data)
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    crypto::constant_time_eq(a, b)
}

/// ECDSA P-256/SHA-256 verification; `Err` for an unusable key or signature encoding.
pub fn verify_ecdsa_p256_sha256(
    key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    crypto::verify_ecdsa_p256_sha256(key, message, signature)
}

/// RSA PKCS#1 v1.5 verification with `hash`.
pub fn verify_rsa_pkcs1v15(
    hash: Hash,
    key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    crypto::verify_rsa_pkcs1v15(hash, key, message, signature)
}

/// Ed25519 verification.
pub fn verify_ed25519(key: &[u8], message: &[u8], signature: &[u8]) -> Result<bool, String> {
    crypto::verify_ed25519(key, message, signature)
}

/// Standard-alphabet base64 decoding (padding optional).
pub fn base64_decode(input: &str) -> Result<Vec<u8>, String> {
    crypto::base64_decode(Base64Alphabet::Standard, input)
}

/// Standard-alphabet padded base64 encoding.
pub fn base64_encode(data: &[u8]) -> String {
    crypto::base64_encode(Base64Alphabet::Standard, data)
}
