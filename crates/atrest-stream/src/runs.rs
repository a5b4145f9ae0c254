//! Sealing and opening a stream a run of segments at a time, with no I/O:
//! for callers that move the bytes themselves — an async upload that reads
//! a request body and writes to an object store, a reader that fetches
//! byte ranges — and decide where the cipher runs (inline, a run per poll,
//! or on a thread pool).
//!
//! A run is a few consecutive segments (about 256 KiB) in one buffer,
//! sealed or opened in place in one call: the same unit, the same checks
//! and the same bytes as the threaded [`Sealer::seal_stream`] and
//! [`Opener::open_stream`]. Runs carry what they need (a shared handle on
//! the segment key), so they can be sent to another thread.
//!
//! # Sealing
//!
//! [`Sealer::runs`] starts a stream; [`RunSealer::next_run`] gives the
//! runs in order, the first with the stream's header in front. Fill each
//! with plaintext ([`PlaintextRun::fill`], or [`PlaintextRun::spare`] and
//! [`PlaintextRun::advance`] to read into it directly) and seal it. A run
//! is sealed as the last one only once the source ended: a full run with
//! more plaintext after it is sealed with `last` false, so keep the next
//! byte before sealing (a stream never ends with an empty segment after a
//! full one). The sealed runs, in order, are the stream.
//!
//! ```
//! use atrest_filekey::FileKey;
//! use atrest_stream::{Opener, Options, Sealer};
//!
//! let key = FileKey::generate()?;
//! let plaintext = vec![7u8; 1_000_000];
//! let mut runs = Sealer::new(&key, b"context", Options::default()).runs()?;
//! let mut stream = Vec::new();
//! let mut rest = &plaintext[..];
//! loop {
//!     let mut run = runs.next_run();
//!     rest = &rest[run.fill(rest)..];
//!     let last = rest.is_empty();
//!     stream.extend_from_slice(run.seal(last)?.as_slice());
//!     if last {
//!         break;
//!     }
//! }
//! assert_eq!(Opener::new(&key, b"context", Options::default()).open(&stream)?, plaintext);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Opening
//!
//! [`Opener::runs`] checks a stream's header (prefix, segment size, key
//! commitment). [`RunOpener::open`] then opens the ciphertext of any run
//! of whole segments, from any segment on, into a [`PlaintextChunk`]: read
//! runs in order from the start, or fetch the ones a byte range needs
//! ([`RunOpener::layout`] says where segments lie). Each segment is opened
//! with its index and whether it is the stream's last, so a run is
//! authentic only where it is; a caller reading sequentially says a run is
//! the last once the source ended after it.
//!
//! ```
//! use atrest_filekey::FileKey;
//! use atrest_stream::format::HEADER_LEN;
//! use atrest_stream::{Opener, Options, Sealer};
//!
//! let key = FileKey::generate()?;
//! let plaintext = vec![7u8; 1_000_000];
//! let stream = Sealer::new(&key, b"context", Options::default()).seal(&plaintext)?;
//!
//! let header: &[u8; HEADER_LEN] = stream[..HEADER_LEN].try_into()?;
//! let runs = Opener::new(&key, b"context", Options::default()).runs(header)?;
//! let (mut segment, mut at, mut opened) = (0, HEADER_LEN, Vec::new());
//! while at < stream.len() {
//!     let len = runs.run_len(segment).min(stream.len() - at);
//!     let last = at + len == stream.len();
//!     let mut ciphertext = runs.buffer();
//!     ciphertext.extend_from_slice(&stream[at..at + len]);
//!     let chunk = runs.open(segment, ciphertext, last)?;
//!     opened.extend_from_slice(&chunk);
//!     segment += runs.segments_per_run();
//!     at += len;
//! }
//! assert_eq!(opened, plaintext);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use zeroize::Zeroize;

use crate::buffer::{RunBuffer, grow_wiping};
use crate::chunk::{Chunk, open_chunk, segments_per_chunk};
use crate::format::{HEADER_LEN, Layout, MAX_SEGMENTS, SegmentSize, TAG_LEN};
use crate::segment::{SegmentOpener, SegmentSealer};
use crate::sink::{Buffer, PlaintextChunk, Pool};
use crate::{Error, Opener, Sealer};

/// The first growth of a slot: slots grow with the plaintext that arrives,
/// so a small file does not cost a whole segment.
const INITIAL_SLOT: usize = 16 * 1024;

/// Buffers a stream's runs share: a run sealed (or a chunk opened) gives
/// its buffer back, and a later run takes it, so a stream reuses a few
/// buffers however long it is.
const POOLED: usize = 8;

/// Seals one new stream a run at a time; see the [module](self) docs.
/// Made by [`Sealer::runs`].
pub struct RunSealer {
    cipher: Arc<SegmentSealer>,
    layout: Layout,
    header: [u8; HEADER_LEN],
    per_run: usize,
    next_segment: u64,
    /// The buffers of runs sealed and written, for the next runs.
    pool: Pool,
}

impl core::fmt::Debug for RunSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunSealer")
            .field("segment_size", &self.layout.segment_size())
            .field("next_segment", &self.next_segment)
            .finish_non_exhaustive()
    }
}

impl Sealer<'_> {
    /// Starts a new stream to be sealed a run at a time, with a fresh
    /// random salt and nonce prefix (see [`crate::runs`]). The options'
    /// parallelism does not apply: the caller runs each run's cipher where
    /// it chooses.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's random number generator
    /// fails.
    pub fn runs(&self) -> Result<RunSealer, Error> {
        let (header, cipher) = self.start()?;
        let segment_size = self.options().segment_size;
        Ok(RunSealer {
            cipher: Arc::new(cipher),
            layout: Layout::new(segment_size),
            header,
            per_run: segments_per_chunk(segment_size.get() as usize),
            next_segment: 0,
            pool: Pool::list(POOLED),
        })
    }
}

impl RunSealer {
    /// The stream's segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.layout.segment_size()
    }

    /// The next run, for the segments after those of the runs given so
    /// far; the first run starts with the stream's header. Every run but
    /// the last must be sealed full. Its buffer is one a sealed run gave
    /// back once written, if there is one.
    pub fn next_run(&mut self) -> PlaintextRun {
        let first_segment = self.next_segment;
        self.next_segment = self.next_segment.saturating_add(self.per_run as u64);
        let mut buf = self.pool.take();
        let start = if first_segment == 0 {
            grow_wiping(&mut buf, HEADER_LEN);
            if let Some(header) = buf.get_mut(..HEADER_LEN) {
                header.copy_from_slice(&self.header);
            }
            HEADER_LEN
        } else {
            // Past the first run the stream is long: room for a whole run
            // at once, rather than growing slot by slot.
            let whole: usize = (0..self.per_run as u64)
                .map(|i| self.layout.full_segment_len(first_segment + i))
                .sum();
            grow_wiping(&mut buf, whole);
            0
        };
        PlaintextRun {
            cipher: Arc::clone(&self.cipher),
            layout: self.layout,
            buf,
            first_segment,
            per_run: self.per_run,
            slot: 0,
            slot_start: start,
            got: 0,
            spare_end: start,
            plaintext_len: 0,
            sealed: Vec::new(),
            pool: self.pool.clone(),
        }
    }
}

/// The plaintext of one run of a stream being sealed: slots for its
/// segments, each with room for its tag, filled in order. Wiped when
/// dropped unsealed. `Debug` shows lengths only.
pub struct PlaintextRun {
    cipher: Arc<SegmentSealer>,
    layout: Layout,
    /// The header (first run only), then the segments' slots; what lies
    /// past the plaintext is ciphertext of an earlier run, or zeros.
    buf: Buffer,
    first_segment: u64,
    per_run: usize,
    /// The slot being filled (0-based within the run), where it starts in
    /// `buf`, and how many plaintext bytes it holds.
    slot: usize,
    slot_start: usize,
    got: usize,
    /// Where the room [`PlaintextRun::spare`] last gave ends: plaintext
    /// may have been written up to there.
    spare_end: usize,
    plaintext_len: usize,
    /// The slots [`PlaintextRun::fill`] sealed as it filled them (whole
    /// segments given with more plaintext after them: inner segments).
    sealed: Vec<usize>,
    pool: Pool,
}

impl core::fmt::Debug for PlaintextRun {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PlaintextRun")
            .field("first_segment", &self.first_segment)
            .field("len", &self.plaintext_len)
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl PlaintextRun {
    /// Plaintext bytes the slot of segment `index` holds.
    fn slot_capacity(&self, index: u64) -> usize {
        self.layout.full_segment_len(index) - TAG_LEN
    }

    fn segment(&self) -> u64 {
        self.first_segment + self.slot as u64
    }

    /// Plaintext bytes the run holds when full.
    pub fn capacity(&self) -> usize {
        (0..self.per_run as u64)
            .map(|i| self.slot_capacity(self.first_segment + i))
            .sum()
    }

    /// Plaintext bytes in the run so far.
    pub fn len(&self) -> usize {
        self.plaintext_len
    }

    /// Whether the run holds no plaintext yet.
    pub fn is_empty(&self) -> bool {
        self.plaintext_len == 0
    }

    /// Whether the run is full: the next plaintext goes to the next run.
    pub fn is_full(&self) -> bool {
        self.slot + 1 == self.per_run && self.got == self.slot_capacity(self.segment())
    }

    /// Room for the next plaintext bytes, in the run's buffer: write into
    /// it, then say how much with [`PlaintextRun::advance`]. Empty once the
    /// run is full. The buffer grows with the plaintext written (up to the
    /// run's size), so a short file costs little.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.got == self.slot_capacity(self.segment()) && self.slot + 1 < self.per_run {
            // The slot is full: the next one starts after its tag.
            self.slot_start += self.layout.full_segment_len(self.segment());
            self.slot += 1;
            self.got = 0;
        }
        let capacity = self.slot_capacity(self.segment());
        let from = self.slot_start + self.got;
        // A buffer with room already gives the rest of the slot; a new one
        // grows with the plaintext.
        let grown = self.buf.len().saturating_sub(self.slot_start);
        let want = capacity.min(self.got.saturating_mul(2).max(INITIAL_SLOT).max(grown));
        let to = self.slot_start + want.max(self.got);
        grow_wiping(&mut self.buf, to);
        self.spare_end = self.spare_end.max(to);
        self.buf.get_mut(from..to).unwrap_or_default()
    }

    /// Records that the first `n` bytes of [`PlaintextRun::spare`] hold
    /// plaintext (at most the spare's length).
    pub fn advance(&mut self, n: usize) {
        let room = self
            .slot_capacity(self.segment())
            .saturating_sub(self.got)
            .min(self.buf.len().saturating_sub(self.slot_start + self.got));
        let n = n.min(room);
        self.got += n;
        self.plaintext_len += n;
    }

    /// Takes as much of `plaintext` as the run has room for; returns how
    /// many bytes it took (fewer than given only once the run is full).
    ///
    /// A whole segment given with more plaintext after it is an inner
    /// segment: it is sealed at once, from `plaintext` into the run, in
    /// one pass over the bytes where the backend seals out of place
    /// (aws-lc-rs); the rest is copied in, and sealed with the run.
    pub fn fill(&mut self, plaintext: &[u8]) -> usize {
        let mut taken = 0;
        while let Some(rest) = plaintext.get(taken..).filter(|rest| !rest.is_empty()) {
            if self.seal_inner(rest) {
                taken += self.got;
                continue;
            }
            let spare = self.spare();
            let n = spare.len().min(rest.len());
            if n == 0 {
                break;
            }
            if let (Some(dst), Some(src)) = (spare.get_mut(..n), rest.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.advance(n);
            taken += n;
        }
        taken
    }

    /// Seals the next slot from the start of `rest` if it is empty and
    /// `rest` holds all its plaintext and more: then it is an inner
    /// segment. Returns whether it did.
    fn seal_inner(&mut self, rest: &[u8]) -> bool {
        let _ = self.spare();
        let index = self.segment();
        let capacity = self.slot_capacity(index);
        if self.got != 0 || rest.len() <= capacity || index + 1 >= MAX_SEGMENTS {
            return false;
        }
        let start = self.slot_start;
        grow_wiping(&mut self.buf, start + capacity + TAG_LEN);
        let (Some(input), Some((body, tag))) = (
            rest.get(..capacity),
            self.buf
                .get_mut(start..start + capacity + TAG_LEN)
                .map(|slot| slot.split_at_mut(capacity)),
        ) else {
            return false;
        };
        match self.cipher.seal_to(index, false, input, body) {
            Ok(sealed_tag) => tag.copy_from_slice(&sealed_tag),
            Err(_) => return false,
        }
        self.got = capacity;
        self.plaintext_len += capacity;
        self.sealed.push(self.slot);
        true
    }

    /// Seals the run in place: `last` says whether the stream ends with it
    /// (the source ended); a run with more plaintext after it must be full.
    /// Returns the run's ciphertext (the header in front for the first).
    ///
    /// # Errors
    /// [`Error::Misuse`] for a run sealed before the end that is not full,
    /// or an empty run ending a stream after its first run;
    /// [`Error::TooLong`] past 2^32 segments.
    pub fn seal(mut self, last: bool) -> Result<SealedRun, Error> {
        if !last && !self.is_full() {
            return Err(Error::Misuse(
                "a run with more plaintext after it must be full",
            ));
        }
        // The slots holding plaintext, by slot and with their data's place
        // and length; a stream's first segment may be empty, no other.
        let mut segments = Vec::with_capacity(self.slot + 1);
        let mut offset = if self.first_segment == 0 {
            HEADER_LEN
        } else {
            0
        };
        for i in 0..self.slot {
            let index = self.first_segment + i as u64;
            segments.push((i, offset, self.slot_capacity(index)));
            offset += self.layout.full_segment_len(index);
        }
        if self.got > 0 || segments.is_empty() {
            segments.push((self.slot, self.slot_start, self.got));
        }
        if self.plaintext_len == 0 && self.first_segment > 0 {
            return Err(Error::Misuse(
                "a stream ends with an empty segment only when it is empty",
            ));
        }
        let end_segment = self.first_segment + segments.len() as u64;
        if end_segment > MAX_SEGMENTS || (!last && end_segment == MAX_SEGMENTS) {
            return Err(Error::TooLong);
        }
        let (tail_slot, tail_offset, tail_len) = segments.last().copied().unwrap_or((0, offset, 0));
        if last && self.sealed.contains(&tail_slot) {
            return Err(Error::Misuse(
                "plaintext was given after what was to be the stream's last segment",
            ));
        }
        let end = tail_offset + tail_len + TAG_LEN;
        // Plaintext written past the run's data is not sealed: wipe it.
        if let Some(unsealed) = self.buf.get_mut(end..self.spare_end) {
            unsealed.zeroize();
        }
        grow_wiping(&mut self.buf, end);
        for &(slot, offset, len) in &segments {
            if self.sealed.contains(&slot) {
                continue;
            }
            let index = self.first_segment + slot as u64;
            let is_last = last && slot == tail_slot;
            let (body, tag) = self
                .buf
                .get_mut(offset..offset + len + TAG_LEN)
                .ok_or(Error::Malformed("run"))?
                .split_at_mut(len);
            tag.copy_from_slice(&self.cipher.seal(index, is_last, body)?);
        }
        // Everything up to `end` is now the header and ciphertext, and past
        // it lies ciphertext of an earlier run or zeros: nothing secret is
        // left in the buffer.
        Ok(SealedRun {
            buf: core::mem::take(&mut self.buf),
            end,
            plaintext_len: self.plaintext_len,
            pool: self.pool.clone(),
        })
    }
}

/// The ciphertext of a sealed run (the stream's header in front for the
/// first run). Its buffer goes back to the stream's sealer for a later run
/// when it is dropped: keep it only as long as writing it takes. `Debug`
/// shows lengths only.
pub struct SealedRun {
    buf: Buffer,
    end: usize,
    plaintext_len: usize,
    pool: Pool,
}

impl core::fmt::Debug for SealedRun {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealedRun")
            .field("len", &self.end)
            .field("plaintext_len", &self.plaintext_len)
            .finish()
    }
}

impl SealedRun {
    /// The ciphertext.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.end).unwrap_or_default()
    }

    /// The plaintext bytes it holds.
    pub fn plaintext_len(&self) -> usize {
        self.plaintext_len
    }
}

impl AsRef<[u8]> for SealedRun {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for SealedRun {
    fn drop(&mut self) {
        self.pool.give_back(core::mem::take(&mut self.buf));
    }
}

/// Opens runs of one stream, from any segment; see the [module](self)
/// docs. Made by [`Opener::runs`]; cheap to clone, and a clone can open
/// runs on another thread.
#[derive(Clone)]
pub struct RunOpener {
    cipher: Arc<SegmentOpener>,
    layout: Layout,
    per_run: usize,
    /// The buffers of chunks of plaintext dropped, for the next runs.
    pool: Pool,
}

impl core::fmt::Debug for RunOpener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunOpener")
            .field("segment_size", &self.layout.segment_size())
            .finish_non_exhaustive()
    }
}

impl Opener<'_> {
    /// Opens the stream whose first [`HEADER_LEN`] bytes are `header`, to
    /// be opened a run at a time (see [`crate::runs`]): checks the prefix,
    /// the segment size (against [`Opener::expect_segment_size`], if set)
    /// and the key commitment. The options' parallelism does not apply.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::UnsupportedVersion`],
    /// [`Error::UnsupportedSuite`], [`Error::SegmentSizeMismatch`],
    /// [`Error::CommitmentMismatch`].
    pub fn runs(&self, header: &[u8; HEADER_LEN]) -> Result<RunOpener, Error> {
        let (segment_size, cipher) = self.open_header(header)?;
        Ok(RunOpener {
            cipher: Arc::new(cipher),
            layout: Layout::new(segment_size),
            per_run: segments_per_chunk(segment_size.get() as usize),
            pool: Pool::list(POOLED),
        })
    }
}

impl RunOpener {
    /// Where the stream's segments lie.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The segments of a run read sequentially (about 256 KiB of them).
    pub fn segments_per_run(&self) -> u64 {
        self.per_run as u64
    }

    /// The ciphertext bytes of a full run starting at segment
    /// `first_segment`: how much to read for the next run.
    pub fn run_len(&self, first_segment: u64) -> usize {
        (0..self.per_run as u64)
            .map(|i| self.layout.full_segment_len(first_segment + i))
            .sum()
    }

    /// A buffer to read a run's ciphertext into: one a chunk of plaintext
    /// gave back when it was dropped, if there is one (so a stream reuses
    /// a few buffers however long it is), else a new one.
    pub fn buffer(&self) -> RunBuffer {
        RunBuffer::reused(self.pool.take())
    }

    /// Opens `ciphertext`, the segments from `first_segment` on, in place:
    /// whole segments, of which the last may be short only if `last` (the
    /// stream ends with it). Returns their plaintext, in the same buffer,
    /// which goes back to this opener for a later run when the chunk is
    /// dropped (and is wiped once nothing uses it); on an error it is
    /// wiped.
    ///
    /// A run that is not the stream's last and whose final segment
    /// verifies only as a last segment reports [`Error::TrailingData`]
    /// (bytes after the stream's end), as the sequential readers do.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] for a segment that does not verify
    /// at its place; [`Error::Truncated`] for a last run with no segment
    /// or one shorter than a tag; [`Error::Malformed`] for an empty final
    /// segment after a full one; [`Error::Misuse`] for a run before the
    /// end that ends within a segment.
    pub fn open(
        &self,
        first_segment: u64,
        ciphertext: RunBuffer,
        last: bool,
    ) -> Result<PlaintextChunk, Error> {
        let RunBuffer { buf, len: data } = ciphertext;
        let mut segments = Vec::with_capacity(self.per_run);
        let mut offset = 0usize;
        let mut index = first_segment;
        while offset < data {
            let full = self.layout.full_segment_len(index);
            let len = full.min(data - offset);
            if len < full && !last {
                return Err(Error::Misuse(
                    "a run with more of the stream after it ends within a segment",
                ));
            }
            segments.push((offset, len));
            offset += len;
            index += 1;
        }
        if segments.is_empty() {
            return Err(if last {
                Error::Truncated
            } else {
                Error::Misuse("an empty run")
            });
        }
        if index > MAX_SEGMENTS {
            return Err(Error::TooLong);
        }
        let mut chunk = Chunk {
            number: 0,
            buf,
            first_segment,
            segments,
            last,
            output: 0..0,
        };
        open_chunk(&self.cipher, self.layout, &mut chunk)?;
        Ok(PlaintextChunk::new(
            chunk.buf,
            chunk.output,
            self.pool.clone(),
        ))
    }
}
