//! The decrypting state machine for sequential reads, independent of any
//! I/O: the sync and async readers fill its buffer and take its plaintext.

use zeroize::Zeroize;

use crate::Error;
use crate::buffer::grow_wiping;
use crate::format::{Extent, Layout, SegmentSize, TAG_LEN};
use crate::segment::SegmentOpener;

/// The first read's size: buffers grow from here up to one segment.
const INITIAL_BUFFER: usize = 16 * 1024;

pub(crate) struct Decoder {
    pub(crate) cipher: SegmentOpener,
    pub(crate) layout: Layout,
    /// Ciphertext of the current segment, plus one byte of the next one when
    /// the stream's length is not known. It stays intact while the segment
    /// is opened, so a failed segment can be tried as the last one.
    buf: Vec<u8>,
    filled: usize,
    /// The current segment's plaintext, when it was not opened straight
    /// into the caller's buffer.
    plain_buf: Vec<u8>,
    /// Plaintext in `plain_buf` not yet handed out.
    plain: core::ops::Range<usize>,
    /// Whether the current segment was opened into `plain_buf` (`plain` may
    /// be empty).
    decoded: bool,
    /// Whether the byte after the current segment sits in `buf`.
    lookahead: bool,
    pub(crate) index: u64,
    /// The stream's length, once known (after a seek or from a positioned source).
    pub(crate) extent: Option<Extent>,
    /// Set once the segment sealed as last has been decrypted.
    last_decoded: bool,
    /// An error to raise once the current (authentic) plaintext is handed out.
    deferred: Option<Error>,
    failed: Option<Error>,
}

impl Decoder {
    pub(crate) fn new(cipher: SegmentOpener, segment_size: SegmentSize) -> Self {
        Self {
            cipher,
            layout: Layout::new(segment_size),
            buf: Vec::new(),
            filled: 0,
            plain_buf: Vec::new(),
            plain: 0..0,
            decoded: false,
            lookahead: false,
            index: 0,
            extent: None,
            last_decoded: false,
            deferred: None,
            failed: None,
        }
    }

    /// The error that stopped the stream, if any: every later call repeats it.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Stops the stream with `error` (replacing an earlier one).
    pub(crate) fn fail_with(&mut self, error: Error) -> Error {
        self.fail(error)
    }

    fn fail(&mut self, error: Error) -> Error {
        self.plain_buf.as_mut_slice().zeroize();
        self.plain = 0..0;
        self.failed = Some(error.clone());
        error
    }

    /// Bytes allocated for the ciphertext and plaintext buffers.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity() + self.plain_buf.capacity()
    }

    /// Ciphertext bytes wanted for the current segment (with lookahead).
    fn want(&self) -> usize {
        match self.extent {
            Some(extent) => self.layout.segment_len(extent, self.index),
            None => self.layout.full_segment_len(self.index) + 1,
        }
    }

    /// Plaintext ready to be handed out.
    pub(crate) fn plaintext(&self) -> &[u8] {
        self.plain_buf.get(self.plain.clone()).unwrap_or_default()
    }

    /// Whether the whole stream has been authenticated and handed out.
    pub(crate) fn at_end(&self) -> bool {
        self.last_decoded && self.plain.is_empty()
    }

    /// Records that `n` bytes of [`Self::plaintext`] were handed out, and
    /// moves to the next segment when the current one is used up.
    pub(crate) fn consume(&mut self, n: usize) {
        self.plain.start = (self.plain.start + n).min(self.plain.end);
        if self.plain.is_empty() && self.decoded && !self.last_decoded {
            match self.deferred.take() {
                Some(error) => {
                    self.fail(error);
                }
                None => self.next_segment(),
            }
        }
    }

    fn next_segment(&mut self) {
        let len = self.layout.full_segment_len(self.index);
        if self.decoded {
            // Wipe the plaintext handed out.
            if let Some(used) = self.plain_buf.get_mut(..self.plain.end) {
                used.zeroize();
            }
        }
        if self.lookahead {
            let byte = self.buf.get(len).copied().unwrap_or_default();
            if let Some(first) = self.buf.first_mut() {
                *first = byte;
            }
            self.filled = 1;
        } else {
            self.filled = 0;
        }
        self.lookahead = false;
        self.decoded = false;
        self.plain = 0..0;
        self.index += 1;
    }

    /// Where the next ciphertext bytes go; empty when the segment is complete
    /// (call [`Self::decrypt`]) or nothing more is needed.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.decoded || self.last_decoded || self.failed.is_some() {
            return &mut [];
        }
        // Grow the buffer with the data actually received: only once what
        // it holds is full, and then to twice that (from 16 KiB, up to the
        // segment). However large a segment size a short stream claims, this
        // buffer holds at most about twice what the stream delivered (and
        // the plaintext buffer, sized when the segment is opened, as much
        // as it delivered); it reaches the full segment size only for a
        // segment that delivered half of it.
        let want = self.want();
        if self.filled >= self.buf.len() && self.buf.len() < want {
            let target = want.min(self.filled.saturating_mul(2).max(INITIAL_BUFFER));
            self.buf.resize(target, 0);
        }
        let end = want.min(self.buf.len());
        self.buf.get_mut(self.filled..end).unwrap_or_default()
    }

    /// Records that `n` bytes were read into [`Self::spare`].
    pub(crate) fn advance(&mut self, n: usize) {
        self.filled += n;
    }

    /// Decrypts the current segment once [`Self::spare`] is full or the
    /// source is at its end (`eof`).
    pub(crate) fn decrypt(&mut self, eof: bool) -> Result<(), Error> {
        self.check()?;
        if self.decoded || self.last_decoded {
            return Ok(());
        }
        let result = self.decrypt_inner(eof);
        result.map_err(|error| self.fail(error))
    }

    /// Opens the current segment straight into `out` if it is complete, is
    /// known to be an inner segment and its plaintext fits; returns the
    /// plaintext length, and moves to the next segment. `None`: use
    /// [`Self::decrypt`] and [`Self::plaintext`] instead.
    pub(crate) fn decrypt_into(&mut self, out: &mut [u8]) -> Result<Option<usize>, Error> {
        self.check()?;
        if self.decoded || self.last_decoded || !self.plain.is_empty() {
            return Ok(None);
        }
        let full = self.layout.full_segment_len(self.index);
        let len = match self.extent {
            Some(extent) if self.index + 1 < extent.segments && self.filled >= full => full,
            None if self.filled == full + 1 => full,
            _ => return Ok(None),
        };
        let plain_len = len - TAG_LEN;
        let (Some(segment), Some(out)) = (self.buf.get(..len), out.get_mut(..plain_len)) else {
            return Ok(None);
        };
        if let Err(error) = self.cipher.open_inner_to(self.index, segment, out) {
            return Err(self.fail(error));
        }
        self.lookahead = self.extent.is_none();
        self.plain = 0..0;
        self.next_segment();
        Ok(Some(plain_len))
    }

    fn decrypt_inner(&mut self, eof: bool) -> Result<(), Error> {
        let full = self.layout.full_segment_len(self.index);
        let (len, last) = match self.extent {
            Some(extent) => {
                let len = self.layout.segment_len(extent, self.index);
                if self.filled < len {
                    return if eof { Err(Error::Truncated) } else { Ok(()) };
                }
                (len, self.index + 1 == extent.segments)
            }
            None if self.filled == full + 1 => {
                self.lookahead = true;
                (full, false)
            }
            None if eof => {
                if self.filled < TAG_LEN {
                    return Err(Error::Truncated);
                }
                if self.index > 0 && self.filled == TAG_LEN {
                    return Err(Error::Malformed("empty final segment after a full segment"));
                }
                (self.filled, true)
            }
            None => return Ok(()),
        };
        let (plain_len, last) = self.open(self.index, last, len)?;
        self.plain = 0..plain_len;
        self.decoded = true;
        self.last_decoded = last;
        Ok(())
    }

    /// Opens segment `index` (`buf[..len]`) into `plain_buf`. A segment
    /// expected to be the last that verifies only as an inner one is
    /// released, and `Truncated` deferred until its plaintext is handed out.
    /// Returns the plaintext length and whether the segment really is the
    /// last.
    fn open(&mut self, index: u64, last: bool, len: usize) -> Result<(usize, bool), Error> {
        let full = self.layout.full_segment_len(index);
        let plain_len = len.checked_sub(TAG_LEN).ok_or(Error::Truncated)?;
        grow_wiping(&mut self.plain_buf, plain_len);
        let segment = self.buf.get(..len).ok_or(Error::Malformed("segment"))?;
        let out = self
            .plain_buf
            .get_mut(..plain_len)
            .ok_or(Error::Malformed("segment"))?;
        if !last {
            self.cipher.open_inner_to(index, segment, out)?;
            return Ok((plain_len, false));
        }
        let Err(error) = self.cipher.open_to(index, true, segment, out) else {
            return Ok((plain_len, true));
        };
        if len != full || self.cipher.open_to(index, false, segment, out).is_err() {
            return Err(error);
        }
        // Only an inner segment: the stream was cut right after it. When
        // the length came from the source (a seek), the source itself is cut
        // short: fail now. When streaming, release the authentic plaintext
        // first and fail after it.
        if self.extent.is_some() {
            out.zeroize();
            return Err(Error::Truncated);
        }
        self.deferred = Some(Error::Truncated);
        Ok((plain_len, false))
    }

    /// Installs a segment decrypted elsewhere (by a seek): the reader is then
    /// positioned right after it. `buf` holds it at `..len`.
    pub(crate) fn load_segment<F>(
        &mut self,
        extent: Extent,
        index: u64,
        offset: usize,
        read: F,
    ) -> Result<(), Error>
    where
        F: FnOnce(&mut [u8]) -> Result<(), Error>,
    {
        self.check()?;
        let result = self.load_inner(extent, index, offset, read);
        result.map_err(|error| self.fail(error))
    }

    fn load_inner<F>(
        &mut self,
        extent: Extent,
        index: u64,
        offset: usize,
        read: F,
    ) -> Result<(), Error>
    where
        F: FnOnce(&mut [u8]) -> Result<(), Error>,
    {
        self.plain_buf.as_mut_slice().zeroize();
        self.extent = Some(extent);
        self.index = index;
        self.lookahead = false;
        let len = self.layout.segment_len(extent, index);
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let last = index + 1 == extent.segments;
        let segment = self.buf.get_mut(..len).ok_or(Error::Malformed("segment"))?;
        read(segment)?;
        self.filled = len;
        self.deferred = None;
        let (plain_len, last) = self.open(index, last, len)?;
        self.plain = offset.min(plain_len)..plain_len;
        self.decoded = true;
        self.last_decoded = last;
        Ok(())
    }

    /// Positions the decoder past the end of the plaintext (after a seek
    /// there): reads return end-of-stream.
    pub(crate) fn set_at_end(&mut self, extent: Extent) {
        self.plain_buf.as_mut_slice().zeroize();
        self.extent = Some(extent);
        self.index = extent.segments - 1;
        self.plain = 0..0;
        self.decoded = true;
        self.last_decoded = true;
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.plain_buf.zeroize();
    }
}
