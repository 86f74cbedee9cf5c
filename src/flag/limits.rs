//! Size limits on definitions, so one write cannot make evaluation slow or
//! the state large. Documented in `docs/flags.md`.

/// Largest flag definition, in bytes of JSON.
pub const MAX_FLAG_BYTES: usize = 1024 * 1024;
/// Largest segment definition, in bytes of JSON.
pub const MAX_SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// Most variations in a flag.
pub const MAX_VARIATIONS: usize = 100;
/// Most rules in a flag.
pub const MAX_RULES: usize = 500;
/// Most rules in a segment.
pub const MAX_SEGMENT_RULES: usize = 100;
/// Most clauses in a rule.
pub const MAX_CLAUSES: usize = 50;
/// Most values in one clause.
pub const MAX_CLAUSE_VALUES: usize = 10_000;
/// Most prerequisites of a flag.
pub const MAX_PREREQUISITES: usize = 50;
/// Most individually targeted keys in a flag, over all its targets.
pub const MAX_TARGET_KEYS: usize = 10_000;
/// Most keys in a segment's `included` or `excluded` list.
pub const MAX_SEGMENT_KEYS: usize = 100_000;
/// Most tags on a flag.
pub const MAX_TAGS: usize = 50;
/// Longest string in names, ids, tags, salt and attribute names.
pub const MAX_NAME_LEN: usize = 256;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Longest regex pattern source.
pub const MAX_REGEX_LEN: usize = 1024;
/// Largest compiled regex program, in bytes.
pub const MAX_REGEX_SIZE: usize = 256 * 1024;
/// Most flags in one chain of prerequisites, the flag itself included.
pub const MAX_PREREQUISITE_DEPTH: usize = 16;
/// Most distinct flags a flag reaches through its prerequisites, directly or
/// not; it bounds the flags one evaluation may visit.
pub const MAX_PREREQUISITE_CLOSURE: usize = 1000;
