//! What a service keeps about each sealed file.

use atrest_filekey::{FileContext, FileId, FileVersion, KeyVersion, TenantId, WrappedFileKey};
use atrest_stream::{PREFIX_LEN, SegmentSize, TINK_HEADER_LEN};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Everything needed to open a sealed file again, apart from its blob: the
/// caller keeps it in its metadata database, next to the blob's name.
///
/// The blob itself holds no tenant id, file id or file name; the record
/// holds no key in the clear (the file key is wrapped under the tenant's
/// TIK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// The tenant the file belongs to.
    pub tenant: TenantId,
    /// The file's id.
    pub file: FileId,
    /// The file version.
    pub version: FileVersion,
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
            .map_err(|_| Error::Record(format!("invalid segment size {}", self.segment_size)))
    }

    /// `len` if it is the plaintext length the record gives.
    pub(crate) fn check_len(&self, len: u64) -> Result<u64, Error> {
        if len == self.plaintext_len {
            Ok(len)
        } else {
            Err(Error::Record(format!(
                "the blob holds {len} bytes, the record says {}",
                self.plaintext_len
            )))
        }
    }

    /// How many segments the blob has.
    pub fn segments(&self) -> u64 {
        // The Tink header and the first segment together fill one segment.
        let body = self.blob_len.saturating_sub(PREFIX_LEN as u64);
        body.div_ceil(u64::from(self.segment_size.max(1)))
    }

    /// How many segments a read of `start..end` decrypts.
    pub(crate) fn segments_in(&self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let size = u64::from(self.segment_size);
        let first = size.saturating_sub((TINK_HEADER_LEN + atrest_stream::TAG_LEN) as u64);
        let rest = size.saturating_sub(atrest_stream::TAG_LEN as u64).max(1);
        let index = |offset: u64| {
            if offset < first {
                0
            } else {
                1 + (offset - first) / rest
            }
        };
        index(end - 1) - index(start) + 1
    }
}
