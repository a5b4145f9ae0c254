//! Async (tokio) forms of [`Files::seal`] and [`Files::open`].
//!
//! Key operations (`new_file_key`, `release_file_key`) are synchronous: with
//! a warm TIK cache they take about a microsecond; with a cold cache they
//! call the root-key provider (an HSM round trip), which blocks the task
//! for that long.

use atrest_filekey::FileContext;
use atrest_stream::{AsyncDecryptor, AsyncEncryptor};
use atrest_tenant::Access;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::{Error, FileRecord, Files};

fn stream_error(error: std::io::Error) -> Error {
    Error::Stream(atrest_stream::Error::from_io(error))
}

impl Files {
    /// [`Files::seal`] for async readers and writers (one task; no extra
    /// threads).
    ///
    /// # Errors
    /// As for [`Files::seal`].
    pub async fn seal_async<R, W>(
        &self,
        access: &Access<'_>,
        context: &FileContext,
        mut plaintext: R,
        blob: W,
    ) -> Result<(FileRecord, W), Error>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (key, wrapped_key) = self.keys().new_file_key(access, context)?;
        let options = self.stream_options();
        let mut encryptor = AsyncEncryptor::with_options(blob, &key, &context.encode(), options)?;
        drop(key);
        let copied = tokio::io::copy(&mut plaintext, &mut encryptor).await;
        let result = match copied {
            Ok(len) => encryptor
                .finish()
                .await
                .map(|blob| (blob, len))
                .map_err(Error::from),
            Err(error) => Err(stream_error(error)),
        };
        let result = result.and_then(|(blob, plaintext_len)| {
            let blob_len = atrest_stream::stream_len(plaintext_len, options.segment_size)?;
            Ok((blob, plaintext_len, blob_len))
        });
        self.finish_seal(context, wrapped_key, result)
    }

    /// [`Files::open`] for async readers and writers.
    ///
    /// # Errors
    /// As for [`Files::open`].
    pub async fn open_async<R, W>(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        blob: R,
        mut out: W,
    ) -> Result<(W, u64), Error>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let key = self.release(access, record)?;
        let decryptor = AsyncDecryptor::with_backend(
            blob,
            &key,
            &record.context().encode(),
            self.options().backend,
        )
        .await;
        drop(key);
        let result = match decryptor {
            Ok(mut decryptor) => match tokio::io::copy(&mut decryptor, &mut out).await {
                Ok(len) => out.flush().await.map(|()| len).map_err(stream_error),
                Err(error) => Err(stream_error(error)),
            },
            Err(error) => Err(Error::from(error)),
        };
        let result = result.and_then(|len| record.check_len(len));
        self.audit_open(access, record, &result, None)?;
        Ok((out, result?))
    }
}
