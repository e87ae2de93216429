//! The benchmark programs' one rule about addresses (relay, mux_relay, cutover_load): they
//! listen and connect on loopback only (127.0.0.0/8, ::1), so a benchmark never sends traffic
//! anywhere else.

use std::io;
use std::net::SocketAddr;

/// `s` as a socket address, or a clear error when it does not parse or is not loopback.
pub fn loopback(s: &str) -> io::Result<SocketAddr> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{s}: {e}")))?;
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s}: only loopback addresses"),
        ));
    }
    Ok(addr)
}
