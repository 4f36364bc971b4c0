//! The plugin's stdout and stderr, captured line by line into the runner's log.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept; longer lines are cut so a plugin cannot grow host memory.
const MAX_LINE: usize = 4096;

/// A WASI output stream that logs each line with the plugin's name.
#[derive(Debug, Clone)]
pub struct LogOutput {
    plugin: String,
    stream: &'static str,
}

impl LogOutput {
    pub fn new(plugin: &str, stream: &'static str) -> Self {
        LogOutput { plugin: plugin.to_owned(), stream }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger { output: self.clone(), line: Vec::new() })
    }
}

struct LineLogger {
    output: LogOutput,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(target: "stowage::plugin", plugin = %self.output.plugin, stream = self.output.stream, "{}", text.trim_end());
        self.line.clear();
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        for &byte in data {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
