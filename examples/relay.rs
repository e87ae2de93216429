//! A byte relay with no RESP work at all: each client connection gets its own upstream
//! connection and bytes are copied both ways (`tokio::io::copy_bidirectional_with_sizes`, 128 KiB
//! buffers). It is the
//! least any proxy on tokio can do per byte, so `scripts/bench.sh` runs it as the measured
//! ceiling for a connection-per-client proxy on the machine at hand.
//!
//! Usage: `relay LISTEN_ADDR UPSTREAM_ADDR` (both must be loopback addresses).

#[path = "support/loopback.rs"]
mod support;

use support::loopback;
use tokio::net::{TcpListener, TcpStream};

/// Bytes copied per read, each way: a 64 KiB value moves in one piece.
const BUF: usize = 128 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let (listen, upstream) = (loopback(&listen)?, loopback(&upstream)?);
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUF, BUF).await;
        });
    }
}
