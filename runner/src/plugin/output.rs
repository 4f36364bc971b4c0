//! The plugin's stdout and stderr, captured line by line into the runner's log.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::guest_text::{GuestLevel, GuestLog, MAX_MESSAGE};

/// A WASI output stream that logs each line into the plugin's log (bounded and escaped
/// there); stderr is also watched for panic messages.
#[derive(Debug, Clone)]
pub struct LogOutput {
    log: GuestLog,
    stream: &'static str,
}

impl LogOutput {
    pub fn stdout(log: &GuestLog) -> Self {
        LogOutput { log: log.clone(), stream: "stdout" }
    }

    pub fn stderr(log: &GuestLog) -> Self {
        LogOutput { log: log.clone(), stream: "stderr" }
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
        if self.output.stream == "stderr" {
            self.output.log.stderr_line(&text);
        } else {
            self.output.log.log(GuestLevel::Info, Some(self.output.stream), &text);
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        for &byte in data {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_MESSAGE {
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
