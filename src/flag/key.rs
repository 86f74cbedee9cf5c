//! Flag and segment key syntax: 1–256 bytes of `[A-Za-z0-9._:-]`.

/// Longest key.
pub const MAX_KEY_LEN: usize = 256;

/// Why `key` is not a valid flag or segment key, or `None` if it is.
pub fn key_problem(key: &[u8]) -> Option<String> {
    if key.is_empty() {
        return Some("key must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Some(format!(
            "key is {} bytes, the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    key.iter()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-')))
        .map(|c| {
            format!(
                "key may only contain A-Z a-z 0-9 . _ : - (found {:?})",
                char::from(*c)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::key_problem;

    #[test]
    fn keys_are_short_and_plain() {
        assert!(key_problem(b"prod:new-checkout_v2.1").is_none());
        assert!(key_problem(b"").is_some());
        assert!(key_problem(b"a b").is_some());
        assert!(key_problem(&[b'a'; 257]).is_some());
    }
}
