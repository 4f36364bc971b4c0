//! Text from a plugin on its way into the runner's log, errors and manifests: never
//! trusted. Every piece is cut to a length and has its control characters escaped, so a
//! plugin cannot forge log lines or drive a terminal; log volume has a budget that
//! refills over time, and what is dropped is counted and reported.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Longest log message or output line kept.
pub const MAX_MESSAGE: usize = 2048;
/// Longest error message of a plugin.
pub const MAX_ERROR: usize = 4096;
/// Log bytes a plugin may produce at once, and per second afterwards.
const BURST_BYTES: f64 = 256.0 * 1024.0;
const REFILL_BYTES_PER_SECOND: f64 = 8.0 * 1024.0;
/// Every message costs at least this much, so that empty messages are bounded too.
const MIN_COST: usize = 64;

/// `text` with control characters escaped (`\n`, `\u{1b}`, ...), cut to `max` bytes
/// with a note of how much was cut.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for (offset, character) in text.char_indices() {
        if out.len() >= max {
            out.push_str(&format!("... ({} more bytes)", text.len() - offset));
            break;
        }
        match character {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Log levels a plugin can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The log of one plugin run, shared by `report.log`, stdout and stderr.
#[derive(Debug, Clone)]
pub struct GuestLog {
    plugin: Arc<str>,
    state: Arc<Mutex<LogState>>,
}

#[derive(Debug)]
struct LogState {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    /// The last panic the plugin printed, for the trap's message.
    panic: Option<String>,
    /// A stderr line said "panicked at"; the message follows on the next line.
    panic_location: Option<String>,
}

impl GuestLog {
    pub fn new(plugin: &str) -> Self {
        GuestLog {
            plugin: Arc::from(sanitize(plugin, 64)),
            state: Arc::new(Mutex::new(LogState {
                tokens: BURST_BYTES,
                refilled: Instant::now(),
                dropped: 0,
                panic: None,
                panic_location: None,
            })),
        }
    }

    /// The plugin's name, as logged.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Log one message of the plugin, within the budget.
    pub fn log(&self, level: GuestLevel, stream: Option<&'static str>, message: &str) {
        let dropped = {
            let Ok(mut state) = self.state.lock() else { return };
            let now = Instant::now();
            let refill = now.duration_since(state.refilled).as_secs_f64() * REFILL_BYTES_PER_SECOND;
            state.tokens = (state.tokens + refill).min(BURST_BYTES);
            state.refilled = now;
            let cost = message.len().clamp(MIN_COST, MAX_MESSAGE) as f64;
            if state.tokens < cost {
                state.dropped += 1;
                return;
            }
            state.tokens -= cost;
            std::mem::take(&mut state.dropped)
        };
        if dropped > 0 {
            self.report_dropped(dropped);
        }
        let text = sanitize(message.trim_end(), MAX_MESSAGE);
        let plugin = &*self.plugin;
        let stream = stream.unwrap_or("report");
        match level {
            GuestLevel::Trace => tracing::trace!(target: "stowage::plugin", %plugin, stream, "{text}"),
            GuestLevel::Debug => tracing::debug!(target: "stowage::plugin", %plugin, stream, "{text}"),
            GuestLevel::Info => tracing::info!(target: "stowage::plugin", %plugin, stream, "{text}"),
            GuestLevel::Warn => tracing::warn!(target: "stowage::plugin", %plugin, stream, "{text}"),
            GuestLevel::Error => tracing::error!(target: "stowage::plugin", %plugin, stream, "{text}"),
        }
    }

    /// A line the plugin wrote to stderr: logged, and remembered if it is part of a
    /// Rust panic message.
    pub fn stderr_line(&self, line: &str) {
        if let Ok(mut state) = self.state.lock() {
            if let Some(location) = state.panic_location.take() {
                state.panic = Some(sanitize(&format!("{} (at {location})", line.trim()), MAX_ERROR));
            } else if let Some((_, rest)) = line.split_once("panicked at ") {
                match rest.trim_end().strip_suffix(':') {
                    // Rust 1.73+: `panicked at src/lib.rs:1:2:`, the message on the next line.
                    Some(location) => state.panic_location = Some(location.to_owned()),
                    // Older: `panicked at 'message', src/lib.rs:1:2`.
                    None => state.panic = Some(sanitize(rest.trim(), MAX_ERROR)),
                }
            }
        }
        self.log(GuestLevel::Info, Some("stderr"), line);
    }

    /// The panic message the plugin printed, if it panicked.
    pub fn panic_message(&self) -> Option<String> {
        self.state.lock().ok().and_then(|state| state.panic.clone())
    }

    /// Report messages dropped since the last report; call when the run ends.
    pub fn finish(&self) {
        let dropped = self.state.lock().map(|mut state| std::mem::take(&mut state.dropped)).unwrap_or_default();
        if dropped > 0 {
            self.report_dropped(dropped);
        }
    }

    fn report_dropped(&self, dropped: u64) {
        tracing::warn!(target: "stowage::plugin", plugin = %self.plugin, dropped, "{dropped} plugin log messages dropped: the plugin logs faster than its budget");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_is_cut() {
        assert_eq!(sanitize("two\nlines\r\x1b[31mred\x07", 100), "two\\nlines\\r\\u{1b}[31mred\\u{7}");
        assert_eq!(sanitize("back\\slash", 100), "back\\\\slash");
        assert_eq!(sanitize("ünïcode stays", 100), "ünïcode stays");
        assert_eq!(sanitize(&"x".repeat(1000), 10), format!("{}... (990 more bytes)", "x".repeat(10)));
        assert_eq!(sanitize("\u{202e}reversed", 100), "\\u{202e}reversed");
    }

    #[test]
    fn a_flood_is_cut_to_the_budget_and_counted() {
        let log = GuestLog::new("flood");
        for _ in 0..100_000 {
            log.log(GuestLevel::Info, None, &"y".repeat(1000));
        }
        let dropped = log.state.lock().expect("lock").dropped;
        // About 256 KiB of 1000-byte messages got through, the rest was counted.
        assert!((99_500..100_000).contains(&dropped), "{dropped} dropped");
    }

    #[test]
    fn panic_messages_are_found_in_both_rust_formats() {
        let log = GuestLog::new("p");
        log.stderr_line("thread '<unnamed>' panicked at src/lib.rs:140:24:");
        log.stderr_line("the probe panics on purpose");
        assert_eq!(log.panic_message().as_deref(), Some("the probe panics on purpose (at src/lib.rs:140:24)"));
        let old = GuestLog::new("p");
        old.stderr_line("thread 'main' panicked at 'boom', src/main.rs:1:1");
        assert!(old.panic_message().is_some_and(|m| m.contains("boom")));
    }
}
