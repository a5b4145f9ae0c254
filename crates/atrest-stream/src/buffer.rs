//! Growing a buffer that may hold plaintext without leaving a copy of it in
//! freed memory, and [`RunBuffer`], the buffer runs are read into.

use zeroize::{Zeroize, Zeroizing};

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

/// A buffer a run's ciphertext is read into (see [`crate::runs`]).
///
/// One from [`RunOpener::buffer`](crate::RunOpener::buffer) is a buffer a
/// chunk of plaintext gave back: it may hold that plaintext until the
/// ciphertext read in overwrites it, so it is wiped when dropped, and it
/// grows without leaving copies in freed memory. Its bytes are
/// `..len()`; [`RunBuffer::spare`] gives room for more, to be written and
/// then kept with [`RunBuffer::advance`]. `Debug` shows its length only.
#[derive(Default)]
pub struct RunBuffer {
    /// Initialized up to its length, which only grows: reusing the buffer
    /// costs no zeroing.
    pub(crate) buf: Zeroizing<Vec<u8>>,
    pub(crate) len: usize,
}

impl RunBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn reused(buf: Zeroizing<Vec<u8>>) -> Self {
        Self { buf, len: 0 }
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes it holds.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Forgets the bytes it holds (they are overwritten as it is refilled,
    /// and wiped when it is dropped).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Room for `n` more bytes after those it holds: write into it, then
    /// say how much with [`RunBuffer::advance`].
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        let end = self.len.saturating_add(n);
        grow_wiping(&mut self.buf, end);
        self.buf.get_mut(self.len..end).unwrap_or_default()
    }

    /// Keeps the first `n` bytes of the room [`RunBuffer::spare`] gave.
    pub fn advance(&mut self, n: usize) {
        self.len = self.len.saturating_add(n).min(self.buf.len());
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.spare(bytes.len()).copy_from_slice(bytes);
        self.advance(bytes.len());
    }
}

impl From<Vec<u8>> for RunBuffer {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            len: bytes.len(),
            buf: Zeroizing::new(bytes),
        }
    }
}

impl core::ops::Deref for RunBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl core::fmt::Debug for RunBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunBuffer")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
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
