//! Compression and encryption of artifact streams.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
pub use stowage_api::Compression;

/// The age X25519 recipients a backup is encrypted to.
#[derive(Clone, Default)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|r| r.to_string())).finish()
    }
}

impl From<Vec<age::x25519::Recipient>> for Recipients {
    fn from(recipients: Vec<age::x25519::Recipient>) -> Self {
        Recipients(recipients)
    }
}

impl Recipients {
    /// Parse `age1...` public keys.
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<Self, String> {
        keys.iter().map(|key| stowage_api::parse_age_recipient(key.as_ref())).collect::<Result<_, _>>().map(Recipients)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recipients as they are written in the manifest.
    pub fn describe(&self) -> Encryption {
        Encryption::Age { recipients: self.0.iter().map(|r| r.to_string()).collect() }
    }
}

/// The age X25519 identities (private keys) that decrypt backups.
#[derive(Clone, Default)]
pub struct Identities(Vec<age::x25519::Identity>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys)", self.0.len())
    }
}

impl Identities {
    /// Parse an identity file as written by `age-keygen`: one `AGE-SECRET-KEY-1...` per
    /// line, `#` comments and blank lines ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.parse::<age::x25519::Identity>().map_err(|e| format!("not an age identity: {e}")))
            .collect::<Result<_, _>>()
            .map(Identities)
    }
}

/// How a stored artifact is encrypted, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scheme")]
pub enum Encryption {
    /// age (age-encryption.org/v1) to these X25519 public keys; decryptable with the
    /// `age` command-line tool and a matching identity.
    Age { recipients: Vec<String> },
}

/// Everything that turns plain artifact bytes into stored bytes.
#[derive(Debug, Clone)]
pub struct Codec {
    pub compression: Compression,
    pub recipients: Recipients,
}

impl Codec {
    /// The file extension of stored objects, so that standard tools recognise them:
    /// `.zst`, `.age` or `.zst.age`.
    pub fn extension(&self) -> String {
        let mut extension = String::new();
        if matches!(self.compression, Compression::Zstd { .. }) {
            extension.push_str(".zst");
        }
        if !self.recipients.is_empty() {
            extension.push_str(".age");
        }
        extension
    }

    /// Wrap `sink` so that plain bytes written to the result come out compressed and
    /// encrypted. Call [`EncodingWriter::finish`] to flush the trailers.
    pub(crate) fn encoder<W: Write>(&self, sink: W) -> io::Result<EncodingWriter<W>> {
        let encrypted = if self.recipients.is_empty() {
            Encrypting::Plain(sink)
        } else {
            let recipients = self.recipients.0.iter().map(|r| r as &dyn age::Recipient);
            let encryptor = age::Encryptor::with_recipients(recipients).map_err(io::Error::other)?;
            Encrypting::Age(encryptor.wrap_output(sink)?)
        };
        Ok(match self.compression {
            Compression::None => EncodingWriter::Plain(encrypted),
            Compression::Zstd { level } => EncodingWriter::Zstd(zstd::Encoder::new(encrypted, level)?),
        })
    }
}

/// Decode stored bytes read from `source` back into plain bytes.
pub(crate) fn decoder<'a, R: Read + 'a>(
    source: R,
    compression: Compression,
    encryption: Option<&Encryption>,
    identities: &'a Identities,
) -> io::Result<Box<dyn Read + 'a>> {
    let decrypted: Box<dyn Read + 'a> = match encryption {
        None => Box::new(source),
        Some(Encryption::Age { .. }) => {
            if identities.0.is_empty() {
                return Err(io::Error::other("the artifact is encrypted and no age identity was given"));
            }
            let decryptor = age::Decryptor::new(source).map_err(io::Error::other)?;
            let identities = identities.0.iter().map(|i| i as &dyn age::Identity);
            Box::new(decryptor.decrypt(identities).map_err(io::Error::other)?)
        }
    };
    Ok(match compression {
        Compression::None => decrypted,
        Compression::Zstd { .. } => Box::new(zstd::Decoder::new(decrypted)?),
    })
}

/// The encryption stage of [`EncodingWriter`].
pub(crate) enum Encrypting<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encrypting::Plain(w) => w.write(buf),
            Encrypting::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encrypting::Plain(w) => w.flush(),
            Encrypting::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> Encrypting<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encrypting::Plain(w) => Ok(w),
            Encrypting::Age(w) => w.finish(),
        }
    }
}

/// Plain bytes in, stored bytes out to the inner writer.
pub(crate) enum EncodingWriter<W: Write> {
    Plain(Encrypting<W>),
    Zstd(zstd::Encoder<'static, Encrypting<W>>),
}

impl<W: Write> Write for EncodingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            EncodingWriter::Plain(w) => w.write(buf),
            EncodingWriter::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            EncodingWriter::Plain(w) => w.flush(),
            EncodingWriter::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> EncodingWriter<W> {
    /// Write the compression and encryption trailers and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            EncodingWriter::Plain(w) => w.finish(),
            EncodingWriter::Zstd(w) => w.finish()?.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_bytes_decode_to_the_original() {
        let identity = age::x25519::Identity::generate();
        let recipients = Recipients::parse(&[identity.to_public().to_string()]).expect("valid key");
        let plain: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for compression in [Compression::None, Compression::Zstd { level: 3 }] {
            for recipients in [Recipients::default(), recipients.clone()] {
                let codec = Codec { compression, recipients: recipients.clone() };
                let mut encoder = codec.encoder(Vec::new()).expect("encoder");
                encoder.write_all(&plain).expect("write");
                let stored = encoder.finish().expect("finish");
                let encryption = (!recipients.is_empty()).then(|| recipients.describe());
                let identities = Identities(vec![identity.clone()]);
                let mut decoded = Vec::new();
                decoder(&stored[..], compression, encryption.as_ref(), &identities)
                    .expect("decoder")
                    .read_to_end(&mut decoded)
                    .expect("read");
                assert_eq!(decoded, plain, "{codec:?}");
            }
        }
    }
}
