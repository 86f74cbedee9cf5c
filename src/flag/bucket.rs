//! Bucketing: `bucket = u64::from_be_bytes(sha256(salt ":" flag_key ":" value)[0..8]) % 10000`.
//! The hash state after `salt:flag_key:` is computed once per rollout, so an
//! evaluation hashes only the value and allocates nothing.

use sha2::block_api::compress256;

/// Number of buckets; rollout weights are basis points of this.
pub const BUCKETS: u16 = 10_000;

/// Bucket of `value` for a flag, computed from scratch (the reference form).
pub fn bucket(salt: &str, flag_key: &str, value: &[u8]) -> u16 {
    BucketHasher::new(salt, flag_key).bucket(value)
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 primed with `salt:flag_key:`: the state after the prefix's
/// whole 64-byte blocks and the bytes left over. A bucket then costs the
/// compression of the last block or two and nothing else (no hasher copy,
/// no buffering, no digest output), with the padding of FIPS 180-4.
#[derive(Debug, Clone)]
pub struct BucketHasher {
    state: [u32; 8],
    /// Prefix bytes after the last whole block (fewer than 64).
    tail: Box<[u8]>,
    /// Length of the whole prefix in bytes.
    len: u64,
}

impl BucketHasher {
    /// Primes the hash with the salt and the flag's full key.
    pub fn new(salt: &str, flag_key: &str) -> Self {
        let prefix = [salt.as_bytes(), b":", flag_key.as_bytes(), b":"].concat();
        let mut state = H0;
        let mut blocks = prefix.chunks_exact(64);
        for block in &mut blocks {
            let mut b = [0u8; 64];
            b.copy_from_slice(block);
            compress256(&mut state, &[b]);
        }
        BucketHasher {
            state,
            tail: blocks.remainder().into(),
            len: prefix.len() as u64,
        }
    }

    /// The bucket of `value` (the `bucket_by` attribute as text).
    pub fn bucket(&self, value: &[u8]) -> u16 {
        let mut state = self.state;
        let mut block = [0u8; 64];
        let mut n = self.tail.len();
        block[..n].copy_from_slice(&self.tail);
        let mut rest = value;
        while n + rest.len() >= 64 {
            let (now, later) = rest.split_at(64 - n);
            block[n..].copy_from_slice(now);
            compress256(&mut state, &[block]);
            rest = later;
            n = 0;
        }
        block[n..n + rest.len()].copy_from_slice(rest);
        n += rest.len();
        block[n] = 0x80;
        block[n + 1..].fill(0);
        if n >= 56 {
            compress256(&mut state, &[block]);
            block = [0u8; 64];
        }
        let bits = (self.len + value.len() as u64).wrapping_mul(8);
        block[56..].copy_from_slice(&bits.to_be_bytes());
        compress256(&mut state, &[block]);
        let first = (u64::from(state[0]) << 32) | u64::from(state[1]);
        (first % u64::from(BUCKETS)) as u16
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
    fn every_prefix_and_value_length_hashes_as_sha256() {
        use sha2::{Digest, Sha256};
        let text: Vec<u8> = (0..300u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        for salt_len in [0, 1, 30, 53, 54, 55, 62, 63, 64, 65, 120, 127, 128, 200] {
            let salt = std::str::from_utf8(&text[..salt_len]).unwrap();
            let hasher = BucketHasher::new(salt, "k");
            for value_len in 0..150 {
                let value = &text[100..100 + value_len];
                let whole = Sha256::digest([salt.as_bytes(), b":k:", value].concat());
                let expected = (u64::from_be_bytes(whole[..8].try_into().unwrap()) % 10_000) as u16;
                assert_eq!(
                    hasher.bucket(value),
                    expected,
                    "salt {salt_len}, value {value_len}"
                );
            }
        }
    }

    #[test]
    fn primed_hasher_equals_hashing_the_whole_input() {
        use sha2::{Digest, Sha256};
        let whole = Sha256::digest(b"new-checkout:prod:new-checkout:user-1");
        let expected = (u64::from_be_bytes(whole[..8].try_into().unwrap()) % 10_000) as u16;
        assert_eq!(
            bucket("new-checkout", "prod:new-checkout", b"user-1"),
            expected
        );
    }
}
