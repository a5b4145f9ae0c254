//! Between the async HTTP bodies and the synchronous files API: an upload's
//! body as a [`Read`] and a download's plaintext as a [`PlaintextSink`], each
//! over a small bounded channel, so a request holds a few chunks in memory
//! whatever the file's size and a slow side slows the other down.

use std::io::{self, Read};

use atrest::stream::{PlaintextChunk, PlaintextSink};

use bytes::{Buf as _, Bytes};
use tokio::sync::{mpsc, oneshot};

/// Chunks in flight between the HTTP side and the files API, per request.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 8;

/// What the HTTP side hands an upload.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// More of the body.
    Data(Bytes),
    /// The body ended as its framing said it would.
    End,
    /// The body could not be read (the client went away, bad framing).
    Failed(String),
}

/// An upload's body, as the files API reads it.
///
/// Only an explicit [`Chunk::End`] is the end of the file: if the HTTP side
/// goes away without one (a dropped connection, a killed handler), reading
/// fails, and the seal is abandoned rather than committing a truncated
/// file.
pub(crate) struct BodyReader {
    chunks: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl BodyReader {
    pub(crate) fn new(chunks: mpsc::Receiver<Chunk>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                if let (Some(to), Some(from)) = (buf.get_mut(..n), self.current.get(..n)) {
                    to.copy_from_slice(from);
                }
                self.current.advance(n);
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.chunks.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(reason)) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, reason));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload stopped before its body was complete",
                    ));
                }
            }
        }
    }
}

/// A download's plaintext, as the files API hands it over: the first
/// plaintext tells the HTTP side that the open got past its checks (so the
/// status line can be sent), then each run of plaintext becomes a body
/// chunk — a whole-file read's chunks without a copy, their buffers going
/// back to the decryption once sent.
pub(crate) struct BodyWriter<E> {
    chunks: mpsc::Sender<io::Result<Bytes>>,
    started: Option<oneshot::Sender<Result<(), E>>>,
}

impl<E> BodyWriter<E> {
    pub(crate) fn new(
        chunks: mpsc::Sender<io::Result<Bytes>>,
        started: oneshot::Sender<Result<(), E>>,
    ) -> Self {
        Self {
            chunks,
            started: Some(started),
        }
    }

    fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(started) = self.started.take() {
            let _ = started.send(Ok(()));
        }
        self.chunks
            .blocking_send(Ok(bytes))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading"))
    }

    /// Reports how the open ended: before any byte, as the answer to the
    /// request; after, as a failed body (the connection is cut, never a
    /// short body that looks complete).
    pub(crate) fn finish(mut self, result: Result<(), E>, describe: impl FnOnce(&E) -> String) {
        match (self.started.take(), result) {
            (Some(started), result) => {
                let _ = started.send(result);
            }
            (None, Ok(())) => {}
            (None, Err(error)) => {
                let _ = self
                    .chunks
                    .blocking_send(Err(io::Error::other(describe(&error))));
            }
        }
    }
}

impl<E> PlaintextSink for BodyWriter<E> {
    fn write_plaintext(&mut self, plaintext: &[u8]) -> io::Result<()> {
        self.send(Bytes::copy_from_slice(plaintext))
    }

    fn take_chunk(&mut self, chunk: PlaintextChunk) -> io::Result<()> {
        self.send(Bytes::from_owner(chunk))
    }
}
