//! Keys delivered to a client: a file version's key released to a
//! principal who decrypts the version on their side (a meeting
//! participant's client), and the version's ciphertext as stored.
//!
//! The service never sees the plaintext of a delivered version again; the
//! recipient holds what decrypts it for as long as they keep it. A
//! delivery is for content the recipient may keep anyway (meeting content
//! shown to participants): revoking access later stops further deliveries,
//! not what was delivered.

use atrest_audit::{Event, Outcome, Text};
use atrest_filekey::{FileContext, FileId, FileKey, FileVersion, TenantId};
use atrest_stream::format::HEADER_LEN;
use atrest_stream::{Opener, Options, SegmentSize};
use atrest_tenant::Access;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use zeroize::Zeroizing;

use super::{FileSelector, Files, OpenSink};
use crate::{Error, FileRecord};

/// The wire form's `format` member: what [`DeliveredKey::from_wire`] reads.
pub const DELIVERED_KEY_FORMAT: &str = "atrest-delivered-key/1";

/// What a client needs to decrypt one file version on its side: the
/// version's file key, the context the stream is bound to, and the sizes
/// the (authenticated) record gives. Made by [`Files::deliver_key`]; sent
/// to the client in its wire form ([`DeliveredKey::expose_to_wire`]) over
/// TLS, read back there ([`DeliveredKey::from_wire`]) and used to decrypt
/// the ciphertext ([`DeliveredKey::open`]).
///
/// `Debug` shows the context and sizes, never the key; the type does not
/// implement `Serialize` or `Display`, so the key reaches text only through
/// [`DeliveredKey::expose_to_wire`].
pub struct DeliveredKey {
    key: FileKey,
    context: FileContext,
    segment_size: SegmentSize,
    plaintext_len: u64,
    blob_len: u64,
}

impl core::fmt::Debug for DeliveredKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeliveredKey")
            .field("context", &self.context)
            .field("segment_size", &self.segment_size.get())
            .field("plaintext_len", &self.plaintext_len)
            .field("blob_len", &self.blob_len)
            .finish_non_exhaustive()
    }
}

/// The wire form's members.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    tenant: TenantId,
    file: FileId,
    version: u64,
    segment_size: u32,
    plaintext_len: u64,
    blob_len: u64,
    /// The file key, hex.
    key: String,
}

impl Drop for Wire {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl DeliveredKey {
    /// The file version this key decrypts, and the context its stream is
    /// bound to.
    pub fn context(&self) -> &FileContext {
        &self.context
    }

    /// The version's length in plaintext bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// The ciphertext's length in bytes.
    pub fn ciphertext_len(&self) -> u64 {
        self.blob_len
    }

    /// The wire form, JSON: `format` ([`DELIVERED_KEY_FORMAT`]), the
    /// tenant, file and version ids, the segment size, both lengths, and
    /// **the file key** (hex). Whoever holds this text can decrypt the
    /// version: send it over TLS only, never log or store it. The buffer
    /// is wiped when dropped.
    pub fn expose_to_wire(&self) -> Zeroizing<String> {
        let wire = Wire {
            format: DELIVERED_KEY_FORMAT.to_owned(),
            tenant: self.context.tenant,
            file: self.context.file,
            version: self.context.version.get(),
            segment_size: self.segment_size.get(),
            plaintext_len: self.plaintext_len,
            blob_len: self.blob_len,
            key: hex::encode(self.key.expose_secret()),
        };
        // Serializing plain data into a string cannot fail.
        Zeroizing::new(serde_json::to_string(&wire).unwrap_or_default())
    }

    /// Reads the wire form [`DeliveredKey::expose_to_wire`] made.
    ///
    /// # Errors
    /// [`Error::DeliveredKey`] (kind `Usage`) if `text` is not that form
    /// (another format, a missing or extra member, a key that is not 32
    /// bytes of hex, a segment size or version out of range); the message
    /// never holds the key.
    pub fn from_wire(text: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::DeliveredKey(why.to_owned());
        // Where it failed, never what it read (which may be the key).
        let wire: Wire = serde_json::from_str(text).map_err(|e| {
            invalid(&format!(
                "not a delivered key ({:?} at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if wire.format != DELIVERED_KEY_FORMAT {
            return Err(invalid("another format than atrest-delivered-key/1"));
        }
        let mut bytes = Zeroizing::new([0u8; FileKey::LEN]);
        hex::decode_to_slice(&wire.key, &mut bytes[..])
            .map_err(|_| invalid("the key is not 32 bytes of hex"))?;
        let version =
            FileVersion::new(wire.version).map_err(|_| invalid("the version is out of range"))?;
        let segment_size = SegmentSize::new(wire.segment_size)
            .map_err(|_| invalid("the segment size is out of range"))?;
        Ok(Self {
            key: FileKey::from_secret_bytes(&bytes),
            context: FileContext::new(wire.tenant, wire.file, version),
            segment_size,
            plaintext_len: wire.plaintext_len,
            blob_len: wire.blob_len,
        })
    }

    /// Decrypts the version's ciphertext, read from `ciphertext`, into
    /// `sink`, a run of segments (about 256 KiB) at a time, as
    /// [`Files::open`] does on the service's side: only authenticated
    /// plaintext reaches `sink`, and only an `Ok` return means the whole
    /// version, end included, was authentic and of the lengths its record
    /// gives (discard what `sink` took otherwise). Returns the plaintext
    /// length.
    ///
    /// # Errors
    /// [`Error::Stream`] if the ciphertext is not the version's (tampered,
    /// cut short, longer, another version's, sealed with another segment
    /// size); [`Error::Record`] if its plaintext is not the record's
    /// length; [`Error::Io`] if reading or the sink fails.
    pub async fn open(
        &self,
        mut ciphertext: impl AsyncRead + Unpin + Send,
        sink: &mut dyn OpenSink,
    ) -> Result<u64, Error> {
        let associated_data = self.context.encode();
        let opener = Opener::new(&self.key, &associated_data, Options::default())
            .expect_segment_size(self.segment_size);
        let truncated = |error: std::io::Error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Stream(atrest_stream::Error::Truncated),
            _ => Error::Io(error),
        };
        let mut header = [0u8; HEADER_LEN];
        ciphertext
            .read_exact(&mut header)
            .await
            .map_err(truncated)?;
        let runs = opener.runs(&header)?;
        let mut at = HEADER_LEN as u64;
        let mut segment = 0u64;
        let mut written = 0u64;
        loop {
            let len = (runs.run_len(segment) as u64).min(self.blob_len.saturating_sub(at));
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let mut buffer = runs.buffer();
            ciphertext
                .read_exact(buffer.spare(len))
                .await
                .map_err(truncated)?;
            buffer.advance(len);
            at += len as u64;
            let last = at >= self.blob_len;
            if last && ciphertext.read(&mut [0u8; 1]).await? > 0 {
                return Err(atrest_stream::Error::TrailingData.into());
            }
            let plaintext = runs.open(segment, buffer, last)?;
            written += plaintext.len() as u64;
            sink.take(plaintext).await?;
            if last {
                break;
            }
            segment += runs.segments_per_run();
        }
        sink.finish().await?;
        if written != self.plaintext_len {
            return Err(crate::RecordError::LengthMismatch {
                record: self.plaintext_len,
                blob: written,
            }
            .into());
        }
        Ok(written)
    }
}

impl Files {
    /// Releases the key of `file` to `access` for decryption on the
    /// recipient's side: the record is read and authenticated, the key
    /// released (the policy decides, and the hierarchy audits the release
    /// or the refusal), and the delivery audited (`file_key_delivered`,
    /// naming the recipient). Returns the record and the key to deliver.
    ///
    /// The recipient can decrypt that version for as long as they keep the
    /// key: deliver only what they may keep.
    ///
    /// # Errors
    /// As for [`Files::open`] before any byte is read: no such file or
    /// version, a refused release, a record that does not authenticate, an
    /// audit record that cannot be written (then nothing is delivered).
    pub async fn deliver_key(
        &self,
        access: &Access<'_>,
        file: &FileSelector<'_>,
    ) -> Result<(FileRecord, DeliveredKey), Error> {
        let record = self
            .catalog
            .record(file.tenant, file.name, file.version)
            .await?;
        let (key, record) = self.key_for(access, file, record).await?;
        let segment_size = record.segment_size_checked()?;
        let context = record.context();
        self.audit(
            &context,
            Event::FileKeyDelivered {
                file: Self::file_ref(&context),
                recipient: Text::lossy(access.principal()),
            },
            Outcome::Success,
        )
        .await?;
        let delivered = DeliveredKey {
            key,
            context,
            segment_size,
            plaintext_len: record.plaintext_len,
            blob_len: record.blob_len,
        };
        Ok((record, delivered))
    }

    /// The ciphertext of `file`, as stored, for a client that holds its
    /// delivered key: the record is read and authenticated (no key is
    /// released), and the first copy of the blob that has the record's
    /// length is opened. Nothing is decrypted here: the client
    /// authenticates every segment ([`DeliveredKey::open`]).
    ///
    /// # Errors
    /// [`Error::Catalog`] if there is no such file or version, or its
    /// record does not authenticate; [`Error::BlobMissing`] or
    /// [`Error::Blob`] if no copy can be opened.
    pub async fn ciphertext(
        &self,
        file: &FileSelector<'_>,
    ) -> Result<(FileRecord, Ciphertext), Error> {
        let record = self.record(file.tenant, file.name, file.version).await?;
        let locations = self.blobs.locations().max(1);
        let mut last = None;
        for location in 0..locations {
            match self.blobs.len_at(&record.blob, location).await {
                Ok(len) if len == record.blob_len => {}
                Ok(_) => {
                    last = Some(Error::from(atrest_stream::Error::Truncated));
                    continue;
                }
                Err(error) => {
                    last = Some(error);
                    continue;
                }
            }
            match self.blobs.open_at(&record.blob, location).await {
                Ok(reader) => {
                    let left = record.blob_len;
                    return Ok((record, Ciphertext { reader, left }));
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::BlobMissing {
            blob: record.blob.clone(),
            locations,
        }))
    }
}

/// A file version's ciphertext being read, as [`Files::ciphertext`] opened
/// it: exactly the record's blob length, a chunk at a time.
pub struct Ciphertext {
    reader: Box<dyn crate::BlobReader>,
    left: u64,
}

impl core::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ciphertext")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// Bytes read at a time.
const CIPHERTEXT_CHUNK: u64 = 256 << 10;

impl Ciphertext {
    /// The next bytes, `None` once the record's length was read.
    ///
    /// # Errors
    /// [`Error::Blob`] if the store fails; [`Error::Stream`]
    /// ([`atrest_stream::Error::Truncated`]) if the blob ends early.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.left.min(CIPHERTEXT_CHUNK)).unwrap_or(1 << 18);
        let mut buffer = atrest_stream::RunBuffer::new();
        let read = self.reader.read(&mut buffer, want).await?;
        if read == 0 {
            return Err(atrest_stream::Error::Truncated.into());
        }
        self.left -= read as u64;
        Ok(Some(Bytes::copy_from_slice(
            buffer.get(..read).unwrap_or_default(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered() -> DeliveredKey {
        let mut rng = atrest_filekey::OsRng;
        DeliveredKey {
            key: FileKey::from_secret_bytes(&[7; 32]),
            context: FileContext::new(
                TenantId::random(&mut rng).unwrap(),
                FileId::random(&mut rng).unwrap(),
                FileVersion::FIRST,
            ),
            segment_size: SegmentSize::DEFAULT,
            plaintext_len: 10,
            blob_len: 100,
        }
    }

    #[test]
    fn the_wire_form_round_trips_and_debug_hides_the_key() {
        let key = delivered();
        let wire = key.expose_to_wire();
        let back = DeliveredKey::from_wire(&wire).unwrap();
        assert_eq!(back.key.expose_secret(), &[7; 32]);
        assert_eq!(back.context, key.context);
        assert_eq!(back.plaintext_len(), 10);
        assert_eq!(back.ciphertext_len(), 100);
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("0707") && !shown.contains("7, 7"),
            "{shown}"
        );
    }

    #[test]
    fn a_malformed_wire_form_is_refused_without_the_key() {
        let wire = delivered().expose_to_wire();
        for bad in [
            wire.replace("atrest-delivered-key/1", "atrest-delivered-key/2"),
            wire.replace(&"07".repeat(32), &"07".repeat(31)),
            wire.replace(&"07".repeat(32), &format!("{}zz", "07".repeat(31))),
            wire.replace("\"version\":1", "\"version\":0"),
            wire.replace("\"segment_size\":65536", "\"segment_size\":1"),
            wire.replace('}', ",\"extra\":1}"),
            "{}".to_owned(),
            "not json".to_owned(),
        ] {
            let error = DeliveredKey::from_wire(&bad).unwrap_err();
            assert_eq!(error.kind(), crate::ErrorKind::Usage, "{bad}");
            assert!(!error.to_string().contains("0707"), "{error}");
        }
    }
}
