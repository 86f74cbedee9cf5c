//! The registry of connected clients, read by `CLIENT LIST/INFO/KILL` and INFO.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// What the server knows about one connection.
#[derive(Debug)]
pub struct ClientHandle {
    /// Unique, increasing connection id.
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Our local address for this connection.
    pub laddr: SocketAddr,
    /// When the connection was accepted.
    pub created: Instant,
    /// Cancelled by `CLIENT KILL`.
    pub kill: CancellationToken,
    /// Unix ms of the last command.
    last_active_ms: AtomicU64,
    labels: Mutex<Labels>,
}

/// Names the client gave itself.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    /// `CLIENT SETNAME`.
    pub name: Option<String>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<String>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<String>,
    /// Last command name, for `CLIENT LIST`'s `cmd=`.
    pub last_cmd: &'static str,
    /// Protocol version, for `CLIENT LIST`'s `resp=`.
    pub resp: u8,
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

    /// One `CLIENT LIST` line (without newline).
    pub fn describe(&self) -> String {
        let l = self.labels().clone();
        let now = crate::clock::unix_ms();
        let idle = now.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)) / 1000;
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            l.name.unwrap_or_default(),
            self.created.elapsed().as_secs(),
            idle,
            if l.last_cmd.is_empty() { "NULL" } else { l.last_cmd },
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
            created: Instant::now(),
            kill: CancellationToken::new(),
            last_active_ms: AtomicU64::new(crate::clock::unix_ms()),
            labels: Mutex::new(Labels {
                resp: 2,
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

    /// A snapshot of every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.map().values().cloned().collect()
    }
}
