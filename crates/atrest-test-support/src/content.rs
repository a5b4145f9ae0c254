//! Deterministic test content.

/// `len` bytes of a fixed pattern: the same for every call, different at
/// every offset of a 256-byte period and across periods (byte `i` is
/// `(31 i) xor (i >> 8)`, truncated), so misplaced or repeated chunks show.
#[must_use]
pub fn plaintext(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)).to_le_bytes()[0])
        .collect()
}

/// `len` bytes that look random (an xorshift64 sequence) and depend only
/// on `seed`: two seeds give unrelated content, the same seed the same.
/// Unlike [`plaintext`] it does not compress.
#[must_use]
pub fn seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{plaintext, seeded};

    #[test]
    fn content_is_deterministic() {
        assert_eq!(plaintext(1000), plaintext(1000));
        assert_eq!(&plaintext(1000)[..10], &plaintext(10)[..]);
        assert_eq!(plaintext(3), [0, 31, 62]);
        assert_eq!(seeded(100, 7), seeded(100, 7));
        assert_ne!(seeded(100, 7), seeded(100, 8));
    }
}
