//! What a plugin may touch: nothing but TCP to its database's addresses, bounded memory
//! and bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::guest_text::GuestLog;
use super::output::LogOutput;

/// Resource bounds of one plugin run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory the plugin may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time for one backup or restore, including time blocked on the network.
    pub deadline: Duration,
    /// Cancelled when the run must stop now (SIGTERM): the plugin is stopped like at
    /// the deadline.
    pub interrupt: CancellationToken,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 512 << 20, deadline: Duration::from_secs(6 * 3600), interrupt: CancellationToken::new() }
    }
}

impl Limits {
    pub(crate) fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            // A component has a handful of core instances, memories and tables; these
            // bounds leave room for any real plugin and none for one that multiplies them.
            .instances(64)
            .memories(16)
            .tables(64)
            .table_elements(1 << 20)
            // Report a refused memory.grow as a trap at that point, not as an
            // allocation failure the guest turns into an `unreachable` trap.
            .trap_on_grow_failure(true)
            .build()
    }
}

/// The WASI context of a plugin: no files, no environment, no arguments, stdout and
/// stderr into the log, no name lookups, no UDP, and TCP connections only to `allowed`.
pub(crate) fn wasi_context(log: &GuestLog, allowed: Vec<SocketAddr>) -> WasiCtx {
    let allowed = Arc::new(allowed);
    WasiCtxBuilder::new()
        .stdout(LogOutput::stdout(log))
        .stderr(LogOutput::stderr(log))
        .allow_ip_name_lookup(false)
        .allow_udp(false)
        .allow_tcp(!allowed.is_empty())
        .socket_addr_check(move |address, use_| {
            let allowed = Arc::clone(&allowed);
            Box::pin(async move { permits(&allowed, address, use_) })
        })
        .build()
}

/// The socket policy. A connect binds implicitly to the wildcard address with port 0
/// first, which must be allowed for any connection to work; explicit binds, listening
/// and UDP are refused.
fn permits(allowed: &[SocketAddr], address: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        SocketAddrUse::TcpBind => address.ip().is_unspecified() && address.port() == 0,
        SocketAddrUse::TcpConnect => allowed.contains(&address),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_database_addresses_may_be_connected() {
        let database: SocketAddr = "127.0.0.1:5432".parse().expect("address");
        let allowed = [database];
        assert!(permits(&allowed, database, SocketAddrUse::TcpConnect));
        assert!(permits(&allowed, "0.0.0.0:0".parse().expect("address"), SocketAddrUse::TcpBind));
        assert!(!permits(&allowed, "127.0.0.1:5433".parse().expect("address"), SocketAddrUse::TcpConnect));
        assert!(!permits(&allowed, "127.0.0.1:8333".parse().expect("address"), SocketAddrUse::TcpConnect));
        assert!(!permits(&allowed, "0.0.0.0:8080".parse().expect("address"), SocketAddrUse::TcpBind));
        assert!(!permits(&allowed, database, SocketAddrUse::TcpListen));
        assert!(!permits(&allowed, database, SocketAddrUse::UdpSend));
    }
}
