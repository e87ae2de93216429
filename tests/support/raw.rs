//! A byte-exact RESP client over a plain `TcpStream`.
//!
//! Replies are read frame by frame and handed back as raw bytes, so tests can assert the exact
//! bytes turnout wrote. Every read is bounded in time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::resp::{self, Reply};

/// How long a single expected reply may take by default.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes a command as a RESP array of bulk strings.
pub fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

/// Encodes binary arguments as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Bytes rendered readably (`\r\n` escaped) for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Why a read did not produce a reply.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection; `partial` holds unparsed leftover bytes.
    Eof { partial: Vec<u8> },
    /// Nothing complete arrived in time; `partial` holds what did arrive.
    Timeout { partial: Vec<u8> },
    /// Another I/O error (for example a reset).
    Io(std::io::Error),
    /// The bytes are not RESP.
    Protocol(String),
}

/// A raw connection to a RESP server (turnout or redis).
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    /// Connects, panicking with the address on failure.
    pub fn connect(addr: &str) -> RawClient {
        Self::try_connect(addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects within `timeout`.
    pub fn try_connect(addr: &str, timeout: Duration) -> std::io::Result<RawClient> {
        let sock: SocketAddr = addr.parse().expect("socket address");
        let stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// A second handle on the same socket (for writing from another thread).
    pub fn stream_clone(&self) -> TcpStream {
        self.stream.try_clone().expect("clone stream")
    }

    /// Writes all bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {:?}: {e}", show(bytes)));
    }

    /// Writes all bytes, reporting errors instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command as a RESP array.
    pub fn send_cmd(&mut self, args: &[&str]) {
        self.send(&cmd(args));
    }

    /// Sends `args` and asserts the reply bytes are exactly `expected`.
    pub fn expect_cmd(&mut self, args: &[&str], expected: &[u8]) {
        self.send_cmd(args);
        let got = self.read_frame();
        assert_eq!(
            show(&got),
            show(expected),
            "reply to {args:?}: got {} expected {}",
            show(&got),
            show(expected)
        );
    }

    /// Sends `args` and returns the raw bytes of the reply.
    pub fn roundtrip(&mut self, args: &[&str]) -> Vec<u8> {
        self.send_cmd(args);
        self.read_frame()
    }

    /// Sends `args` and returns the reply as text (bulk contents, or the raw frame otherwise).
    pub fn read_reply_after(&mut self, args: &[&str]) -> String {
        self.send_cmd(args);
        let frame = self.read_frame();
        match parse_one(&frame) {
            Reply::Bulk(Some(data)) => String::from_utf8_lossy(&data).into_owned(),
            _ => show(&frame),
        }
    }

    /// Reads the next reply frame's raw bytes, panicking after [`DEFAULT_REPLY_TIMEOUT`].
    pub fn read_frame(&mut self) -> Vec<u8> {
        self.read_frame_within(DEFAULT_REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("reading a reply: {e:?}"))
    }

    /// Reads the next reply as raw bytes within `timeout`.
    pub fn read_frame_within(&mut self, timeout: Duration) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            match resp::parse(&self.buf) {
                Err(e) => return Err(ReadError::Protocol(format!("{e} in {}", show(&self.buf)))),
                Ok(Some((_, used))) => return Ok(self.buf.drain(..used).collect()),
                Ok(None) => {}
            }
            self.fill(deadline)?;
        }
    }

    /// Reads and parses the next reply.
    pub fn read_reply(&mut self) -> Reply {
        let frame = self.read_frame();
        parse_one(&frame)
    }

    /// Reads and parses the next reply within `timeout`.
    pub fn read_reply_within(&mut self, timeout: Duration) -> Result<Reply, ReadError> {
        self.read_frame_within(timeout).map(|f| parse_one(&f))
    }

    /// Reads `n` replies (raw frames) within an overall `timeout`.
    pub fn read_frames(&mut self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_within(left) {
                Ok(f) => frames.push(f),
                Err(e) => panic!("after {} of {n} replies: {e:?}", frames.len()),
            }
        }
        frames
    }

    /// Reads until the peer closes (or `timeout` passes). Returns everything received and
    /// whether EOF (or a reset) was seen.
    pub fn read_to_eof(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(()) => continue,
                Err(ReadError::Eof { .. }) | Err(ReadError::Io(_)) => {
                    return (std::mem::take(&mut self.buf), true)
                }
                Err(ReadError::Timeout { .. }) => return (std::mem::take(&mut self.buf), false),
                Err(ReadError::Protocol(_)) => unreachable!("fill does not parse"),
            }
        }
    }

    /// Whether the connection has been seen closed by the peer.
    pub fn saw_eof(&self) -> bool {
        self.eof
    }

    /// Reads more bytes into the buffer, until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        if self.eof {
            return Err(ReadError::Eof {
                partial: self.buf.clone(),
            });
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Timeout {
                    partial: self.buf.clone(),
                });
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(ReadError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Err(ReadError::Eof {
                        partial: self.buf.clone(),
                    });
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.eof = true;
                    return Err(ReadError::Io(e));
                }
            }
        }
    }
}

fn parse_one(frame: &[u8]) -> Reply {
    match resp::parse(frame) {
        Ok(Some((reply, _))) => reply,
        other => panic!("not one reply: {other:?} in {}", show(frame)),
    }
}

/// One command on a fresh connection, without panicking: for readiness probes.
pub fn try_command(addr: &str, args: &[&str], timeout: Duration) -> Result<Reply, String> {
    let mut client = RawClient::try_connect(addr, timeout).map_err(|e| e.to_string())?;
    client.try_send(&cmd(args)).map_err(|e| e.to_string())?;
    client
        .read_reply_within(timeout)
        .map_err(|e| format!("{e:?}"))
}
