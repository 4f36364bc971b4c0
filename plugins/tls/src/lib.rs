//! TLS for a plugin's database connection, inside the component: rustls with pure-Rust
//! cryptography (`rustls-rustcrypto`), so the sandbox needs no extra host capability and
//! the host never sees the database traffic in clear. Each plugin maps its database's
//! own option names (`sslmode`, `tls`, ...) to a [`Verification`] and settles when TLS
//! starts (PostgreSQL asks first; Redis speaks TLS from the first byte).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct, Error,
    RootCertStore, SignatureScheme, StreamOwned,
};

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: encryption without authentication.
    None,
    /// A chain to the CA given in `tls-ca`.
    Chain,
    /// The chain, and that the certificate names the host connected to.
    ChainAndName,
}

/// Checks the server's certificate as the verification asks.
#[derive(Debug)]
struct Verifier {
    /// The chain check; `None` accepts any certificate.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the certificate must name the host.
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
    fast: Arc<ClientConfig>,
    /// Offers every cipher suite, for servers that refuse ChaCha20.
    any: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

/// The client configuration, trusting the PEM certificates in `ca` (the `tls-ca`
/// option); `host` is the name the certificate must carry for [`Verification::ChainAndName`].
pub fn settings(verification: Verification, ca: Option<&str>, host: &str) -> Result<TlsSettings, String> {
    let provider = Arc::new(rustls_rustcrypto::provider());
    let chain = match (verification, ca) {
        (Verification::None, _) => None,
        (_, None) => return Err("verifying the server's certificate needs its CA in option tls-ca (PEM)".into()),
        (_, Some(pem)) => {
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
    };
    let check_name = verification == Verification::ChainAndName;
    let verifier = Arc::new(Verifier { chain, check_name, provider: provider.clone() });
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
    Ok(TlsSettings { fast: config(Arc::new(chacha))?, any: config(provider)?, server_name })
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server accepts none of the offered cipher suites: connect again with
    /// `any_cipher`.
    CipherRefused,
    /// Anything else, said in full.
    Failed(String),
}

/// The socket, encrypted or not.
#[derive(Debug)]
pub enum Transport {
    /// Plaintext.
    Plain(TcpStream),
    /// Encrypted, the handshake done.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    /// The TCP socket underneath, to wait on.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(stream) => &stream.sock,
        }
    }
}

/// Start TLS on `socket` and finish the handshake now, so that certificate problems are
/// reported as such. `any_cipher` offers every cipher suite rather than the fast one alone.
pub fn handshake(socket: TcpStream, settings: &TlsSettings, any_cipher: bool) -> Result<Transport, HandshakeError> {
    let config = if any_cipher { &settings.any } else { &settings.fast };
    let client = ClientConnection::new(config.clone(), settings.server_name.clone())
        .map_err(|e| HandshakeError::Failed(format!("TLS: {e}")))?;
    let mut tls = StreamOwned::new(client, socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| {
            if !any_cipher && cipher_refused(&e) {
                HandshakeError::CipherRefused
            } else {
                HandshakeError::Failed(format!("TLS handshake with the server failed: {e}"))
            }
        })?;
    }
    Ok(Transport::Tls(Box::new(tls)))
}

/// Whether a handshake failed because the server accepts none of the offered ciphers.
fn cipher_refused(error: &io::Error) -> bool {
    matches!(
        error.get_ref().and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::AlertReceived(AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity))
    )
}

impl Read for Transport {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buffer),
            Transport::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(data),
            Transport::Tls(stream) => stream.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls(stream) => stream.flush(),
        }
    }
}
