//! What a service keeps about each sealed file.

use atrest_filekey::{FileContext, FileId, FileVersion, KeyVersion, TenantId, WrappedFileKey};
use atrest_stream::{Layout, SegmentSize};
use serde::{Deserialize, Serialize};

use crate::blob::BlobName;
use crate::{Error, RecordError};

/// One sealed file version, as the catalog keeps it: everything needed to
/// open it again, and the name of its blob.
///
/// The [`crate::Catalog`] is its one home: [`crate::Files::seal`] commits
/// it there once the blob is durable, a re-wrap updates its wrapped key in
/// place, and [`crate::Files::open`] reads it from there, so the wrapped
/// key used is always the current one. The blob holds no tenant id, file id
/// or file name; the record holds no key in the clear (the file key is
/// wrapped under the tenant's TIK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// The tenant the file belongs to.
    pub tenant: TenantId,
    /// The file's name in the tenant.
    pub name: String,
    /// The file's id (the same for every version of the name).
    pub file: FileId,
    /// The file version.
    pub version: FileVersion,
    /// The blob holding the ciphertext.
    pub blob: BlobName,
    /// When the seal completed, in seconds since the Unix epoch.
    pub sealed_at: u64,
    /// The file key, wrapped under the tenant's TIK.
    pub wrapped_key: WrappedFileKey,
    /// Plaintext length in bytes.
    pub plaintext_len: u64,
    /// Blob length in bytes.
    pub blob_len: u64,
    /// The stream's segment size in bytes.
    pub segment_size: u32,
    /// The stream format version.
    pub format: u8,
}

impl FileRecord {
    /// The file version's context: bound as associated data to the wrapped
    /// key and to every segment of the blob.
    pub fn context(&self) -> FileContext {
        FileContext::new(self.tenant, self.file, self.version)
    }

    /// The TIK version the file key is wrapped under.
    pub fn tik_version(&self) -> KeyVersion {
        self.wrapped_key.kek_version()
    }

    pub(crate) fn segment_size_checked(&self) -> Result<SegmentSize, Error> {
        SegmentSize::new(self.segment_size)
            .map_err(|_| RecordError::InvalidSegmentSize(self.segment_size).into())
    }

    /// `len` if it is the plaintext length the record gives.
    pub(crate) fn check_len(&self, len: u64) -> Result<u64, Error> {
        if len == self.plaintext_len {
            Ok(len)
        } else {
            Err(RecordError::LengthMismatch {
                record: self.plaintext_len,
                blob: len,
            }
            .into())
        }
    }

    /// The segment geometry of the blob, from the crate that defines it.
    fn layout(&self) -> Option<Layout> {
        SegmentSize::new(self.segment_size).ok().map(Layout::new)
    }

    /// How many segments the blob has (0 for a record whose segment size or
    /// length no stream can have).
    pub fn segments(&self) -> u64 {
        self.layout()
            .and_then(|layout| layout.for_stream(self.blob_len).ok())
            .map_or(0, |extent| extent.segments)
    }

    /// How many segments a read of `start..end` decrypts.
    pub(crate) fn segments_in(&self, start: u64, end: u64) -> u64 {
        self.layout().map_or(0, |layout| {
            let covering = layout.segments_covering(start..end);
            covering.end - covering.start
        })
    }
}
