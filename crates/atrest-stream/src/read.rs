//! The streaming decryptor for `std::io::Read`, seekable over `Read + Seek`.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

use atrest_filekey::FileKey;

use crate::decoder::Decoder;
use crate::format::{Extent, HEADER_LEN, SegmentSize};
use crate::schedule;
use crate::segment::diagnose_end;
use crate::{Backend, Error};

/// Decrypts a stream read from `R`. Made by
/// [`Opener::reader`](crate::Opener::reader).
///
/// Plaintext is released one segment at a time, only after that segment's
/// tag verified; end-of-stream is reported only after the segment sealed as
/// the last one verified. After any error every further call fails the same
/// way.
///
/// With `R: Seek` the decryptor implements [`Seek`] over the plaintext. The
/// first seek finds the stream's length and authenticates the final segment
/// before trusting it; later reads decrypt only the segments they touch.
///
/// ```
/// use std::io::{Read, Seek, SeekFrom};
/// use atrest_filekey::FileKey;
/// use atrest_stream::{Opener, Options, Sealer};
///
/// let key = FileKey::generate()?;
/// let plaintext: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
/// let ciphertext = Sealer::new(&key, b"context", Options::default()).seal(&plaintext)?;
///
/// let opener = Opener::new(&key, b"context", Options::default());
/// let mut decryptor = opener.reader(std::io::Cursor::new(ciphertext))?;
/// decryptor.seek(SeekFrom::Start(150_000))?;
/// let mut chunk = [0u8; 10];
/// decryptor.read_exact(&mut chunk)?;
/// assert_eq!(&chunk, &plaintext[150_000..150_010]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Decryptor<R> {
    inner: R,
    decoder: Decoder,
    /// Ciphertext bytes taken from `inner` since the stream's start, while the
    /// decryptor has not seeked (used to find where the stream starts).
    consumed: u64,
    /// Stream offset of the stream's first byte in `inner`, once known.
    base: Option<u64>,
    /// Plaintext position.
    position: u64,
}

impl<R: Read> Decryptor<R> {
    /// Reads and checks the stream's prefix and header (and the segment size
    /// against `expected`, if any), and verifies that `key` is the key the
    /// stream was made with.
    pub(crate) fn new(
        mut reader: R,
        key: &FileKey,
        associated_data: &[u8],
        backend: Backend,
        expected: Option<SegmentSize>,
    ) -> Result<Self, Error> {
        let mut header = [0u8; HEADER_LEN];
        read_full(&mut reader, &mut header)?;
        let (segment_size, cipher) =
            schedule::open_stream(&header, key, associated_data, backend, expected)?;
        Ok(Self {
            inner: reader,
            decoder: Decoder::new(cipher, segment_size),
            consumed: HEADER_LEN as u64,
            base: None,
            position: 0,
        })
    }

    /// Bytes allocated for the decryptor's buffers.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.decoder.allocated()
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Makes plaintext ready in the decoder, or, when a whole inner segment
    /// is in and its plaintext fits `out`, opens it straight into `out`
    /// (returning its length) so no plaintext is copied.
    fn fill(&mut self, out: &mut [u8]) -> Result<Option<usize>, Error> {
        loop {
            self.decoder.check()?;
            if !self.decoder.plaintext().is_empty() || self.decoder.at_end() {
                return Ok(None);
            }
            let spare = self.decoder.spare();
            if spare.is_empty() {
                if let Some(n) = self.decoder.decrypt_into(out)? {
                    return Ok(Some(n));
                }
                self.decoder.decrypt(false)?;
                continue;
            }
            match self.inner.read(spare) {
                Ok(0) => self.decoder.decrypt(true)?,
                Ok(n) => {
                    self.decoder.advance(n);
                    self.consumed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes; a short source is [`Error::Truncated`].
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated,
        _ => Error::from(e),
    })
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(n) = self.fill(out)? {
            self.position += n as u64;
            return Ok(n);
        }
        let plaintext = self.decoder.plaintext();
        let n = plaintext.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), plaintext.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.decoder.consume(n);
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Decryptor<R> {
    /// The plaintext length. Authenticates the final segment first (once).
    ///
    /// # Errors
    /// As for [`Seek::seek`].
    pub fn plaintext_len(&mut self) -> Result<u64, Error> {
        Ok(self.extent()?.plaintext_len)
    }

    fn extent(&mut self) -> Result<Extent, Error> {
        self.decoder.check()?;
        if let (Some(extent), Some(_)) = (self.decoder.extent, self.base) {
            return Ok(extent);
        }
        let here = self.inner.stream_position()?;
        let base = here
            .checked_sub(self.consumed)
            .ok_or(Error::Misuse("reader moved behind the stream"))?;
        let end = self.inner.seek(SeekFrom::End(0))?;
        let stream_len = end.checked_sub(base).ok_or(Error::Truncated)?;
        let layout = self.decoder.layout;
        let extent = match layout.for_stream(stream_len) {
            Ok(extent) => extent,
            Err(error) => return Err(self.diagnose_end(base, stream_len, error)),
        };
        self.base = Some(base);
        // Authenticate the final segment before trusting the length.
        match self.load(extent, extent.segments - 1, 0) {
            Err(error @ Error::AuthenticationFailed) if extent.segments > 1 => {
                return Err(self.diagnose_end(base, stream_len, error));
            }
            other => other?,
        }
        // The current position's segment is reloaded on the next read.
        let position = self.position;
        self.position = u64::MAX;
        self.seek_to(extent, position)?;
        Ok(extent)
    }

    /// Explains a rejected length or final segment as a sequential read
    /// would (see [`Error::TrailingData`]). The decoder has failed already,
    /// so the error is recorded as the one every later call repeats.
    fn diagnose_end(&mut self, base: u64, stream_len: u64, error: Error) -> Error {
        let inner = &mut self.inner;
        let layout = self.decoder.layout;
        let error = diagnose_end(
            &self.decoder.cipher,
            layout,
            stream_len,
            error,
            |at, buf| {
                inner.seek(SeekFrom::Start(base + at))?;
                read_full(inner, buf)
            },
        );
        self.decoder.fail_with(error)
    }

    fn load(&mut self, extent: Extent, index: u64, offset: usize) -> Result<(), Error> {
        let base = self.base.ok_or(Error::Misuse("stream start unknown"))?;
        let start = base + self.decoder.layout.ciphertext_start(index);
        let inner = &mut self.inner;
        self.decoder.load_segment(extent, index, offset, |segment| {
            inner.seek(SeekFrom::Start(start))?;
            read_full(inner, segment)
        })
    }

    fn seek_to(&mut self, extent: Extent, target: u64) -> Result<(), Error> {
        if target == self.position {
            return Ok(());
        }
        if target >= extent.plaintext_len {
            self.decoder.set_at_end(extent);
        } else {
            let (index, offset) = self.decoder.layout.locate(target);
            self.load(extent, index, offset)?;
        }
        self.position = target;
        Ok(())
    }

    /// Decrypts plaintext bytes `range` into `out`, reading and decrypting only
    /// the segments that cover it. Returns the number of bytes written.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] if the range is reversed or extends past the
    /// plaintext; otherwise as for reading.
    pub fn copy_range(&mut self, range: Range<u64>, out: &mut impl Write) -> Result<u64, Error> {
        let len = self.plaintext_len()?;
        if range.start > range.end || range.end > len {
            return Err(Error::InvalidRange {
                start: range.start,
                end: range.end,
                len,
            });
        }
        self.seek(SeekFrom::Start(range.start))?;
        let copied = io::copy(&mut self.by_ref().take(range.end - range.start), out)?;
        Ok(copied)
    }
}

impl<R: Read + Seek> Seek for Decryptor<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let extent = self.extent()?;
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => extent.plaintext_len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.seek_to(extent, target)?;
        Ok(target)
    }
}
