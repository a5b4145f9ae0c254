//! The one decoding of a catalog's stored values, shared by every backend:
//! a value that is not valid is [`CatalogError::Corrupt`].

use atrest_filekey::{FileId, FileVersion, TenantId, WrappedFileKey};
use atrest_tenant::RecordTag;

use crate::blob::{BlobDigest, BlobName};
use crate::{CatalogError, FileRecord};

/// A file record's columns as a catalog stores them, before they are
/// checked: what every backend reads, decoded once by
/// [`StoredRecord::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The tenant id's 16 bytes.
    pub tenant: Vec<u8>,
    /// The file's name.
    pub name: String,
    /// The file id's 16 bytes.
    pub file: Vec<u8>,
    /// The file version.
    pub version: i64,
    /// The blob's name.
    pub blob: String,
    /// When the seal completed, in seconds since the Unix epoch.
    pub sealed_at: i64,
    /// The wrapped file key.
    pub wrapped_key: Vec<u8>,
    /// Plaintext length in bytes.
    pub plaintext_len: i64,
    /// Blob length in bytes.
    pub blob_len: i64,
    /// The blob's SHA-256 digest, if the record has one.
    pub blob_sha256: Option<Vec<u8>>,
    /// The stream's segment size in bytes.
    pub segment_size: i64,
    /// The stream format version.
    pub format: i64,
    /// The record's tag.
    pub tag: Vec<u8>,
    /// The media type, if the version has one.
    pub media_type: Option<String>,
}

impl StoredRecord {
    /// The record the columns hold. Its tag is not checked here:
    /// `Files` authenticates a record before it opens it.
    ///
    /// # Errors
    /// [`CatalogError::Corrupt`] naming the first value that is not
    /// valid.
    pub fn decode(self) -> Result<FileRecord, CatalogError> {
        Ok(FileRecord {
            tenant: tenant_id(&self.tenant)?,
            name: self.name,
            file: file_id(&self.file)?,
            version: file_version(self.version)?,
            blob: blob_name(&self.blob)?,
            sealed_at: unsigned(self.sealed_at, "seal time")
                .ok()
                .filter(|&seconds| seconds <= FileRecord::LATEST_SEAL_TIME)
                .ok_or(CatalogError::Corrupt("seal time"))?,
            wrapped_key: wrapped_key(&self.wrapped_key)?,
            plaintext_len: unsigned(self.plaintext_len, "plaintext length")?,
            blob_len: unsigned(self.blob_len, "blob length")?,
            blob_sha256: self
                .blob_sha256
                .map(|bytes| {
                    BlobDigest::from_slice(&bytes).ok_or(CatalogError::Corrupt("blob digest"))
                })
                .transpose()?,
            segment_size: unsigned(self.segment_size, "segment size")?,
            format: unsigned(self.format, "format")?,
            tag: RecordTag::from_slice(&self.tag).ok_or(CatalogError::Corrupt("record tag"))?,
            media_type: self
                .media_type
                .map(|text| {
                    crate::catalog::MediaType::new(&text)
                        .map(|_| text)
                        .map_err(|_| CatalogError::Corrupt("media type"))
                })
                .transpose()?,
        })
    }
}

/// A non-negative integer that fits `T`.
fn unsigned<T: TryFrom<i64>>(value: i64, what: &'static str) -> Result<T, CatalogError> {
    T::try_from(value).map_err(|_| CatalogError::Corrupt(what))
}

/// A tenant id from its 16 bytes.
///
/// # Errors
/// [`CatalogError::Corrupt`] for any other value.
pub fn tenant_id(bytes: &[u8]) -> Result<TenantId, CatalogError> {
    atrest_tenant::store::stored::tenant_id(bytes).map_err(|_| CatalogError::Corrupt("tenant id"))
}

/// A file id from its 16 bytes.
///
/// # Errors
/// [`CatalogError::Corrupt`] for any other value.
pub fn file_id(bytes: &[u8]) -> Result<FileId, CatalogError> {
    <[u8; 16]>::try_from(bytes)
        .ok()
        .and_then(|bytes| FileId::from_bytes(bytes).ok())
        .ok_or(CatalogError::Corrupt("file id"))
}

/// A file version.
///
/// # Errors
/// [`CatalogError::Corrupt`] for 0 or a negative number.
pub fn file_version(value: i64) -> Result<FileVersion, CatalogError> {
    u64::try_from(value)
        .ok()
        .and_then(|value| FileVersion::try_from(value).ok())
        .ok_or(CatalogError::Corrupt("file version"))
}

/// A blob name.
///
/// # Errors
/// [`CatalogError::Corrupt`] for a text that is not one.
pub fn blob_name(text: &str) -> Result<BlobName, CatalogError> {
    text.parse().map_err(|_| CatalogError::Corrupt("blob name"))
}

/// A wrapped file key.
///
/// # Errors
/// [`CatalogError::Corrupt`] for bytes that are not one.
pub fn wrapped_key(bytes: &[u8]) -> Result<WrappedFileKey, CatalogError> {
    WrappedFileKey::from_bytes(bytes).map_err(|_| CatalogError::Corrupt("wrapped file key"))
}

/// Checks a row's TIK version column (what the catalog's index and
/// queries go by) against the version its wrapped key names (what
/// unwrapping goes by): re-wrapping and retiring a version must not act
/// on a column edited to say another.
///
/// # Errors
/// [`CatalogError::Corrupt`] if they differ.
pub fn check_tik_version(column: i64, wrapped: &WrappedFileKey) -> Result<(), CatalogError> {
    if column == i64::from(u32::from(wrapped.kek_version())) {
        Ok(())
    } else {
        Err(CatalogError::Corrupt("TIK version"))
    }
}
