//! Between the HTTP bodies and the files API: an upload's body as the
//! [`AsyncBufRead`] a seal reads, and a download's sink that hands each run
//! of verified plaintext to the response body without a copy. Each holds a
//! few chunks at most, whatever the file's size, and a slow side slows the
//! other down: a stalled client holds a task, not a thread.

use std::io;

use atrest::OpenSink;
use atrest::stream::PlaintextChunk;
use axum::body::Body;
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use tokio::io::AsyncBufRead;
use tokio::sync::{mpsc, oneshot};

/// Runs of plaintext in flight between a download and its client.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 2;

/// An upload's body, as the seal reads it. The body ends only as its
/// framing says (`Content-Length` or the last chunk): a connection that
/// drops first is an error, and the seal is abandoned rather than
/// committing a truncated file.
pub(crate) fn body_reader(body: Body) -> impl AsyncBufRead + Send + Unpin {
    let frames = body
        .into_data_stream()
        .map_err(|error| io::Error::new(io::ErrorKind::ConnectionAborted, error));
    tokio_util::io::StreamReader::new(frames)
}

/// A download's plaintext: the first chunk tells the HTTP side that the
/// open got past its checks (so the status line can be sent), then each
/// run of plaintext becomes a body chunk, its buffer wiped once sent.
pub(crate) struct BodyWriter<E> {
    chunks: mpsc::Sender<io::Result<Bytes>>,
    started: Option<oneshot::Sender<Result<(), E>>>,
}

impl<E: Send> BodyWriter<E> {
    pub(crate) fn new(
        chunks: mpsc::Sender<io::Result<Bytes>>,
        started: oneshot::Sender<Result<(), E>>,
    ) -> Self {
        Self {
            chunks,
            started: Some(started),
        }
    }

    /// Reports how the open ended: before any byte, as the answer to the
    /// request; after, as a failed body (the connection is cut, never a
    /// short body that looks complete).
    pub(crate) async fn finish(
        mut self,
        result: Result<(), E>,
        describe: impl FnOnce(&E) -> String,
    ) {
        match (self.started.take(), result) {
            (Some(started), result) => {
                let _ = started.send(result);
            }
            (None, Ok(())) => {}
            (None, Err(error)) => {
                let _ = self
                    .chunks
                    .send(Err(io::Error::other(describe(&error))))
                    .await;
            }
        }
    }
}

#[async_trait::async_trait]
impl<E: Send> OpenSink for BodyWriter<E> {
    async fn take(&mut self, plaintext: PlaintextChunk) -> io::Result<()> {
        if plaintext.is_empty() {
            return Ok(());
        }
        if let Some(started) = self.started.take() {
            let _ = started.send(Ok(()));
        }
        self.chunks
            .send(Ok(Bytes::from_owner(plaintext)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading"))
    }
}
