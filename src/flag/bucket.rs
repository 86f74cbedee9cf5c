//! Bucketing: `bucket = u64::from_be_bytes(sha256(salt ":" flag_key ":" value)[0..8]) % 10000`.
//! The hash state after `salt:flag_key:` is computed once per rollout, so an
//! evaluation hashes only the value and allocates nothing.

use sha2::{Digest, Sha256};

/// Number of buckets; rollout weights are basis points of this.
pub const BUCKETS: u16 = 10_000;

/// Bucket of `value` for a flag, computed from scratch (the reference form).
pub fn bucket(salt: &str, flag_key: &str, value: &[u8]) -> u16 {
    BucketHasher::new(salt, flag_key).bucket(value)
}

/// A SHA-256 state primed with `salt:flag_key:`.
#[derive(Debug, Clone)]
pub struct BucketHasher {
    prefix: Sha256,
}

impl BucketHasher {
    /// Primes the hash with the salt and the flag's full key.
    pub fn new(salt: &str, flag_key: &str) -> Self {
        let mut prefix = Sha256::new();
        prefix.update(salt.as_bytes());
        prefix.update(b":");
        prefix.update(flag_key.as_bytes());
        prefix.update(b":");
        BucketHasher { prefix }
    }

    /// The bucket of `value` (the `bucket_by` attribute as text).
    pub fn bucket(&self, value: &[u8]) -> u16 {
        let mut h = self.prefix.clone();
        h.update(value);
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_test_vectors_hold() {
        // The same vectors as docs/flags.md, computed there independently.
        assert_eq!(bucket("new-checkout", "prod:new-checkout", b"user-1"), 1477);
        assert_eq!(bucket("new-checkout", "prod:new-checkout", b"user-2"), 1100);
        assert_eq!(
            bucket("prod:new-checkout", "prod:new-checkout", b"user-1"),
            6364
        );
        assert_eq!(bucket("s", "staging:x", b"42"), 2987);
        assert_eq!(bucket("s", "staging:x", b"true"), 290);
        assert_eq!(bucket("s", "staging:x", b"1.5"), 937);
    }

    #[test]
    fn primed_hasher_equals_hashing_the_whole_input() {
        let whole = Sha256::digest(b"new-checkout:prod:new-checkout:user-1");
        let expected = (u64::from_be_bytes(whole[..8].try_into().unwrap()) % 10_000) as u16;
        assert_eq!(
            bucket("new-checkout", "prod:new-checkout", b"user-1"),
            expected
        );
    }
}
