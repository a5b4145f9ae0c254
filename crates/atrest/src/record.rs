//! What a service keeps about each sealed file.

use atrest_filekey::{FileContext, FileId, FileVersion, KeyVersion, TenantId, WrappedFileKey};
use atrest_stream::SegmentSize;
use atrest_stream::format::Layout;
use atrest_tenant::{MetadataKey, RecordTag};
use serde::{Deserialize, Serialize};

use crate::blob::{BlobDigest, BlobName};
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
    /// When the seal completed, in seconds since the Unix epoch: at most
    /// [`FileRecord::LATEST_SEAL_TIME`] in a record read from a catalog
    /// (a later one is refused as corrupt). Covered by the tag of every
    /// record sealed since tags cover it (not of those from before).
    pub sealed_at: u64,
    /// The file key, wrapped under the tenant's TIK.
    pub wrapped_key: WrappedFileKey,
    /// Plaintext length in bytes.
    pub plaintext_len: u64,
    /// Blob length in bytes.
    pub blob_len: u64,
    /// The SHA-256 digest of the blob (computed while it was written), so
    /// a copy of it can be checked and repaired without any key; `None`
    /// for records committed before blobs had digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_sha256: Option<BlobDigest>,
    /// The stream's segment size in bytes.
    pub segment_size: u32,
    /// The stream format version.
    pub format: u8,
    /// The media type the version was uploaded with, if one was given
    /// (HTTP's `Content-Type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The record's tag under the tenant's metadata key
    /// ([`atrest_tenant::KeyHierarchy::metadata_key`]): binds the
    /// tenant, name, file id, version, blob, sizes, blob digest, media
    /// type and seal time together, so a record
    /// edited in the database (two files' records swapped, a size changed)
    /// is refused. The wrapped key is not covered: it is bound to the
    /// tenant, file id and version by its own authentication, and a
    /// re-wrap replaces it in place.
    #[serde(with = "tag_hex")]
    pub tag: RecordTag,
}

/// The label of file records' tags under a tenant's metadata key.
const FILE_RECORD_LABEL: &[u8] = b"atrest/v1 file record";

/// What a file record's tag covers, encoded without ambiguity.
pub(crate) struct TaggedFields<'a> {
    pub(crate) tenant: TenantId,
    pub(crate) name: &'a str,
    pub(crate) file: FileId,
    pub(crate) version: FileVersion,
    pub(crate) blob: &'a BlobName,
    pub(crate) plaintext_len: u64,
    pub(crate) blob_len: u64,
    pub(crate) blob_sha256: Option<BlobDigest>,
    pub(crate) segment_size: u32,
    pub(crate) format: u8,
    pub(crate) media_type: Option<&'a str>,
    /// `None` for a record whose tag was made before tags covered the seal
    /// time.
    pub(crate) sealed_at: Option<u64>,
}

impl TaggedFields<'_> {
    fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.name.len());
        out.extend_from_slice(&self.tenant.encode());
        for text in [self.name, self.blob.as_str()] {
            out.extend_from_slice(&(text.len() as u64).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&self.file.encode());
        out.extend_from_slice(&self.version.encode());
        out.extend_from_slice(&self.plaintext_len.to_be_bytes());
        out.extend_from_slice(&self.blob_len.to_be_bytes());
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.push(self.format);
        // Records from before blob digests end here, so their tags still
        // verify; a digest is appended after a marker, and removing it (or
        // adding one) changes the message.
        if let Some(digest) = &self.blob_sha256 {
            out.push(1);
            out.extend_from_slice(digest.as_bytes());
        }
        // Likewise a media type, after a marker of its own.
        if let Some(media_type) = self.media_type {
            out.push(2);
            out.extend_from_slice(&(media_type.len() as u64).to_be_bytes());
            out.extend_from_slice(media_type.as_bytes());
        }
        // And last the seal time, which every record sealed since has: a
        // record's tag verifies with it, or (a record from before) without
        // it, never both, so the time of a record that has it cannot be
        // edited, nor the record passed off as one from before.
        if let Some(sealed_at) = self.sealed_at {
            out.push(3);
            out.extend_from_slice(&sealed_at.to_be_bytes());
        }
        out
    }

    /// The tag these fields get under `key`.
    pub(crate) fn tag(&self, key: &MetadataKey) -> RecordTag {
        key.tag(FILE_RECORD_LABEL, &self.message())
    }
}

impl FileRecord {
    /// The latest seal time a catalog's record may give: the last second of
    /// the year 9999 (UTC), the last an HTTP or RFC 3339 date can show.
    pub const LATEST_SEAL_TIME: u64 = 253_402_300_799;

    /// When the seal completed, as a time (a `sealed_at` past
    /// [`FileRecord::LATEST_SEAL_TIME`], which no catalog gives, reads as
    /// that time).
    pub fn sealed_time(&self) -> std::time::SystemTime {
        let seconds = self.sealed_at.min(Self::LATEST_SEAL_TIME);
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)
    }

    /// The fields the tag covers: with the seal time, as every record
    /// sealed since tags covered it has them, or without, as the records
    /// from before.
    fn tagged_fields(&self, with_seal_time: bool) -> TaggedFields<'_> {
        TaggedFields {
            tenant: self.tenant,
            name: &self.name,
            file: self.file,
            version: self.version,
            blob: &self.blob,
            plaintext_len: self.plaintext_len,
            blob_len: self.blob_len,
            blob_sha256: self.blob_sha256,
            segment_size: self.segment_size,
            format: self.format,
            media_type: self.media_type.as_deref(),
            sealed_at: with_seal_time.then_some(self.sealed_at),
        }
    }

    /// Checks the record's tag under its tenant's metadata key, and that it
    /// is the record of `tenant`'s `name` (and `version`, if one was asked
    /// for).
    pub(crate) fn authenticate(
        &self,
        key: &MetadataKey,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<(), Error> {
        let asked =
            self.tenant == tenant && self.name == name && version.is_none_or(|v| v == self.version);
        let verifies = |with_seal_time: bool| {
            key.verify(
                FILE_RECORD_LABEL,
                &self.tagged_fields(with_seal_time).message(),
                &self.tag,
            )
        };
        if asked && (verifies(true) || verifies(false)) {
            Ok(())
        } else {
            Err(crate::CatalogError::Tampered {
                tenant: self.tenant,
                name: name.to_owned(),
                version: self.version,
            }
            .into())
        }
    }

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

/// A record tag in serialized records: 64 lowercase hex digits.
mod tag_hex {
    use atrest_tenant::RecordTag;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        tag: &RecordTag,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let text: String = tag.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        serializer.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<RecordTag, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || D::Error::custom("a record tag is 64 hex digits");
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let bytes: Option<Vec<u8>> = text
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| {
                core::str::from_utf8(pair)
                    .ok()
                    .and_then(|digits| u8::from_str_radix(digits, 16).ok())
            })
            .collect();
        bytes
            .as_deref()
            .and_then(RecordTag::from_slice)
            .ok_or_else(bad)
    }
}
