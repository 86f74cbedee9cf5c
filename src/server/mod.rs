//! The accept loop, per-connection tasks and graceful shutdown.

mod connection;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::command::ServerState;
use crate::config::Settings;
use crate::store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created or used.
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the server until SIGINT, SIGTERM or `SHUTDOWN`, then drains and returns.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    })?;
    let addr = format!("{}:{}", settings.bind, settings.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Listen { addr: addr.clone(), source })?;
    let grace = Duration::from_secs(settings.shutdown_timeout);
    let state = Arc::new(ServerState::new(settings, Store::new()));
    state.set_loading(false);
    tokio::spawn(watch_signals(state.clone()));
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "ready to accept connections");

    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(connection::serve(state.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    tracing::info!(clients = state.clients.count(), "shutting down: waiting for in-flight commands");
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
    }
    tracing::info!("shutdown complete");
    Ok(())
}

async fn watch_signals(state: Arc<ServerState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = state.shutdown.cancelled() => return,
    }
    state.shutdown.cancel();
}
