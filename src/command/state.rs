//! Server-wide state shared by every connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::clients::{ClientRegistry, Monitors};
use crate::config::Settings;
use crate::metrics::Stats;
use crate::raft::RaftNode;
use crate::store::{OpResult, Store, WriteError, WriteRequest};

/// What every handler can reach: settings, the store, clients, counters.
#[derive(Debug)]
pub struct ServerState {
    /// Resolved configuration.
    pub settings: Settings,
    /// Flags and segments, as applied on this node.
    pub store: Arc<Store>,
    /// The write path (set once loading is done).
    pub raft: OnceLock<RaftNode>,
    /// Connected clients.
    pub clients: ClientRegistry,
    /// Pub/sub subscriptions.
    pub hub: crate::pubsub::Hub,
    /// Connections in `MONITOR` mode.
    pub monitors: Monitors,
    /// The revision of the last published change; XREAD BLOCK waits on it.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Counters for INFO.
    pub stats: Stats,
    /// When the server started.
    pub started: Instant,
    /// Wall-clock start, for INFO.
    pub started_at: SystemTime,
    /// Cancelled to begin a graceful shutdown.
    pub shutdown: CancellationToken,
    /// A random id for this process run (INFO `run_id`).
    pub run_id: String,
    /// ACL users.
    pub users: crate::auth::Users,
    /// `ACL LOG`.
    pub acl_log: crate::auth::AclLog,
    /// Failed-login backoff per client address.
    pub auth_backoff: crate::auth::Backoff,
    /// Node-local evaluation statistics (FLAG.STATS, FLAG.STALE).
    pub insight: Arc<crate::analytics::Insight>,
    /// Node-local experiment units (exposures and metric events).
    pub lab: crate::analytics::lab::Lab,
    /// This node's `flagstaff:events` stream.
    pub events: Arc<crate::analytics::events::EventLog>,
    /// `--eval-log-sample` as a threshold on a 64-bit random number (0: off).
    pub eval_sample: u64,
    loading: AtomicBool,
}

impl ServerState {
    /// State for a server about to load its data.
    pub fn new(settings: Settings) -> Self {
        let hub = crate::pubsub::Hub::new(settings.pubsub_limits());
        let users = crate::auth::Users::new(&super::acl::CATALOG, settings.requirepass.as_deref());
        ServerState {
            users,
            store: Arc::new(Store::new()),
            raft: OnceLock::new(),
            clients: ClientRegistry::default(),
            hub,
            monitors: Monitors::default(),
            changes: tokio::sync::watch::Sender::new(0),
            stats: Stats::with_commands(super::SLOT_NAMES.len()),
            started: Instant::now(),
            started_at: SystemTime::now(),
            shutdown: CancellationToken::new(),
            run_id: run_id(),
            acl_log: crate::auth::AclLog::default(),
            auth_backoff: crate::auth::Backoff::default(),
            lab: crate::analytics::lab::Lab::default(),
            events: Arc::new(crate::analytics::events::EventLog::new(
                &settings.data_dir,
                crate::analytics::events::Retention {
                    max_age_ms: settings.events_retention.millis(),
                    max_len: usize::try_from(settings.events_max_len).unwrap_or(usize::MAX),
                },
            )),
            eval_sample: crate::analytics::events::sample_threshold(settings.eval_log_sample),
            insight: Arc::new(crate::analytics::Insight::new(
                &settings.data_dir,
                settings.stats_retention,
            )),
            settings,
            loading: AtomicBool::new(true),
        }
    }

    /// Whether the node is still loading (every command gets `-LOADING`).
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// Marks loading done or begun.
    pub fn set_loading(&self, loading: bool) {
        self.loading.store(loading, Ordering::Release);
    }

    /// Commits a write through raft; the outcomes once it is durable and applied here.
    pub async fn write(&self, request: WriteRequest) -> Result<Vec<OpResult>, WriteError> {
        match self.raft.get() {
            #[cfg(feature = "planted-bugs")]
            Some(node) if crate::planted::armed(crate::planted::ACK_BEFORE_COMMIT) => {
                // Planted: a write not committed within 100 ms is answered with
                // the outcome it would have on this node's view; the proposal
                // itself goes on (it was queued when the future first ran).
                let view = self.store.view_full();
                let guess = crate::store::apply(&view, view.revision + 1, 0, &request);
                match tokio::time::timeout(
                    std::time::Duration::from_millis(100),
                    node.write(request),
                )
                .await
                {
                    Ok(done) => done,
                    Err(_) => guess.map(|applied| applied.results),
                }
            }
            Some(node) => node.write(request).await,
            None => Err(WriteError::ClusterDown("node is still loading".into())),
        }
    }

    /// Whether this node's answers may be out of date (cut off from its
    /// leader, or a leader cut off from its majority).
    pub fn is_stale(&self) -> bool {
        self.raft.get().is_some_and(|node| node.stale().is_some())
    }

    /// Whether connections must authenticate before running commands.
    pub fn requires_auth(&self) -> bool {
        !self.users.default_is_open()
    }

    /// Whether the `default` user has no password (protected mode applies).
    pub fn default_is_nopass(&self) -> bool {
        self.users.get("default").is_none_or(|u| u.is_nopass())
    }
}

fn run_id() -> String {
    use sha2::{Digest, Sha256};
    let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
    let digest = Sha256::digest(seed.as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}
