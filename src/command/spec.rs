//! The shape of a command-table entry: what `COMMAND`, dispatch and ACL read.

use bytes::Bytes;

use super::{Action, CommandError, Ctx};

/// A command handler: parses its arguments (name included) and returns what
/// to do. Handlers never write bytes and never block.
pub type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> Result<Action, CommandError>;

/// One command (or subcommand) in the table.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name; subcommands are `container|sub`.
    pub name: &'static str,
    /// Redis arity: exact count if positive, minimum count if negative (name included).
    pub arity: i32,
    /// Redis command flags (`readonly`, `write`, `fast`, `loading`, `stale`, `no-auth`, ...).
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: none).
    pub first_key: i32,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i32,
    /// Step between key arguments.
    pub key_step: i32,
    /// ACL categories, with the `@`.
    pub acl_categories: &'static [&'static str],
    /// Whether ACL checks the key arguments (`first_key`..) against the
    /// user's key patterns; the change stream's own name is not checked.
    pub acl_keys: bool,
    /// Which arguments ACL checks against the user's channel patterns.
    pub acl_channels: crate::auth::Channels,
    /// `COMMAND DOCS` group.
    pub group: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Version of flagstaff that introduced it.
    pub since: &'static str,
    /// Argument documentation for `COMMAND DOCS`.
    pub args: &'static [Arg],
    /// Subcommands, for container commands like `CLIENT`.
    pub subcommands: &'static [CommandSpec],
    /// Arguments `MONITOR` must not show.
    pub redact: Redact,
    /// How dispatch treats it beyond Redis's flags.
    pub runs: Runs,
    /// The handler.
    pub handler: Handler,
}

/// How the dispatcher treats a command, where Redis decides by command name
/// (its `processCommand` lists them): a small set of traits the table carries,
/// so dispatch never compares names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs(u8);

impl Runs {
    /// Nothing special.
    pub const NORMALLY: Runs = Runs(0);
    /// Runs at once inside `MULTI` instead of being queued (EXEC, DISCARD, ...).
    pub const INSIDE_MULTI: Runs = Runs(1);
    /// Allowed while a RESP2 connection is subscribed (SUBSCRIBE, PING, ...).
    pub const WHILE_SUBSCRIBED: Runs = Runs(2);
    /// Reads state storage (history, the change stream), which must first
    /// hold every write applied on this node.
    pub const READS_STORAGE: Runs = Runs(4);
    /// Waits for new entries when given `BLOCK` (XREAD).
    pub const BLOCKS: Runs = Runs(8);

    /// Both sets of traits.
    pub const fn and(self, other: Runs) -> Runs {
        Runs(self.0 | other.0)
    }

    /// Whether every trait of `other` is in this set.
    pub const fn has(self, other: Runs) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Which arguments of a command `MONITOR` shows as `(redacted)`, as Redis does
/// for secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// Every argument is shown.
    Nothing,
    /// Every argument after the name is hidden (`AUTH`).
    Arguments,
    /// The username and password after `AUTH` are hidden (`HELLO`).
    HelloAuth,
}

impl CommandSpec {
    /// Whether the spec carries `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// Whether `argc` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// The ACL view of a request for this command: its keys (read, or
    /// written if the command writes) and channels.
    pub fn acl_request<'a>(&self, cmd: usize, args: &'a [Bytes]) -> crate::auth::Request<'a> {
        let keys = if self.acl_keys && self.first_key > 0 {
            crate::auth::Keys::Range {
                first: self.first_key as usize,
                last: self.last_key,
                step: self.key_step.max(1) as usize,
                access: if self.is_write() {
                    crate::auth::Access::Write
                } else {
                    crate::auth::Access::Read
                },
            }
        } else {
            crate::auth::Keys::None
        };
        crate::auth::Request {
            cmd,
            args,
            keys,
            channels: self.acl_channels,
        }
    }

    /// Whether this command changes stored flags or segments.
    pub fn is_write(&self) -> bool {
        self.has_flag("write")
    }
}

/// One argument in `COMMAND DOCS`.
#[derive(Debug)]
pub struct Arg {
    /// Argument name.
    pub name: &'static str,
    /// Redis argument type: `key`, `string`, `integer`, `pure-token`, `oneof`, `block`.
    pub kind: &'static str,
    /// The literal token that introduces it, if any.
    pub token: Option<&'static str>,
    /// Redis argument flags: `optional`, `multiple`.
    pub flags: &'static [&'static str],
    /// Nested arguments of a `oneof` or `block`.
    pub args: &'static [Arg],
}

/// A key argument.
pub const fn key(name: &'static str) -> Arg {
    Arg {
        name,
        kind: "key",
        token: None,
        flags: &[],
        args: &[],
    }
}

/// A string argument.
pub const fn string(name: &'static str) -> Arg {
    Arg {
        name,
        kind: "string",
        token: None,
        flags: &[],
        args: &[],
    }
}

/// An integer argument.
pub const fn integer(name: &'static str) -> Arg {
    Arg {
        name,
        kind: "integer",
        token: None,
        flags: &[],
        args: &[],
    }
}

/// A literal token.
pub const fn token(name: &'static str, token: &'static str) -> Arg {
    Arg {
        name,
        kind: "pure-token",
        token: Some(token),
        flags: &[],
        args: &[],
    }
}

/// A value introduced by a token (`MATCH pattern`).
pub const fn tagged(name: &'static str, kind: &'static str, tok: &'static str) -> Arg {
    Arg {
        name,
        kind,
        token: Some(tok),
        flags: &[],
        args: &[],
    }
}

/// One of several alternatives.
pub const fn oneof(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        name,
        kind: "oneof",
        token: None,
        flags: &[],
        args,
    }
}

/// A group of arguments.
pub const fn block(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        name,
        kind: "block",
        token: None,
        flags: &[],
        args,
    }
}

/// `arg` made optional.
pub const fn optional(arg: Arg) -> Arg {
    let flags: &'static [&'static str] = if arg.flags.is_empty() {
        &["optional"]
    } else {
        &["optional", "multiple"]
    };
    Arg { flags, ..arg }
}

/// `arg` made repeatable.
pub const fn multiple(arg: Arg) -> Arg {
    let flags: &'static [&'static str] = if arg.flags.is_empty() {
        &["multiple"]
    } else {
        &["optional", "multiple"]
    };
    Arg { flags, ..arg }
}

/// A spec with the common fields filled; override the rest with struct update.
pub const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    acl_categories: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: 0,
        last_key: 0,
        key_step: 0,
        acl_categories,
        acl_keys: true,
        acl_channels: crate::auth::Channels::None,
        group,
        summary,
        since: "0.1.0",
        args: &[],
        subcommands: &[],
        redact: Redact::Nothing,
        runs: Runs::NORMALLY,
        handler,
    }
}
