//! Opening: a file version or a byte range of it, authenticated a run of
//! segments at a time, into an [`OpenSink`]; copies of a blob tried in
//! turn when one is missing, unreachable or damaged.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use atrest_audit::{Event, Outcome, Text};
use atrest_filekey::{FileKey, FileVersion, TenantId};
use atrest_stream::format::HEADER_LEN;
use atrest_stream::{Opener, PlaintextChunk, RunBuffer, RunOpener};
use atrest_tenant::Access;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::Files;
use crate::{BlobName, Error, ErrorKind, FileRecord};

/// Ciphertext runs read ahead of the cipher.
const RUNS_READ_AHEAD: usize = 4;

/// Runs read (and opened) together from a copy read whole, each read a
/// call of its own on a local store's blocking pool.
const RUNS_PER_READ: u64 = 2;

/// Which file version [`Files::open`] opens: file `name` of `tenant`,
/// version `version` or the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSelector<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// The file's name.
    pub name: &'a str,
    /// The version, or `None` for the newest.
    pub version: Option<FileVersion>,
}

impl<'a> FileSelector<'a> {
    /// The newest version of file `name` of `tenant`.
    pub const fn newest(tenant: TenantId, name: &'a str) -> Self {
        Self {
            tenant,
            name,
            version: None,
        }
    }

    /// Version `version` of file `name` of `tenant`.
    pub const fn version(tenant: TenantId, name: &'a str, version: FileVersion) -> Self {
        Self {
            tenant,
            name,
            version: Some(version),
        }
    }
}

/// Where [`Files::open`] puts verified plaintext: in order, a run of
/// segments at a time, each in a buffer of its own ([`PlaintextChunk`],
/// wiped when dropped), so a sink that hands the plaintext on (an HTTP
/// response body, a queue) can keep the buffer instead of copying it.
/// [`WriterSink`] writes to any `AsyncWrite`.
///
/// Only verified plaintext ever reaches a sink, but only an `Ok` return of
/// [`Files::open`] means the whole file (or range), end included, was
/// authentic: on an error, discard what the sink received.
#[async_trait::async_trait]
pub trait OpenSink: Send {
    /// Takes the next verified plaintext.
    ///
    /// # Errors
    /// Whatever stops the sink; the open stops with it (and tries no other
    /// copy of the blob).
    async fn take(&mut self, plaintext: PlaintextChunk) -> io::Result<()>;

    /// Called once the last plaintext was taken. By default nothing.
    ///
    /// # Errors
    /// As for [`OpenSink::take`].
    async fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An `AsyncWrite` as an [`OpenSink`]: every chunk is written whole, and
/// the writer is flushed at the end. `Debug` does not show the writer (an
/// in-memory one would print the plaintext).
pub struct WriterSink<W>(pub W);

impl<W> core::fmt::Debug for WriterSink<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriterSink").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Send + Unpin> OpenSink for WriterSink<W> {
    async fn take(&mut self, plaintext: PlaintextChunk) -> io::Result<()> {
        self.0.write_all(&plaintext).await
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.0.flush().await
    }
}

/// A sink that drops what it takes (the plaintext buffers are wiped as
/// they are dropped): for checking a copy without using it.
struct Discard;

#[async_trait::async_trait]
impl OpenSink for Discard {
    async fn take(&mut self, plaintext: PlaintextChunk) -> io::Result<()> {
        drop(plaintext);
        Ok(())
    }
}

/// The sink of one open: counts the plaintext released, and notes whether
/// the sink itself failed (then no other copy of the blob can help).
struct Released<'a> {
    sink: &'a mut dyn OpenSink,
    written: u64,
    failed: bool,
}

impl Released<'_> {
    async fn take(&mut self, plaintext: PlaintextChunk) -> Result<(), Error> {
        let len = plaintext.len() as u64;
        match self.sink.take(plaintext).await {
            Ok(()) => {
                self.written += len;
                Ok(())
            }
            Err(error) => {
                self.failed = true;
                Err(error.into())
            }
        }
    }
}

impl Files {
    /// Opens `file` for `access` — the whole file, or bytes `range` of it —
    /// into `sink`: the record is read from the catalog, the key-release
    /// policy is checked and the file key unwrapped (both audited by the
    /// hierarchy), the record is authenticated, the blob is decrypted a
    /// run of segments at a time (a range decrypts only the segments that
    /// cover it), and the open is audited (with its range). Returns the
    /// record.
    ///
    /// Plaintext reaches `sink` only once verified; only an `Ok` return
    /// means the whole file or range, end included, was authentic. On an
    /// error, discard what the sink received. Reading, the cipher and the
    /// sink overlap; memory is bounded (a few runs of about 256 KiB), and
    /// a sink that stalls holds only this task.
    ///
    /// The blob's copies (see [`crate::blobs::ReplicatedBlobs`]) are tried
    /// in turn: a copy is read from its start while nothing has been
    /// released; once some plaintext has been, the read resumes from the
    /// next copy at the first byte not yet released, with positioned reads
    /// that authenticate that copy's header, key commitment and last
    /// segment first. Each copy passed over is audited
    /// (`blob_copy_passed_over`).
    ///
    /// # Errors
    /// [`Error::Catalog`] if there is no such file or version;
    /// [`Error::InvalidRange`] for a range not within the file;
    /// [`Error::Keys`] if the release is refused or the key cannot be
    /// unwrapped; [`Error::Stream`] if the blob is not authentic for this
    /// record (tampered, truncated, another file's); [`Error::Record`];
    /// [`Error::Blob`]; [`Error::Io`] if the sink fails; [`Error::Audit`].
    pub async fn open(
        &self,
        access: &Access<'_>,
        file: &FileSelector<'_>,
        range: Option<Range<u64>>,
        sink: &mut dyn OpenSink,
    ) -> Result<FileRecord, Error> {
        let record = self
            .catalog
            .record(file.tenant, file.name, file.version)
            .await?;
        self.open_record(access, file, record, range, sink).await
    }

    /// Opens `record`, the record of `file` the caller has read from the
    /// catalog ([`crate::Catalog::record`]), exactly as [`Files::open`]
    /// does once it has read it: for a caller that needs the record first
    /// (to pick a version and a range, or to answer a request's headers
    /// before its body), without a second read of the catalog.
    ///
    /// The record is not trusted: before any plaintext is released it must
    /// authenticate, under its tenant's metadata key, as the record of
    /// `file`'s tenant and name (and of its version, if `file` names one);
    /// a record that does not is refused and audited as a failed open, as
    /// in [`Files::open`]. Give `file` the version of `record` to open that
    /// version and no other.
    ///
    /// # Errors
    /// As for [`Files::open`], but for a missing file or version, which
    /// the caller's read reported.
    pub async fn open_record(
        &self,
        access: &Access<'_>,
        file: &FileSelector<'_>,
        record: FileRecord,
        range: Option<Range<u64>>,
        sink: &mut dyn OpenSink,
    ) -> Result<FileRecord, Error> {
        if let Some(range) = &range
            && (range.start > range.end || range.end > record.plaintext_len)
        {
            return Err(Error::InvalidRange {
                start: range.start,
                end: range.end,
                len: record.plaintext_len,
            });
        }
        // The record the key was released for differs from `record` in its
        // wrapped key at most (`key_for`): the range checked holds for it.
        let (key, record) = self.key_for(access, file, record).await?;
        let mut out = Released {
            sink,
            written: 0,
            failed: false,
        };
        let mut passed_over = Vec::new();
        let result = self
            .read(&key, &record, range.clone(), &mut out, &mut passed_over)
            .await;
        drop(key);
        let result = match result {
            Ok(()) => match out.sink.finish().await {
                Ok(()) => Ok(out.written),
                Err(error) => Err(error.into()),
            },
            Err(error) => Err(error),
        };
        if result.is_ok() {
            self.audit_passed_over(&record, &passed_over).await?;
        }
        let result = match (&range, result) {
            (None, Ok(len)) => record.check_len(len),
            (_, result) => result,
        };
        let range = range.map(|range| [range.start, range.end]);
        self.audit_open(access, &record, result.as_ref().copied(), range)
            .await?;
        let _ = result?;
        Ok(record)
    }

    /// Checks that the copy of `record`'s blob at blob location `location`
    /// is the file's: the record's tag first (under its tenant's metadata
    /// key, for the tenant, name and version it names), then the copy
    /// decrypted whole with the file key released for `access` — header,
    /// key commitment, every segment and the length the record gives — and
    /// the plaintext discarded as it comes. What a repair asks of a copy
    /// before it writes it anywhere, and of what it wrote. The key's
    /// release is audited by the hierarchy; nothing else is.
    ///
    /// # Errors
    /// [`Error::Catalog`] if the record does not authenticate;
    /// [`Error::Keys`] if the key is not released; [`Error::Stream`] if the
    /// copy is not authentic for the record; [`Error::Blob`] if the copy
    /// cannot be read; [`Error::Record`].
    pub async fn verify_copy(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        location: usize,
    ) -> Result<(), Error> {
        self.authenticate(record, record.tenant, &record.name, Some(record.version))
            .await?;
        let key = self.release(access, record).await?;
        let segment_size = record.segment_size_checked()?;
        let associated_data = record.context().encode();
        let opener = Opener::new(&key, &associated_data, self.options.stream)
            .expect_segment_size(segment_size);
        let mut discard = Discard;
        let mut out = Released {
            sink: &mut discard,
            written: 0,
            failed: false,
        };
        self.read_copy(&opener, record, location, &mut out).await?;
        if out.written != record.plaintext_len {
            return Err(atrest_stream::Error::Truncated.into());
        }
        Ok(())
    }

    /// Decrypts the record's blob, or `range` of its plaintext, into `out`.
    async fn read(
        &self,
        key: &FileKey,
        record: &FileRecord,
        range: Option<Range<u64>>,
        out: &mut Released<'_>,
        passed_over: &mut Vec<(usize, Error)>,
    ) -> Result<(), Error> {
        // The blob must have been sealed with the segment size the
        // (authenticated) record says, whatever its prefix claims.
        let segment_size = record.segment_size_checked()?;
        let associated_data = record.context().encode();
        let opener = Opener::new(key, &associated_data, self.options.stream)
            .expect_segment_size(segment_size);
        if let Some(range) = range {
            return self
                .read_range(&opener, record, range, out, 0, passed_over)
                .await;
        }
        let locations = self.blobs.locations().max(1);
        for location in 0..locations {
            match self.read_copy(&opener, record, location, out).await {
                Ok(()) => return Ok(()),
                // Another copy cannot help a failing sink.
                Err(error) if out.failed => return Err(error),
                Err(error) => passed_over.push((location, error)),
            }
            if out.written > 0 {
                let whole = 0..record.plaintext_len;
                return self
                    .read_range(&opener, record, whole, out, location + 1, passed_over)
                    .await;
            }
        }
        Err(first_failure(&record.blob, passed_over))
    }

    /// Decrypts the copy of the record's blob at `location` from its
    /// start into `out`: reading ahead, the cipher and the sink overlap in
    /// this task (the cipher on the blocking pool with more than one
    /// thread). The record's blob length, which its tag covers, says where
    /// the stream ends: a copy cut short or longer fails.
    async fn read_copy(
        &self,
        opener: &Opener<'_>,
        record: &FileRecord,
        location: usize,
        out: &mut Released<'_>,
    ) -> Result<(), Error> {
        let mut reader = self.blobs.open_at(&record.blob, location).await?;
        let mut header = RunBuffer::new();
        let _ = reader.read(&mut header, HEADER_LEN).await?;
        let runs = opener.runs(header_of(&header)?)?;
        let blob_len = record.blob_len;
        let per_run = runs.segments_per_run();
        let (ciphertext, mut to_open) =
            tokio::sync::mpsc::channel::<(u64, RunBuffer, bool)>(RUNS_READ_AHEAD);
        let reading = {
            let runs = runs.clone();
            async move {
                let mut at = HEADER_LEN as u64;
                let mut segment = 0u64;
                loop {
                    let whole: u64 = (0..RUNS_PER_READ)
                        .map(|k| runs.run_len(segment + k * per_run) as u64)
                        .sum();
                    let len = whole.min(blob_len.saturating_sub(at));
                    let mut bytes = runs.buffer();
                    let read = reader
                        .read(&mut bytes, usize::try_from(len).unwrap_or(usize::MAX))
                        .await?;
                    if (read as u64) < len {
                        return Err(atrest_stream::Error::Truncated.into());
                    }
                    at += len;
                    let last = at >= blob_len;
                    if last && reader.read(&mut RunBuffer::new(), 1).await? > 0 {
                        return Err(atrest_stream::Error::TrailingData.into());
                    }
                    if ciphertext.send((segment, bytes, last)).await.is_err() || last {
                        return Ok::<(), Error>(());
                    }
                    segment += RUNS_PER_READ * per_run;
                }
            }
        };
        let threads = self.threads();
        let opening = async {
            let mut pending = Opening::new(runs, threads);
            while let Some((segment, bytes, last)) = to_open.recv().await {
                for plaintext in pending.push(segment, bytes, last).await? {
                    out.take(plaintext).await?;
                }
                if last {
                    for plaintext in pending.finish().await? {
                        out.take(plaintext).await?;
                    }
                    return Ok(());
                }
            }
            // The reader stopped before the last run: its error is the
            // one reported.
            Err(atrest_stream::Error::Truncated.into())
        };
        let ((), ()) = tokio::try_join!(reading, opening)?;
        Ok(())
    }

    /// Decrypts plaintext bytes `range` of the record's blob into `out`
    /// with positioned reads, from copy `from` on.
    ///
    /// Each copy tried is authenticated first (its length against the
    /// record's, header, key commitment and last segment), and the read
    /// resumes at the first byte of `range` not yet released. When a copy
    /// is missing, unreachable, cut short or fails authentication, the
    /// next copy is tried. Only verified segments ever reach `out`, so
    /// what was released is the file's whichever copy it came from. A
    /// failure of the sink itself ends the read. Each copy passed over is
    /// added to `passed_over`; if no copy serves, the first of them is
    /// returned.
    async fn read_range(
        &self,
        opener: &Opener<'_>,
        record: &FileRecord,
        range: Range<u64>,
        out: &mut Released<'_>,
        from: usize,
        passed_over: &mut Vec<(usize, Error)>,
    ) -> Result<(), Error> {
        for location in from..self.blobs.locations().max(1) {
            match self
                .read_range_at(opener, record, range.clone(), out, location)
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) if out.failed => return Err(error),
                Err(error) => passed_over.push((location, error)),
            }
        }
        Err(first_failure(&record.blob, passed_over))
    }

    /// [`Files::read_range`] from the copy at `location`.
    async fn read_range_at(
        &self,
        opener: &Opener<'_>,
        record: &FileRecord,
        range: Range<u64>,
        out: &mut Released<'_>,
        location: usize,
    ) -> Result<(), Error> {
        let blob = &record.blob;
        let blob_len = self.blobs.len_at(blob, location).await?;
        if blob_len != record.blob_len {
            return Err(atrest_stream::Error::Malformed(
                "the blob's length does not match its record",
            )
            .into());
        }
        let header = self
            .blobs
            .read_range_at(blob, location, 0..HEADER_LEN as u64)
            .await?;
        let runs = opener.runs(header_of(&header)?)?;
        let layout = runs.layout();
        let extent = layout.for_stream(blob_len)?;
        let final_segment = extent.segments - 1;
        // Authenticate the end, so a copy cut or extended at a segment
        // boundary is refused before anything of it is released.
        let end = self
            .fetch(
                blob,
                location,
                layout.ciphertext_start(final_segment)..blob_len,
            )
            .await?;
        drop(runs.open(final_segment, end.into(), true)?);
        let resume = range.start + out.written;
        let covering = layout.segments_covering(resume..range.end);
        let mut segment = covering.start;
        while segment < covering.end {
            let through = (segment + runs.segments_per_run()).min(covering.end);
            let last = through == extent.segments;
            let ciphertext_end = if last {
                blob_len
            } else {
                layout.ciphertext_start(through)
            };
            let ciphertext = self
                .fetch(
                    blob,
                    location,
                    layout.ciphertext_start(segment)..ciphertext_end,
                )
                .await?;
            let plaintext = runs.open(segment, ciphertext.into(), last)?;
            let starts_at = layout.plaintext_start(segment);
            let at = range.start + out.written;
            let from = usize::try_from(at.saturating_sub(starts_at)).unwrap_or(usize::MAX);
            let to = usize::try_from(range.end - starts_at).unwrap_or(usize::MAX);
            out.take(plaintext.narrow(from..to)).await?;
            segment = through;
        }
        Ok(())
    }

    /// Bytes `range` of the copy of `blob` at `location`, all of them.
    async fn fetch(
        &self,
        blob: &BlobName,
        location: usize,
        range: Range<u64>,
    ) -> Result<Vec<u8>, Error> {
        let want = range.end - range.start;
        let bytes = self.blobs.read_range_at(blob, location, range).await?;
        if bytes.len() as u64 == want {
            Ok(bytes)
        } else {
            Err(atrest_stream::Error::Truncated.into())
        }
    }

    pub(super) async fn audit_open(
        &self,
        access: &Access<'_>,
        record: &FileRecord,
        result: Result<u64, &Error>,
        range: Option<[u64; 2]>,
    ) -> Result<(), Error> {
        let context = record.context();
        let (bytes, segments, outcome) = match result {
            Ok(bytes) => {
                let segments = match range {
                    Some([start, end]) => record.segments_in(start, end),
                    None => record.segments(),
                };
                (bytes, segments, Outcome::Success)
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
        self.audit(&context, event, outcome).await
    }

    /// Audits each copy of a blob a successful read passed over (missing,
    /// unreachable or damaged: `blob_copy_passed_over`, with the location
    /// and the error), so the operator knows to scrub.
    async fn audit_passed_over(
        &self,
        record: &FileRecord,
        passed_over: &[(usize, Error)],
    ) -> Result<(), Error> {
        let context = record.context();
        for (location, error) in passed_over {
            let event = Event::BlobCopyPassedOver {
                file: Self::file_ref(&context),
                blob: Text::lossy(record.blob.as_str()),
                location: *location as u64,
                error: Text::lossy(error.to_string()),
            };
            self.audit(&context, event, Outcome::Success).await?;
        }
        Ok(())
    }
}

/// The stream header at the start of `bytes`.
fn header_of(bytes: &[u8]) -> Result<&[u8; HEADER_LEN], Error> {
    bytes
        .try_into()
        .map_err(|_| atrest_stream::Error::Truncated.into())
}

/// The first of the errors of the copies a read tried; if every copy was
/// missing, that the blob is.
fn first_failure(blob: &BlobName, passed_over: &mut Vec<(usize, Error)>) -> Error {
    let missing = |error: &Error| {
        matches!(
            error,
            Error::Blob {
                kind: ErrorKind::NotFound,
                ..
            }
        )
    };
    if passed_over.iter().all(|(_, error)| missing(error)) {
        return Error::BlobMissing {
            blob: blob.clone(),
            locations: passed_over.len(),
        };
    }
    passed_over.swap_remove(0).1
}

/// Runs being opened, in order: in the task with one thread, else up to
/// `threads` at once on the blocking pool.
struct Opening {
    runs: RunOpener,
    threads: usize,
    in_flight: VecDeque<tokio::task::JoinHandle<Result<PlaintextChunk, atrest_stream::Error>>>,
}

impl Opening {
    fn new(runs: RunOpener, threads: usize) -> Self {
        Self {
            runs,
            threads: threads.max(1),
            in_flight: VecDeque::new(),
        }
    }

    /// Opens a run; returns the runs opened by now, in order.
    async fn push(
        &mut self,
        segment: u64,
        ciphertext: RunBuffer,
        last: bool,
    ) -> Result<Vec<PlaintextChunk>, Error> {
        if self.threads == 1 {
            return Ok(vec![self.runs.open(segment, ciphertext, last)?]);
        }
        let runs = self.runs.clone();
        self.in_flight
            .push_back(tokio::task::spawn_blocking(move || {
                runs.open(segment, ciphertext, last)
            }));
        let mut opened = Vec::new();
        while self.in_flight.len() >= self.threads {
            if let Some(task) = self.in_flight.pop_front() {
                opened.push(super::seal::joined(task).await?);
            }
        }
        Ok(opened)
    }

    /// The runs still being opened, in order.
    async fn finish(mut self) -> Result<Vec<PlaintextChunk>, Error> {
        let mut opened = Vec::with_capacity(self.in_flight.len());
        while let Some(task) = self.in_flight.pop_front() {
            opened.push(super::seal::joined(task).await?);
        }
        Ok(opened)
    }
}
