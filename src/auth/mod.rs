//! Access control: Redis 7.2 ACL users, categories (which carry flagstaff's
//! roles), key and channel patterns, password hashing, and the permission
//! check the dispatcher runs before every command.
//!
//! This room knows nothing about the command table: the command room hands it
//! a [`Catalog`] (every command's id, full name and categories) and, per
//! request, a [`Request`] saying which arguments are keys and channels.

mod backoff;
mod catalog;
mod log;
pub mod tls;
mod user;

pub use backoff::{Backoff, BASE_PENALTY, FREE_FAILURES, MAX_PENALTY};
pub use catalog::{category_bit, Catalog, CmdBits, CATEGORIES, MAX_COMMANDS};
pub use log::{AclLog, LogContext, LogEntry, LogReason};
pub use user::{
    ct_eq, hash_password, merge_selector_args, Access, Channels, Denied, KeyPattern, Keys, Request,
    RuleError, Selector, User,
};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Why a login was refused (always answered with the same `WRONGPASS` text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user, disabled user, or wrong password.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
}

/// Who a connection (or an HTTP request) acts as.
pub type Identity = Arc<User>;

/// Every user, by name in byte order (as `ACL LIST` shows them).
pub type UserMap = BTreeMap<String, Arc<User>>;

/// The live set of users: swapped whole on every change, so readers never
/// lock; a generation counter tells sessions to re-read their user.
#[derive(Debug)]
pub struct Users {
    current: ArcSwap<UserMap>,
    generation: AtomicU64,
    /// The replicated users' revision last installed (0: none yet).
    synced: AtomicU64,
    /// Serialises read-modify-write changes (`ACL SETUSER`).
    change: Mutex<()>,
}

impl Users {
    /// Users with only `default`: `on nopass ~* &* +@all`, or with
    /// `password` when one is configured (`--requirepass`).
    pub fn new(catalog: &Catalog, password: Option<&str>) -> Self {
        let mut map = UserMap::new();
        map.insert(
            "default".into(),
            Arc::new(User::new_default(catalog, password)),
        );
        Users {
            current: ArcSwap::from_pointee(map),
            generation: AtomicU64::new(1),
            synced: AtomicU64::new(0),
            change: Mutex::new(()),
        }
    }

    /// Replaces this node's users (an aclfile read at start); they are
    /// enforced here until the cluster has replicated users.
    pub fn replace_local(&self, users: UserMap) {
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        self.install(users);
    }

    /// Bumped on every change; sessions compare it to re-read their user.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A snapshot of every user.
    pub fn snapshot(&self) -> Arc<UserMap> {
        self.current.load_full()
    }

    /// One user by name.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.current.load().get(name).cloned()
    }

    /// `name` (or a new user) with `rules` applied to a copy, all or
    /// nothing; nothing is installed.
    pub fn build_user(
        &self,
        catalog: &Catalog,
        name: &str,
        rules: &[&[u8]],
    ) -> Result<User, String> {
        if name.contains(' ') || name.contains('\0') {
            return Err("ERR Usernames can't contain spaces or null characters".into());
        }
        let rules = merge_selector_args(rules)?;
        let mut user = match self.get(name) {
            Some(u) => (*u).clone(),
            None => User::new(name),
        };
        for rule in &rules {
            user.apply(rule, catalog).map_err(|e| {
                format!(
                    "ERR Error in ACL SETUSER modifier '{}': {}",
                    String::from_utf8_lossy(rule),
                    e
                )
            })?;
        }
        user.finish(catalog);
        Ok(user)
    }

    /// The revision of the replicated users this node enforces.
    pub fn synced_revision(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Installs the replicated users (name → `ACL LIST` line) applied at
    /// `revision`; a missing `default` is recreated as stock. Returns the
    /// names whose rules changed (deleted ones included). An empty set means
    /// the cluster has no users yet: the local ones stay.
    pub fn sync(
        &self,
        catalog: &Catalog,
        revision: u64,
        lines: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced.swap(revision, Ordering::AcqRel) == revision || lines.is_empty() {
            return Vec::new();
        }
        let mut next = UserMap::new();
        for (name, line) in lines {
            match User::from_line(catalog, line) {
                Some(u) if u.name() == name => {
                    next.insert(name.clone(), Arc::new(u));
                }
                _ => tracing::error!(user = %name, "replicated ACL user does not parse; skipped"),
            }
        }
        if !next.contains_key("default") {
            next.insert("default".into(), Arc::new(User::new_default(catalog, None)));
        }
        let old = self.current.load_full();
        let changed = old
            .keys()
            .chain(next.keys())
            .filter(|n| old.get(*n) != next.get(*n))
            .cloned()
            .collect();
        self.install(next);
        changed
    }

    /// Applies `rules` to a copy of `name` (or a new user), all or nothing,
    /// and installs the result (node-local; unit tests and tools).
    pub fn set_user(&self, catalog: &Catalog, name: &str, rules: &[&[u8]]) -> Result<(), String> {
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let user = self.build_user(catalog, name, rules)?;
        let mut next = (*self.current.load_full()).clone();
        next.insert(name.to_string(), Arc::new(user));
        self.install(next);
        Ok(())
    }

    /// Deletes users; returns how many existed. `default` cannot be removed.
    pub fn delete(&self, names: &[&str]) -> Result<usize, String> {
        if names.contains(&"default") {
            return Err("ERR The 'default' user cannot be removed".into());
        }
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*self.current.load_full()).clone();
        let n = names.iter().filter(|n| next.remove(**n).is_some()).count();
        if n > 0 {
            self.install(next);
        }
        Ok(n)
    }

    fn install(&self, map: UserMap) {
        self.current.store(Arc::new(map));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Checks a user name and password: the user must exist, be `on`, and
    /// either be `nopass` or hold the password's hash (compared in constant
    /// time). This is what every front door (RESP `AUTH`, `HELLO`, HTTP) calls.
    pub fn authenticate(&self, user: &[u8], password: &[u8]) -> Result<Identity, AuthError> {
        let name = std::str::from_utf8(user).map_err(|_| AuthError::WrongPass)?;
        let user = self.get(name).ok_or(AuthError::WrongPass)?;
        if user.password_ok(password) {
            Ok(user)
        } else {
            Err(AuthError::WrongPass)
        }
    }

    /// Whether a new connection starts authenticated: `default` is `on` and `nopass`.
    pub fn default_is_open(&self) -> bool {
        self.get("default")
            .is_some_and(|u| u.enabled() && u.is_nopass())
    }
}

/// Parses an ACL file in Redis's format (`user <name> <rules…>` per line,
/// blank lines skipped), all or nothing. A missing `default` is the stock
/// one. Errors are Redis's `ACL LOAD` text, every problem listed.
pub fn parse_aclfile(catalog: &Catalog, file: &str, text: &str) -> Result<UserMap, String> {
    let mut users = UserMap::new();
    let mut errors = String::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        let (Some(&"user"), Some(name)) = (words.first(), words.get(1)) else {
            errors.push_str(&format!(
                "{file}:{n} should start with user keyword followed by the username. "
            ));
            continue;
        };
        if users.contains_key(*name) {
            errors.push_str(&format!(
                "WARNING: Duplicate user '{name}' found on line {n}. "
            ));
            continue;
        }
        let rules: Vec<&[u8]> = words[2..].iter().map(|w| w.as_bytes()).collect();
        let rules = match merge_selector_args(&rules) {
            Ok(r) => r,
            Err(e) => {
                errors.push_str(&format!("{file}:{n}: {}. ", e.trim_start_matches("ERR ")));
                continue;
            }
        };
        let mut user = User::new(name);
        let mut ok = true;
        for rule in &rules {
            if let Err(e) = user.apply(rule, catalog) {
                errors.push_str(&format!(
                    "{file}:{n}: Error in applying operation '{}': {e}. ",
                    String::from_utf8_lossy(rule)
                ));
                ok = false;
                break;
            }
        }
        if ok {
            user.finish(catalog);
            users.insert((*name).to_string(), Arc::new(user));
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "ERR {errors}WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        ));
    }
    users
        .entry("default".into())
        .or_insert_with(|| Arc::new(User::new_default(catalog, None)));
    Ok(users)
}

/// The ACL file text for `users` (`ACL SAVE`): one `ACL LIST` line each.
pub fn render_aclfile(users: &UserMap) -> String {
    users.values().map(|u| u.describe() + "\n").collect()
}
