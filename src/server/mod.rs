//! The accept loop, per-connection tasks, start-up loading and graceful shutdown.

mod connection;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::auth::tls::{Tls, TlsFiles};
use crate::command::ServerState;
use crate::config::{FsyncMode, Settings};
use crate::raft::{BusTls, FsyncPolicy, NodeSettings, RaftNode, Secret, Timings};

/// A TLS client that has not finished its handshake within this is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl BusTls for Tls {
    fn server(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current().bus_server.clone()
    }

    fn client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.current().bus_client.clone()
    }
}

/// Binds `host:port`, or nothing for port 0.
async fn bind(host: &str, port: u16) -> Result<Option<TcpListener>, StartError> {
    if port == 0 {
        return Ok(None);
    }
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .await
        .map(Some)
        .map_err(|source| StartError::Listen { addr, source })
}

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
    /// Stored data could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::raft::StartError),
    /// The ACL file could not be read or parsed.
    #[error("cannot use aclfile {path}: {why}")]
    AclFile {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The TLS certificate, key or CA file cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::auth::tls::TlsError),
    /// `--join` was refused for good (wrong secret, id taken, ...).
    #[error("cannot join the cluster: {0}")]
    Join(String),
}

/// With `--join` on an empty node: asks the member to add this node and
/// waits (clients get `-LOADING` meanwhile) until it has joined and caught up.
async fn join_if_asked(state: &ServerState) -> Result<(), StartError> {
    let (Some(node), Some(addr)) = (state.raft.get(), state.settings.join.as_deref()) else {
        return Ok(());
    };
    if !node.joining() {
        return Ok(());
    }
    tracing::info!(member = addr, "asking to join the cluster");
    tokio::select! {
        joined = node.join(addr) => joined.map_err(StartError::Join),
        _ = state.shutdown.cancelled() => Ok(()),
    }
}

/// Delivers messages published on other members to this node's subscribers.
async fn deliver_peer_messages(
    state: Arc<ServerState>,
    mut published: tokio::sync::mpsc::UnboundedReceiver<(bytes::Bytes, bytes::Bytes)>,
) {
    while let Some((channel, message)) = published.recv().await {
        state.hub.publish(&channel, &message);
    }
}

fn node_settings(s: &Settings, tls: Option<&Arc<Tls>>) -> NodeSettings {
    let bus_tls = tls
        .filter(|_| s.tls_cluster)
        .map(|t| t.clone() as Arc<dyn BusTls>);
    NodeSettings {
        node_id: s.node_id,
        data_dir: s.data_dir.clone(),
        client_addr: s.advertised_client_addr(),
        cluster_addr: s.advertised_cluster_addr(),
        bus_listen: s.cluster_port.map(|p| format!("{}:{p}", s.bind)),
        secret: s
            .cluster_secret
            .as_deref()
            .map(|key| Secret::new(key).with_tls(bus_tls)),
        join: s.join.clone(),
        learner: s.learner,
        password: s.join_password.clone().or_else(|| s.requirepass.clone()),
        join_user: s.join_user.clone(),
        timings: Timings {
            heartbeat: Duration::from_millis(s.heartbeat_ms),
            election_timeout: Duration::from_millis(s.election_timeout_ms),
            stale_after: Duration::from_millis(s.stale_after_ms),
        },
        fsync: match s.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Everysec => FsyncPolicy::EverySec,
        },
        snapshot_every: s.snapshot_every,
        audit_retention: s.audit_retention,
        write_timeout: Duration::from_millis(s.write_timeout_ms),
        max_entry_bytes: s.max_entry_bytes,
    }
}

/// Runs the server until SIGINT, SIGTERM or `SHUTDOWN`, then drains and returns.
/// Clients can connect while the data loads; they get `-LOADING` until it is done.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    })?;
    let tls = match TlsFiles::from_settings(&settings) {
        None => None,
        Some(files) => Some(Arc::new(
            // Nothing is served yet, so reading the files here blocks no one.
            Tls::load(files)?,
        )),
    };
    let addr = format!("{}:{}", settings.bind, settings.client_port());
    let listener = bind(&settings.bind, settings.port).await?;
    let tls_listener = bind(&settings.bind, settings.tls_port).await?;
    let http_listener = bind(&settings.bind, settings.http_port).await?;
    let grace = Duration::from_secs(settings.shutdown_timeout);
    let node_settings = node_settings(&settings, tls.as_ref());
    let state = Arc::new(ServerState::new(settings));
    if let Some(path) = &state.settings.aclfile {
        let acl_error = |why: String| StartError::AclFile {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| acl_error(e.to_string()))?;
        let users = crate::auth::parse_aclfile(
            &crate::command::acl::CATALOG,
            &path.display().to_string(),
            &text,
        )
        .map_err(|e| acl_error(e.trim_start_matches("ERR ").to_string()))?;
        state.users.replace_local(users);
    }
    load_insight(&state).await;
    load_events(&state).await;
    load_units(&state).await;
    tokio::spawn(watch_signals(state.clone(), tls.clone()));
    #[cfg(feature = "power-cut")]
    crate::power_cut::install(&state.settings.data_dir);
    #[cfg(feature = "chaos")]
    crate::chaos::install(&state.settings.data_dir);
    #[cfg(feature = "planted-bugs")]
    crate::planted::announce();
    tokio::spawn(roll_up_every_minute(state.clone()));
    tokio::spawn(save_units_often(state.clone()));
    tokio::spawn(release_free_memory(state.clone()));
    tokio::spawn(sample_rates(state.clone()));
    let tracker = TaskTracker::new();
    let acceptor = listener.map(|l| tokio::spawn(accept(l, state.clone(), tracker.clone())));
    let tls_acceptor = match (tls_listener, &tls) {
        (Some(l), Some(tls)) => Some(tokio::spawn(accept_tls(
            l,
            state.clone(),
            tracker.clone(),
            tls.clone(),
        ))),
        _ => None,
    };
    let http_stop = tokio_util::sync::CancellationToken::new();
    let http_tls = tls.clone().filter(|_| state.settings.tls_http);
    let http = http_listener.map(|l| {
        tokio::spawn(crate::http::serve(
            l,
            state.clone(),
            http_stop.clone(),
            http_tls,
        ))
    });
    tracing::info!(%addr, tls_port = state.settings.tls_port, http_port = state.settings.http_port, version = env!("CARGO_PKG_VERSION"), "listening; loading data");

    let loaded = tokio::select! {
        node = RaftNode::start(node_settings, &state.store) => Some(node),
        _ = state.shutdown.cancelled() => None,
    };
    let result = match loaded {
        Some(Ok(node)) => {
            tokio::spawn(publish_changes(state.clone(), node.take_events()));
            if let Some(published) = node.take_published() {
                tokio::spawn(deliver_peer_messages(state.clone(), published));
            }
            let weak = Arc::downgrade(&state);
            node.answer_local_queries(Box::new(move |body| match weak.upgrade() {
                Some(state) => crate::command::insight::answer_local(&state, body),
                None => Err("shutting down".to_string()),
            }));
            let _ = state.raft.set(node);
            match join_if_asked(&state).await {
                Ok(()) => {
                    state.set_loading(false);
                    tracing::info!(%addr, "ready to accept connections");
                    state.shutdown.cancelled().await;
                    Ok(())
                }
                Err(e) => {
                    state.shutdown.cancel();
                    Err(e)
                }
            }
        }
        Some(Err(e)) => {
            state.shutdown.cancel();
            Err(StartError::Load(e))
        }
        None => Ok(()),
    };
    for acceptor in [acceptor, tls_acceptor].into_iter().flatten() {
        let _ = acceptor.await;
    }
    tracker.close();
    tracing::info!(
        clients = state.clients.count(),
        "shutting down: waiting for in-flight commands"
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    }
    // Counts of the last partial minute survive a restart.
    roll_up_insight(&state).await;
    let events = state.events.clone();
    let _ = tokio::task::spawn_blocking(move || events.sync()).await;
    save_units(&state).await;
    // HTTP goes last: until here /readyz answers 503 (shutting down).
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    if let Some(node) = state.raft.get() {
        node.shutdown().await;
    }
    tracing::info!("shutdown complete");
    result
}

/// Reads the evaluation insight back from the data directory.
async fn load_insight(state: &Arc<ServerState>) {
    let insight = state.insight.clone();
    let now = crate::command::insight::now();
    match tokio::task::spawn_blocking(move || insight.load(now)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read the evaluation statistics; starting empty")
        }
        Err(e) => tracing::warn!(error = %e, "reading the evaluation statistics failed"),
    }
}

/// Reads `flagstaff:events` back from the data directory and starts its writer.
async fn load_events(state: &Arc<ServerState>) {
    let events = state.events.clone();
    let now = crate::command::insight::now();
    match tokio::task::spawn_blocking(move || events.load(now)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read flagstaff:events; starting empty")
        }
        Err(e) => tracing::warn!(error = %e, "reading flagstaff:events failed"),
    }
}

fn units_path(state: &ServerState) -> std::path::PathBuf {
    state.settings.data_dir.join("analytics").join("units.json")
}

/// Reads the experiment units saved before the last stop or crash.
async fn load_units(state: &Arc<ServerState>) {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.lab.load(&units_path(&s))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not read experiment units; starting empty"),
        Err(e) => tracing::warn!(error = %e, "reading experiment units failed"),
    }
}

/// How often changed experiment units are saved: a crash loses at most
/// this much of them.
const UNITS_SAVE_EVERY: Duration = Duration::from_secs(5);

/// Drops the units of deleted experiments and those past the retention,
/// then saves them if they changed.
async fn save_units(state: &Arc<ServerState>) {
    if state.raft.get().is_some() {
        crate::command::experiment::forget_deleted(state);
    }
    let s = state.clone();
    let done = tokio::task::spawn_blocking(move || {
        let now = crate::command::insight::now();
        s.lab
            .expire(now.saturating_sub(s.settings.events_retention.millis()));
        s.lab.save(&units_path(&s))
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not save experiment units"),
        Err(e) => tracing::warn!(error = %e, "saving experiment units failed"),
    }
}

/// Saves changed experiment units every [`UNITS_SAVE_EVERY`], until shutdown.
async fn save_units_often(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(UNITS_SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => save_units(&state).await,
        }
    }
}

/// Folds the evaluation counters into the insight and appends them to its file.
async fn roll_up_insight(state: &Arc<ServerState>) {
    let state = state.clone();
    let done = tokio::task::spawn_blocking(move || {
        // The view first: a version retired after it is in both, and the
        // rollup counts it once, as retired.
        let view = state.store.view();
        let retired = crate::command::insight::take_retired(&state);
        state.insight.roll_up(
            retired,
            crate::command::insight::counted_flags(&view),
            crate::command::insight::now(),
        )
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not save evaluation statistics"),
        Err(e) => tracing::warn!(error = %e, "saving evaluation statistics failed"),
    }
}

/// The per-minute rollup of evaluation counters, until shutdown.
async fn roll_up_every_minute(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if state.raft.get().is_some() {
                    crate::command::experiment::forget_deleted(&state);
                }
                state.events.expire(crate::command::insight::now());
                roll_up_insight(&state).await
            }
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<ServerState>, tracker: TaskTracker) {
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
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
}

/// Accepts TLS clients: each handshake runs in the client's own task, so a
/// slow or failing one never holds up the others.
async fn accept_tls(
    listener: TcpListener,
    state: Arc<ServerState>,
    tracker: TaskTracker,
    tls: Arc<Tls>,
) {
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // The configs of this moment: a reload changes the next handshake only.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().clients.clone());
                    let state = state.clone();
                    tracker.spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        let stream = tokio::select! {
                            _ = state.shutdown.cancelled() => return,
                            done = handshake => match done {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            },
                        };
                        connection::serve(state, stream, peer).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reads the TLS files again; a failure keeps the certificates in use.
async fn reload_tls(tls: Option<Arc<Tls>>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP received; no TLS certificates to reload");
        return;
    };
    match tokio::task::spawn_blocking(move || tls.reload()).await {
        Ok(Ok(())) => tracing::info!("SIGHUP received; TLS certificates reloaded"),
        Ok(Err(e)) => tracing::error!("TLS reload failed, keeping the certificates in use: {e}"),
        Err(e) => tracing::error!("TLS reload failed, keeping the certificates in use: {e}"),
    }
}

/// Change batches above this many events are encoded on a blocking thread.
const LARGE_EVENT_BATCH: usize = 16;

/// Publishes every applied change on `flag:<key>` / `segment:<key>`, in
/// revision order.
async fn publish_changes(
    state: Arc<ServerState>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Arc<Vec<crate::store::AuditRecord>>>,
) {
    while let Some(batch) = events.recv().await {
        let encode = |batch: &[crate::store::AuditRecord]| -> Vec<(bytes::Bytes, bytes::Bytes)> {
            batch
                .iter()
                .filter(|r| r.kind != crate::store::Kind::User)
                .map(|r| (r.channel().into(), r.event_json().into()))
                .collect()
        };
        // A large batch (a snapshot's missed changes, a big MULTI) is
        // encoded off the runtime thread that serves clients.
        let messages = if batch.len() > LARGE_EVENT_BATCH {
            let batch = batch.clone();
            match tokio::task::spawn_blocking(move || encode(&batch)).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "encoding change events failed");
                    continue;
                }
            }
        } else {
            encode(&batch)
        };
        for (channel, payload) in &messages {
            #[cfg(feature = "planted-bugs")]
            {
                static PUBLISHED: std::sync::atomic::AtomicU64 =
                    std::sync::atomic::AtomicU64::new(0);
                let n = PUBLISHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % 50 == 49 && crate::planted::armed(crate::planted::DROP_CHANGE_EVENT) {
                    continue;
                }
            }
            state.hub.publish(channel, payload);
        }
        if let Some(last) = batch.last() {
            state.changes.send_replace(last.revision);
        }
    }
}

/// Every few seconds, gives memory freed on the runtime thread back to the
/// OS, so RSS follows what is in use after a burst of clients is gone.
async fn release_free_memory(state: Arc<ServerState>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = every.tick() => crate::metrics::alloc::release_free_memory(),
        }
    }
}

async fn watch_signals(state: Arc<ServerState>, tls: Option<Arc<Tls>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = hup.recv() => {
                reload_tls(tls.clone()).await;
                continue;
            }
            _ = state.shutdown.cancelled() => return,
        }
        state.shutdown.cancel();
        return;
    }
}

/// Samples INFO's `instantaneous_*` rates every 100 ms, as Redis's cron does.
async fn sample_rates(state: Arc<ServerState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => state.stats.sample_rates(),
        }
    }
}
