//! The streaming encryptor for `std::io::Write`.

use std::io::{self, Write};

use atrest_filekey::FileKey;

use crate::encoder::{Encoder, FinishGuard};
use crate::{Error, Options};

/// Encrypts everything written to it into `W`. Made by
/// [`Sealer::writer`](crate::Sealer::writer).
///
/// **Call [`Encryptor::finish`]**: it seals the final segment and returns the
/// writer. An `Encryptor` dropped without it has written a stream without
/// its final segment, which every reader rejects as [`Error::Truncated`]
/// (never as a shorter file). So that this does not go unnoticed, dropping
/// an unfinished `Encryptor` fails a debug assertion, unless a write had
/// already failed (the stream is lost anyway), it was given up with
/// [`Encryptor::abandon`] (when the input failed) or the thread is
/// panicking; release builds drop it silently.
///
/// Plaintext is buffered one segment at a time (the segment size, 64 KiB by
/// default), so memory use does not depend on the stream's length; a write
/// of more than a segment is sealed straight from the caller's bytes.
/// `flush` writes out every complete segment but cannot write a partial one.
///
/// ```
/// use std::io::Write;
/// use atrest_filekey::FileKey;
/// use atrest_stream::{Opener, Options, Sealer};
///
/// let key = FileKey::generate()?;
/// let sealer = Sealer::new(&key, b"tenant/file/v1", Options::default());
/// let mut encryptor = sealer.writer(Vec::new())?;
/// encryptor.write_all(b"hello, ")?;
/// encryptor.write_all(b"world")?;
/// let ciphertext = encryptor.finish()?;
/// let opener = Opener::new(&key, b"tenant/file/v1", Options::default());
/// assert_eq!(opener.open(&ciphertext)?, b"hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Encryptor<W: Write> {
    inner: W,
    encoder: Encoder,
    guard: FinishGuard,
}

impl<W: Write> Encryptor<W> {
    pub(crate) fn new(
        writer: W,
        key: &FileKey,
        associated_data: &[u8],
        options: Options,
    ) -> Result<Self, Error> {
        Ok(Self {
            inner: writer,
            encoder: Encoder::new(key, associated_data, options)?,
            guard: FinishGuard::default(),
        })
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let result = self.write_pending_inner();
        if result.is_err() {
            self.guard.release();
        }
        result
    }

    fn write_pending_inner(&mut self) -> io::Result<()> {
        loop {
            let pending = self.encoder.pending();
            if pending.is_empty() {
                return Ok(());
            }
            match self.inner.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.encoder.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Seals the final segment, writes everything out, flushes and returns
    /// the writer.
    ///
    /// # Errors
    /// [`Error::Io`] if writing fails.
    pub fn finish(mut self) -> Result<W, Error> {
        self.guard.release();
        self.write_pending()?;
        self.encoder.finish()?;
        self.write_pending()?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Stops without sealing the final segment, for when the input failed:
    /// returns the writer, whose stream every reader rejects as
    /// [`Error::Truncated`]. Discard what it holds.
    pub fn abandon(mut self) -> W {
        self.guard.release();
        self.inner
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            self.write_pending()?;
            let n = self
                .encoder
                .accept(data)
                .inspect_err(|_| self.guard.release())?;
            if n > 0 || data.is_empty() {
                return Ok(n);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.inner.flush()
    }
}
