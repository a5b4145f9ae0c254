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

/// What an upload's body may do: how long it may send nothing, and how
/// large it may be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    /// The longest pause between two pieces of the body.
    pub(crate) idle: std::time::Duration,
    /// The most bytes a body may hold.
    pub(crate) max_bytes: u64,
}

/// Why an upload's body ended before its end, on the client's side, with
/// the status that says so: what [`body_status`] looks for, so that a
/// failure on the way to a store (whatever its `io::ErrorKind`) is never
/// answered as the client's.
#[derive(Debug)]
struct ClientBody {
    status: axum::http::StatusCode,
    message: String,
}

impl ClientBody {
    /// An `io::Error` of `kind` that [`body_status`] answers with `status`.
    fn error(kind: io::ErrorKind, status: axum::http::StatusCode, message: String) -> io::Error {
        io::Error::new(kind, Self { status, message })
    }
}

impl std::fmt::Display for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientBody {}

/// `body` with `limits` enforced as it is read: a pause longer than
/// `limits.idle` ends it with an error of kind `TimedOut` (`408`), a byte
/// past `limits.max_bytes` with one of kind `FileTooLarge` (`413`), so a
/// client that trickles or never ends its upload holds nothing for long;
/// a body the client broke off (its connection closed or reset, its
/// stream cancelled) ends with one of kind `ConnectionAborted` (`400`).
pub(crate) fn paced(body: Body, limits: BodyLimits) -> Body {
    use futures_util::StreamExt as _;
    let frames = body.into_data_stream();
    let stream = futures_util::stream::unfold(Some((frames, 0u64)), move |state| async move {
        let (mut frames, seen) = state?;
        match tokio::time::timeout(limits.idle, frames.next()).await {
            Ok(Some(Ok(bytes))) => {
                let seen = seen.saturating_add(bytes.len() as u64);
                if seen > limits.max_bytes {
                    let error = ClientBody::error(
                        io::ErrorKind::FileTooLarge,
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the upload is larger than {} bytes", limits.max_bytes),
                    );
                    return Some((Err(error), None));
                }
                Some((Ok(bytes), Some((frames, seen))))
            }
            Ok(Some(Err(error))) => Some((
                Err(ClientBody::error(
                    io::ErrorKind::ConnectionAborted,
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("the client broke off its upload: {error}"),
                )),
                None,
            )),
            Ok(None) => None,
            Err(_) => Some((
                Err(ClientBody::error(
                    io::ErrorKind::TimedOut,
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the client sent nothing of its upload for {} s",
                        limits.idle.as_secs()
                    ),
                )),
                None,
            )),
        }
    });
    Body::from_stream(stream)
}

/// The status for a body that [`paced`] ended, if `error` (or what caused
/// it) is one: `408` for a client too slow, `413` for one too large, `400`
/// for one that broke its upload off. Errors of the same kinds from
/// anywhere else (a store's time-out) are not the client's: `None`.
pub(crate) fn body_status(
    error: &(dyn std::error::Error + 'static),
) -> Option<axum::http::StatusCode> {
    let mut next = Some(error);
    while let Some(error) = next {
        // An `io::Error`'s `source` skips the error it wraps: look inside.
        let inner = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(error), inner].into_iter().flatten() {
            if let Some(body) = candidate.downcast_ref::<ClientBody>() {
                return Some(body.status);
            }
        }
        next = error.source();
    }
    None
}

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
    /// How long the client may take to take the next chunk.
    write_timeout: std::time::Duration,
}

impl<E: Send> BodyWriter<E> {
    pub(crate) fn new(
        chunks: mpsc::Sender<io::Result<Bytes>>,
        started: oneshot::Sender<Result<(), E>>,
        write_timeout: std::time::Duration,
    ) -> Self {
        Self {
            chunks,
            started: Some(started),
            write_timeout,
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
        // A client that stops reading is dropped after the write timeout:
        // the download's task and its buffers go with it.
        match tokio::time::timeout(
            self.write_timeout,
            self.chunks.send(Ok(Bytes::from_owner(plaintext))),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client stopped reading",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} s",
                    self.write_timeout.as_secs()
                ),
            )),
        }
    }
}

/// A response body fed by `source` from a task of its own, a few chunks
/// ahead ([`CHUNKS_IN_FLIGHT`]): a client that takes nothing for
/// `write_timeout` ends it, and the source goes with the task, as a
/// download's plaintext does with [`BodyWriter`]. For bytes sent as they
/// are stored (a meeting item's ciphertext).
pub(crate) fn timed_body(
    source: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    write_timeout: std::time::Duration,
) -> Body {
    use futures_util::StreamExt as _;
    let (chunks, body) = mpsc::channel(CHUNKS_IN_FLIGHT);
    drop(tokio::spawn(async move {
        let mut source = std::pin::pin!(source);
        while let Some(chunk) = source.next().await {
            let last = chunk.is_err();
            match tokio::time::timeout(write_timeout, chunks.send(chunk)).await {
                Ok(Ok(())) if !last => {}
                // Failed, or the client went away or read nothing for too
                // long: the source is dropped.
                _ => return,
            }
        }
    }));
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|chunk: io::Result<Bytes>| (chunk, body))
    });
    Body::from_stream(stream)
}

/// `body`, each data frame's length shown to `watch` as it passes
/// (counted, say), and whatever `watch` holds kept until the body is sent
/// or dropped. Its size hint is kept, so a known length is still sent as
/// `Content-Length`.
pub(crate) fn watched(body: Body, watch: impl FnMut(usize) + Send + Unpin + 'static) -> Body {
    Body::new(Watched { inner: body, watch })
}

struct Watched<F> {
    inner: Body,
    watch: F,
}

impl<F: FnMut(usize) + Send + Unpin + 'static> http_body::Body for Watched<F> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            (this.watch)(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::http::StatusCode;
    use tokio::io::AsyncReadExt as _;

    /// What a seal gets from an upload `body` paced by `limits`: the error
    /// it ends with.
    async fn read_error(body: Body, limits: BodyLimits) -> io::Error {
        let mut reader = body_reader(paced(body, limits));
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap_err()
    }

    const LIMITS: BodyLimits = BodyLimits {
        idle: std::time::Duration::from_millis(50),
        max_bytes: 10,
    };

    #[tokio::test]
    async fn a_body_the_client_ends_early_is_the_clients_fault() {
        let broken = Body::from_stream(futures_util::stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )),
        ]));
        let error = read_error(broken, LIMITS).await;
        assert_eq!(body_status(&error), Some(StatusCode::BAD_REQUEST));
        let large = Body::from(vec![0u8; 11]);
        let error = read_error(large, LIMITS).await;
        assert_eq!(body_status(&error), Some(StatusCode::PAYLOAD_TOO_LARGE));
        let silent = Body::from_stream(futures_util::stream::pending::<io::Result<Bytes>>());
        let error = read_error(silent, LIMITS).await;
        assert_eq!(body_status(&error), Some(StatusCode::REQUEST_TIMEOUT));
    }

    #[test]
    fn errors_of_the_same_kinds_from_elsewhere_are_not_the_clients() {
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::FileTooLarge,
            io::ErrorKind::ConnectionAborted,
        ] {
            let store = io::Error::new(kind, "the blob store did not answer");
            assert_eq!(body_status(&store), None, "{kind:?}");
            let wrapped = io::Error::other(store);
            assert_eq!(body_status(&wrapped), None, "{kind:?}");
        }
    }
}
