//! The least a multiplexing proxy on tokio can do: the requests of every client go over one
//! shared, pipelined upstream connection and each reply is written straight to its client by
//! the task that reads it. Requests are only counted (turnout's request parser finds where each
//! ends), replies only split by count (turnout's reply scanner); nothing is routed, classified,
//! checked for connection state or measured, and a client's later requests never wait for its
//! earlier replies. It runs on one thread, as turnout does on a two-core machine.
//!
//! `scripts/bench.sh` runs it for W2 (unpipelined clients) as the measured ceiling of a
//! multiplexing proxy on the machine at hand, as `relay` is for a connection per client: a
//! ratio turnout cannot reach is one this program cannot beat by much either.
//!
//! Not a proxy to use: no limits beyond those below, no error replies (an upstream failure
//! ends the program), no transparency for SELECT, transactions, blocking commands or Pub/Sub.
//!
//! Usage: `mux_relay LISTEN_ADDR UPSTREAM_ADDR` (both must be loopback addresses).

#[path = "support/loopback.rs"]
mod support;

use bytes::{Buf, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use support::loopback;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use turnout::resp::reply::ReplyScan;
use turnout::resp::request::{self, Parsed};

/// Bytes read per system call, from a client or the upstream.
const READ: usize = 64 * 1024;
/// Largest request accepted (as turnout's default `max_request_bytes`).
const MAX_REQUEST: usize = 512 * 1024 * 1024;
/// Request bytes waiting for the upstream past which clients stop reading.
const MAX_QUEUED: usize = 64 * 1024 * 1024;
/// Reply bytes a client has not taken past which it is disconnected (the shared connection
/// cannot stop reading for one client).
const MAX_UNSENT: usize = 64 * 1024 * 1024;

/// One client: its socket, shared by its reading task and the upstream task that writes its
/// replies, and what could not be written at once.
struct Client {
    stream: TcpStream,
    /// Replies the socket did not take yet, flushed by the client's task.
    out: RefCell<BytesMut>,
    flush: Notify,
    /// Past [`MAX_UNSENT`]: its replies are dropped and its task ends.
    dropped: Cell<bool>,
}

/// The shared connection's queue: request bytes not yet written, and whose replies come next.
#[derive(Default)]
struct Upstream {
    queue: RefCell<BytesMut>,
    owed: RefCell<VecDeque<(Rc<Client>, u64)>>,
    /// Wakes the upstream task when requests are queued.
    work: Notify,
    /// Wakes clients waiting for room in the queue.
    room: Notify,
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: mux_relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let (listen, upstream) = (loopback(&listen)?, loopback(&upstream)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await?;
        let server = TcpStream::connect(upstream).await?;
        server.set_nodelay(true)?;
        let shared = Rc::new(Upstream::default());
        let driver = tokio::task::spawn_local(drive(server, shared.clone()));
        tokio::select! {
            accepted = accept(listener, shared) => accepted,
            ended = driver => match ended {
                Ok(result) => result,
                Err(e) => Err(io::Error::other(e)),
            },
        }
    })
}

async fn accept(listener: TcpListener, shared: Rc<Upstream>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = Rc::new(Client {
            stream,
            out: RefCell::new(BytesMut::new()),
            flush: Notify::new(),
            dropped: Cell::new(false),
        });
        tokio::task::spawn_local(serve(client, shared.clone()));
    }
}

/// A client's task: reads requests and queues the complete ones; flushes what the upstream
/// task could not write.
async fn serve(client: Rc<Client>, shared: Rc<Upstream>) {
    let mut buf = BytesMut::with_capacity(READ);
    let mut args = Vec::new();
    loop {
        while shared.queue.borrow().len() > MAX_QUEUED {
            shared.room.notified().await;
        }
        tokio::select! {
            ready = client.stream.readable() => {
                if ready.is_err() {
                    return;
                }
                buf.reserve(READ);
                match client.stream.try_read_buf(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                }
                let (mut len, mut count) = (0, 0);
                loop {
                    match request::parse(&buf[len..], &mut args, MAX_REQUEST) {
                        Ok(Parsed::Incomplete) => break,
                        Ok(Parsed::Empty { len: n }) => len += n,
                        Ok(Parsed::Multibulk { len: n } | Parsed::Inline { len: n }) => {
                            len += n;
                            count += 1;
                        }
                        Err(_) => return,
                    }
                }
                if len > 0 {
                    shared.queue.borrow_mut().extend_from_slice(&buf[..len]);
                    buf.advance(len);
                    shared.owed.borrow_mut().push_back((client.clone(), count));
                    shared.work.notify_one();
                }
            }
            () = client.flush.notified() => {
                if client.dropped.get() {
                    return;
                }
                // The bytes stay in `out` until written, so that replies handed over
                // meanwhile queue behind them.
                while !client.out.borrow().is_empty() {
                    if client.stream.writable().await.is_err() {
                        return;
                    }
                    let written = client.stream.try_write(&client.out.borrow());
                    match written {
                        Ok(n) => client.out.borrow_mut().advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// The upstream task: writes queued requests, reads replies, and hands each to its client.
async fn drive(mut server: TcpStream, shared: Rc<Upstream>) -> io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(READ);
    let mut scan = ReplyScan::new();
    // The client whose replies come next and how many it is still owed; a reply's bytes
    // scanned so far (`rbuf[..scanned]`).
    let mut front: Option<(Rc<Client>, u64)> = None;
    let mut scanned = 0;
    loop {
        let queued = std::mem::take(&mut *shared.queue.borrow_mut());
        if !queued.is_empty() {
            shared.room.notify_waiters();
            server.write_all(&queued).await?;
        }
        tokio::select! {
            biased;
            ready = server.readable() => {
                ready?;
                rbuf.reserve(READ);
                match server.try_read_buf(&mut rbuf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
                // Split what came by client, in order; a partial reply waits for the rest.
                let mut start = 0;
                while scanned < rbuf.len() {
                    if front.is_none() {
                        front = shared.owed.borrow_mut().pop_front();
                    }
                    let Some((client, owed)) = front.as_mut() else {
                        return Err(io::Error::other("a reply nobody asked for"));
                    };
                    let mut end = None;
                    while *owed > 0 && scanned < rbuf.len() {
                        scanned += scan
                            .advance(&rbuf[scanned..])
                            .map_err(|e| io::Error::other(format!("{e:?}")))?;
                        if !scan.is_done() {
                            break;
                        }
                        scan = ReplyScan::new();
                        *owed -= 1;
                        end = Some(scanned);
                    }
                    if let Some(end) = end {
                        hand_over(client, &rbuf[start..end]);
                        start = end;
                    }
                    if *owed > 0 {
                        break;
                    }
                    front = None;
                }
                rbuf.advance(start);
                scanned -= start;
            }
            () = shared.work.notified() => {}
        }
    }
}

/// Writes replies to their client now, or leaves them to the client's task.
fn hand_over(client: &Client, replies: &[u8]) {
    if client.dropped.get() {
        return;
    }
    let mut out = client.out.borrow_mut();
    let written = if out.is_empty() {
        match client.stream.try_write(replies) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The client is gone: nobody reads these replies.
            Err(_) => return,
        }
    } else {
        0
    };
    if written < replies.len() {
        if out.len() + (replies.len() - written) > MAX_UNSENT {
            // The client is not reading: let it go rather than buffer without bound.
            client.dropped.set(true);
            *out = BytesMut::new();
        } else {
            out.extend_from_slice(&replies[written..]);
        }
        client.flush.notify_one();
    }
}
