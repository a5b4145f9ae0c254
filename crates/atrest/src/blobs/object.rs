//! Blobs in an `object_store` store: uploads sent a part at a time (a
//! multipart upload for a large blob), aborted when dropped unfinished;
//! reads streamed as the store sends them.

use atrest_stream::RunBuffer;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt as _;

use super::blob_error;
use crate::blob::{BlobReader, BlobUpload};
use crate::{Error, ErrorKind};

/// A blob sent to an `object_store` upload; aborted if dropped unfinished.
pub(super) struct ObjectUpload {
    upload: Option<BufWriter>,
    written: u64,
}

impl ObjectUpload {
    pub(super) fn new(upload: BufWriter) -> Self {
        Self {
            upload: Some(upload),
            written: 0,
        }
    }

    fn upload(&mut self) -> Result<&mut BufWriter, Error> {
        self.upload
            .as_mut()
            .ok_or_else(|| Error::blob(ErrorKind::Usage, "the upload failed or was finished"))
    }
}

#[async_trait::async_trait]
impl BlobUpload for ObjectUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), Error> {
        let len = bytes.len() as u64;
        self.upload()?.put(bytes).await.map_err(blob_error)?;
        self.written += len;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, Error> {
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| Error::blob(ErrorKind::Usage, "the upload failed or was finished"))?;
        upload
            .shutdown()
            .await
            .map_err(|e| Error::blob(ErrorKind::Unavailable, e))?;
        Ok(self.written)
    }
}

impl Drop for ObjectUpload {
    /// An upload dropped unfinished is aborted, on the runtime it ran on
    /// (a multipart upload's parts are deleted; nothing was visible).
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            drop(runtime.spawn(async move {
                let _ = upload.abort().await;
            }));
        }
    }
}

/// Reads a blob as the store streams it.
pub(super) struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    pending: Bytes,
}

impl ObjectReader {
    pub(super) fn new(stream: BoxStream<'static, object_store::Result<Bytes>>) -> Self {
        Self {
            stream,
            pending: Bytes::new(),
        }
    }
}

#[async_trait::async_trait]
impl BlobReader for ObjectReader {
    async fn read(&mut self, buf: &mut RunBuffer, max: usize) -> Result<usize, Error> {
        let mut read = 0;
        while read < max {
            if self.pending.is_empty() {
                match self.stream.next().await {
                    Some(chunk) => self.pending = chunk.map_err(blob_error)?,
                    None => break,
                }
            }
            let n = self.pending.len().min(max - read);
            buf.extend_from_slice(&self.pending.split_to(n));
            read += n;
        }
        Ok(read)
    }
}
