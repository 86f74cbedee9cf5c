//! ACL categories and the catalog of commands the rules name.

use std::collections::HashMap;

/// Every ACL category, in `ACL CAT` order: Redis's 21, then flagstaff's four
/// role categories.
pub const CATEGORIES: [&str; 25] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
    "flag-eval",
    "flag-read",
    "flag-write",
    "flag-admin",
];

/// The bit of a category name (without `@`, any case), if it is one.
pub fn category_bit(name: &str) -> Option<u32> {
    CATEGORIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|i| 1u32 << i)
}

/// Most commands (subcommands included) the catalog can hold.
pub const MAX_COMMANDS: usize = 256;

/// A set of command ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CmdBits([u64; MAX_COMMANDS / 64]);

impl CmdBits {
    /// Whether `id` is in the set.
    #[inline]
    pub fn get(&self, id: usize) -> bool {
        self.0
            .get(id / 64)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    /// Adds or removes `id`.
    pub fn set(&mut self, id: usize, on: bool) {
        if let Some(w) = self.0.get_mut(id / 64) {
            if on {
                *w |= 1u64 << (id % 64);
            } else {
                *w &= !(1u64 << (id % 64));
            }
        }
    }
}

/// One command as ACL sees it.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Full lower-case name (`client|list` for a subcommand).
    pub name: &'static str,
    /// Category bits.
    pub categories: u32,
    /// Ids of its subcommands.
    pub subs: Vec<usize>,
}

/// Every command the ACL rules can name, with ids for [`CmdBits`].
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    commands: Vec<CommandInfo>,
    index: HashMap<&'static str, usize>,
    all: CmdBits,
}

impl Catalog {
    /// Adds a command (or a subcommand of `parent`); returns its id.
    /// Categories are written with their `@`; unknown ones are ignored.
    pub fn add(&mut self, name: &'static str, categories: &[&str], parent: Option<usize>) -> usize {
        let id = self.commands.len();
        assert!(id < MAX_COMMANDS, "more commands than the ACL bitset holds");
        let categories = categories
            .iter()
            .filter_map(|c| category_bit(c.trim_start_matches('@')))
            .fold(0, |a, b| a | b);
        self.commands.push(CommandInfo {
            name,
            categories,
            subs: Vec::new(),
        });
        if let Some(p) = parent.and_then(|p| self.commands.get_mut(p)) {
            p.subs.push(id);
        }
        self.index.insert(name, id);
        self.all.set(id, true);
        id
    }

    /// The id of a full command name (lower case).
    pub fn id(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The command with this id.
    pub fn info(&self, id: usize) -> Option<&CommandInfo> {
        self.commands.get(id)
    }

    /// Every command id.
    pub fn all(&self) -> CmdBits {
        self.all
    }

    /// Ids of the commands in a category bit.
    pub fn in_category(&self, bit: u32) -> impl Iterator<Item = usize> + '_ {
        self.commands
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.categories & bit != 0)
            .map(|(i, _)| i)
    }

    /// Names of the commands in a category, for `ACL CAT <category>`.
    pub fn names_in(&self, bit: u32) -> Vec<&'static str> {
        self.in_category(bit)
            .filter_map(|i| self.info(i))
            .map(|c| c.name)
            .collect()
    }
}
