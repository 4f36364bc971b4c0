//! TLS for the database connection, inside the component: rustls with pure-Rust
//! cryptography (`rustls-rustcrypto`), so the sandbox needs no extra host capability and
//! the host never sees the database traffic in clear.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, Error, RootCertStore,
    SignatureScheme,
};

/// The `sslmode` values, as libpq defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verification; plaintext otherwise.
    Prefer,
    /// TLS or fail; the certificate is verified against the CA when one is given.
    Require,
    /// TLS with a certificate chain from the given CA.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl TlsMode {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Checks the server's certificate as the mode asks.
#[derive(Debug)]
struct Verifier {
    /// The chain check; `None` accepts any certificate (`prefer`, `require` without a CA).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must name the host (`verify-full`).
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// What a TLS connection needs, prepared once from the options.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Offers ChaCha20-Poly1305 only.
    pub fast: Arc<ClientConfig>,
    /// Offers every cipher suite, for servers that refuse ChaCha20.
    pub any: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// The client configuration for `mode`, trusting the PEM certificates in `ca` (the
/// `tls-ca` option). `host` is the name the certificate must carry for `verify-full`.
pub fn settings(mode: TlsMode, ca: Option<&str>, host: &str) -> Result<Option<TlsSettings>, String> {
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls_rustcrypto::provider());
    let chain = match ca {
        Some(pem) if mode != TlsMode::Prefer => {
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let certificate = certificate.map_err(|e| format!("option tls-ca: {e}"))?;
                roots.add(certificate).map_err(|e| format!("option tls-ca: {e}"))?;
            }
            if roots.is_empty() {
                return Err("option tls-ca holds no PEM certificate".into());
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("option tls-ca: {e}"))?;
            Some(verifier)
        }
        None if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
            return Err("sslmode verify-ca and verify-full need the server's CA in option tls-ca (PEM)".into());
        }
        _ => None,
    };
    let verifier = Arc::new(Verifier { chain, check_name: mode == TlsMode::VerifyFull, provider: provider.clone() });
    let config = |provider: Arc<CryptoProvider>| {
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| {
                Arc::new(builder.dangerous().with_custom_certificate_verifier(verifier.clone()).with_no_client_auth())
            })
            .map_err(|e| format!("TLS: {e}"))
    };
    // Without AES instructions in WebAssembly, ChaCha20-Poly1305 is about 2.5x faster than
    // AES-GCM; servers choose by their own preference, so offer it alone first.
    let mut chacha = (*provider).clone();
    chacha.cipher_suites.retain(|suite| {
        matches!(
            suite.suite(),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    let server_name =
        ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
    Ok(Some(TlsSettings { fast: config(Arc::new(chacha))?, any: config(provider)?, server_name }))
}

/// Whether a handshake failed because the server accepts none of the offered ciphers.
pub fn cipher_refused(error: &std::io::Error) -> bool {
    matches!(
        error.get_ref().and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::AlertReceived(AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity))
    )
}
