//! `ACL LOG`: recent denials, similar ones merged within 60 seconds.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Why an entry was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogReason {
    /// A failed login.
    Auth,
    /// A command the user may not run.
    Command,
    /// A key the user may not access.
    Key,
    /// A channel the user may not access.
    Channel,
}

impl LogReason {
    /// The name `ACL LOG` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            LogReason::Auth => "auth",
            LogReason::Command => "command",
            LogReason::Key => "key",
            LogReason::Channel => "channel",
        }
    }
}

/// Where the denied command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogContext {
    /// Sent directly.
    Toplevel,
    /// Queued in or run by `MULTI`/`EXEC`.
    Multi,
}

impl LogContext {
    /// The name `ACL LOG` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            LogContext::Toplevel => "toplevel",
            LogContext::Multi => "multi",
        }
    }
}

/// One `ACL LOG` entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Similar events merged into it.
    pub count: u64,
    /// Why.
    pub reason: LogReason,
    /// Where.
    pub context: LogContext,
    /// The command's full name, the key, the channel, or `AUTH` as typed.
    pub object: String,
    /// The denied (or attempted) user.
    pub username: String,
    /// The client, in `CLIENT LIST` form.
    pub client_info: String,
    /// Monotonic id over the server's life.
    pub entry_id: u64,
    /// Unix ms of the first event.
    pub created_ms: u64,
    /// Unix ms of the last event.
    pub updated_ms: u64,
}

/// Most entries kept (Redis's `acllog-max-len` default).
pub const LOG_MAX_LEN: usize = 128;
/// Events this close to an entry are merged into it (ms).
const GROUPING_MS: u64 = 60_000;
/// How many recent entries a new event may merge with.
const GROUPING_DEPTH: usize = 10;

/// The log, newest first.
#[derive(Debug, Default)]
pub struct AclLog {
    inner: Mutex<(VecDeque<LogEntry>, u64)>,
}

impl AclLog {
    /// Records an event, merging it into a similar recent entry.
    pub fn add(
        &self,
        reason: LogReason,
        context: LogContext,
        object: String,
        username: String,
        client_info: String,
        now_ms: u64,
    ) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (entries, next_id) = &mut *g;
        let similar = entries.iter().take(GROUPING_DEPTH).position(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
                && now_ms.saturating_sub(e.updated_ms) <= GROUPING_MS
        });
        if let Some(i) = similar {
            if let Some(mut e) = entries.remove(i) {
                e.count += 1;
                e.updated_ms = now_ms;
                e.client_info = client_info;
                entries.push_front(e);
            }
            return;
        }
        entries.push_front(LogEntry {
            count: 1,
            reason,
            context,
            object,
            username,
            client_info,
            entry_id: *next_id,
            created_ms: now_ms,
            updated_ms: now_ms,
        });
        *next_id += 1;
        entries.truncate(LOG_MAX_LEN);
    }

    /// The newest `count` entries.
    pub fn recent(&self, count: usize) -> Vec<LogEntry> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.iter().take(count).cloned().collect()
    }

    /// Empties the log (ids keep counting).
    pub fn reset(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clear();
    }
}
