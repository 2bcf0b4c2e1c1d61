//! The host side of the `sns` import: which Amazon SNS signing-certificate
//! and subscription URLs the host accepts, the public keys of certificates
//! it holds (fetched ones in a daemon-wide cache, trusted files named by a
//! connection), and what a call asked for (a certificate to fetch, a
//! subscription to confirm).
//!
//! The runtime never touches the network: a key that is neither cached nor
//! trusted is answered `not-loaded` and recorded; the daemon fetches it
//! outside the plugin call (whose deadline is far shorter than a fetch) and
//! verifies again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::bindings::mailplug::provider::sns::{self, KeyError};
use super::host::StoreData;

/// Largest certificate file read or fetched.
pub const MAX_CERTIFICATE_BYTES: usize = 16 << 10;
/// Most certificates kept in the cache (SNS rotates a few per region).
const MAX_CACHED: usize = 64;
/// Subscription confirmations one call may ask for.
const MAX_CONFIRMATIONS_PER_CALL: usize = 4;

/// `region` of `sns.<region>.amazonaws.com[.cn]`: `us-east-1`,
/// `us-gov-west-1`, `cn-north-1`, ...
fn is_region(region: &str) -> bool {
    let mut parts = region.split('-');
    let Some(first) = parts.next() else {
        return false;
    };
    let rest: Vec<&str> = parts.collect();
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest[..rest.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && rest
            .last()
            .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// What follows the host of an `https://` URL on the SNS pattern (path and
/// query), or why the URL is not on it.
pub(crate) fn sns_path(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not an https URL"))?;
    let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    host.strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .filter(|r| is_region(r))
        .ok_or_else(|| format!("host {host:?} is not sns.<region>.amazonaws.com"))?;
    Ok(tail)
}

/// Whether the host may fetch `url` as a signing certificate:
/// `https://sns.<region>.amazonaws.com/<name>.pem`, no port, credentials,
/// query or fragment, a plain path.
pub fn check_certificate_url(url: &str) -> Result<(), String> {
    if url.len() > 512 {
        return Err("SigningCertURL is longer than 512 bytes".into());
    }
    let path = sns_path(url)?;
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
    if !plain || path.contains("..") || !path.ends_with(".pem") || path.len() < 6 {
        return Err(format!(
            "path {path:?} of SigningCertURL is not a plain /<name>.pem"
        ));
    }
    Ok(())
}

/// Whether the host may open `url` to confirm a subscription:
/// `https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription&...`.
pub fn check_subscribe_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("SubscribeURL is longer than 2048 bytes".into());
    }
    let tail = sns_path(url)?;
    let query = tail
        .strip_prefix("/?")
        .ok_or_else(|| format!("SubscribeURL path {tail:?} is not /?Action=ConfirmSubscription"))?;
    let plain = query.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'=' | b'&' | b'%' | b'-' | b'_' | b'.' | b':')
    });
    if !plain || !query.split('&').any(|p| p == "Action=ConfirmSubscription") {
        return Err("SubscribeURL is not an Action=ConfirmSubscription request".into());
    }
    Ok(())
}

/// The public key (SPKI DER) of a PEM certificate, checked to be valid at
/// `now` (Unix seconds).
pub fn public_key_of_pem(pem: &[u8], now: i64) -> Result<Vec<u8>, String> {
    if pem.len() > MAX_CERTIFICATE_BYTES {
        return Err(format!(
            "certificate is larger than {MAX_CERTIFICATE_BYTES} bytes"
        ));
    }
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", pem.label));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("unusable certificate: {e}"))?;
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now < from || now > until {
        return Err(format!(
            "certificate is valid from {from} to {until} (Unix seconds), not at {now}"
        ));
    }
    Ok(cert.public_key().raw.to_vec())
}

/// Public keys of fetched signing certificates, shared by every connection
/// of a daemon (the URL names the certificate; SNS never reuses one).
#[derive(Debug, Default)]
pub struct CertificateCache {
    keys: RwLock<HashMap<String, Arc<[u8]>>>,
}

impl CertificateCache {
    /// The cached key of `url`.
    pub fn get(&self, url: &str) -> Option<Arc<[u8]>> {
        self.keys.read().ok()?.get(url).cloned()
    }

    /// Remembers the key of `url` (the oldest-looking entries are dropped
    /// beyond the bound: any, since SNS uses a handful).
    pub fn insert(&self, url: &str, key: Vec<u8>) {
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() >= MAX_CACHED
                && let Some(first) = keys.keys().next().cloned()
            {
                keys.remove(&first);
            }
            keys.insert(url.to_owned(), key.into());
        }
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |k| k.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's `webhook.sns` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnsSettings {
    /// `topics`: the topic ARNs the connection accepts.
    pub topics: Vec<String>,
    /// `auto_confirm`: open verified subscription confirmations of those topics.
    pub auto_confirm: bool,
    /// `certificates`: URL → trusted PEM file (resolved against the config file's folder).
    pub certificates: BTreeMap<String, PathBuf>,
}

/// What the `sns` import answers from: a connection's settings and the
/// daemon's cache of fetched certificates.
#[derive(Debug, Clone)]
pub struct SnsTrust {
    /// The connection's `webhook.sns`.
    pub settings: Arc<SnsSettings>,
    /// The daemon's cache of fetched certificates.
    pub cache: Arc<CertificateCache>,
}

/// A verified subscription confirmation a plugin reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriptionRequest {
    /// The topic to subscribe to.
    pub topic_arn: String,
    /// The URL that confirms it.
    pub subscribe_url: String,
}

impl StoreData {
    fn signing_key_for(&mut self, url: &str) -> Result<Vec<u8>, KeyError> {
        check_certificate_url(url).map_err(KeyError::Refused)?;
        let Some(trust) = self.call.sns.clone() else {
            return Err(KeyError::Refused(
                "this connection has no webhook.sns settings".into(),
            ));
        };
        if let Some(path) = trust.settings.certificates.get(url) {
            let pem =
                crate::fsread::read_bounded(path, MAX_CERTIFICATE_BYTES as u64).map_err(|e| {
                    KeyError::Refused(format!(
                        "trusted certificate file {} for {url}: {e}",
                        path.display()
                    ))
                })?;
            return public_key_of_pem(&pem, self.clock.now()).map_err(|e| {
                KeyError::Refused(format!("trusted certificate file {}: {e}", path.display()))
            });
        }
        if let Some(key) = trust.cache.get(url) {
            return Ok(key.to_vec());
        }
        self.asked.certificate = Some(url.to_owned());
        Err(KeyError::NotLoaded)
    }
}

impl sns::Host for StoreData {
    fn signing_key(&mut self, cert_url: String) -> Result<Vec<u8>, KeyError> {
        let answer = self.signing_key_for(&cert_url);
        if let Err(KeyError::Refused(why)) = &answer {
            tracing::debug!(plugin = %self.plugin, "sns.signing-key refused: {why}");
        }
        answer
    }

    fn topic_allowed(&mut self, topic_arn: String) -> bool {
        self.call
            .sns
            .as_ref()
            .is_some_and(|t| t.settings.topics.contains(&topic_arn))
    }

    fn confirm_subscription(&mut self, topic_arn: String, subscribe_url: String) {
        if self.asked.confirmations.len() >= MAX_CONFIRMATIONS_PER_CALL
            || topic_arn.len() > 512
            || subscribe_url.len() > 2048
        {
            tracing::debug!(plugin = %self.plugin, "sns.confirm-subscription ignored (too many or too long)");
            return;
        }
        self.asked.confirmations.push(SubscriptionRequest {
            topic_arn,
            subscribe_url,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_urls_on_the_sns_pattern_only() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000test.pem",
            "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/x.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/x.pem",
        ] {
            assert_eq!(check_certificate_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://certs.attacker.example.net/SimpleNotificationService.pem",
            "https://sns.us-east-1.amazonaws.com.attacker.net/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.amazonaws.com/x.pem",
            "https://sns.US-EAST-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?a=b",
            "https://sns.us-east-1.amazonaws.com/x.pem#f",
            "https://sns.us-east-1.amazonaws.com/../x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com/%2e%2e/x.pem",
            "https://sns.evil-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com",
        ] {
            assert!(check_certificate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subscribe_urls_must_confirm_on_the_sns_host() {
        assert_eq!(
            check_subscribe_url(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A111122223333%3Ases-events&Token=33"
            ),
            Ok(())
        );
        for bad in [
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&Token=1",
            "https://evil.example/?Action=ConfirmSubscription",
            "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
            "https://sns.us-east-1.amazonaws.com/other?Action=ConfirmSubscription",
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription#x",
        ] {
            assert!(check_subscribe_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_key_of_a_certificate_valid_now_only() {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/webhooks/amazon_ses/TEST_ONLY_sns_signing_cert.pem"
        ))
        .unwrap();
        let key = public_key_of_pem(&pem, 1_767_268_830).unwrap();
        // An SPKI DER SEQUENCE holding an RSA key.
        assert_eq!(key[0], 0x30);
        assert!(key.len() > 200, "{}", key.len());
        let expired = public_key_of_pem(&pem, 2_200_000_000).unwrap_err();
        assert!(expired.contains("valid from"), "{expired}");
        let not_pem = public_key_of_pem(b"hello", 1_767_268_830).unwrap_err();
        assert!(not_pem.contains("PEM"), "{not_pem}");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = CertificateCache::default();
        for i in 0..(MAX_CACHED + 10) {
            cache.insert(&format!("u{i}"), vec![1]);
        }
        assert_eq!(cache.len(), MAX_CACHED);
    }
}
