//! Blocking files and streams as the async library's sources and sinks,
//! for the programs: one thread per transfer reads ahead of the cipher or
//! writes behind it, so reading, the cipher and writing overlap.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use atrest::stream::PlaintextChunk;
use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// How much a read-ahead reads at a time.
const READ_LEN: usize = 1 << 20;
/// Reads or chunks in flight between the thread and the task.
const IN_FLIGHT: usize = 4;

/// An [`AsyncBufRead`] over a blocking reader (a file, standard input) that
/// a thread of the blocking pool reads ahead of the consumer, a mebibyte
/// at a time, at most a few mebibytes ahead, into a few buffers it reuses
/// (wiped when the transfer is over: they hold plaintext).
pub struct ReadAhead {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `reader` on the blocking pool; `read` is told of
    /// every chunk read (for a progress bar). Must be called within a
    /// tokio runtime.
    pub fn new(reader: impl Read + Send + 'static, read: impl Fn(u64) + Send + 'static) -> Self {
        let (sender, chunks) = mpsc::channel(IN_FLIGHT);
        let free = Free::default();
        let _reading: JoinHandle<()> = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            loop {
                let mut chunk = free.take();
                let result = (&mut reader)
                    .take(READ_LEN as u64)
                    .read_to_end(&mut chunk)
                    .map(|n| {
                        read(n as u64);
                        Bytes::from_owner(Recycled {
                            buf: Some(chunk),
                            free: free.clone(),
                        })
                    });
                let end = matches!(&result, Ok(chunk) if chunk.is_empty()) || result.is_err();
                // The consumer went away: stop.
                if sender.blocking_send(result).is_err() || end {
                    return;
                }
            }
        });
        Self {
            chunks,
            current: Bytes::new(),
            done: false,
        }
    }
}

/// The buffers of a read-ahead the consumer is done with.
#[derive(Clone, Default)]
struct Free(Arc<Mutex<Vec<Zeroizing<Vec<u8>>>>>);

impl Free {
    /// An empty buffer with room for a read: one given back, or new.
    fn take(&self) -> Zeroizing<Vec<u8>> {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Zeroizing::new(Vec::with_capacity(READ_LEN)));
        buf.clear();
        buf
    }
}

/// A buffer read ahead, handed out as [`Bytes`]; it goes back to its
/// read-ahead when the consumer drops it (or is wiped, past a few).
struct Recycled {
    buf: Option<Zeroizing<Vec<u8>>>,
    free: Free,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut free = self.free.0.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() <= IN_FLIGHT
            && let Some(buf) = self.buf.take()
        {
            free.push(buf);
        }
    }
}

impl AsyncBufRead for ReadAhead {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.current.is_empty() && !this.done {
            match this.chunks.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.done = chunk.is_empty();
                    this.current = chunk;
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Err(io::Error::other("the reading thread stopped")));
                }
            }
        }
        Poll::Ready(Ok(&this.current))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        let _ = this.current.split_to(amount.min(this.current.len()));
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => available,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(buf.remaining());
        buf.put_slice(available.get(..n).unwrap_or_default());
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// An [`atrest::OpenSink`] that writes each verified chunk to a blocking
/// writer (a file, standard output) on a thread of the blocking pool, a
/// few chunks behind the cipher; the chunks are handed over, not copied.
pub struct WriteBehind<W> {
    chunks: Option<mpsc::Sender<PlaintextChunk>>,
    writing: Option<JoinHandle<io::Result<W>>>,
    writer: Option<W>,
}

impl<W: Write + Send + 'static> WriteBehind<W> {
    /// Starts writing to `writer` on the blocking pool. Must be called
    /// within a tokio runtime.
    pub fn new(writer: W) -> Self {
        let (chunks, mut received) = mpsc::channel::<PlaintextChunk>(IN_FLIGHT);
        let writing = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(chunk) = received.blocking_recv() {
                writer.write_all(&chunk)?;
            }
            writer.flush()?;
            Ok(writer)
        });
        Self {
            chunks: Some(chunks),
            writing: Some(writing),
            writer: None,
        }
    }

    /// Waits for the thread: the writer, or why writing stopped.
    async fn join(&mut self) -> io::Result<()> {
        self.chunks = None;
        let Some(writing) = self.writing.take() else {
            return match self.writer {
                Some(_) => Ok(()),
                None => Err(io::Error::other("the output failed")),
            };
        };
        match writing.await {
            Ok(Ok(writer)) => {
                self.writer = Some(writer);
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(error) => Err(io::Error::other(format!(
                "the writing thread failed: {error}"
            ))),
        }
    }

    /// Stops taking chunks, waits until those taken are written, and
    /// returns the writer (or why writing stopped). Call it whatever
    /// became of the transfer: the writer is dropped on this thread, not
    /// left to the pool's.
    ///
    /// # Errors
    /// Why writing stopped.
    pub async fn close(mut self) -> io::Result<W> {
        self.join().await?;
        self.writer
            .take()
            .ok_or_else(|| io::Error::other("the output failed"))
    }
}

#[async_trait::async_trait]
impl<W: Write + Send + 'static> atrest::OpenSink for WriteBehind<W> {
    async fn take(&mut self, plaintext: PlaintextChunk) -> io::Result<()> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(plaintext).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped: say why.
        self.join().await?;
        Err(io::Error::other("the output was closed"))
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.join().await
    }
}
