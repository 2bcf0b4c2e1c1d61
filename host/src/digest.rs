//! Content digests shared by the configuration (plugin pins) and the plugin
//! runtime (compile-cache keys): one implementation, so a pin written by an
//! operator and the hash the runtime computes can never disagree.

use sha2::{Digest as _, Sha256};

/// sha256 of `bytes`, lower-case hex (what `kind: Plugin` → `sha256` pins).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_is_lower_case_hex_of_the_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
