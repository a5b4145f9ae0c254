//! The stream format's byte layout, for callers that plan reads, size
//! buffers or check stored lengths without decrypting: the constants, the
//! envelope prefix ([`parse_prefix`]) and the geometry of segments
//! ([`Layout`], [`Extent`]). No keys here; [`crate::spec`] is the
//! specification.

use atrest_filekey::KeyCommitment;

use crate::Error;

/// The magic bytes that start every atrest stream: `"ATRS"`.
pub const MAGIC: [u8; 4] = *b"ATRS";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Suite 1: AES-256-GCM, HKDF-SHA256, Tink STREAM segments.
pub const SUITE_AES256_GCM_HKDF_SHA256: u8 = 1;

/// Length of the envelope prefix.
pub const PREFIX_LEN: usize = 42;
/// Length of the Tink header: length byte, salt, nonce prefix.
pub const TINK_HEADER_LEN: usize = 1 + SALT_LEN + NONCE_PREFIX_LEN;
/// Length of everything before the first segment.
pub const HEADER_LEN: usize = PREFIX_LEN + TINK_HEADER_LEN;
/// Length of a GCM tag.
pub const TAG_LEN: usize = 16;

/// The Tink header's first byte: its own length.
pub(crate) const TINK_HEADER_LEN_BYTE: u8 = 40;
const _: () = assert!(TINK_HEADER_LEN == TINK_HEADER_LEN_BYTE as usize);

pub(crate) const SALT_LEN: usize = 32;
pub(crate) const NONCE_PREFIX_LEN: usize = 7;

/// The most segments a stream can have: indices are 32-bit.
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// The ciphertext segment size: how many bytes each sealed segment takes.
///
/// `256 <= S <= 16 MiB`. A segment holds `S - 16` plaintext bytes, except the
/// first, which holds `S - 56` (it shares `S` with the 40-byte Tink header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentSize(u32);

impl SegmentSize {
    /// The smallest segment size.
    pub const MIN: Self = Self(256);
    /// The largest segment size (16 MiB).
    pub const MAX: Self = Self(16 << 20);
    /// The default segment size (64 KiB; see `FORMAT.md` for why).
    pub const DEFAULT: Self = Self(64 << 10);

    /// A segment size of `bytes`.
    ///
    /// # Errors
    /// [`Error::InvalidSegmentSize`] outside `256..=16 MiB`.
    pub const fn new(bytes: u32) -> Result<Self, Error> {
        if bytes < Self::MIN.0 || bytes > Self::MAX.0 {
            return Err(Error::InvalidSegmentSize(bytes));
        }
        Ok(Self(bytes))
    }

    /// The size in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Plaintext bytes in the first segment.
    pub const fn first_plaintext_len(self) -> usize {
        self.0 as usize - TINK_HEADER_LEN - TAG_LEN
    }

    /// Plaintext bytes in every other full segment.
    pub const fn plaintext_len(self) -> usize {
        self.0 as usize - TAG_LEN
    }
}

impl Default for SegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Encodes the envelope prefix.
pub(crate) fn encode_prefix(
    segment_size: SegmentSize,
    commitment: &KeyCommitment,
) -> [u8; PREFIX_LEN] {
    let mut prefix = [0u8; PREFIX_LEN];
    let (magic, rest) = prefix.split_at_mut(4);
    let (fixed, rest) = rest.split_at_mut(2);
    let (size, commit) = rest.split_at_mut(4);
    magic.copy_from_slice(&MAGIC);
    fixed.copy_from_slice(&[FORMAT_VERSION, SUITE_AES256_GCM_HKDF_SHA256]);
    size.copy_from_slice(&segment_size.get().to_be_bytes());
    commit.copy_from_slice(commitment.as_bytes());
    prefix
}

/// The fields of a parsed envelope prefix.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    /// The stream's segment size.
    pub segment_size: SegmentSize,
    /// The commitment to the file key the stream was made with.
    pub commitment: KeyCommitment,
}

/// Parses an envelope prefix, checking magic, version, suite and segment size.
///
/// # Errors
/// [`Error::Malformed`], [`Error::UnsupportedVersion`] or
/// [`Error::UnsupportedSuite`].
pub fn parse_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<Prefix, Error> {
    let (magic, rest) = prefix.split_at(4);
    let (fixed, rest) = rest.split_at(2);
    let (size, commit) = rest.split_at(4);
    if magic != MAGIC {
        return Err(Error::Malformed("not an atrest stream (bad magic)"));
    }
    let (version, suite) = match fixed {
        [version, suite] => (*version, *suite),
        _ => return Err(Error::Malformed("prefix")),
    };
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    if suite != SUITE_AES256_GCM_HKDF_SHA256 {
        return Err(Error::UnsupportedSuite(suite));
    }
    let size = u32::from_be_bytes(size.try_into().map_err(|_| Error::Malformed("prefix"))?);
    let segment_size =
        SegmentSize::new(size).map_err(|_| Error::Malformed("segment size out of range"))?;
    let commitment =
        KeyCommitment::from_bytes(commit.try_into().map_err(|_| Error::Malformed("prefix"))?);
    Ok(Prefix {
        segment_size,
        commitment,
    })
}

/// Where segments lie in a stream of a given segment size: the geometry
/// every reader and writer of this crate uses, for callers that plan reads,
/// size buffers or check stored lengths without decrypting.
///
/// Segment `0` holds `S - 56` plaintext bytes, every other full segment
/// `S - 16`; ciphertext offsets count from the stream's first byte (the
/// envelope prefix).
///
/// ```
/// use atrest_stream::SegmentSize;
/// use atrest_stream::format::Layout;
///
/// let layout = Layout::new(SegmentSize::DEFAULT);
/// let extent = layout.for_plaintext(1_000_000)?;
/// assert_eq!(extent.segments, 16);
/// let stream_len = extent.stream_len();
/// assert_eq!(layout.for_stream(stream_len)?, extent);
/// // The segments a read of plaintext bytes 100_000..300_000 decrypts.
/// let segments = layout.segments_covering(100_000..300_000);
/// assert_eq!(segments, 1..5);
/// # Ok::<(), atrest_stream::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    segment_size: SegmentSize,
}

/// Position and size of a stream's segments once its length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Plaintext length.
    pub plaintext_len: u64,
    /// Number of segments (at least 1).
    pub segments: u64,
}

impl Extent {
    /// Total stream length (prefix and header included).
    pub const fn stream_len(self) -> u64 {
        HEADER_LEN as u64 + self.plaintext_len + TAG_LEN as u64 * self.segments
    }
}

impl Layout {
    /// The layout of streams with `segment_size`.
    pub const fn new(segment_size: SegmentSize) -> Self {
        Self { segment_size }
    }

    /// The segment size.
    pub const fn segment_size(self) -> SegmentSize {
        self.segment_size
    }

    fn s(self) -> u64 {
        u64::from(self.segment_size.get())
    }

    /// Ciphertext bytes of a full segment `index` (tag included).
    pub fn full_segment_len(self, index: u64) -> usize {
        if index == 0 {
            self.segment_size.get() as usize - TINK_HEADER_LEN
        } else {
            self.segment_size.get() as usize
        }
    }

    /// Plaintext offset where segment `index` starts.
    pub fn plaintext_start(self, index: u64) -> u64 {
        match index {
            0 => 0,
            i => (self.s() - 56) + (i - 1) * (self.s() - 16),
        }
    }

    /// Stream offset where segment `index` starts.
    pub fn ciphertext_start(self, index: u64) -> u64 {
        match index {
            0 => HEADER_LEN as u64,
            i => HEADER_LEN as u64 + (self.s() - 40) + (i - 1) * self.s(),
        }
    }

    /// The segment holding plaintext offset `offset`, and the offset within it.
    pub fn locate(self, offset: u64) -> (u64, usize) {
        let first = self.s() - 56;
        if offset < first {
            return (0, within_segment(offset));
        }
        let rest = offset - first;
        let per = self.s() - 16;
        (1 + rest / per, within_segment(rest % per))
    }

    /// The segments a read of the plaintext bytes `range` decrypts (empty
    /// for an empty range).
    pub fn segments_covering(self, range: core::ops::Range<u64>) -> core::ops::Range<u64> {
        if range.start >= range.end {
            return 0..0;
        }
        self.locate(range.start).0..self.locate(range.end - 1).0 + 1
    }

    /// The stream's extent for a plaintext of `plaintext_len` bytes.
    ///
    /// # Errors
    /// [`Error::TooLong`] past 2^32 segments.
    pub fn for_plaintext(self, plaintext_len: u64) -> Result<Extent, Error> {
        let first = self.s() - 56;
        let segments = if plaintext_len <= first {
            1
        } else {
            1 + (plaintext_len - first).div_ceil(self.s() - 16)
        };
        if segments > MAX_SEGMENTS {
            return Err(Error::TooLong);
        }
        Ok(Extent {
            plaintext_len,
            segments,
        })
    }

    /// The extent of a stream of `stream_len` bytes, checking that the length
    /// is one a canonical encoder can produce. The length is not
    /// authenticated until the final segment verifies.
    ///
    /// # Errors
    /// [`Error::Truncated`] if too short for the header and one tag or if the
    /// last segment is shorter than a tag; [`Error::Malformed`] for an empty
    /// last segment after a full one; [`Error::TooLong`] past 2^32 segments.
    pub fn for_stream(self, stream_len: u64) -> Result<Extent, Error> {
        let min = (HEADER_LEN + TAG_LEN) as u64;
        if stream_len < min {
            return Err(Error::Truncated);
        }
        let body = stream_len - HEADER_LEN as u64;
        let first = self.s() - 40;
        if body <= first {
            return Ok(Extent {
                plaintext_len: body - TAG_LEN as u64,
                segments: 1,
            });
        }
        let rest = body - first;
        let segments = 1 + rest.div_ceil(self.s());
        let last = rest - (segments - 2) * self.s();
        if last < TAG_LEN as u64 {
            return Err(Error::Truncated);
        }
        if last == TAG_LEN as u64 {
            return Err(Error::Malformed("empty final segment after a full segment"));
        }
        if segments > MAX_SEGMENTS {
            return Err(Error::TooLong);
        }
        Ok(Extent {
            plaintext_len: body - TAG_LEN as u64 * segments,
            segments,
        })
    }

    /// Ciphertext length (tag included) of segment `index` of `extent`.
    pub fn segment_len(self, extent: Extent, index: u64) -> usize {
        if index + 1 < extent.segments {
            return self.full_segment_len(index);
        }
        let start = self.plaintext_start(index);
        within_segment(extent.plaintext_len - start) + TAG_LEN
    }
}

/// Converts a length or offset bounded by the segment size (at most 16 MiB).
fn within_segment(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_in_both_directions() {
        for s in [256u32, 300, 4096, 65536] {
            let layout = Layout::new(SegmentSize::new(s).unwrap());
            let (p0, p) = (u64::from(s) - 56, u64::from(s) - 16);
            for len in [
                0,
                1,
                p0 - 1,
                p0,
                p0 + 1,
                p0 + p - 1,
                p0 + p,
                p0 + p + 1,
                p0 + 5 * p,
                p0 + 5 * p + 3,
            ] {
                let extent = layout.for_plaintext(len).unwrap();
                let stream_len = extent.stream_len();
                assert_eq!(
                    layout.for_stream(stream_len).unwrap(),
                    extent,
                    "s={s} len={len}"
                );
                let last = extent.segments - 1;
                assert_eq!(
                    layout.ciphertext_start(last) + layout.segment_len(extent, last) as u64,
                    stream_len
                );
                if len > 0 {
                    let (index, within) = layout.locate(len - 1);
                    assert_eq!(index, last, "s={s} len={len}");
                    assert_eq!(layout.plaintext_start(index) + within as u64, len - 1);
                }
            }
        }
    }

    #[test]
    fn non_canonical_lengths_are_rejected() {
        let layout = Layout::new(SegmentSize::new(256).unwrap());
        assert!(matches!(layout.for_stream(0), Err(Error::Truncated)));
        assert!(matches!(layout.for_stream(97), Err(Error::Truncated)));
        assert!(layout.for_stream(98).is_ok());
        // Header + full first segment + 16 bytes: an empty final segment.
        assert!(matches!(
            layout.for_stream(82 + 216 + 16),
            Err(Error::Malformed(_))
        ));
        // Header + full first segment + 1..15 bytes: a torn tag.
        assert!(matches!(
            layout.for_stream(82 + 216 + 15),
            Err(Error::Truncated)
        ));
        assert!(layout.for_stream(82 + 216 + 17).is_ok());
    }
}
