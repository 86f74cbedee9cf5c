//! One ACL user: login flags, password hashes, a root selector and extra
//! selectors; the `ACL SETUSER` rule grammar; the canonical descriptions
//! `ACL GETUSER`/`ACL LIST` show; and the permission check.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::catalog::{category_bit, Catalog, CmdBits};

/// Why one `ACL SETUSER` rule was refused (Redis's texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An unknown command or category.
    #[error("Unknown command or category name in ACL")]
    Unknown,
    /// Not a rule.
    #[error("Syntax error")]
    Syntax,
    /// A key pattern after `allkeys`.
    #[error("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns")]
    AfterAllKeys,
    /// A channel pattern after `allchannels`.
    #[error("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels")]
    AfterAllChannels,
    /// `<pw` / `!hash` for a password the user does not have.
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    /// A `#`/`!` hash that is not 64 lowercase hex characters.
    #[error("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")]
    BadHash,
    /// `+cmd|arg` where `cmd` is a subcommand.
    #[error("Allowing first-arg of a subcommand is not supported")]
    FirstArgOfSub,
}

/// What a command does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads it.
    Read,
    /// Writes it.
    Write,
}

/// Which arguments of a request are keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// None are checked.
    None,
    /// `first..=last` by `step` (`last` < 0 counts from the end).
    Range {
        /// First key position.
        first: usize,
        /// Last key position; -1 is the last argument.
        last: i32,
        /// Step between keys.
        step: usize,
        /// What the command does to them.
        access: Access,
    },
}

/// Which arguments of a request are channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// None.
    None,
    /// One channel name at this position (`PUBLISH`).
    At(usize),
    /// Channel names from this position on (`PUBLISH`, `SUBSCRIBE`).
    From(usize),
    /// Channel patterns from this position on (`PSUBSCRIBE`): each must equal
    /// an ACL channel pattern literally.
    PatternsFrom(usize),
}

/// One request to check.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The command's catalog id.
    pub cmd: usize,
    /// The arguments, name first.
    pub args: &'a [Bytes],
    /// Which arguments are keys.
    pub keys: Keys,
    /// Which arguments are channels.
    pub channels: Channels,
}

/// Why a request was denied; key and channel carry the argument position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The command itself.
    Command,
    /// The key at this argument position.
    Key(usize),
    /// The channel at this argument position.
    Channel(usize),
}

impl Denied {
    fn rank(self) -> (u8, usize) {
        match self {
            Denied::Command => (1, 0),
            Denied::Key(p) => (2, p),
            Denied::Channel(p) => (4, p),
        }
    }
}

/// A key pattern with the access it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    /// The glob.
    pub pattern: Vec<u8>,
    /// Grants reads.
    pub read: bool,
    /// Grants writes.
    pub write: bool,
}

/// One permission set: commands, keys, channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    allowed: CmdBits,
    /// Started from `+@all`: future commands are allowed too.
    future: bool,
    /// The command rules after `+@all`/`-@all`, compacted, lower case.
    rules: Vec<String>,
    keys: Vec<KeyPattern>,
    allkeys: bool,
    channels: Vec<Vec<u8>>,
    allchannels: bool,
}

fn lower(rule: &[u8]) -> String {
    String::from_utf8_lossy(rule).to_ascii_lowercase()
}

impl Selector {
    /// Applies one selector rule.
    pub fn apply(&mut self, rule: &[u8], catalog: &Catalog) -> Result<(), RuleError> {
        let lc = lower(rule);
        match lc.as_str() {
            "allkeys" | "~*" => {
                self.allkeys = true;
                self.keys.clear();
                return Ok(());
            }
            "resetkeys" => {
                self.allkeys = false;
                self.keys.clear();
                return Ok(());
            }
            "allchannels" | "&*" => {
                self.allchannels = true;
                self.channels.clear();
                return Ok(());
            }
            "resetchannels" => {
                self.allchannels = false;
                self.channels.clear();
                return Ok(());
            }
            "allcommands" | "+@all" => {
                self.allowed = catalog.all();
                self.future = true;
                self.rules.clear();
                return Ok(());
            }
            "nocommands" | "-@all" => {
                self.allowed = CmdBits::default();
                self.future = false;
                self.rules.clear();
                return Ok(());
            }
            _ => {}
        }
        match rule.first() {
            Some(b'~') => self.add_key(&rule[1..], true, true),
            Some(b'%') => {
                let tilde = rule
                    .iter()
                    .position(|&b| b == b'~')
                    .ok_or(RuleError::Syntax)?;
                let (mut read, mut write) = (false, false);
                for &b in &rule[1..tilde] {
                    match b.to_ascii_uppercase() {
                        b'R' if !read => read = true,
                        b'W' if !write => write = true,
                        _ => return Err(RuleError::Syntax),
                    }
                }
                if !read && !write {
                    return Err(RuleError::Syntax);
                }
                self.add_key(&rule[tilde + 1..], read, write)
            }
            Some(b'&') => {
                if self.allchannels {
                    return Err(RuleError::AfterAllChannels);
                }
                let pat = rule[1..].to_vec();
                if !self.channels.contains(&pat) {
                    self.channels.push(pat);
                }
                Ok(())
            }
            Some(b'+') | Some(b'-') => {
                let allow = rule[0] == b'+';
                let name = &lc[1..];
                if let Some(cat) = name.strip_prefix('@') {
                    let bit = category_bit(cat).ok_or(RuleError::Unknown)?;
                    for id in catalog.in_category(bit) {
                        self.allowed.set(id, allow);
                    }
                    self.push_rule(allow, name, false);
                    return Ok(());
                }
                let id = catalog.id(name).ok_or_else(|| {
                    // `cmd|x`: a subcommand that does not exist, or a first
                    // argument (unsupported, as for subcommands in Redis).
                    match name.split_once('|') {
                        Some((parent, _)) if parent.contains('|') => RuleError::FirstArgOfSub,
                        Some((parent, _))
                            if catalog
                                .id(parent)
                                .and_then(|p| catalog.info(p))
                                .is_some_and(|p| p.subs.is_empty()) =>
                        {
                            RuleError::Syntax
                        }
                        _ => RuleError::Unknown,
                    }
                })?;
                self.allowed.set(id, allow);
                if let Some(info) = catalog.info(id) {
                    for &sub in &info.subs {
                        self.allowed.set(sub, allow);
                    }
                }
                self.push_rule(allow, name, !name.contains('|'));
                Ok(())
            }
            _ => Err(RuleError::Syntax),
        }
    }

    fn add_key(&mut self, pattern: &[u8], read: bool, write: bool) -> Result<(), RuleError> {
        if self.allkeys {
            return Err(RuleError::AfterAllKeys);
        }
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                pattern: pattern.to_vec(),
                read,
                write,
            }),
        }
        Ok(())
    }

    /// Records a command rule, dropping earlier rules it overrides (the same
    /// name, and for a whole command every rule on its subcommands).
    fn push_rule(&mut self, allow: bool, name: &str, with_subs: bool) {
        self.rules.retain(|r| {
            let n = &r[1..];
            !(n == name || (with_subs && n.strip_prefix(name).is_some_and(|t| t.starts_with('|'))))
        });
        self.rules
            .push(format!("{}{}", if allow { '+' } else { '-' }, name));
    }

    /// The canonical command rules: `+@all` or `-@all`, then the compacted rules.
    pub fn describe_commands(&self) -> String {
        let mut s = String::from(if self.future { "+@all" } else { "-@all" });
        for r in &self.rules {
            s.push(' ');
            s.push_str(r);
        }
        s
    }

    /// The key patterns as `ACL GETUSER` shows them (`~a %R~b`), or `~*`.
    pub fn describe_keys(&self) -> String {
        if self.allkeys {
            return "~*".into();
        }
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                let p = String::from_utf8_lossy(&k.pattern);
                match (k.read, k.write) {
                    (true, true) => format!("~{p}"),
                    (true, false) => format!("%R~{p}"),
                    _ => format!("%W~{p}"),
                }
            })
            .collect();
        parts.join(" ")
    }

    /// The channel patterns as `ACL GETUSER` shows them (`&a &b`), or `&*`.
    pub fn describe_channels(&self) -> String {
        if self.allchannels {
            return "&*".into();
        }
        let parts: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect();
        parts.join(" ")
    }

    /// The selector in `ACL LIST` form: keys, channels, commands.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let keys = self.describe_keys();
        if !keys.is_empty() {
            parts.push(keys);
        }
        if self.allchannels {
            parts.push("&*".into());
        } else {
            parts.push("resetchannels".into());
            let ch = self.describe_channels();
            if !ch.is_empty() {
                parts.push(ch);
            }
        }
        parts.push(self.describe_commands());
        parts.join(" ")
    }

    /// Whether this selector allows the whole request.
    pub fn check(&self, req: &Request<'_>) -> Result<(), Denied> {
        if !self.allowed.get(req.cmd) {
            return Err(Denied::Command);
        }
        if !self.allkeys {
            if let Keys::Range {
                first,
                last,
                step,
                access,
            } = req.keys
            {
                let n = req.args.len();
                let last = if last < 0 {
                    n as i64 + last as i64
                } else {
                    last as i64
                };
                let mut pos = first;
                while first > 0 && (pos as i64) <= last && pos < n {
                    if !self.key_ok(&req.args[pos], access) {
                        return Err(Denied::Key(pos));
                    }
                    pos += step.max(1);
                }
            }
        }
        if !self.allchannels {
            let (from, literal, n) = match req.channels {
                Channels::None => return Ok(()),
                Channels::At(p) => (p, false, 1),
                Channels::From(p) => (p, false, usize::MAX),
                Channels::PatternsFrom(p) => (p, true, usize::MAX),
            };
            for (i, ch) in req.args.iter().enumerate().skip(from).take(n) {
                if !self.channel_ok(ch, literal) {
                    return Err(Denied::Channel(i));
                }
            }
        }
        Ok(())
    }

    /// Whether a key may be accessed this way.
    pub fn key_ok(&self, key: &[u8], access: Access) -> bool {
        self.allkeys
            || self.keys.iter().any(|k| {
                let granted = match access {
                    Access::Read => k.read,
                    Access::Write => k.write,
                };
                granted && crate::glob::matches(&k.pattern, key, false)
            })
    }

    /// Whether a channel (or, `literal`, a channel pattern) may be used.
    pub fn channel_ok(&self, channel: &[u8], literal: bool) -> bool {
        self.allchannels
            || self.channels.iter().any(|c| {
                if literal {
                    c.as_slice() == channel
                } else {
                    crate::glob::matches(c, channel, false)
                }
            })
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    enabled: bool,
    nopass: bool,
    skip_sanitize: bool,
    /// Lowercase hex SHA-256 of each password.
    passwords: Vec<String>,
    root: Selector,
    selectors: Vec<Selector>,
    /// The root selector allows every command, key and channel.
    everything: bool,
}

/// Lowercase hex SHA-256 of a password, as Redis stores it.
pub fn hash_password(password: &[u8]) -> String {
    let digest = Sha256::digest(password);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

fn valid_hash(h: &[u8]) -> bool {
    h.len() == 64
        && h.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Whether `a` and `b` are equal, in time that depends on their length only.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Joins `ACL SETUSER` arguments that make one selector: `(+get`, `~x)`
/// become `(+get ~x)`.
pub fn merge_selector_args(args: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for a in args {
        if let Some(cur) = open.as_mut() {
            cur.push(b' ');
            cur.extend_from_slice(a);
        } else if a.first() == Some(&b'(') {
            open = Some(a.to_vec());
        } else {
            out.push(a.to_vec());
            continue;
        }
        if open.as_ref().is_some_and(|c| c.last() == Some(&b')')) {
            out.extend(open.take());
        }
    }
    if let Some(cur) = open {
        return Err(format!(
            "ERR Unmatched parenthesis in acl selector starting at '{}'.",
            String::from_utf8_lossy(&cur)
        ));
    }
    Ok(out)
}

impl User {
    /// A user as `ACL SETUSER name` creates it: off, no passwords, no
    /// patterns, no commands.
    pub fn new(name: &str) -> Self {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            skip_sanitize: false,
            passwords: Vec::new(),
            root: Selector::default(),
            selectors: Vec::new(),
            everything: false,
        }
    }

    /// The stock `default` user: `on nopass ~* &* +@all`, or with a password.
    pub fn new_default(catalog: &Catalog, password: Option<&str>) -> Self {
        let mut u = User::new("default");
        let mut rules: Vec<Vec<u8>> = vec![b"on".to_vec(), b"~*".to_vec(), b"&*".to_vec()];
        rules.push(b"+@all".to_vec());
        match password {
            Some(p) => rules.push([b">", p.as_bytes()].concat()),
            None => rules.push(b"nopass".to_vec()),
        }
        for r in &rules {
            // The stock rules are valid by construction.
            let _ = u.apply(r, catalog);
        }
        u.finish(catalog);
        u
    }

    /// Parses an `ACL LIST` / aclfile line (`user <name> <rules…>`).
    pub fn from_line(catalog: &Catalog, line: &str) -> Option<User> {
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        if words.next() != Some("user") {
            return None;
        }
        let name = words.next()?;
        let rules: Vec<&[u8]> = words.map(str::as_bytes).collect();
        let rules = merge_selector_args(&rules).ok()?;
        let mut u = User::new(name);
        for r in &rules {
            u.apply(r, catalog).ok()?;
        }
        u.finish(catalog);
        Some(u)
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the user may log in.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether any password logs in.
    pub fn is_nopass(&self) -> bool {
        self.nopass
    }

    /// Whether the root selector allows every command, key and channel
    /// (the hot path's single branch).
    #[inline]
    pub fn allows_everything(&self) -> bool {
        self.everything
    }

    /// The root selector.
    pub fn root(&self) -> &Selector {
        &self.root
    }

    /// The extra selectors.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Password hashes, lowercase hex.
    pub fn password_hashes(&self) -> &[String] {
        &self.passwords
    }

    /// Whether `password` logs this user in (enabled, and nopass or a
    /// matching hash; every hash is compared, in constant time).
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let h = hash_password(password);
        self.passwords
            .iter()
            .fold(false, |ok, p| ct_eq(p.as_bytes(), h.as_bytes()) | ok)
    }

    /// Applies one `ACL SETUSER` rule (a selector rule goes to the root).
    pub fn apply(&mut self, rule: &[u8], catalog: &Catalog) -> Result<(), RuleError> {
        if rule.is_empty() {
            return Ok(());
        }
        if rule.first() == Some(&b'(') && rule.last() == Some(&b')') {
            let mut sel = Selector::default();
            for part in rule[1..rule.len() - 1]
                .split(|&b| b == b' ')
                .filter(|p| !p.is_empty())
            {
                sel.apply(part, catalog)?;
            }
            self.selectors.push(sel);
            return Ok(());
        }
        let lc = lower(rule);
        match lc.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "skip-sanitize-payload" => self.skip_sanitize = true,
            "sanitize-payload" => self.skip_sanitize = false,
            "clearselectors" => self.selectors.clear(),
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(&name);
            }
            _ => match rule[0] {
                b'>' => {
                    self.add_hash(hash_password(&rule[1..]));
                }
                b'#' => {
                    if !valid_hash(&rule[1..]) {
                        return Err(RuleError::BadHash);
                    }
                    self.add_hash(String::from_utf8_lossy(&rule[1..]).into_owned());
                }
                b'<' => self.remove_hash(&hash_password(&rule[1..]))?,
                b'!' => {
                    if !valid_hash(&rule[1..]) {
                        return Err(RuleError::BadHash);
                    }
                    self.remove_hash(&String::from_utf8_lossy(&rule[1..]))?;
                }
                _ => self.root.apply(rule, catalog)?,
            },
        }
        Ok(())
    }

    fn add_hash(&mut self, h: String) {
        self.nopass = false;
        if !self.passwords.contains(&h) {
            self.passwords.push(h);
        }
    }

    fn remove_hash(&mut self, h: &str) -> Result<(), RuleError> {
        let before = self.passwords.len();
        self.passwords.retain(|p| p != h);
        if self.passwords.len() == before {
            return Err(RuleError::NoSuchPassword);
        }
        Ok(())
    }

    /// Recomputes derived state after rules were applied.
    pub fn finish(&mut self, catalog: &Catalog) {
        let r = &self.root;
        self.everything = r.allkeys && r.allchannels && r.allowed == catalog.all();
    }

    /// Checks a request: allowed if any selector allows the command, every
    /// key and every channel. Otherwise the most relevant denial, as Redis
    /// picks it (command < key < channel; later argument wins a tie).
    #[inline]
    pub fn check(&self, req: &Request<'_>) -> Result<(), Denied> {
        if self.everything {
            return Ok(());
        }
        self.check_slow(req)
    }

    fn check_slow(&self, req: &Request<'_>) -> Result<(), Denied> {
        let mut worst = Denied::Command;
        for sel in std::iter::once(&self.root).chain(&self.selectors) {
            match sel.check(req) {
                Ok(()) => return Ok(()),
                Err(d) => {
                    if d.rank() > worst.rank() {
                        worst = d;
                    }
                }
            }
        }
        Err(worst)
    }

    /// Whether any selector lets this user read `key` (the filtered views).
    pub fn can_read(&self, key: &[u8]) -> bool {
        self.everything
            || std::iter::once(&self.root)
                .chain(&self.selectors)
                .any(|s| s.key_ok(key, Access::Read))
    }

    /// Whether any selector lets this user use a channel (or, `literal`, a
    /// channel pattern).
    pub fn can_use_channel(&self, channel: &[u8], literal: bool) -> bool {
        self.everything
            || std::iter::once(&self.root)
                .chain(&self.selectors)
                .any(|s| s.channel_ok(channel, literal))
    }

    /// Whether any selector lets this user write `key`.
    pub fn can_write(&self, key: &[u8]) -> bool {
        self.everything
            || std::iter::once(&self.root)
                .chain(&self.selectors)
                .any(|s| s.key_ok(key, Access::Write))
    }

    /// The flags `ACL GETUSER` shows.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        f.push(if self.skip_sanitize {
            "skip-sanitize-payload"
        } else {
            "sanitize-payload"
        });
        f
    }

    /// The user in `ACL LIST` / aclfile form: `user <name> <rules…>`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("user {}", self.name)];
        parts.extend(self.flags().iter().map(|s| s.to_string()));
        parts.extend(self.passwords.iter().map(|h| format!("#{h}")));
        parts.push(self.root.describe());
        for s in &self.selectors {
            parts.push(format!("({})", s.describe()));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.add("get", &["@read", "@string", "@fast"], None);
        c.add("set", &["@write", "@string", "@slow"], None);
        c.add("hget", &["@read", "@hash", "@fast"], None);
        c.add("incr", &["@write", "@string", "@fast"], None);
        c.add("keys", &["@keyspace", "@read", "@slow"], None);
        let p = c.add("client", &["@slow"], None);
        c.add("client|list", &["@admin", "@slow"], Some(p));
        let p = c.add("config", &["@slow"], None);
        c.add("config|get", &["@admin", "@slow"], Some(p));
        c.add("config|set", &["@admin", "@slow"], Some(p));
        let p = c.add("acl", &["@slow"], None);
        c.add("acl|list", &["@admin", "@slow"], Some(p));
        let p = c.add("debug", &["@admin"], None);
        c.add("debug|digest", &["@admin"], Some(p));
        c.add("publish", &["@pubsub", "@fast"], None);
        c
    }

    fn user(rules: &[&str]) -> Result<User, RuleError> {
        let c = catalog();
        let mut u = User::new("alice");
        for r in rules {
            u.apply(r.as_bytes(), &c)?;
        }
        u.finish(&c);
        Ok(u)
    }

    fn cmds(rules: &[&str]) -> String {
        user(rules).unwrap().root.describe_commands()
    }

    #[test]
    fn canonical_command_rules() {
        assert_eq!(
            cmds(&["+@all", "-@hash", "-@slow", "+hget", "-@hash"]),
            "+@all -@slow +hget -@hash"
        );
        assert_eq!(cmds(&["-@all", "+HGET", "+hget", "+hGeT"]), "-@all +hget");
        assert_eq!(
            cmds(&[
                "-@all",
                "+client|list",
                "+client|list",
                "+config|get",
                "+config",
                "+acl|list",
                "-acl"
            ]),
            "-@all +client|list +config -acl"
        );
        assert_eq!(
            cmds(&["-@all", "+config", "+config|get", "-config|set", "+config"]),
            "-@all +config"
        );
        assert_eq!(
            cmds(&[
                "reset",
                "+@all",
                "~*",
                "-@string",
                "+incr",
                "-debug",
                "+debug|digest"
            ]),
            "+@all -@string +incr -debug +debug|digest"
        );
        for cat in super::super::CATEGORIES {
            assert_eq!(
                cmds(&["reset", "+@all", &format!("-@{cat}")]),
                format!("+@all -@{cat}")
            );
            assert_eq!(
                cmds(&["reset", "-@all", &format!("+@{cat}")]),
                format!("-@all +@{cat}")
            );
        }
    }

    #[test]
    fn list_and_getuser_forms() {
        let u = user(&[
            "on",
            ">s3cret",
            "~flag:*",
            "&flagstaff:*",
            "+get",
            "+@read",
            "-keys",
            "%R~cfg:*",
        ])
        .unwrap();
        assert_eq!(u.root.describe_commands(), "-@all +get +@read -keys");
        assert_eq!(u.root.describe_keys(), "~flag:* %R~cfg:*");
        assert_eq!(u.root.describe_channels(), "&flagstaff:*");
        assert_eq!(u.flags(), vec!["on", "sanitize-payload"]);
        assert_eq!(
            u.describe(),
            format!(
                "user alice on sanitize-payload #{} ~flag:* %R~cfg:* resetchannels &flagstaff:* -@all +get +@read -keys",
                hash_password(b"s3cret")
            )
        );
        assert_eq!(
            user(&[]).unwrap().describe(),
            "user alice off sanitize-payload resetchannels -@all"
        );
        assert_eq!(
            user(&["reset"]).unwrap().describe(),
            user(&[]).unwrap().describe()
        );
        let bob = user(&["on", "(~w:*", "+set)"]);
        assert!(bob.is_err(), "a split selector is merged before apply");
        let bob = user(&["on", "(~w:* +set)"]).unwrap();
        assert!(bob
            .describe()
            .ends_with("-@all (~w:* resetchannels -@all +set)"));
        let c = catalog();
        let back = User::from_line(&c, &bob.describe()).unwrap();
        assert_eq!(back.describe(), bob.describe());
        let alice = user(&["on", ">pw", "~a:*", "&c", "-@all", "+get", "(+set %W~b:*)"]).unwrap();
        assert_eq!(User::from_line(&c, &alice.describe()).unwrap(), alice);
        let rw = user(&["%R~foo", "%W~foo", "%RW~bar"]).unwrap();
        assert_eq!(rw.root.describe_keys(), "~foo ~bar");
        assert_eq!(
            hash_password(b"s3cret"),
            "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        );
    }

    #[test]
    fn rule_errors() {
        assert_eq!(user(&["+nosuch"]).unwrap_err(), RuleError::Unknown);
        assert_eq!(user(&["+@nosuch"]).unwrap_err(), RuleError::Unknown);
        assert_eq!(user(&["bogus"]).unwrap_err(), RuleError::Syntax);
        assert_eq!(user(&["~*", "~foo"]).unwrap_err(), RuleError::AfterAllKeys);
        assert_eq!(
            user(&["allchannels", "&foo"]).unwrap_err(),
            RuleError::AfterAllChannels
        );
        assert_eq!(user(&["<nope"]).unwrap_err(), RuleError::NoSuchPassword);
        assert_eq!(user(&["#abc"]).unwrap_err(), RuleError::BadHash);
        assert_eq!(
            user(&[&format!("#{}", "A".repeat(64))]).unwrap_err(),
            RuleError::BadHash
        );
        assert_eq!(user(&["%X~foo"]).unwrap_err(), RuleError::Syntax);
        assert_eq!(user(&["%RR~foo"]).unwrap_err(), RuleError::Syntax);
        assert!(merge_selector_args(&[b"(+get", b"~x"]).is_err());
        assert_eq!(
            merge_selector_args(&[b"on", b"(+get", b"~x)"]).unwrap(),
            vec![b"on".to_vec(), b"(+get ~x)".to_vec()]
        );
    }

    #[test]
    fn passwords() {
        let u = user(&["on", ">p1", ">p2"]).unwrap();
        assert!(u.password_ok(b"p1") && u.password_ok(b"p2") && !u.password_ok(b"p3"));
        let u = user(&["on", ">p1", ">p2", "<p1"]).unwrap();
        assert!(!u.password_ok(b"p1"));
        let off = user(&[">p1"]).unwrap();
        assert!(!off.password_ok(b"p1"));
        let h = "34344e4d60c2b6d639b7bd22e18f2b0b91bc34bf0ac5f9952744435093cfb4e6";
        let u = user(&["on", &format!("#{h}")]).unwrap();
        assert!(u.password_ok(b"passwd4"));
        assert!(!user(&["on", &format!("#{h}"), &format!("!{h}")])
            .unwrap()
            .password_ok(b"passwd4"));
        assert!(user(&["on", ">x", "nopass"])
            .unwrap()
            .password_ok(b"anything"));
        assert!(!user(&["on", "nopass", "resetpass"])
            .unwrap()
            .password_ok(b""));
    }

    #[test]
    fn checks() {
        let c = catalog();
        let args: Vec<Bytes> = ["set", "foo:1", "v"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        let req = |cmd: &str, access| Request {
            cmd: c.id(cmd).unwrap(),
            args: &args,
            keys: Keys::Range {
                first: 1,
                last: 1,
                step: 1,
                access,
            },
            channels: Channels::None,
        };
        let u = user(&["on", "allcommands", "~foo:*", "~bar:*"]).unwrap();
        assert!(!u.allows_everything());
        assert_eq!(u.check(&req("set", Access::Write)), Ok(()));
        let u = user(&["on", "+get"]).unwrap();
        assert_eq!(u.check(&req("set", Access::Write)), Err(Denied::Command));
        assert_eq!(u.check(&req("get", Access::Read)), Err(Denied::Key(1)));
        // Selectors are not additive.
        let u = user(&["on", "(+set %R~foo:*)", "(+get %W~foo:*)"]).unwrap();
        assert_eq!(u.check(&req("set", Access::Write)), Err(Denied::Key(1)));
        let u = user(&["on", "(+set %W~foo:*)"]).unwrap();
        assert_eq!(u.check(&req("set", Access::Write)), Ok(()));
        let all = user(&["on", "+@all", "~*", "&*"]).unwrap();
        assert!(all.allows_everything());
        // Channels: glob for names, literal for patterns.
        let pargs: Vec<Bytes> = ["publish", "foo:1", "m"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        let preq = |ch| Request {
            cmd: c.id("publish").unwrap(),
            args: &pargs,
            keys: Keys::None,
            channels: ch,
        };
        let u = user(&["on", "+@all", "resetchannels", "&foo:*"]).unwrap();
        assert_eq!(u.check(&preq(Channels::At(1))), Ok(()));
        assert_eq!(u.check(&preq(Channels::From(1))), Err(Denied::Channel(2)));
        assert_eq!(
            u.check(&preq(Channels::PatternsFrom(1))),
            Err(Denied::Channel(1))
        );
    }
}
