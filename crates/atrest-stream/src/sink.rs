//! Where decrypted plaintext goes: a [`Write`], or a [`PlaintextSink`]
//! that takes whole runs of segments in buffers of their own, so a caller
//! that hands the plaintext on (an HTTP body, a queue) need not copy it.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};

use zeroize::Zeroizing;

/// A buffer that holds plaintext at times: wiped when dropped.
pub(crate) type Buffer = Zeroizing<Vec<u8>>;

/// Receives verified plaintext, in stream order, from
/// [`Opener::open_stream_into`](crate::Opener::open_stream_into).
///
/// Only verified plaintext ever reaches a sink, but only an `Ok` return of
/// the call that fed it means the whole stream, end included, was
/// authentic: on an error, discard what the sink received.
pub trait PlaintextSink {
    /// Takes a copy of the next plaintext bytes.
    ///
    /// # Errors
    /// Whatever stops the sink; the decryption stops with it.
    fn write_plaintext(&mut self, plaintext: &[u8]) -> io::Result<()>;

    /// Takes the next run of plaintext in a buffer of its own. By default
    /// it is copied with [`PlaintextSink::write_plaintext`].
    ///
    /// The buffer goes back to the decryption's fixed pool when the chunk
    /// is dropped: a sink may keep a few chunks while it hands them on,
    /// but one that keeps every chunk stalls the stream once the pool is
    /// empty (a handful of buffers of about 256 KiB).
    ///
    /// # Errors
    /// As for [`PlaintextSink::write_plaintext`].
    fn take_chunk(&mut self, chunk: PlaintextChunk) -> io::Result<()> {
        self.write_plaintext(&chunk)
    }

    /// Called once the last plaintext was taken. By default nothing.
    ///
    /// # Errors
    /// As for [`PlaintextSink::write_plaintext`].
    fn finish_plaintext(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: PlaintextSink + ?Sized> PlaintextSink for &mut S {
    fn write_plaintext(&mut self, plaintext: &[u8]) -> io::Result<()> {
        (**self).write_plaintext(plaintext)
    }

    fn take_chunk(&mut self, chunk: PlaintextChunk) -> io::Result<()> {
        (**self).take_chunk(chunk)
    }

    fn finish_plaintext(&mut self) -> io::Result<()> {
        (**self).finish_plaintext()
    }
}

/// A [`Write`] as a [`PlaintextSink`]: every chunk is written with
/// `write_all`, and the writer is flushed at the end. `Debug` does not show
/// the writer (an in-memory one would print the plaintext).
pub struct WriteSink<W>(pub W);

impl<W> core::fmt::Debug for WriteSink<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriteSink").finish_non_exhaustive()
    }
}

impl<W: Write> PlaintextSink for WriteSink<W> {
    fn write_plaintext(&mut self, plaintext: &[u8]) -> io::Result<()> {
        self.0.write_all(plaintext)
    }

    fn finish_plaintext(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Verified plaintext handed to [`PlaintextSink::take_chunk`]: a run of
/// consecutive segments, in a buffer of its own.
///
/// It dereferences to the plaintext bytes. When dropped, its buffer goes
/// back to the decryption that made it for reuse, or, once that is over,
/// is wiped and freed. `Debug` shows its length only.
pub struct PlaintextChunk {
    buf: Buffer,
    plaintext: Range<usize>,
    pool: Option<Pool>,
}

impl PlaintextChunk {
    pub(crate) fn new(buf: Buffer, plaintext: Range<usize>, pool: Pool) -> Self {
        Self {
            buf,
            plaintext,
            pool: Some(pool),
        }
    }

    /// The same chunk, narrowed to bytes `range` of its plaintext
    /// (clamped to it): for a reader that opened whole segments and
    /// releases only the part of them a request asked for.
    #[must_use]
    pub fn narrow(mut self, range: Range<usize>) -> Self {
        let len = self.plaintext.len();
        let (start, end) = (range.start.min(len), range.end.min(len));
        let base = self.plaintext.start;
        self.plaintext = base + start..base + end.max(start);
        self
    }

    /// The plaintext.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(self.plaintext.clone()).unwrap_or_default()
    }
}

impl core::ops::Deref for PlaintextChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for PlaintextChunk {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl core::fmt::Debug for PlaintextChunk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PlaintextChunk")
            .field("len", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PlaintextChunk {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(core::mem::take(&mut self.buf));
        }
    }
}

/// Free buffers, shared with the chunks handed out: either the fixed pool
/// of one pipeline run, which its reader waits on (closing it, when the
/// run ends, lets a waiting reader go, and from then on a buffer given
/// back is wiped and freed), or a free list that runs opened one at a
/// time take from and give back to, a few buffers at most (the rest wiped
/// and freed), so a stream reuses a handful of buffers however long it
/// is. A buffer in the pool may hold plaintext of an earlier run until it
/// is reused; it is wiped when dropped.
#[derive(Clone)]
pub(crate) struct Pool(Arc<Mutex<Free>>);

enum Free {
    Closed,
    Channel(SyncSender<Buffer>),
    List { buffers: Vec<Buffer>, max: usize },
}

impl Pool {
    pub(crate) fn new(free: SyncSender<Buffer>) -> Self {
        Self(Arc::new(Mutex::new(Free::Channel(free))))
    }

    /// A free list keeping at most `max` buffers.
    pub(crate) fn list(max: usize) -> Self {
        Self(Arc::new(Mutex::new(Free::List {
            buffers: Vec::new(),
            max,
        })))
    }

    /// Returns `buf` to the pool; if the pool is closed or full, it is
    /// dropped (which wipes it).
    pub(crate) fn give_back(&self, buf: Buffer) {
        let mut free = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *free {
            Free::Closed => {}
            Free::Channel(free) => {
                let _ = free.try_send(buf);
            }
            Free::List { buffers, max } => {
                if buffers.len() < *max {
                    buffers.push(buf);
                }
            }
        }
    }

    /// A buffer from a free list, or a new, empty one.
    pub(crate) fn take(&self) -> Buffer {
        let mut free = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *free {
            Free::List { buffers, .. } => buffers.pop().unwrap_or_default(),
            Free::Closed | Free::Channel(_) => Buffer::default(),
        }
    }

    pub(crate) fn close(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Free::Closed;
    }
}
