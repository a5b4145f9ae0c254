//! Random-access decryption from sources that support positioned reads.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;

use atrest_filekey::FileKey;
use zeroize::Zeroize;

use crate::buffer::grow_wiping;
use crate::format::{Extent, HEADER_LEN, Layout, SegmentSize};
use crate::schedule;
use crate::segment::{LastSegment, SegmentOpener, diagnose_end};
use crate::{Backend, Error};

/// A source of ciphertext that can be read at any offset without moving a
/// cursor, so one source serves many concurrent range reads.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at or past the end).
    ///
    /// # Errors
    /// I/O errors of the source.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The source's length in bytes.
    ///
    /// # Errors
    /// I/O errors of the source.
    fn size(&self) -> io::Result<u64>;

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the source ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = buf.get_mut(n..).unwrap_or_default();
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let available = self.get(start..).unwrap_or_default();
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

#[cfg(windows)]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

/// Decrypts any byte range of a stream held in a [`ReadAt`] source, reading
/// and decrypting only the segments that cover the range.
///
/// Made by [`Opener::random_access`](crate::Opener::random_access), which
/// checks the header and key commitment and authenticates the final
/// segment, so [`RandomAccess::plaintext_len`] can be trusted. Methods take
/// `&self`: one `RandomAccess` serves concurrent readers (for example HTTP
/// range requests).
///
/// ```
/// use atrest_filekey::FileKey;
/// use atrest_stream::{Opener, Options, Sealer};
///
/// let key = FileKey::generate()?;
/// let plaintext = vec![7u8; 1_000_000];
/// let ciphertext = Sealer::new(&key, b"context", Options::default()).seal(&plaintext)?;
///
/// let file = Opener::new(&key, b"context", Options::default()).random_access(ciphertext)?;
/// assert_eq!(file.plaintext_len(), 1_000_000);
/// let mut part = vec![0u8; 1000];
/// assert_eq!(file.read_at(&mut part, 500_000)?, 1000);
/// assert_eq!(part, &plaintext[500_000..501_000]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RandomAccess<S> {
    source: S,
    cipher: SegmentOpener,
    layout: Layout,
    extent: Extent,
}

impl<S: ReadAt> RandomAccess<S> {
    /// Opens the stream in `source`: checks the header (and the segment size
    /// against `expected`, if any) and the key commitment, and authenticates
    /// the final segment.
    pub(crate) fn new(
        source: S,
        key: &FileKey,
        associated_data: &[u8],
        backend: Backend,
        expected: Option<SegmentSize>,
    ) -> Result<Self, Error> {
        let mut header = [0u8; HEADER_LEN];
        read_exact_at(&source, &mut header, 0)?;
        let (segment_size, cipher) =
            schedule::open_stream(&header, key, associated_data, backend, expected)?;
        let layout = Layout::new(segment_size);
        let stream_len = source.size()?;
        let diagnose = |error| {
            diagnose_end(&cipher, layout, stream_len, error, |at, buf| {
                read_exact_at(&source, buf, at)
            })
        };
        let extent = layout.for_stream(stream_len).map_err(diagnose)?;
        let stream = Self {
            source,
            cipher,
            layout,
            extent,
        };
        let mut scratch = vec![0u8; layout.segment_len(extent, extent.segments - 1)];
        let result = stream
            .segment(extent.segments - 1, &mut scratch)
            .map(|_| ());
        scratch.zeroize();
        match result {
            Ok(()) => Ok(stream),
            Err(error @ Error::AuthenticationFailed) if extent.segments > 1 => Err(diagnose_end(
                &stream.cipher,
                layout,
                stream_len,
                error,
                |at, buf| read_exact_at(&stream.source, buf, at),
            )),
            Err(error) => Err(error),
        }
    }

    /// The plaintext length (authenticated).
    pub fn plaintext_len(&self) -> u64 {
        self.extent.plaintext_len
    }

    /// The source.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// Reads and decrypts segment `index` into `scratch`; returns its plaintext.
    fn segment<'a>(&self, index: u64, scratch: &'a mut [u8]) -> Result<&'a [u8], Error> {
        let len = self.layout.segment_len(self.extent, index);
        let segment = scratch.get_mut(..len).ok_or(Error::Malformed("segment"))?;
        read_exact_at(&self.source, segment, self.layout.ciphertext_start(index))?;
        let plain_len = if index + 1 == self.extent.segments {
            match self
                .cipher
                .open_last(index, segment, self.layout.full_segment_len(index))?
            {
                LastSegment::Last(len) => len,
                LastSegment::CutAfter(_) => {
                    segment.zeroize();
                    return Err(Error::Truncated);
                }
            }
        } else {
            // The final segment verified when the stream was opened, so an
            // inner segment that fails was altered, not followed by bytes.
            self.cipher.open(index, false, segment)?
        };
        Ok(segment.get(..plain_len).unwrap_or_default())
    }

    /// Calls `sink` with the plaintext of `range`, one piece per segment.
    fn for_each_piece(
        &self,
        range: Range<u64>,
        mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if range.start >= range.end {
            return Ok(());
        }
        let (first, mut offset) = self.layout.locate(range.start);
        let mut remaining = range.end - range.start;
        let mut index = first;
        // Sized for the segments the range touches, not the nominal segment
        // size, so small streams stay cheap.
        let mut scratch = vec![0u8; self.layout.segment_len(self.extent, first)];
        let result = loop {
            let plaintext = match self.segment(index, &mut scratch) {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            let available = plaintext.get(offset..).unwrap_or_default();
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(available.len());
            if let Err(e) = sink(available.get(..take).unwrap_or_default()) {
                break Err(e);
            }
            remaining -= take as u64;
            if remaining == 0 {
                break Ok(());
            }
            offset = 0;
            index += 1;
            // The scratch holds the previous segment's plaintext: grow it
            // without leaving a copy in freed memory.
            grow_wiping(&mut scratch, self.layout.segment_len(self.extent, index));
        };
        scratch.zeroize();
        result
    }

    /// Decrypts up to `buf.len()` plaintext bytes starting at `offset`;
    /// returns how many (0 at or past the end).
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if a covering segment fails to verify,
    /// or I/O errors of the source.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Error> {
        let end = offset
            .saturating_add(buf.len() as u64)
            .min(self.extent.plaintext_len);
        if offset >= end {
            return Ok(0);
        }
        let mut written = 0usize;
        self.for_each_piece(offset..end, |piece| {
            let dst = buf
                .get_mut(written..written + piece.len())
                .ok_or(Error::Malformed("range"))?;
            dst.copy_from_slice(piece);
            written += piece.len();
            Ok(())
        })?;
        Ok(written)
    }

    /// Decrypts plaintext bytes `range` into `out`.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] if the range is reversed or extends past the
    /// plaintext; otherwise as for [`RandomAccess::read_at`], plus write errors.
    pub fn copy_range(&self, range: Range<u64>, out: &mut impl Write) -> Result<u64, Error> {
        let len = self.extent.plaintext_len;
        if range.start > range.end || range.end > len {
            return Err(Error::InvalidRange {
                start: range.start,
                end: range.end,
                len,
            });
        }
        self.for_each_piece(range.clone(), |piece| {
            out.write_all(piece).map_err(Error::from)
        })?;
        Ok(range.end - range.start)
    }
}

fn read_exact_at(source: &impl ReadAt, buf: &mut [u8], offset: u64) -> Result<(), Error> {
    source
        .read_exact_at(buf, offset)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Truncated,
            _ => Error::from(e),
        })
}
