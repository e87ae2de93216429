//! Graceful shutdown: one signal, observed by the accept loops and every session.
//!
//! On SIGTERM or SIGINT the listeners stop accepting, sessions stop reading new requests and
//! finish the ones already dispatched, and the process waits for them up to
//! `shutdown_grace` before exiting.

use tokio::sync::watch;

/// The sending side: flips once to `true`.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }

    /// A receiver for a task that must stop when shutdown begins.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Begins shutdown.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(cause = %e, "cannot listen for SIGTERM; only Ctrl-C will stop turnout");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits until a receiver sees shutdown begin.
pub async fn wait(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means shutting down.
    let _ = rx.wait_for(|down| *down).await;
}
