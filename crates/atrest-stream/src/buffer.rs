//! Growing a buffer that may hold plaintext without leaving a copy of it in
//! freed memory.

use zeroize::Zeroize;

/// Lengthens `buf` to `len` bytes, the new bytes zero.
///
/// `Vec::resize` moves the contents to a larger allocation when it must and
/// frees the old one as it is, so a buffer that held plaintext would leave
/// a copy behind. Here the contents are copied into the new allocation by
/// hand and the old one is wiped, spare capacity included, before it is
/// freed. The capacity at least doubles each time, as `Vec`'s does, so each
/// byte is copied a constant number of times on average, and the copy only
/// happens where `Vec` would have reallocated (and copied) anyway.
pub(crate) fn grow_wiping(buf: &mut Vec<u8>, len: usize) {
    if len <= buf.len() {
        return;
    }
    if len > buf.capacity() {
        let mut grown = Vec::with_capacity(len.max(buf.capacity().saturating_mul(2)));
        grown.extend_from_slice(buf);
        // Wipes the whole allocation, then the old allocation is freed.
        buf.zeroize();
        *buf = grown;
    }
    buf.resize(len, 0);
}

#[cfg(test)]
mod tests {
    use super::grow_wiping;

    #[test]
    fn keeps_the_contents_and_zero_fills() {
        let mut buf = vec![1u8, 2, 3];
        buf.shrink_to_fit();
        grow_wiping(&mut buf, 5);
        assert_eq!(buf, [1, 2, 3, 0, 0]);
        assert!(buf.capacity() >= 6, "capacity at least doubles");
        grow_wiping(&mut buf, 2);
        assert_eq!(buf, [1, 2, 3, 0, 0], "never shrinks");
        let mut empty = Vec::new();
        grow_wiping(&mut empty, 100);
        assert_eq!(empty, [0; 100]);
        assert_eq!(empty.capacity(), 100, "no more than asked from empty");
    }

    #[test]
    fn growth_within_capacity_does_not_reallocate() {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[9u8; 10]);
        let before = buf.as_ptr();
        grow_wiping(&mut buf, 64);
        assert_eq!(buf.as_ptr(), before);
        assert_eq!(&buf[..10], &[9; 10]);
    }
}
