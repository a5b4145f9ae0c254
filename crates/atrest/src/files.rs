//! Sealing and opening files: the composition of the key hierarchy, the
//! stream format and the audit trail.

use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;

use atrest_audit::{Audit, Event, FileRef, Outcome, Record, Text};
use atrest_filekey::{FileContext, FileKey, WrappedFileKey};
use atrest_stream::{Backend, FORMAT_VERSION, Options, RandomAccess, ReadAt, SegmentSize};
use atrest_tenant::{Access, KeyHierarchy};

use crate::{Error, FileRecord};

/// How files are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealOptions {
    /// Segment size of new blobs (default 64 KiB).
    pub segment_size: SegmentSize,
    /// AES-256-GCM implementation.
    pub backend: Backend,
    /// Threads for encryption and decryption (0: one per core). Reading,
    /// cryptography and writing overlap, each on its own thread.
    ///
    /// The default is one per core but one, at least one: the reading and
    /// writing threads need a core of their own when the data comes from and
    /// goes to files (measured with `cli_throughput`: on two cores, one
    /// cryptography thread is 1.4 times faster file to file than two).
    pub threads: usize,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            segment_size: SegmentSize::DEFAULT,
            backend: Backend::default(),
            threads: std::thread::available_parallelism()
                .map_or(1, |cores| cores.get().saturating_sub(1))
                .max(1),
        }
    }
}

/// Seals and opens tenant files: one call to encrypt an upload for
/// (tenant, file, version), one to give a principal a file or a byte range
/// of it. Every seal and open is audited (and every key release, by the
/// key hierarchy).
///
/// Shareable across threads.
pub struct Files {
    keys: Arc<KeyHierarchy>,
    audit: Arc<dyn Audit>,
    actor: Text,
    options: SealOptions,
}

impl core::fmt::Debug for Files {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Files")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Files {
    /// Files whose keys come from `keys`, audited through `audit` (usually
    /// the same log the hierarchy writes to).
    pub fn new(keys: Arc<KeyHierarchy>, audit: Arc<dyn Audit>) -> Self {
        Self {
            keys,
            audit,
            actor: Text::lossy("atrest"),
            options: SealOptions::default(),
        }
    }

    /// With these options.
    #[must_use]
    pub fn with_options(mut self, options: SealOptions) -> Self {
        self.options = options;
        self
    }

    /// Names the actor in audit records (the service's identity).
    #[must_use]
    pub fn with_actor(mut self, actor: &str) -> Self {
        self.actor = Text::lossy(actor);
        self
    }

    /// The key hierarchy.
    pub fn keys(&self) -> &Arc<KeyHierarchy> {
        &self.keys
    }

    fn audit(&self, context: &FileContext, event: Event, outcome: Outcome) -> Result<(), Error> {
        let record = Record::new(self.actor.clone(), event)
            .tenant(Text::lossy(context.tenant.to_string()))
            .outcome(outcome);
        let _ = self.audit.record(record)?;
        Ok(())
    }

    fn file_ref(context: &FileContext) -> FileRef {
        FileRef {
            file: Text::lossy(context.file.to_string()),
            version: u64::from(context.version),
        }
    }

    /// The options files are sealed and opened with.
    pub fn options(&self) -> SealOptions {
        self.options
    }

    /// Audits a seal's outcome and, on success, makes its record.
    /// `result` is the blob writer, the plaintext length and the blob
    /// length.
    pub(crate) fn finish_seal<W>(
        &self,
        context: &FileContext,
        wrapped_key: WrappedFileKey,
        result: Result<(W, u64, u64), Error>,
    ) -> Result<(FileRecord, W), Error> {
        let (blob, plaintext_len, blob_len) = match result {
            Ok(done) => done,
            Err(error) => {
                let event = Event::FileSealed {
                    file: Self::file_ref(context),
                    bytes: 0,
                    segments: 0,
                };
                let outcome = Outcome::Failed {
                    error: Text::lossy(error.to_string()),
                };
                self.audit(context, event, outcome)?;
                return Err(error);
            }
        };
        let record = FileRecord {
            tenant: context.tenant,
            file: context.file,
            version: context.version,
            wrapped_key,
            plaintext_len,
            blob_len,
            segment_size: self.options.segment_size.get(),
            format: FORMAT_VERSION,
        };
        let event = Event::FileSealed {
            file: Self::file_ref(context),
            bytes: plaintext_len,
            segments: record.segments(),
        };
        self.audit(context, event, Outcome::Success)?;
        Ok((record, blob))
    }

    pub(crate) fn stream_options(&self) -> Options {
        Options::default()
            .segment_size(self.options.segment_size)
            .backend(self.options.backend)
    }

    /// Seals an upload: generates the file version's key, wraps it under
    /// the tenant's current TIK, encrypts everything `plaintext` yields into
    /// `blob` (the tenant, file and version bound as associated data, not
    /// stored), and audits it. Returns the record to keep and the blob
    /// writer.
    ///
    /// The key is dropped (zeroized) before this returns. If it fails, the
    /// blob written so far is incomplete and must be discarded.
    ///
    /// # Errors
    /// [`Error::Keys`] if the tenant's keys cannot be used;
    /// [`Error::Stream`] if reading or writing fails; [`Error::Audit`].
    pub fn seal<R: Read + Send, W: Write + Send>(
        &self,
        access: &Access<'_>,
        context: &FileContext,
        plaintext: R,
        blob: W,
    ) -> Result<(FileRecord, W), Error> {
        let (key, wrapped_key) = self.keys.new_file_key(access, context)?;
        let sealed = CountingWriter::new(blob);
        let result = atrest_stream::encrypt_stream(
            plaintext,
            sealed,
            &key,
            &context.encode(),
            self.stream_options(),
            self.options.threads,
        );
        drop(key);
        let result = result
            .map(|(sealed, plaintext_len)| (sealed.inner, plaintext_len, sealed.written))
            .map_err(Error::from);
        self.finish_seal(context, wrapped_key, result)
    }

    pub(crate) fn release(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
    ) -> Result<FileKey, Error> {
        if record.format != FORMAT_VERSION {
            return Err(Error::Record(format!(
                "stream format version {} is not supported",
                record.format
            )));
        }
        let _ = record.segment_size_checked()?;
        Ok(self
            .keys
            .release_file_key(access, &record.context(), &record.wrapped_key)?)
    }

    pub(crate) fn audit_open(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        result: &Result<u64, Error>,
        range: Option<[u64; 2]>,
    ) -> Result<(), Error> {
        let context = record.context();
        let (bytes, segments, outcome) = match result {
            Ok(bytes) => {
                let segments = match range {
                    Some([start, end]) => record.segments_in(start, end),
                    None => record.segments(),
                };
                (*bytes, segments, Outcome::Success)
            }
            Err(error) => (
                0,
                0,
                Outcome::Failed {
                    error: Text::lossy(error.to_string()),
                },
            ),
        };
        let event = Event::FileOpened {
            file: Self::file_ref(&context),
            principal: Text::lossy(access.principal()),
            bytes,
            segments,
            range,
        };
        self.audit(&context, event, outcome)
    }

    /// Opens a sealed file for `access`: the key-release policy is checked
    /// and the file key unwrapped (both audited by the hierarchy), then
    /// every byte of `blob` is decrypted into `out`, and the read is
    /// audited. Returns the writer and the plaintext length.
    ///
    /// Plaintext reaches `out` one verified segment at a time; only an `Ok`
    /// return means the whole file, end included, was authentic. On an
    /// error, discard what was written.
    ///
    /// # Errors
    /// [`Error::Keys`] if the release is refused or the key cannot be
    /// unwrapped; [`Error::Stream`] if the blob is not authentic for this
    /// record (tampered, truncated, another file's) or I/O fails;
    /// [`Error::Record`]; [`Error::Audit`].
    pub fn open<R: Read + Send, W: Write + Send>(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        blob: R,
        out: W,
    ) -> Result<(W, u64), Error> {
        let key = self.release(access, record)?;
        let result = atrest_stream::decrypt_stream(
            blob,
            out,
            &key,
            &record.context().encode(),
            self.options.backend,
            self.options.threads,
        );
        drop(key);
        let (out, len) = match result {
            Ok((out, len)) => (Some(out), Ok(len)),
            Err(error) => (None, Err(Error::from(error))),
        };
        let len = len.and_then(|len| record.check_len(len));
        self.audit_open(access, record, &len, None)?;
        let len = len?;
        match out {
            Some(out) => Ok((out, len)),
            None => unreachable!("a decrypted length comes with its writer"),
        }
    }

    /// Opens bytes `range` of a sealed file for `access`, decrypting only
    /// the segments that cover it from `blob` (positioned reads), into
    /// `out`. Audited with the range.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] if the range is not within the file; as for
    /// [`Files::open`] otherwise.
    pub fn open_range<S: ReadAt, W: Write>(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        blob: S,
        range: Range<u64>,
        out: &mut W,
    ) -> Result<u64, Error> {
        if range.start > range.end || range.end > record.plaintext_len {
            return Err(Error::InvalidRange {
                start: range.start,
                end: range.end,
                len: record.plaintext_len,
            });
        }
        let key = self.release(access, record)?;
        let result = RandomAccess::with_backend(
            blob,
            &key,
            &record.context().encode(),
            self.options.backend,
        )
        .and_then(|reader| {
            if reader.plaintext_len() == record.plaintext_len {
                reader.copy_range(range.clone(), out)
            } else {
                Err(atrest_stream::Error::Malformed(
                    "the blob's length does not match its record",
                ))
            }
        })
        .map_err(Error::from);
        drop(key);
        self.audit_open(access, record, &result, Some([range.start, range.end]))?;
        result
    }
}

/// Counts what goes through to the blob.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        Self { inner, written: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
