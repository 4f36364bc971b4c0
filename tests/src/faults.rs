//! A TCP proxy that breaks connections on purpose, put between `stowage` and a real S3
//! server: some connections are reset part-way through a request or a response, answered
//! with `503 Slow Down`, or stalled and then dropped. Which ones is decided by the
//! connection's number (every `period`-th connection, the kinds in turn) and where a
//! stream is cut by a seeded generator, so every run injects the same faults in the same
//! order and a test can count on them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Result;

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Close both sides after this many bytes of requests.
    ResetRequest(usize),
    /// Close both sides after this many bytes of the response.
    TruncateResponse(usize),
    /// Answer the first request with `503 Slow Down` and close.
    SlowDown,
    /// Read nothing for a while, then close.
    Stall,
}

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub truncations: AtomicU64,
    pub slow_downs: AtomicU64,
    pub stalls: AtomicU64,
}

impl FaultCounts {
    pub fn injected(&self) -> u64 {
        [&self.resets, &self.truncations, &self.slow_downs, &self.stalls]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} connections: {} reset mid-request, {} truncated responses, {} 503s, {} stalls",
            self.connections.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.truncations.load(Ordering::Relaxed),
            self.slow_downs.load(Ordering::Relaxed),
            self.stalls.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy; stops accepting on drop.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use instead of the server's endpoint.
    pub endpoint: String,
    pub counts: Arc<FaultCounts>,
    enabled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxy to `upstream` (`host:port`), breaking every `period`-th connection.
    pub fn start(upstream: &str, period: u64, seed: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        listener.set_nonblocking(true)?;
        let counts = Arc::new(FaultCounts::default());
        let enabled = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(seed | 1));
        let (upstream, thread_counts, thread_enabled, thread_stop) =
            (upstream.to_owned(), Arc::clone(&counts), Arc::clone(&enabled), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let number = thread_counts.connections.fetch_add(1, Ordering::Relaxed);
                let fault =
                    if thread_enabled.load(Ordering::Relaxed) { choose(number, period, &rng) } else { Fault::None };
                let (upstream, counts) = (upstream.clone(), Arc::clone(&thread_counts));
                std::thread::spawn(move || serve(client, &upstream, fault, &counts));
            }
        });
        Ok(FaultProxy { endpoint, counts, enabled, stop })
    }

    /// Turn fault injection on or off for new connections.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn next(rng: &Mutex<u64>) -> u64 {
    let mut state = rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

/// The fault for connection `number` (from 0): every `period`-th one breaks, the kinds in
/// turn; the ones that fire whatever the request (503s and stalls) are half of them.
fn choose(number: u64, period: u64, rng: &Mutex<u64>) -> Fault {
    let period = period.max(1);
    if number % period != period - 1 {
        // Clients keep connections alive: even a good one breaks after 4 to 36 MiB of
        // requests, so that faults keep coming for every kind of request.
        return Fault::ResetRequest((4 << 20) + (next(rng) % (32 << 20)) as usize);
    }
    match (number / period) % 4 {
        0 => Fault::SlowDown,
        1 => Fault::ResetRequest((next(rng) % (2 << 20)) as usize),
        2 => Fault::Stall,
        _ => Fault::TruncateResponse((next(rng) % 2048) as usize),
    }
}

fn serve(client: TcpStream, upstream: &str, fault: Fault, counts: &FaultCounts) {
    match fault {
        Fault::SlowDown => {
            counts.slow_downs.fetch_add(1, Ordering::Relaxed);
            let mut client = client;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let response = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(response.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Stall => {
            counts.stalls.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(3));
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::None | Fault::ResetRequest(_) | Fault::TruncateResponse(_) => {
            let Ok(server) = TcpStream::connect(upstream) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let (request_limit, response_limit) = match fault {
                Fault::ResetRequest(bytes) => (Some(bytes), None),
                Fault::TruncateResponse(bytes) => (None, Some(bytes)),
                _ => (None, None),
            };
            let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else { return };
            let up = std::thread::spawn(move || pump(client_reader, server, request_limit));
            let down_broke = pump(server_reader, client, response_limit);
            let up_broke = up.join().unwrap_or(false);
            if up_broke {
                counts.resets.fetch_add(1, Ordering::Relaxed);
            }
            if down_broke {
                counts.truncations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Copy `from` to `to` until the end, or until `limit` bytes, then close both; returns
/// whether the limit cut the stream.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<usize>) -> bool {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    let cut = loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break false,
            Ok(n) => n,
        };
        let allowed = limit.map_or(n, |limit| n.min(limit.saturating_sub(sent)));
        if to.write_all(&buffer[..allowed]).is_err() {
            break false;
        }
        sent += allowed;
        if allowed < n {
            break true;
        }
    };
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    cut
}
