//! Artifacts as standard byte streams: [`create`] gives an [`std::io::Write`] during a
//! backup, [`open`] an [`std::io::Read`] during a restore.

use std::io;

use crate::PluginError;
use crate::bindings::stowage::plugin::artifact_sink;
use crate::bindings::stowage::plugin::artifact_source;

pub use artifact_source::ArtifactInfo;

/// Bytes collected before one call to the host.
const BATCH: usize = 256 * 1024;

/// A new artifact of the current backup. Call [`ArtifactWriter::finish`]; an artifact
/// dropped unfinished makes the backup fail.
#[derive(Debug)]
pub struct ArtifactWriter {
    writer: artifact_sink::ArtifactWriter,
    buffer: Vec<u8>,
}

/// Start artifact `name` with the media type of its plain content.
pub fn create(name: &str, media_type: &str) -> Result<ArtifactWriter, PluginError> {
    let writer = artifact_sink::create(name, media_type)?;
    Ok(ArtifactWriter { writer, buffer: Vec::with_capacity(BATCH) })
}

impl ArtifactWriter {
    fn send(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.writer.write(&self.buffer).map_err(|e| io::Error::other(PluginError::from(e).to_string()))?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Store the rest and wait until the artifact is durable; returns its plain size.
    pub fn finish(mut self) -> Result<u64, PluginError> {
        self.send().map_err(|e| PluginError::Artifact(e.to_string()))?;
        Ok(self.writer.finish()?)
    }
}

impl io::Write for ArtifactWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buffer.len() + data.len() > BATCH {
            self.send()?;
        }
        if data.len() >= BATCH {
            self.writer.write(data).map_err(|e| io::Error::other(PluginError::from(e).to_string()))?;
        } else {
            self.buffer.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The name of the `number`th artifact of a series (`data.00001.shop_orders.sql` for
/// `("data", 1, "shop.orders", "sql")`): numbered so that name order is creation order,
/// with as much of `label` as artifact names allow (letters, digits, `-` and `_`; every
/// other character becomes `_`).
pub fn numbered_name(prefix: &str, number: usize, label: &str, extension: &str) -> String {
    let readable: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(150)
        .collect();
    format!("{prefix}.{number:05}.{readable}.{extension}")
}

/// The artifacts of series `prefix` among `names` (those named `prefix.…`, as
/// [`numbered_name`] makes them), in name order, which is their creation order.
pub fn series(names: &[String], prefix: &str) -> Vec<String> {
    let start = format!("{prefix}.");
    let mut series: Vec<String> = names.iter().filter(|name| name.starts_with(&start)).cloned().collect();
    series.sort();
    series
}

/// The artifacts of the backup being restored, in creation order.
pub fn list() -> Vec<ArtifactInfo> {
    artifact_source::artifacts()
}

/// An artifact being read. Reaching its end means the host verified its checksum.
#[derive(Debug)]
pub struct ArtifactReader {
    reader: artifact_source::ArtifactReader,
    chunk: Vec<u8>,
    position: usize,
}

/// Open artifact `name` of the backup being restored.
pub fn open(name: &str) -> Result<ArtifactReader, PluginError> {
    Ok(ArtifactReader { reader: artifact_source::open(name)?, chunk: Vec::new(), position: 0 })
}

impl io::Read for ArtifactReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.position == self.chunk.len() {
            self.chunk =
                self.reader.read(BATCH as u32).map_err(|e| io::Error::other(PluginError::from(e).to_string()))?;
            self.position = 0;
        }
        let n = buffer.len().min(self.chunk.len() - self.position);
        buffer[..n].copy_from_slice(&self.chunk[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}
