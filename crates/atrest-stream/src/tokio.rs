//! `tokio::io::AsyncRead`/`AsyncWrite` adapters (feature `tokio`).
//!
//! They share the segment state machines with the blocking adapters, so the
//! format, the strictness and the errors are the same.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use atrest_filekey::FileKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::decoder::Decoder;
use crate::encoder::{Encoder, FinishGuard};
use crate::format::{HEADER_LEN, SegmentSize};
use crate::schedule;
use crate::{Backend, Error, Options};

/// Encrypts everything written to it into `W`, asynchronously.
///
/// Made by [`Sealer::async_writer`](crate::Sealer::async_writer).
///
/// Finish the stream with [`AsyncEncryptor::finish`] (which returns the
/// writer) or with `shutdown()` (which also shuts the writer down). Dropping
/// it otherwise leaves a stream without its final segment that every reader
/// rejects; as with [`crate::Encryptor`], that fails a debug assertion unless
/// a write had failed already.
pub struct AsyncEncryptor<W> {
    inner: W,
    encoder: Encoder,
    guard: FinishGuard,
}

impl<W: AsyncWrite + Unpin> AsyncEncryptor<W> {
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

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = ready!(self.poll_pending_inner(cx));
        if result.is_err() {
            self.guard.release();
        }
        Poll::Ready(result)
    }

    fn poll_pending_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = self.encoder.pending();
            if pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, pending)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.encoder.consume(n),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard.release();
        ready!(self.poll_pending(cx))?;
        self.encoder.finish()?;
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Seals the final segment, writes everything out, flushes and returns
    /// the writer (without shutting it down).
    ///
    /// # Errors
    /// [`Error::Io`] if writing fails.
    pub async fn finish(mut self) -> Result<W, Error> {
        std::future::poll_fn(|cx| self.poll_finish(cx)).await?;
        Ok(self.inner)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AsyncEncryptor<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_pending(cx))?;
            let n = this
                .encoder
                .accept(data)
                .inspect_err(|_| this.guard.release())?;
            if n > 0 || data.is_empty() {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_finish(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Decrypts a stream read from `R`, asynchronously, with the same guarantees
/// as [`crate::Decryptor`]. Made by
/// [`Opener::async_reader`](crate::Opener::async_reader).
pub struct AsyncDecryptor<R> {
    inner: R,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> AsyncDecryptor<R> {
    /// Reads and checks the stream's prefix and header (and the segment size
    /// against `expected`, if any), and verifies that `key` is the key the
    /// stream was made with.
    pub(crate) async fn new(
        mut reader: R,
        key: &FileKey,
        associated_data: &[u8],
        backend: Backend,
        expected: Option<SegmentSize>,
    ) -> Result<Self, Error> {
        let mut header = [0u8; HEADER_LEN];
        reader
            .read_exact(&mut header)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::Truncated,
                _ => Error::from(e),
            })?;
        let (segment_size, cipher) =
            schedule::open_stream(&header, key, associated_data, backend, expected)?;
        Ok(Self {
            inner: reader,
            decoder: Decoder::new(cipher, segment_size),
        })
    }

    /// Returns the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes allocated for the decryptor's buffers.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.decoder.allocated()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncDecryptor<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            this.decoder.check()?;
            let plaintext = this.decoder.plaintext();
            if !plaintext.is_empty() {
                let n = plaintext.len().min(out.remaining());
                out.put_slice(plaintext.get(..n).unwrap_or_default());
                this.decoder.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.decoder.at_end() {
                return Poll::Ready(Ok(()));
            }
            let spare = this.decoder.spare();
            if spare.is_empty() {
                if let Some(n) = this.decoder.decrypt_into(out.initialize_unfilled())? {
                    out.advance(n);
                    return Poll::Ready(Ok(()));
                }
                this.decoder.decrypt(false)?;
                continue;
            }
            let mut read = ReadBuf::new(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.decoder.decrypt(true)?;
            } else {
                this.decoder.advance(n);
            }
        }
    }
}
