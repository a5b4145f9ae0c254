//! Blocking files and streams as the async library's sources and sinks,
//! for the programs: one thread per transfer reads ahead of the cipher or
//! writes behind it, so reading, the cipher and writing overlap.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use atrest::stream::PlaintextChunk;
use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How much a read-ahead reads at a time.
const READ_LEN: usize = 1 << 20;
/// Reads or chunks in flight between the thread and the task.
const IN_FLIGHT: usize = 4;

/// An [`AsyncRead`] over a blocking reader (a file, standard input) that
/// a thread of the blocking pool reads ahead of the consumer, a mebibyte
/// at a time, at most a few mebibytes ahead.
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
        let _reading: JoinHandle<()> = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            loop {
                let mut chunk = Vec::with_capacity(READ_LEN);
                let result = (&mut reader)
                    .take(READ_LEN as u64)
                    .read_to_end(&mut chunk)
                    .map(|n| {
                        read(n as u64);
                        Bytes::from(chunk)
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

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() && !self.done {
            match self.chunks.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    self.done = chunk.is_empty();
                    self.current = chunk;
                }
                Poll::Ready(Some(Err(error))) => {
                    self.done = true;
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Err(io::Error::other("the reading thread stopped")));
                }
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
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

    /// The writer, once [`atrest::OpenSink::finish`] returned `Ok`.
    pub fn into_inner(self) -> Option<W> {
        self.writer
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
