//! `adapt-connection` for Postal: the operator's own Postal server (there is
//! no default host), port 25 with STARTTLS, an SMTP credential's key as
//! password and any user name (Postal ignores it for PLAIN and LOGIN).

use mailplug_sdk::prelude::*;
use mailplug_sdk::smtp::field_error as error;
use serde::Deserialize;

/// The port Postal's SMTP server listens on unless its operator changed it.
pub const DEFAULT_PORT: u16 = 25;
/// Postal's PLAIN and LOGIN authentication ignore the user name; this one is
/// sent when the connection names none.
pub const DEFAULT_USERNAME: &str = "postal";

/// Postal takes no options: the server is smtp.host, an SMTP credential's key is smtp.password and the Postal server's webhook signing public key (PEM) is webhook.secret.
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "postal options")]
pub struct Options {}

/// Postal's SMTP settings from the connection's explicit `smtp` fields.
pub fn adapt(options: &str, o: SmtpOverrides) -> Result<SmtpSettings, Vec<FieldError>> {
    let mut errors = options::parse::<Options>(options).err().unwrap_or_default();
    let missing_host = o.host.is_none();
    let host = o.host.unwrap_or_default();
    let (port, security) = match (o.port, o.security) {
        // Postal's own SMTP server offers STARTTLS on port 25; 587 and 465
        // are what a proxy in front of it usually adds.
        (None, None | Some(Security::Starttls)) => (DEFAULT_PORT, Security::Starttls),
        (port, security) => smtp::port_security_defaults(port, security),
    };
    smtp::relay_transport_errors(&host, port, security, "the credential key", &mut errors);
    if missing_host {
        // Said once, with what to write instead of "smtp.host is empty".
        for e in errors.iter_mut().filter(|e| e.path == "/smtp/host") {
            e.message = "postal needs smtp.host: the SMTP hostname of your Postal server, \
                         e.g. postal.example.com (there is no default host)"
                .to_owned();
        }
    }
    smtp::require_password(
        o.has_password,
        "postal needs smtp.password: a reference to the key of an SMTP credential of the mail \
         server (Postal web interface: Credentials), e.g. { env: POSTAL_SMTP_KEY }",
        &mut errors,
    );
    let username = match o.username {
        Some(user) if user.trim().is_empty() => {
            errors.push(error(
                "/smtp/username",
                "smtp.username is empty: remove it (postal sends `postal`; Postal ignores the \
                 user name) or write any non-empty name",
            ));
            None
        }
        Some(user) => Some(user),
        None => Some(DEFAULT_USERNAME.to_owned()),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SmtpSettings {
        host,
        port,
        security,
        username,
        password: PasswordSource::SmtpPassword,
        extra_headers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(host: Option<&str>) -> SmtpOverrides {
        SmtpOverrides {
            host: host.map(str::to_owned),
            port: None,
            security: None,
            username: None,
            has_password: true,
        }
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn defaults_to_port_25_starttls_and_user_postal() {
        let s = adapt("", overrides(Some("postal.example.com"))).unwrap();
        assert_eq!(s.host, "postal.example.com");
        assert_eq!((s.port, s.security), (25, Security::Starttls));
        assert_eq!(s.username.as_deref(), Some("postal"));
        assert_eq!(s.password, PasswordSource::SmtpPassword);
        assert!(s.extra_headers.is_empty());
    }

    #[test]
    fn explicit_port_and_security_follow_the_shared_rule() {
        let with = |port, security| {
            let o = SmtpOverrides {
                port,
                security,
                ..overrides(Some("postal.example.com"))
            };
            adapt("", o).map(|s| (s.port, s.security))
        };
        assert_eq!(
            with(None, Some(Security::Starttls)),
            Ok((25, Security::Starttls))
        );
        assert_eq!(with(Some(587), None), Ok((587, Security::Starttls)));
        assert_eq!(with(Some(465), None), Ok((465, Security::Tls)));
        assert_eq!(with(None, Some(Security::Tls)), Ok((465, Security::Tls)));
        assert_eq!(with(Some(2525), None), Ok((2525, Security::Starttls)));
        let errors = with(None, Some(Security::None)).unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/security"]);
        let errors = with(Some(465), Some(Security::Starttls)).unwrap_err();
        assert_eq!(paths(&errors), ["/smtp/security"]);
    }

    #[test]
    fn host_and_password_are_required_and_every_error_is_reported() {
        let o = SmtpOverrides {
            has_password: false,
            username: Some(" ".into()),
            ..overrides(None)
        };
        let errors = adapt(r#"{"region": "eu"}"#, o).unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "/options/region",
                "/smtp/host",
                "/smtp/password",
                "/smtp/username"
            ]
        );
        assert!(errors[1].message.contains("no default host"), "{errors:?}");
        let errors = adapt("", overrides(Some(""))).unwrap_err();
        assert_eq!(errors[0].message, "smtp.host is empty");
    }

    #[test]
    fn any_username_is_kept() {
        let o = SmtpOverrides {
            username: Some("shop/outbound".into()),
            ..overrides(Some("postal.example.com"))
        };
        assert_eq!(
            adapt("", o).unwrap().username.as_deref(),
            Some("shop/outbound")
        );
    }
}
