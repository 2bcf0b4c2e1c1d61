//! E-mail addresses: the one parser every input goes through (a connection's
//! `from.email`, `--to`/`--rcpt` flags, admin API bodies), so what
//! `validate` accepts is exactly what later goes into `MAIL FROM` / `RCPT TO`.

pub use lettre::Address;

/// Why a string is not a usable address; the message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A display-name form such as `News <news@example.com>`.
    #[error(
        "`{0}` must be a bare address (`user@domain`), without a display name or angle brackets"
    )]
    NotBare(String),
    /// Anything else that does not parse as `user@domain`.
    #[error("`{0}` is not a valid email address")]
    Invalid(String),
}

/// Parses a bare `user@domain` address. Surrounding whitespace is refused
/// rather than trimmed: the value goes into SMTP commands as written.
pub fn parse(text: &str) -> Result<Address, AddressError> {
    if text.contains(['<', '>']) {
        return Err(AddressError::NotBare(text.to_owned()));
    }
    if text.trim() != text || text.chars().any(char::is_control) {
        return Err(AddressError::Invalid(text.to_owned()));
    }
    text.parse::<Address>()
        .map_err(|_| AddressError::Invalid(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_parse_and_everything_else_is_refused_with_a_reason() {
        assert_eq!(parse("news@example.com").unwrap().domain(), "example.com");
        assert!(matches!(
            parse("News <news@example.com>"),
            Err(AddressError::NotBare(_))
        ));
        for bad in [
            "news",
            "news@",
            "@example.com",
            " news@example.com",
            "news@example.com\r\nRCPT TO:<x@y.test>",
            "a b@example.com",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
