//! `sslmode`, as libpq defines it, on the plugins' shared TLS (`stowage-plugin-tls`).

pub use stowage_plugin_tls::TlsSettings;
use stowage_plugin_tls::Verification;

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

/// The client configuration for `mode`, trusting the PEM certificates in `ca` (the
/// `tls-ca` option). `host` is the name the certificate must carry for `verify-full`.
pub fn settings(mode: TlsMode, ca: Option<&str>, host: &str) -> Result<Option<TlsSettings>, String> {
    let verification = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Prefer => Verification::None,
        // As libpq with a root certificate: `require` then checks the chain too.
        TlsMode::Require if ca.is_some() => Verification::Chain,
        TlsMode::Require => Verification::None,
        TlsMode::VerifyCa => Verification::Chain,
        TlsMode::VerifyFull => Verification::ChainAndName,
    };
    if verification != Verification::None && ca.is_none() {
        return Err("sslmode verify-ca and verify-full need the server's CA in option tls-ca (PEM)".into());
    }
    stowage_plugin_tls::settings(verification, ca, host).map(Some)
}
