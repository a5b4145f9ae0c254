//! The streaming encryptor for `std::io::Write`.

use std::io::{self, Write};

use atrest_filekey::FileKey;

use crate::encoder::Encoder;
use crate::{Error, Options};

/// Encrypts everything written to it into `W`.
///
/// **Call [`Encryptor::finish`]**: it seals the final segment and returns the
/// writer. Dropping an `Encryptor` without finishing leaves a truncated stream
/// that every reader rejects.
///
/// Plaintext is buffered one segment at a time (the segment size, 64 KiB by
/// default), so memory use does not depend on the stream's length. `flush`
/// writes out every complete segment but cannot write a partial one.
///
/// ```
/// use std::io::Write;
/// use atrest_filekey::FileKey;
/// use atrest_stream::{Encryptor, decrypt};
///
/// let key = FileKey::generate()?;
/// let mut encryptor = Encryptor::new(Vec::new(), &key, b"tenant/file/v1")?;
/// encryptor.write_all(b"hello, ")?;
/// encryptor.write_all(b"world")?;
/// let ciphertext = encryptor.finish()?;
/// assert_eq!(decrypt(&key, b"tenant/file/v1", &ciphertext)?, b"hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Encryptor<W: Write> {
    inner: W,
    encoder: Encoder,
}

impl<W: Write> Encryptor<W> {
    /// An encryptor with the default segment size. `associated_data` is bound
    /// to the stream but not written.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's random number generator fails.
    pub fn new(writer: W, key: &FileKey, associated_data: &[u8]) -> Result<Self, Error> {
        Self::with_options(writer, key, associated_data, Options::default())
    }

    /// An encryptor with the given options (a [`SegmentSize`](crate::SegmentSize) converts).
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's random number generator fails.
    pub fn with_options(
        writer: W,
        key: &FileKey,
        associated_data: &[u8],
        options: impl Into<Options>,
    ) -> Result<Self, Error> {
        Ok(Self {
            inner: writer,
            encoder: Encoder::new(key, associated_data, options.into())?,
        })
    }

    fn write_pending(&mut self) -> io::Result<()> {
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
        self.write_pending()?;
        self.encoder.finish()?;
        self.write_pending()?;
        self.inner.flush()?;
        Ok(self.inner)
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
            let n = self.encoder.accept(data)?;
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
