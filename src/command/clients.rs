//! The registry of connected clients, read by `CLIENT LIST/INFO/KILL` and
//! INFO, and the `MONITOR` feed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pubsub::Mailbox;

/// What the server knows about one connection.
#[derive(Debug)]
pub struct ClientHandle {
    /// Unique, increasing connection id.
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Our local address for this connection.
    pub laddr: SocketAddr,
    /// The socket's file descriptor (`fd=` in `CLIENT LIST`).
    pub fd: i64,
    /// When the connection was accepted.
    pub created: Instant,
    /// Cancelled by `CLIENT KILL`.
    pub kill: CancellationToken,
    /// Unix ms of the last command.
    last_active_ms: AtomicU64,
    /// Set while the connection waits in a blocking command (`XREAD BLOCK`).
    blocked: AtomicBool,
    buffers: Buffers,
    labels: Mutex<Labels>,
}

/// Buffer sizes the connection task reports as they change (relaxed stores:
/// they are for display).
#[derive(Debug, Default)]
struct Buffers {
    /// Bytes of requests received and not yet run.
    query: AtomicUsize,
    /// Capacity of the read buffer.
    query_capacity: AtomicUsize,
    /// Replies encoded and not yet written to the socket.
    output: AtomicUsize,
    /// Capacity of the output buffer.
    output_capacity: AtomicUsize,
    /// The most bytes the output buffer held at once.
    output_peak: AtomicUsize,
}

/// What the connection's session last published: names the client gave
/// itself and the state of its session, as of its last command.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    /// `CLIENT SETNAME`.
    pub name: Option<String>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<String>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<String>,
    /// Full name of the last command (`client|list`), for `cmd=`.
    pub last_cmd: &'static str,
    /// Protocol version, for `resp=`.
    pub resp: u8,
    /// The user the connection acts as.
    pub user: String,
    /// Subscribed channels.
    pub sub: usize,
    /// Subscribed patterns.
    pub psub: usize,
    /// Commands queued in an open `MULTI` (`None`: no `MULTI`).
    pub multi: Option<usize>,
    /// Bytes of the arguments queued in an open `MULTI`.
    pub multi_mem: usize,
    /// The connection is in `MONITOR` mode.
    pub monitor: bool,
    /// `CLIENT NO-EVICT on`.
    pub no_evict: bool,
    /// `CLIENT NO-TOUCH on`.
    pub no_touch: bool,
    /// The pub/sub mailbox, whose undelivered messages are output memory.
    pub mailbox: Option<Arc<Mailbox>>,
}

/// The Redis client classes `CLIENT KILL TYPE` and `CLIENT LIST TYPE` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// An ordinary client (monitors included, as Redis counts them).
    Normal,
    /// A client subscribed to at least one channel or pattern.
    Pubsub,
    /// A replica; flagstaff replicates over raft, so no RESP client is one.
    Replica,
    /// A master link; never a RESP client here.
    Master,
}

impl ClientType {
    /// Parses a type name as Redis does (`slave` and `replica` are one).
    pub fn parse(name: &[u8]) -> Option<ClientType> {
        let is = |w: &str| name.eq_ignore_ascii_case(w.as_bytes());
        if is("normal") {
            Some(ClientType::Normal)
        } else if is("pubsub") {
            Some(ClientType::Pubsub)
        } else if is("slave") || is("replica") {
            Some(ClientType::Replica)
        } else if is("master") {
            Some(ClientType::Master)
        } else {
            None
        }
    }
}

impl ClientHandle {
    fn labels(&self) -> MutexGuard<'_, Labels> {
        self.labels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection name, if set.
    pub fn name(&self) -> Option<String> {
        self.labels().name.clone()
    }

    /// Sets or clears the connection name.
    pub fn set_name(&self, name: Option<String>) {
        self.labels().name = name;
    }

    /// Changes the labels under the lock.
    pub fn update(&self, f: impl FnOnce(&mut Labels)) {
        f(&mut self.labels());
    }

    /// Records activity now.
    pub fn touch(&self) {
        self.last_active_ms
            .store(crate::clock::unix_ms(), Ordering::Relaxed);
    }

    /// Marks the connection as waiting in a blocking command, or not.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Reports the read buffer: bytes not yet run, and its capacity.
    pub fn note_query(&self, len: usize, capacity: usize) {
        self.buffers.query.store(len, Ordering::Relaxed);
        self.buffers
            .query_capacity
            .store(capacity, Ordering::Relaxed);
    }

    /// Reports the output buffer: bytes not yet written, and its capacity.
    pub fn note_output(&self, len: usize, capacity: usize) {
        let b = &self.buffers;
        b.output.store(len, Ordering::Relaxed);
        b.output_capacity.store(capacity, Ordering::Relaxed);
        b.output_peak.fetch_max(len, Ordering::Relaxed);
    }

    /// The class `CLIENT KILL TYPE` matches.
    pub fn client_type(&self) -> ClientType {
        let l = self.labels();
        if l.sub + l.psub > 0 {
            ClientType::Pubsub
        } else {
            ClientType::Normal
        }
    }

    /// The user the connection acts as.
    pub fn user(&self) -> String {
        self.labels().user.clone()
    }

    /// Seconds since the connection was accepted.
    pub fn age_secs(&self) -> u64 {
        self.created.elapsed().as_secs()
    }

    /// One `CLIENT LIST` line (without newline), field for field as Redis 7.2
    /// prints it. `argv_mem` is the size of the command being run by this
    /// client (only the caller is inside a command when the line is made).
    pub fn describe(&self, argv_mem: usize) -> String {
        let l = self.labels().clone();
        let b = &self.buffers;
        let now = crate::clock::unix_ms();
        let idle = now.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)) / 1000;
        let blocked = self.blocked.load(Ordering::Relaxed);
        let mut flags = String::new();
        if l.monitor {
            flags.push('O');
        }
        if l.sub + l.psub > 0 {
            flags.push('P');
        }
        if l.multi.is_some() {
            flags.push('x');
        }
        if blocked {
            flags.push('b');
        }
        if self.kill.is_cancelled() {
            flags.push('A');
        }
        if l.no_evict {
            flags.push('e');
        }
        if l.no_touch {
            flags.push('T');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let qbuf = b.query.load(Ordering::Relaxed);
        let qcap = b.query_capacity.load(Ordering::Relaxed).max(qbuf);
        let obl = b.output.load(Ordering::Relaxed);
        let ocap = b.output_capacity.load(Ordering::Relaxed).max(obl);
        let (oll, omem) = l
            .mailbox
            .as_ref()
            .map_or((0, 0), |m| (m.pending_messages(), m.pending()));
        let tot_mem =
            std::mem::size_of::<ClientHandle>() + qcap + ocap + argv_mem + l.multi_mem + omem;
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub={} psub={} ssub=0 multi={} qbuf={qbuf} qbuf-free={} argv-mem={argv_mem} multi-mem={} rbs={ocap} rbp={} obl={obl} oll={oll} omem={omem} tot-mem={tot_mem} events={} cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            l.name.unwrap_or_default(),
            self.created.elapsed().as_secs(),
            idle,
            l.sub,
            l.psub,
            l.multi.map_or(-1, |n| n as i64),
            qcap - qbuf,
            l.multi_mem,
            b.output_peak.load(Ordering::Relaxed),
            if obl > 0 { "rw" } else { "r" },
            if l.last_cmd.is_empty() { "NULL" } else { l.last_cmd },
            l.user,
            l.resp,
            l.lib_name.unwrap_or_default(),
            l.lib_ver.unwrap_or_default(),
        )
    }
}

/// All connected clients.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: Mutex<std::collections::BTreeMap<u64, Arc<ClientHandle>>>,
}

impl ClientRegistry {
    fn map(&self) -> MutexGuard<'_, std::collections::BTreeMap<u64, Arc<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection if fewer than `max` are connected.
    pub fn register(
        &self,
        addr: SocketAddr,
        laddr: SocketAddr,
        fd: i64,
        max: usize,
    ) -> Option<Arc<ClientHandle>> {
        let mut map = self.map();
        if map.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            kill: CancellationToken::new(),
            last_active_ms: AtomicU64::new(crate::clock::unix_ms()),
            blocked: AtomicBool::new(false),
            buffers: Buffers::default(),
            labels: Mutex::new(Labels {
                resp: 2,
                user: "default".into(),
                ..Labels::default()
            }),
        });
        map.insert(id, handle.clone());
        Some(handle)
    }

    /// Removes a closed connection.
    pub fn unregister(&self, id: u64) {
        self.map().remove(&id);
    }

    /// How many clients are connected.
    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// How many clients wait in a blocking command.
    pub fn blocked_count(&self) -> usize {
        self.map()
            .values()
            .filter(|c| c.blocked.load(Ordering::Relaxed))
            .count()
    }

    /// A snapshot of every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.map().values().cloned().collect()
    }
}

/// Lines a monitor may have queued before it is cut off, as Redis cuts off a
/// replica (monitors are replicas there) over its output-buffer limit.
const MONITOR_QUEUE: usize = 16 * 1024;

/// Connections in `MONITOR` mode and the queues their lines go to.
#[derive(Debug, Default)]
pub struct Monitors {
    active: AtomicUsize,
    feeds: Mutex<Vec<(Arc<ClientHandle>, mpsc::Sender<Bytes>)>>,
}

impl Monitors {
    fn feeds(&self) -> MutexGuard<'_, Vec<(Arc<ClientHandle>, mpsc::Sender<Bytes>)>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any connection is monitoring (one relaxed load: the hot path
    /// asks this for every command).
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Adds a monitor; returns the receiving end of its feed.
    pub fn add(&self, client: Arc<ClientHandle>) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(MONITOR_QUEUE);
        let mut feeds = self.feeds();
        feeds.push((client, tx));
        self.active.store(feeds.len(), Ordering::Relaxed);
        rx
    }

    /// Removes a connection's feed (when it closes or resets).
    pub fn remove(&self, id: u64) {
        let mut feeds = self.feeds();
        feeds.retain(|(c, _)| c.id != id);
        self.active.store(feeds.len(), Ordering::Relaxed);
    }

    /// Sends one line to every monitor; a monitor that cannot keep up is
    /// disconnected rather than buffered without bound.
    pub fn feed(&self, line: Bytes) {
        let mut feeds = self.feeds();
        feeds.retain(|(client, tx)| match tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                client.kill.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        self.active.store(feeds.len(), Ordering::Relaxed);
    }
}
