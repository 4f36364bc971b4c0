//! Logins: what each authentication plugin answers to the server's scramble, and
//! `caching_sha2_password`'s full authentication without TLS, where the password goes
//! encrypted with the server's RSA key.

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::rand_core::OsRng;
use rsa::{Oaep, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::protocol::Error;

/// The plugins [`response`] answers for.
const SPOKEN: &str = "mysql_native_password, caching_sha2_password and client_ed25519";

/// How many bytes of a scramble the SHA-based logins use (a greeting's may carry more).
const SCRAMBLE: usize = 20;

/// The response an authentication plugin gives to `scramble`.
pub fn response(plugin: &str, password: &str, scramble: &[u8]) -> Result<Vec<u8>, Error> {
    match plugin {
        "mysql_native_password" => Ok(native_password(password, scramble)),
        "caching_sha2_password" => Ok(sha2_password(password, scramble)),
        "client_ed25519" => Ok(ed25519_password(password, scramble)),
        other => Err(Error::Unsupported(format!(
            "the server asks for authentication plugin {other}, which this plugin does not speak (it speaks {SPOKEN})"
        ))),
    }
}

/// `mysql_native_password`: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))).
fn native_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let mut hasher = Sha1::new();
    hasher.update(&scramble[..scramble.len().min(SCRAMBLE)]);
    hasher.update(stage2);
    let mask = hasher.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// `caching_sha2_password`'s fast path: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble).
fn sha2_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha256::digest(password.as_bytes());
    let stage2 = Sha256::digest(stage1);
    let mut hasher = Sha256::new();
    hasher.update(stage2);
    hasher.update(&scramble[..scramble.len().min(SCRAMBLE)]);
    let mask = hasher.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// MariaDB's `client_ed25519`: the server's 32-byte nonce signed with Ed25519 whose
/// expanded secret key is SHA-512 of the password (MariaDB's ref10 `crypto_sign` takes
/// the password where the standard takes a 32-byte seed).
fn ed25519_password(password: &str, nonce: &[u8]) -> Vec<u8> {
    use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
    use ed25519_dalek::{Digest, Sha512, VerifyingKey};
    let expanded: [u8; 64] = Sha512::digest(password.as_bytes()).into();
    let key = ExpandedSecretKey::from_bytes(&expanded);
    let public = VerifyingKey::from(&key);
    raw_sign::<Sha512>(&key, nonce, &public).to_bytes().to_vec()
}

/// Where `caching_sha2_password`'s full authentication without TLS gets the server's
/// RSA key (option `server-public-key`; over TLS the password itself is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKey {
    /// Asked of the server during the login, as `mysql --get-server-public-key`: whoever
    /// sits between client and server can hand over a key of their own and read the
    /// password, so only on request.
    Request,
    /// Given, as `mysql --server-public-key-path`.
    Pinned(RsaPublicKey),
}

impl ServerKey {
    /// The value of option `server-public-key`: `request`, or the key as PEM.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim() == "request" {
            return Ok(ServerKey::Request);
        }
        public_key(value).map(ServerKey::Pinned)
    }
}

/// An RSA public key in PEM, as a `PUBLIC KEY` (what MySQL writes to
/// `caching_sha2_password_public_key_path` and sends) or an `RSA PUBLIC KEY`.
pub fn public_key(pem: &str) -> Result<RsaPublicKey, String> {
    let pem = pem.trim();
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|error| format!("not an RSA public key in PEM ({error})"))
}

/// `caching_sha2_password`'s full authentication without TLS: the password with its
/// terminating NUL, XOR the scramble (repeated), encrypted with RSA-OAEP (SHA-1) under
/// the server's key.
pub fn encrypted_password(key: &RsaPublicKey, password: &str, scramble: &[u8]) -> Result<Vec<u8>, Error> {
    let scramble = &scramble[..scramble.len().min(SCRAMBLE)];
    if scramble.is_empty() {
        return Err(Error::Protocol("the server sent no scramble to encrypt the password with".into()));
    }
    let mixed: Vec<u8> =
        password.bytes().chain([0]).zip(scramble.iter().cycle()).map(|(byte, mask)| byte ^ mask).collect();
    key.encrypt(&mut OsRng, Oaep::new::<sha1_oaep::Sha1>(), &mixed).map_err(|error| {
        Error::Unsupported(format!("encrypting the password with the server's RSA key failed: {error}"))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use rsa::RsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;

    use super::*;

    /// A 2048-bit test key (openssl genpkey -algorithm RSA).
    pub const PRIVATE_KEY: &str = include_str!("testdata/rsa-private.pem");
    pub const PUBLIC_KEY: &str = include_str!("testdata/rsa-public.pem");

    /// What a server does with the encrypted password: the password, or why not.
    pub fn decrypt_password(encrypted: &[u8], scramble: &[u8]) -> Result<String, String> {
        let key = RsaPrivateKey::from_pkcs8_pem(PRIVATE_KEY).map_err(|e| e.to_string())?;
        let mixed = key.decrypt(Oaep::new::<sha1_oaep::Sha1>(), encrypted).map_err(|e| e.to_string())?;
        let mut plain: Vec<u8> = mixed.iter().zip(scramble.iter().cycle()).map(|(byte, mask)| byte ^ mask).collect();
        if plain.pop() != Some(0) {
            return Err("no NUL after the password".into());
        }
        String::from_utf8(plain).map_err(|e| e.to_string())
    }

    #[test]
    fn the_password_is_encrypted_so_that_the_servers_private_key_reads_it() {
        let scramble: Vec<u8> = (1..=20).collect();
        let ServerKey::Pinned(key) = ServerKey::parse(PUBLIC_KEY).expect("a key") else { panic!("not pinned") };
        // Longer than the scramble: it repeats.
        let password = "a password of more than twenty bytes, ünicode too";
        let encrypted = encrypted_password(&key, password, &scramble).expect("encrypted");
        assert_eq!(encrypted.len(), 256, "one RSA-2048 block");
        assert_eq!(decrypt_password(&encrypted, &scramble).as_deref(), Ok(password));
        // OAEP is randomized: the same password never gives the same bytes twice.
        assert_ne!(encrypted, encrypted_password(&key, password, &scramble).expect("encrypted"));
    }

    #[test]
    fn server_keys_are_requested_or_pinned_as_pem() {
        assert_eq!(ServerKey::parse(" request "), Ok(ServerKey::Request));
        let spki = public_key(PUBLIC_KEY).expect("SPKI");
        let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(&spki, rsa::pkcs8::LineEnding::LF).expect("PKCS#1");
        assert_eq!(ServerKey::parse(&pkcs1), Ok(ServerKey::Pinned(spki)));
        let refused = ServerKey::parse("yes").expect_err("neither");
        assert!(refused.starts_with("not an RSA public key in PEM"), "{refused}");
    }
}
