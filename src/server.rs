//! Start-up and the client listener: restore routes, bind, accept, shut down gracefully.
//!
//! With `[proxy.tls]`, every client does a TLS handshake first, inside its own session task
//! (so a slow handshake never holds up accept) and within [`CLIENT_TLS_HANDSHAKE_TIMEOUT`].
//! A client that does not complete it is closed and counted
//! (`turnout_errors_total{kind="tls_handshake"}`); plain-text clients are never served.

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::metrics::{self, ErrorKind, RequestStats};
use crate::route::change::RouteControl;
use crate::route::{Namespaces, RouteTable, Router};
use crate::session::{self, Shared};
use crate::shutdown::{self, Shutdown};
use crate::state::{self, StateError};
use crate::stream::Stream;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Bound on a client's TLS handshake (`[proxy.tls]`): a client that stalls it holds one
/// `max_clients` permit at most this long.
pub const CLIENT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why turnout could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state file is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// `[proxy.tls]` files cannot be used.
    #[error("proxy.tls: {0}")]
    Tls(#[from] crate::tls::TlsFileError),
    /// A listen address could not be bound.
    #[error("cannot listen on {what} address {addr}")]
    Bind {
        /// `proxy` or `admin`.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the proxy and admin API until `stop` resolves, then shuts down gracefully.
///
/// # Errors
/// [`StartError`] when start-up fails; once serving, it only returns `Ok`.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = Arc::new(config);
    let prometheus = metrics::install();
    let namespaces = Namespaces::new(&config);
    let initial = RouteTable::from_config(&config, SystemTime::now());
    let (table, history) = match state::load(&config.state_path)? {
        None => {
            tracing::info!(path = %config.state_path.display(), "no state file yet: routes start from the config");
            (initial, Vec::new())
        }
        Some(file) => {
            let restored = state::restore(&config.state_path, file, &config, &namespaces, initial)?;
            for line in &restored.overrides {
                tracing::info!(path = %config.state_path.display(), route = %line, "state file overrides the config");
            }
            for name in &restored.ignored {
                tracing::warn!(route = %name, "state file names a route the config no longer has; ignoring it");
            }
            (restored.table, restored.history)
        }
    };
    metrics::route_version(table.version);
    let router = Arc::new(Router::new(namespaces, table));
    let control = Arc::new(RouteControl::new(router.clone(), config.clone(), history));
    let stats = RequestStats::new(router.namespaces.len(), config.endpoints.len());
    let shadow = crate::shadow::Shadow::start(&config, router.namespaces.len());
    let shared = Arc::new(Shared {
        config: config.clone(),
        router,
        stats,
        shadow,
        sessions: Arc::new(crate::cutover::registry::Registry::default()),
        mux: crate::upstream::mux::Pool::new(&config),
    });

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let acceptor = match &config.proxy.tls {
        None => None,
        Some(settings) => Some(TlsAcceptor::from(crate::tls::server_config(settings)?)),
    };
    let proxy_listener = bind("proxy", config.proxy.listen).await?;
    let admin_listener = bind("admin", config.admin.listen).await?;
    tracing::info!(addr = %config.proxy.listen, tls = acceptor.is_some(), "proxy listening");
    tracing::info!(addr = %config.admin.listen, "admin API listening");

    let shutdown = Shutdown::new();
    let checkers = crate::health::start(&config, &shutdown.subscribe());
    let cutovers = Arc::new(crate::cutover::Cutovers::new(
        control.clone(),
        config.clone(),
        shared.sessions.clone(),
        shared.shadow.clone(),
    ));
    let admin_state = Arc::new(AdminState {
        control,
        shared: shared.clone(),
        prometheus,
        cutovers,
    });
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        shutdown.subscribe(),
    ));
    // Follows each Sentinel endpoint's primary until `run` returns.
    let _sentinel_monitors = crate::upstream::sentinel::Monitors::start(&config);
    let sessions = TaskTracker::new();
    tokio::select! {
        () = accept_loop(proxy_listener, acceptor, shared.clone(), &shutdown, &sessions) => {}
        () = stop => tracing::info!("shutdown requested: no longer accepting clients"),
    }
    shutdown.trigger();
    sessions.close();
    let grace = config.proxy.shutdown_grace;
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(
            remaining = sessions.len(),
            grace = %humantime::format_duration(grace),
            "grace period over; closing remaining client connections"
        );
    }
    admin_task.abort();
    for checker in checkers {
        checker.abort();
    }
    tracing::info!("turnout stopped");
    Ok(())
}

/// Accepts clients forever, one session task each, within `max_clients`; with an acceptor,
/// each task does the client's TLS handshake first.
async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: &Shutdown,
    sessions: &TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(shared.config.proxy.max_clients));
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(cause = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::error(ErrorKind::MaxClients);
            tokio::spawn(refuse(stream));
            continue;
        };
        let span = tracing::debug_span!("client", peer = %peer);
        let shared = shared.clone();
        let rx = shutdown.subscribe();
        let acceptor = acceptor.clone();
        sessions.spawn(
            async move {
                let _connected = metrics::client_connected();
                let stream = match acceptor {
                    None => Stream::Tcp(stream),
                    // Boxed: the handshake's state is large, and held inline it would
                    // weigh on every plain connection's task for its whole life.
                    Some(acceptor) => match Box::pin(accept_tls(&acceptor, stream, peer)).await {
                        Some(stream) => stream,
                        None => return,
                    },
                };
                session::serve(stream, shared, rx).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// A client's TLS handshake, within [`CLIENT_TLS_HANDSHAKE_TIMEOUT`]; `None` (logged and
/// counted) when it fails.
async fn accept_tls(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: std::net::SocketAddr,
) -> Option<Stream> {
    let cause =
        match tokio::time::timeout(CLIENT_TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => return Some(Stream::TlsServer(Box::new(tls))),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "timed out after {}",
                humantime::format_duration(CLIENT_TLS_HANDSHAKE_TIMEOUT)
            ),
        };
    metrics::error(ErrorKind::TlsHandshake);
    tracing::info!(peer = %peer, cause = %cause, "client TLS handshake failed; closing");
    None
}

/// Tells a client over `max_clients` why, as Redis does, and closes.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(b"-ERR max number of clients reached\r\n"),
    )
    .await;
}

/// Runs until SIGTERM or SIGINT.
///
/// # Errors
/// As [`run`].
pub async fn run_until_signalled(config: Config) -> Result<(), StartError> {
    run(config, shutdown::signal()).await
}
