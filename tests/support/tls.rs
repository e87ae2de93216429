//! TLS for the integration tests: certificates generated at test time, a TLS-only
//! `redis-server`, and a blocking TLS RESP client.
//!
//! - [`Pki`]: a CA, a server certificate (`redis.test`, `127.0.0.1`) and a client certificate
//!   it signed, plus an unrelated CA, written as PEM files to a temp dir.
//! - [`TlsRedis`]: `redis-server --port 0 --tls-port <free>`: no plain-text port at all. It is
//!   ready once a TLS `INFO server` names its own process id.
//! - [`TlsClient`]: rustls over a `std` socket, every read bounded in time.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;

use super::ports::free_port;
use super::raw::{cmd, show};
use super::resp::{self, Reply};

/// The name (besides `127.0.0.1`) in the server certificate.
pub const SERVER_NAME: &str = "redis.test";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Test certificates as PEM files.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Generates a CA, a server and a client certificate signed by it, and an unrelated CA.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("turnout-pki-")
            .tempdir()
            .expect("temp dir for certificates");
        let (ca, ca_key) = make_ca("turnout test CA");
        write(dir.path(), "ca.pem", &ca.pem());
        let (other, _) = make_ca("unrelated CA");
        write(dir.path(), "other-ca.pem", &other.pem());
        for (name, sans, usage) in [
            (
                "server",
                vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            (
                "client",
                vec!["turnout.test".to_string()],
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().expect("key pair");
            let mut params = CertificateParams::new(sans).expect("names");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }
        Pki { dir }
    }

    /// A file of the set: `ca.pem`, `other-ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Pki::path`] as a TOML string.
    pub fn toml(&self, name: &str) -> String {
        super::turnout::toml_string(&self.path(name).to_string_lossy())
    }

    /// A rustls client config trusting `ca` (a file name of the set), with the client
    /// certificate when `with_client_cert`.
    pub fn client_config(&self, ca: &str, with_client_cert: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path(ca)).expect("CA file") {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let config = if with_client_cert {
            let chain = CertificateDer::pem_file_iter(self.path("client.pem"))
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_file(self.path("client.key")).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key pair");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, key)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

/// A TLS-only `redis-server` child. Killed on drop.
pub struct TlsRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    client_config: Arc<rustls::ClientConfig>,
    extra_args: Vec<String>,
}

impl TlsRedis {
    /// Starts `redis-server` with only a TLS port, presenting `pki`'s server certificate;
    /// with `auth_clients`, clients must present a certificate `pki`'s CA signed.
    pub fn start(pki: &Pki, auth_clients: bool) -> TlsRedis {
        TlsRedis::start_with_args(pki, auth_clients, &[])
    }

    /// Like [`TlsRedis::start`], with extra `redis-server` arguments (cluster mode, say).
    pub fn start_with_args(pki: &Pki, auth_clients: bool, extra_args: &[&str]) -> TlsRedis {
        let dir = tempfile::Builder::new()
            .prefix("turnout-tls-redis-")
            .tempdir()
            .expect("temp dir for redis-server");
        let mut server = TlsRedis {
            port: 0,
            dir,
            child: None,
            client_config: pki.client_config("ca.pem", true),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn(pki, auth_clients) {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start a TLS redis-server: {last_error}");
    }

    /// `127.0.0.1:PORT` of the TLS port.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server: a stopped server still completes TCP
    /// connections (the kernel queues them) but never answers a handshake.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// A TLS client with the client certificate, panicking on failure.
    pub fn client(&self) -> TlsClient {
        TlsClient::connect(&self.addr(), self.client_config.clone(), SERVER_NAME)
            .unwrap_or_else(|e| panic!("TLS connect to {}: {e}\n{}", self.addr(), self.log()))
    }

    /// Runs one command over a fresh TLS connection.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.client().command(args)
    }

    fn spawn(&mut self, pki: &Pki, auth_clients: bool) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", "0"])
            .args(["--tls-port", &self.port.to_string()])
            .arg("--tls-cert-file")
            .arg(pki.path("server.pem"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.pem"))
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "redis-server not found: install it with apt-get install -y redis-server ({e})"
                )
            })?;
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server (TLS port {}) exited with {status}: {}",
                    self.port,
                    self.log()
                ));
            }
            // Our process must be the one answering, not someone else on the same port.
            let answered =
                TlsClient::connect(&self.addr(), self.client_config.clone(), SERVER_NAME)
                    .ok()
                    .and_then(|mut c| {
                        c.try_command(&["INFO", "server"], Duration::from_millis(500))
                            .ok()
                    });
            if let Some(reply) = answered {
                if reply
                    .bulk_text()
                    .unwrap_or_default()
                    .contains(&format!("process_id:{pid}\r"))
                {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "TLS redis-server on port {} did not answer within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking RESP client over TLS.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects to `addr` and completes the handshake, verifying `name`.
    pub fn connect(
        addr: &str,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<TlsClient, String> {
        let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while stream.conn.is_handshaking() {
            if Instant::now() >= deadline {
                return Err("TLS handshake timed out".to_string());
            }
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(TlsClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("TLS write: {e}"));
    }

    /// Sends one command and returns its reply, panicking on failure.
    pub fn command(&mut self, args: &[&str]) -> Reply {
        self.try_command(args, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{args:?} over TLS: {e}"))
    }

    /// Sends one command of binary arguments and returns its reply, panicking on failure.
    pub fn command_bytes(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&super::raw::encode(args));
        let frame = self
            .read_frame(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("reply over TLS: {e}"));
        match resp::parse(&frame) {
            Ok(Some((reply, _))) => reply,
            other => panic!("not a reply: {other:?}"),
        }
    }

    /// Sends `args` and asserts the reply bytes are exactly `expected`.
    pub fn expect_cmd(&mut self, args: &[&str], expected: &[u8]) {
        self.send(&cmd(args));
        let got = self
            .read_frame(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("reply to {args:?}: {e}"));
        assert_eq!(show(&got), show(expected), "reply to {args:?}");
    }

    /// Sends one command and reads its reply within `timeout`.
    pub fn try_command(&mut self, args: &[&str], timeout: Duration) -> Result<Reply, String> {
        self.stream
            .write_all(&cmd(args))
            .and_then(|()| self.stream.flush())
            .map_err(|e| format!("write: {e}"))?;
        let frame = self.read_frame(timeout)?;
        match resp::parse(&frame) {
            Ok(Some((reply, _))) => Ok(reply),
            other => Err(format!("not a reply: {other:?}")),
        }
    }

    /// Reads the next reply's raw bytes within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match resp::parse(&self.buf) {
                Err(e) => return Err(format!("{e} in {}", show(&self.buf))),
                Ok(Some((_, used))) => return Ok(self.buf.drain(..used).collect()),
                Ok(None) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no complete reply in time; got {}",
                    show(&self.buf)
                ));
            }
            self.stream
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| e.to_string())?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("closed; got {}", show(&self.buf))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}
