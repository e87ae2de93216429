//! Free loopback ports.
//!
//! A port is found by binding `127.0.0.1:0` and dropping the listener. A process-wide set makes
//! sure two tests of the same binary never get the same port; callers still retry when the
//! port was taken by someone else in between.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that was free a moment ago and was not handed out before in this process.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}
