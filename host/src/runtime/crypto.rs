//! Crypto primitives offered to plugins (`mailplug:provider/crypto`),
//! implemented with the RustCrypto / dalek crates.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::bindings::mailplug::provider::crypto::{Base64Alphabet, Hash, Host};
use super::host::StoreData;

fn engine(alphabet: Base64Alphabet) -> GeneralPurpose {
    let config = GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    match alphabet {
        Base64Alphabet::Standard => GeneralPurpose::new(&base64::alphabet::STANDARD, config),
        Base64Alphabet::UrlSafe => GeneralPurpose::new(&base64::alphabet::URL_SAFE, config),
    }
}

fn is_pem(key: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(key).ok()?;
    text.trim_start().starts_with("-----BEGIN").then_some(text)
}

/// HMAC of `data` under `key` (any key length is valid for HMAC).
pub fn hmac(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            // HMAC accepts keys of every length; keep the type honest anyway.
            Err(_) => Vec::new(),
        }
    }
    match hash {
        Hash::Sha1 => run::<Hmac<Sha1>>(key, data),
        Hash::Sha256 => run::<Hmac<Sha256>>(key, data),
    }
}

/// Message digest.
pub fn digest(hash: Hash, data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => Sha1::digest(data).to_vec(),
        Hash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// ECDSA P-256 / SHA-256; signature DER or 64-byte r‖s. The key formats
/// are parsed with `p256`; the verification runs in `ring`.
pub fn verify_ecdsa_p256(key: &[u8], message: &[u8], signature: &[u8]) -> Result<bool, String> {
    use p256::ecdsa::{Signature, VerifyingKey};
    use p256::pkcs8::DecodePublicKey;
    let key = match is_pem(key) {
        Some(pem) => {
            VerifyingKey::from_public_key_pem(pem).map_err(|e| format!("P-256 public key: {e}"))?
        }
        None => VerifyingKey::from_public_key_der(key)
            .or_else(|_| VerifyingKey::from_sec1_bytes(key))
            .map_err(|e| format!("P-256 public key: {e}"))?,
    };
    let signature = Signature::from_der(signature)
        .or_else(|_| Signature::from_slice(signature))
        .map_err(|e| format!("ECDSA signature: {e}"))?;
    let point = key.to_encoded_point(false);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        point.as_bytes(),
    );
    Ok(key.verify(message, &signature.to_bytes()).is_ok())
}

/// RSA PKCS#1 v1.5 with SHA-1 or SHA-256; key SPKI or PKCS#1, DER or PEM.
pub fn verify_rsa_pkcs1v15(
    hash: Hash,
    key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::{Pkcs1v15Sign, RsaPublicKey};
    let key =
        match is_pem(key) {
            Some(pem) => RsaPublicKey::from_public_key_pem(pem)
                .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem)),
            None => RsaPublicKey::from_public_key_der(key)
                .or_else(|_| RsaPublicKey::from_pkcs1_der(key)),
        }
        .map_err(|e| format!("RSA public key: {e}"))?;
    let (scheme, hashed) = match hash {
        Hash::Sha1 => (Pkcs1v15Sign::new::<Sha1>(), Sha1::digest(message).to_vec()),
        Hash::Sha256 => (
            Pkcs1v15Sign::new::<Sha256>(),
            Sha256::digest(message).to_vec(),
        ),
    };
    Ok(key.verify(scheme, &hashed, signature).is_ok())
}

/// Ed25519 (strict verification); key 32 raw bytes or SPKI DER/PEM.
pub fn verify_ed25519(key: &[u8], message: &[u8], signature: &[u8]) -> Result<bool, String> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    use ed25519_dalek::{Signature, VerifyingKey};
    let key = if let Some(pem) = is_pem(key) {
        VerifyingKey::from_public_key_pem(pem).map_err(|e| format!("Ed25519 public key: {e}"))?
    } else if let Ok(raw) = <[u8; 32]>::try_from(key) {
        VerifyingKey::from_bytes(&raw).map_err(|e| format!("Ed25519 public key: {e}"))?
    } else {
        VerifyingKey::from_public_key_der(key).map_err(|e| format!("Ed25519 public key: {e}"))?
    };
    let signature =
        Signature::from_slice(signature).map_err(|e| format!("Ed25519 signature: {e}"))?;
    Ok(key.verify_strict(message, &signature).is_ok())
}

impl Host for StoreData {
    fn hmac(&mut self, hash: Hash, key: Vec<u8>, data: Vec<u8>) -> Vec<u8> {
        hmac(hash, &key, &data)
    }

    fn digest(&mut self, hash: Hash, data: Vec<u8>) -> Vec<u8> {
        digest(hash, &data)
    }

    fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> bool {
        a.len() == b.len() && bool::from(a.ct_eq(&b))
    }

    fn verify_ecdsa_p256_sha256(
        &mut self,
        key: Vec<u8>,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, String> {
        verify_ecdsa_p256(&key, &message, &signature)
    }

    fn verify_rsa_pkcs1v15(
        &mut self,
        hash: Hash,
        key: Vec<u8>,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, String> {
        verify_rsa_pkcs1v15(hash, &key, &message, &signature)
    }

    fn verify_ed25519(
        &mut self,
        key: Vec<u8>,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, String> {
        verify_ed25519(&key, &message, &signature)
    }

    fn base64_decode(
        &mut self,
        alphabet: Base64Alphabet,
        input: String,
    ) -> Result<Vec<u8>, String> {
        engine(alphabet)
            .decode(input.trim())
            .map_err(|e| e.to_string())
    }

    fn base64_encode(&mut self, alphabet: Base64Alphabet, data: Vec<u8>) -> String {
        engine(alphabet).encode(data)
    }
}

#[cfg(test)]
mod tests {
    //! Checked against the signed provider fixtures in tests/fixtures/webhooks.

    use std::path::PathBuf;

    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/webhooks");
        std::fs::read(root.join(path)).unwrap()
    }

    fn header(path: &str, name: &str) -> String {
        let headers: serde_json::Value = serde_json::from_slice(&fixture(path)).unwrap();
        headers[name].as_str().unwrap().to_owned()
    }

    fn b64(text: &str) -> Vec<u8> {
        engine(Base64Alphabet::Standard).decode(text).unwrap()
    }

    #[test]
    fn ecdsa_p256_verifies_sendgrid_signatures_with_pem_and_der_keys() {
        let body = fixture("sendgrid/hard_bounce.json");
        let ts = header(
            "sendgrid/hard_bounce.headers.json",
            "X-Twilio-Email-Event-Webhook-Timestamp",
        );
        let sig = b64(&header(
            "sendgrid/hard_bounce.headers.json",
            "X-Twilio-Email-Event-Webhook-Signature",
        ));
        let message = [ts.as_bytes(), &body].concat();
        let pem = fixture("sendgrid/public_key.pem");
        assert_eq!(verify_ecdsa_p256(&pem, &message, &sig), Ok(true));
        let der = b64(String::from_utf8(fixture("sendgrid/public_key.txt"))
            .unwrap()
            .trim());
        assert_eq!(verify_ecdsa_p256(&der, &message, &sig), Ok(true));
        let fixed = p256::ecdsa::Signature::from_der(&sig).unwrap().to_bytes();
        assert_eq!(verify_ecdsa_p256(&pem, &message, &fixed), Ok(true));
        assert_eq!(
            verify_ecdsa_p256(&pem, &[&message[..], b" "].concat(), &sig),
            Ok(false)
        );
        assert!(verify_ecdsa_p256(b"not a key", &message, &sig).is_err());
    }

    #[test]
    fn rsa_pkcs1v15_verifies_postal_signatures() {
        let body = fixture("postal/sent.json");
        let key = fixture("postal/public_key.pem");
        let sha256 = b64(&header(
            "postal/sent.headers.json",
            "X-Postal-Signature-256",
        ));
        let sha1 = b64(&header("postal/sent.headers.json", "X-Postal-Signature"));
        assert_eq!(
            verify_rsa_pkcs1v15(Hash::Sha256, &key, &body, &sha256),
            Ok(true)
        );
        assert_eq!(
            verify_rsa_pkcs1v15(Hash::Sha1, &key, &body, &sha1),
            Ok(true)
        );
        // No downgrade confusion: a SHA-1 signature is not a SHA-256 one.
        assert_eq!(
            verify_rsa_pkcs1v15(Hash::Sha256, &key, &body, &sha1),
            Ok(false)
        );
    }

    #[test]
    fn hmac_matches_the_standard_webhooks_fixture() {
        let body = fixture("standard_webhooks/hard_bounce_v1.json");
        let key = b64("b6o9cjOxW7gNB+wD3OHJIK6jrmph6jGr4ZMmyKZmoWA=");
        let signed = [
            b"msg_2f8b7a1e4c3d4b5a9e8fsw01.1767268800.".as_slice(),
            &body,
        ]
        .concat();
        let mac = hmac(Hash::Sha256, &key, &signed);
        assert_eq!(
            engine(Base64Alphabet::Standard).encode(mac),
            "Jo+sP9UHlsJMBjBVej50q+TJLkQyN8Gi9Io8xjwBmX8="
        );
    }

    #[test]
    fn base64_accepts_missing_padding_and_rejects_garbage() {
        assert_eq!(
            engine(Base64Alphabet::Standard).decode("aGk").unwrap(),
            b"hi"
        );
        assert_eq!(
            engine(Base64Alphabet::UrlSafe).decode("-_8=").unwrap(),
            [0xfb, 0xff]
        );
        assert!(engine(Base64Alphabet::Standard).decode("***").is_err());
    }
}
