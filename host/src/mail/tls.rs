//! TLS client setup (webpki roots plus `tls.ca_file`, verification off only
//! when explicitly configured) and the classification of handshake errors.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::classify::{Class, Classification, Stage};
use super::hint::hint;
use super::target::{Security, SmtpTarget, TargetError};

/// Largest `tls.ca_file` read. The whole Mozilla bundle is about 250 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads the PEM certificates of a `tls.ca_file`: the guarded, bounded read
/// every operator-named file gets (a FIFO is refused, not waited on), then
/// at least one certificate. `validate --check-secrets` and every TLS
/// session use this same function, so they agree on what is acceptable.
/// The error is the reason only; callers name the file.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = crate::fsread::read_bounded(path, MAX_CA_FILE_BYTES).map_err(|e| e.to_string())?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// A ready TLS client for one target: config plus the name to verify.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub(crate) connector: tokio_rustls::TlsConnector,
    /// `None` only for `security: none` targets whose host is not a valid
    /// TLS name: they never need one except to test whether a silent port
    /// speaks TLS.
    pub(crate) server_name: Option<ServerName<'static>>,
    pub(crate) verify: bool,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Builds the client configuration for `target`.
    pub(crate) fn new(target: &SmtpTarget) -> Result<Self, TargetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &target.ca_file {
            let ca_err = |reason: String| TargetError::CaFile {
                connection: target.connection.clone(),
                path: path.display().to_string(),
                reason,
            };
            let certs = read_ca_file(path).map_err(ca_err)?;
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TargetError::ServerName(target.connection.clone(), e.to_string()))?;
        let config = if target.verify_tls {
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth()
        };
        let server_name = match ServerName::try_from(target.host.clone()) {
            Ok(name) => Some(name),
            Err(_) if target.security == Security::None => None,
            Err(_) => {
                return Err(TargetError::ServerName(
                    target.connection.clone(),
                    target.host.clone(),
                ));
            }
        };
        Ok(TlsSetup {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            verify: target.verify_tls,
        })
    }
}

/// Accepts any certificate (still checking handshake signatures), for an
/// explicit `tls.verify: false`.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// True when the bytes a server sent first look like an SMTP reply line
/// (three digits then space, dash or line end) rather than a TLS record.
pub(crate) fn looks_like_smtp(first: &[u8]) -> bool {
    first.len() >= 4
        && first[..3].iter().all(u8::is_ascii_digit)
        && matches!(first[3], b' ' | b'-' | b'\r' | b'\n')
}

/// True when the bytes look like a TLS record header (handshake or alert).
pub(crate) fn looks_like_tls(first: &[u8]) -> bool {
    first.len() >= 2 && matches!(first[0], 0x15 | 0x16) && first[1] == 0x03
}

/// Classifies a failed handshake. `first_bytes` is what the server sent
/// before the failure (it reveals a plain-SMTP greeting).
pub(crate) fn classify_handshake(
    target: &SmtpTarget,
    err: &std::io::Error,
    first_bytes: &[u8],
) -> Classification {
    let local = |class: Class, detail: String| {
        Classification::local(
            class,
            Stage::Tls,
            detail,
            hint(target, class, Stage::Tls, 0, None),
        )
    };
    if looks_like_smtp(first_bytes) {
        let greeting = String::from_utf8_lossy(first_bytes);
        let greeting = greeting
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut c = local(
            Class::TlsMismatch,
            format!("server greeted in clear instead of TLS: {greeting}"),
        );
        c.hint = "this port speaks plain SMTP; use security: starttls".into();
        return c;
    }
    let rustls_err = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(rustls::Error::InvalidCertificate(why)) => local(
            Class::CertificateInvalid,
            format!("certificate rejected: {}", describe_cert_error(why)),
        ),
        Some(rustls::Error::InvalidMessage(_)) if !looks_like_tls(first_bytes) => local(
            Class::ProtocolError,
            format!("server did not answer with TLS: {err}"),
        ),
        Some(other) => local(Class::TlsFailed, format!("TLS handshake failed: {other}")),
        None => match err.kind() {
            std::io::ErrorKind::TimedOut => local(Class::Timeout, "TLS handshake timed out".into()),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => local(
                Class::TlsFailed,
                format!("server closed the connection during the TLS handshake: {err}"),
            ),
            _ => local(Class::TlsFailed, format!("TLS handshake failed: {err}")),
        },
    }
}

fn describe_cert_error(err: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match err {
        E::UnknownIssuer => "issued by an unknown CA (self-signed or private CA?)".into(),
        E::Expired | E::ExpiredContext { .. } => "expired".into(),
        E::NotValidYet | E::NotValidYetContext { .. } => "not valid yet".into(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "not valid for this host name".into()
        }
        E::Revoked => "revoked".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_and_tls_first_bytes_are_told_apart() {
        assert!(looks_like_smtp(b"220 mx ESMTP"));
        assert!(looks_like_smtp(b"220-mx"));
        assert!(!looks_like_smtp(&[0x16, 0x03, 0x03, 0x00]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(looks_like_tls(&[0x15, 0x03, 0x03]));
        assert!(!looks_like_tls(b"220 "));
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let mut t = crate::mail::target::tests::sample();
        t.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(TlsSetup::new(&t), Err(TargetError::CaFile { .. })));
    }

    #[test]
    fn a_fifo_as_ca_file_is_refused_by_kind_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ca.pem");
        crate::fsread::mkfifo(&fifo);
        let mut t = crate::mail::target::tests::sample();
        t.ca_file = Some(fifo);
        let err = TlsSetup::new(&t).unwrap_err().to_string();
        assert!(err.contains("ca.pem") && err.contains("FIFO"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        assert_eq!(read_ca_file(&f).unwrap_err(), "no PEM certificate found");
    }
}
