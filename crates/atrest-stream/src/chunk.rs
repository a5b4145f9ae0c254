//! A run of consecutive segments in one buffer, sealed or opened in place:
//! the unit of work of the threaded pipeline and of sealing and opening a
//! run at a time ([`crate::runs`]).

use std::ops::Range;

use crate::Error;
use crate::format::{Layout, TAG_LEN};
use crate::segment::{LastSegment, SegmentOpener, SegmentSealer};
use crate::sink::Buffer;

/// Aim for chunks of about this many bytes.
const CHUNK_BYTES: usize = 256 << 10;

/// How many segments of `segment_size` bytes a chunk holds: about
/// [`CHUNK_BYTES`], at least one.
pub(crate) fn segments_per_chunk(segment_size: usize) -> usize {
    (CHUNK_BYTES / segment_size).max(1)
}

/// A run of consecutive segments in one buffer.
pub(crate) struct Chunk {
    /// Position in the stream, from 0.
    pub(crate) number: u64,
    pub(crate) buf: Buffer,
    /// Index of the first segment.
    pub(crate) first_segment: u64,
    /// Each segment's slot in `buf` and its data length (plaintext when
    /// encrypting, ciphertext when decrypting).
    pub(crate) segments: Vec<(usize, usize)>,
    /// Whether the chunk ends with the stream's last segment.
    pub(crate) last: bool,
    /// After the work: the bytes of `buf` to write (ciphertext when
    /// encrypting; when decrypting, the plaintext of every segment, moved
    /// together at the start).
    pub(crate) output: Range<usize>,
}

pub(crate) fn seal_chunk(cipher: &SegmentSealer, chunk: &mut Chunk) -> Result<(), Error> {
    let count = chunk.segments.len();
    let (mut start, mut end) = (0usize, 0usize);
    for (i, &(offset, len)) in chunk.segments.iter().enumerate() {
        let last = chunk.last && i + 1 == count;
        let slot = chunk
            .buf
            .get_mut(offset..offset + len + TAG_LEN)
            .ok_or(Error::Malformed("chunk"))?;
        let (body, tag) = slot.split_at_mut(len);
        tag.copy_from_slice(&cipher.seal(chunk.first_segment + i as u64, last, body)?);
        if i == 0 {
            start = offset;
        }
        end = offset + len + TAG_LEN;
    }
    // Every segment but the stream's last fills its slot, so the chunk's
    // ciphertext is contiguous.
    chunk.output = start..end;
    Ok(())
}

pub(crate) fn open_chunk(
    cipher: &SegmentOpener,
    layout: Layout,
    chunk: &mut Chunk,
) -> Result<(), Error> {
    let count = chunk.segments.len();
    // Each segment's plaintext goes right after the previous one's, so the
    // chunk's plaintext ends up contiguous at the start of the buffer (each
    // lies no later than its own ciphertext, which it replaces).
    let mut out = 0usize;
    for (i, &(offset, len)) in chunk.segments.iter().enumerate() {
        let index = chunk.first_segment + i as u64;
        let plain = if chunk.last && i + 1 == count {
            if len < TAG_LEN {
                return Err(Error::Truncated);
            }
            if index > 0 && len == TAG_LEN {
                return Err(Error::Malformed("empty final segment after a full segment"));
            }
            let segment = chunk
                .buf
                .get_mut(offset..offset + len)
                .ok_or(Error::Malformed("chunk"))?;
            let plain = match cipher.open_last(index, segment, layout.full_segment_len(index))? {
                LastSegment::Last(n) => n,
                LastSegment::CutAfter(_) => return Err(Error::Truncated),
            };
            chunk.buf.copy_within(offset..offset + plain, out);
            plain
        } else if chunk.last || i + 1 == count {
            // In the final chunk and at the end of every chunk, a segment
            // that fails as an inner one is tried as the last one (bytes
            // appended after the stream's real end): that needs its
            // ciphertext intact, so it is opened from a copy. Elsewhere a
            // segment is opened in place; the real end lies there only when
            // more than a chunk's remainder was appended.
            let ciphertext = chunk
                .buf
                .get(offset..offset + len)
                .ok_or(Error::Malformed("chunk"))?
                .to_vec();
            let plain = len.checked_sub(TAG_LEN).ok_or(Error::Truncated)?;
            let to = chunk
                .buf
                .get_mut(out..out + plain)
                .ok_or(Error::Malformed("chunk"))?;
            cipher.open_inner_to(index, &ciphertext, to)?;
            plain
        } else {
            let region = chunk
                .buf
                .get_mut(out..offset + len)
                .ok_or(Error::Malformed("chunk"))?;
            let src = offset.checked_sub(out).ok_or(Error::Malformed("chunk"))?;
            cipher.open_shifted(index, false, region, src)?
        };
        out += plain;
    }
    chunk.output = 0..out;
    Ok(())
}
