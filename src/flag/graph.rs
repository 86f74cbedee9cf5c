//! The prerequisite graph a write would leave behind: no cycle, no chain
//! longer than [`MAX_PREREQUISITE_DEPTH`] flags, and no flag reaching more than
//! [`MAX_PREREQUISITE_CLOSURE`] flags. Every walk memoises what it has seen, so
//! a graph where many flags share prerequisites costs its size, not its number
//! of paths.

use std::collections::{HashMap, HashSet};

use super::limits::{MAX_PREREQUISITE_CLOSURE, MAX_PREREQUISITE_DEPTH};
use super::model::FlagDef;
use super::validate::{Catalog, FlagRefs, Invalid};

/// Why a graph is refused, before it is worded for a JSON path.
enum Problem<'a> {
    /// The chain from the written flag back to itself.
    Cycle(Vec<&'a str>),
    /// A chain longer than the depth limit.
    TooDeep,
    /// More flags reached than the closure limit.
    TooMany,
}

/// Checks that setting `key` to `def` keeps the graph within the limits, for
/// `key` and for every flag that already depends on it. `catalog` holds the
/// graph as it is before the write.
pub fn check_prerequisite_graph(
    key: &str,
    def: &FlagDef,
    catalog: &dyn Catalog,
) -> Result<(), Invalid> {
    let old = catalog.flag(key);
    if let Some(old) = old {
        fn prereqs(d: &dyn FlagRefs) -> Vec<&str> {
            let mut keys = d.prerequisite_keys();
            keys.sort_unstable();
            keys
        }
        if prereqs(old) == prereqs(def) {
            // Same edges: no chain or closure changes anywhere.
            return Ok(());
        }
    }
    let mut down = Down {
        catalog,
        key,
        depth: HashMap::new(),
        path: Vec::new(),
    };
    let mut deepest = 0;
    for (i, p) in def.prerequisites.iter().enumerate() {
        let d = down.depth_of(&p.flag).map_err(|problem| {
            let path = format!("prerequisites[{i}].flag");
            match problem {
                Problem::Cycle(chain) => Invalid::new(
                    path,
                    format!("prerequisite cycle: {key} -> {}", chain.join(" -> ")),
                ),
                Problem::TooDeep => too_deep(path),
                Problem::TooMany => too_many(path),
            }
        })?;
        deepest = deepest.max(d);
    }
    let depth = deepest + 1;
    if depth > MAX_PREREQUISITE_DEPTH {
        return Err(too_deep("prerequisites".into()));
    }
    if old.is_none() {
        // A flag that did not exist has no dependents.
        return Ok(());
    }
    let mut up = Up {
        catalog,
        height: HashMap::new(),
        path: 0,
    };
    let height = up.height_of(key).map_err(|_| dependents_too_deep(key))?;
    if height + depth > MAX_PREREQUISITE_DEPTH {
        return Err(dependents_too_deep(key));
    }
    // Height 0: flags nothing depends on. Every other dependent is in the
    // closure of one of these, so its closure is smaller; checking these is enough.
    let mut tops: Vec<&str> = up
        .height
        .iter()
        .filter(|(k, h)| **h == 0 && **k != key)
        .map(|(k, _)| *k)
        .collect();
    if tops.is_empty() {
        return Ok(());
    }
    // A dependent's closure can only grow by flags the new definition reaches
    // and the old one did not.
    let reached_before = old.map_or_else(HashSet::new, |old| closure(old, key, catalog));
    let reached_now = &down.depth;
    if reached_now.keys().all(|k| reached_before.contains(k)) {
        return Ok(());
    }
    tops.sort_unstable();
    for top in tops {
        let Some(d) = catalog.flag(top) else {
            continue;
        };
        // What `top` reaches without going through the written flag, then
        // the written flag and what it now reaches.
        let around = closure(d, key, catalog);
        let shared = around
            .iter()
            .filter(|k| reached_now.contains_key(*k))
            .count();
        if around.len() + 1 + reached_now.len() - shared > MAX_PREREQUISITE_CLOSURE {
            return Err(Invalid::new(
                "prerequisites",
                format!(
                    "flag {top} depends on this flag and would then reach more than \
                     {MAX_PREREQUISITE_CLOSURE} flags through its prerequisites"
                ),
            ));
        }
    }
    Ok(())
}

fn too_deep(path: String) -> Invalid {
    Invalid::new(
        path,
        format!("prerequisite chains may be at most {MAX_PREREQUISITE_DEPTH} flags deep"),
    )
}

fn too_many(path: String) -> Invalid {
    Invalid::new(
        path,
        format!(
            "a flag may reach at most {MAX_PREREQUISITE_CLOSURE} flags through its prerequisites"
        ),
    )
}

fn dependents_too_deep(key: &str) -> Invalid {
    Invalid::new(
        "prerequisites",
        format!(
            "flags that depend on {key} would then have prerequisite chains deeper than \
             {MAX_PREREQUISITE_DEPTH} flags"
        ),
    )
}

/// The downward walk from the written flag's prerequisites.
struct Down<'a> {
    catalog: &'a dyn Catalog,
    /// The flag being written: reaching it again is a cycle.
    key: &'a str,
    /// Flags fully walked → flags in the longest chain starting at them.
    depth: HashMap<&'a str, usize>,
    /// The chain being walked, below the written flag.
    path: Vec<&'a str>,
}

impl<'a> Down<'a> {
    fn depth_of(&mut self, flag: &'a str) -> Result<usize, Problem<'a>> {
        if flag == self.key {
            let mut chain = self.path.clone();
            chain.push(flag);
            return Err(Problem::Cycle(chain));
        }
        if let Some(d) = self.depth.get(flag) {
            return Ok(*d);
        }
        // The written flag, the chain so far and this flag.
        if self.path.len() + 2 > MAX_PREREQUISITE_DEPTH {
            return Err(Problem::TooDeep);
        }
        // Flags walked, flags on the chain, and this one.
        if self.depth.len() + self.path.len() + 1 > MAX_PREREQUISITE_CLOSURE {
            return Err(Problem::TooMany);
        }
        let Some(def) = self.catalog.flag(flag) else {
            // Unknown flags are refused before the walk (and cannot be deleted while used).
            return Ok(0);
        };
        self.path.push(flag);
        let mut deepest = 0;
        for p in def.prerequisite_keys() {
            deepest = deepest.max(self.depth_of(p)?);
        }
        self.path.pop();
        self.depth.insert(flag, deepest + 1);
        Ok(deepest + 1)
    }
}

/// The upward walk over the flags that depend on the written flag.
struct Up<'a> {
    catalog: &'a dyn Catalog,
    /// Flags fully walked → flags above them in the longest chain of dependents.
    height: HashMap<&'a str, usize>,
    /// Length of the chain being walked.
    path: usize,
}

impl<'a> Up<'a> {
    fn height_of(&mut self, flag: &'a str) -> Result<usize, ()> {
        if let Some(h) = self.height.get(flag) {
            return Ok(*h);
        }
        if self.path > MAX_PREREQUISITE_DEPTH {
            return Err(());
        }
        self.path += 1;
        let mut highest = 0;
        for dependent in self.catalog.dependents(flag) {
            highest = highest.max(self.height_of(dependent)? + 1);
        }
        self.path -= 1;
        self.height.insert(flag, highest);
        Ok(highest)
    }
}

/// The flags `def` reaches through prerequisites without going through flag
/// `key` (not counted either), stopping one past the limit.
fn closure<'a>(def: &'a dyn FlagRefs, key: &str, catalog: &'a dyn Catalog) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    let mut stack: Vec<&'a dyn FlagRefs> = vec![def];
    while let Some(d) = stack.pop() {
        for p in d.prerequisite_keys() {
            if seen.len() > MAX_PREREQUISITE_CLOSURE {
                return seen;
            }
            if p == key || !seen.insert(p) {
                continue;
            }
            stack.extend(catalog.flag(p));
        }
    }
    seen
}
