//! Small argument parsers shared by the handlers, with Redis's error texts.

use bytes::Bytes;

use super::CommandError;

/// Parses a signed integer argument.
pub fn int(arg: &[u8]) -> Result<i64, CommandError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(CommandError::NotInteger)
}

/// Parses a non-negative integer argument.
pub fn uint(arg: &[u8]) -> Result<u64, CommandError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CommandError::NotInteger)
}

/// Whether `arg` equals `word`, ignoring ASCII case.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Parses trailing `NAME value` options; each name may appear once.
/// Returns the values in the order of `names` (None where absent).
pub fn options<'a, const N: usize>(
    args: &'a [Bytes],
    names: [&str; N],
) -> Result<[Option<&'a Bytes>; N], CommandError> {
    let mut found = [None; N];
    let mut i = 0;
    while i < args.len() {
        let slot = names
            .iter()
            .position(|n| is(&args[i], n))
            .ok_or(CommandError::Syntax)?;
        let value = args.get(i + 1).ok_or(CommandError::Syntax)?;
        if found[slot].is_some() {
            return Err(CommandError::Syntax);
        }
        found[slot] = Some(value);
        i += 2;
    }
    Ok(found)
}
