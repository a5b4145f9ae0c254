#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod buffer;
mod chunk;
mod decoder;
mod encoder;
mod error;
pub mod format;
#[cfg(test)]
mod memory_tests;
mod options;
mod parallel;
mod pipeline;
mod random_access;
mod read;
pub mod runs;
mod schedule;
mod segment;
mod sink;
#[cfg(feature = "tokio")]
mod tokio;
mod write;

use std::io::{Read, Write};

use atrest_filekey::FileKey;

pub use backend::Backend;
pub use buffer::RunBuffer;
pub use error::Error;
pub use format::SegmentSize;
use format::{HEADER_LEN, Layout, PREFIX_LEN};
pub use options::{Options, Parallelism};
pub use random_access::{RandomAccess, ReadAt};
pub use read::Decryptor;
pub use runs::{PlaintextRun, RunOpener, RunSealer, SealedRun};
pub use sink::{PlaintextChunk, PlaintextSink, WriteSink};
#[cfg(feature = "tokio")]
pub use tokio::{AsyncDecryptor, AsyncEncryptor};
pub use write::Encryptor;

#[doc = include_str!("../FORMAT.md")]
pub mod spec {}

/// Seals new streams under one file key and associated data: the one entry
/// point for encryption, from which every form comes.
///
/// `associated_data` (in atrest, the file's context: tenant, file id,
/// version) is bound into the stream key but not written. Each call makes a
/// new stream with a fresh random salt and nonce prefix.
///
/// | form | method |
/// |------|--------|
/// | whole buffer, new `Vec` | [`Sealer::seal`] |
/// | whole buffer, caller's buffer | [`Sealer::seal_into`] |
/// | `std::io::Write` adapter | [`Sealer::writer`] |
/// | `Read` to `Write`, pipelined on threads | [`Sealer::seal_stream`] |
/// | `tokio::io::AsyncWrite` adapter (feature `tokio`) | `Sealer::async_writer` |
/// | a run of segments at a time, no I/O, the caller moving the bytes | [`Sealer::runs`] |
///
/// [`Options`] choose the segment size, the backend and, for the whole-buffer
/// and pipelined forms, how many threads; the bytes never depend on the
/// number of threads.
///
/// ```
/// use atrest_filekey::FileKey;
/// use atrest_stream::{Opener, Options, Parallelism, Sealer};
///
/// let key = FileKey::generate()?;
/// let options = Options::default().parallelism(Parallelism::AllCores);
/// let stream = Sealer::new(&key, b"context", options).seal(&[7u8; 1 << 20])?;
/// let plaintext = Opener::new(&key, b"context", options).open(&stream)?;
/// assert_eq!(plaintext, [7u8; 1 << 20]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct Sealer<'a> {
    key: &'a FileKey,
    associated_data: &'a [u8],
    options: Options,
}

impl<'a> Sealer<'a> {
    /// Seals streams under `key`, bound to `associated_data`.
    pub const fn new(key: &'a FileKey, associated_data: &'a [u8], options: Options) -> Self {
        Self {
            key,
            associated_data,
            options,
        }
    }

    /// The options in use.
    pub const fn options(&self) -> Options {
        self.options
    }

    /// The length of the stream for a plaintext of `plaintext_len` bytes.
    ///
    /// # Errors
    /// [`Error::TooLong`] if the plaintext needs more than 2^32 segments.
    pub fn stream_len(&self, plaintext_len: u64) -> Result<u64, Error> {
        let layout = Layout::new(self.options.segment_size);
        Ok(layout.for_plaintext(plaintext_len)?.stream_len())
    }

    /// The envelope prefix every stream of this sealer starts with.
    ///
    /// It is deterministic, so it can be put in front of a Tink ciphertext
    /// made with associated data `prefix || ctx`: the result is an atrest
    /// stream for context `ctx` (see [`spec`]).
    pub fn envelope_prefix(&self) -> [u8; PREFIX_LEN] {
        format::encode_prefix(self.options.segment_size, &self.key.commitment())
    }

    /// Encrypts `plaintext` into a new buffer.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's random number generator
    /// fails, or [`Error::TooLong`].
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        parallel::encrypt(
            self.start()?,
            self.options.segment_size,
            plaintext,
            self.options.parallelism.get(),
        )
    }

    /// Encrypts `plaintext` into the caller's buffer `out` (at least
    /// [`Sealer::stream_len`] bytes; reuse it across calls to avoid fresh
    /// allocations). Returns the stream's length.
    ///
    /// # Errors
    /// [`Error::OutputTooSmall`]; otherwise as for [`Sealer::seal`].
    pub fn seal_into(&self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        parallel::encrypt_to(
            self.start()?,
            self.options.segment_size,
            plaintext,
            self.options.parallelism.get(),
            out,
        )
    }

    /// An [`Encryptor`] that encrypts everything written to it into
    /// `writer`. Call [`Encryptor::finish`] at the end.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's random number generator fails.
    pub fn writer<W: Write>(&self, writer: W) -> Result<Encryptor<W>, Error> {
        Encryptor::new(writer, self.key, self.associated_data, self.options)
    }

    /// Encrypts everything `reader` yields into `writer`, with reading, the
    /// cipher (on the options' threads) and writing overlapped and memory
    /// bounded by a fixed pool of chunk buffers (about 3 MiB with the
    /// default segment size). The output is byte-identical to what an
    /// [`Encryptor`] writes for the same salt and nonce prefix. Returns the
    /// writer (flushed) and the plaintext length.
    ///
    /// # Errors
    /// [`Error::Io`] from either side, [`Error::TooLong`], [`Error::Rng`].
    pub fn seal_stream<R: Read + Send, W: Write + Send>(
        &self,
        reader: R,
        writer: W,
    ) -> Result<(W, u64), Error> {
        pipeline::encrypt_stream(reader, writer, self.key, self.associated_data, self.options)
    }

    /// An [`AsyncEncryptor`] that encrypts everything written to it into
    /// `writer`. Finish it with [`AsyncEncryptor::finish`] or `shutdown()`.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's random number generator fails.
    #[cfg(feature = "tokio")]
    pub fn async_writer<W: ::tokio::io::AsyncWrite + Unpin>(
        &self,
        writer: W,
    ) -> Result<AsyncEncryptor<W>, Error> {
        AsyncEncryptor::new(writer, self.key, self.associated_data, self.options)
    }

    fn start(&self) -> Result<([u8; HEADER_LEN], segment::SegmentSealer), Error> {
        schedule::new_stream(
            self.key,
            self.associated_data,
            self.options.segment_size,
            self.options.backend,
        )
    }
}

impl std::fmt::Debug for Sealer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Opens streams sealed under one file key and associated data: the one
/// entry point for decryption, from which every form comes.
///
/// Every form checks the prefix and the key commitment first, releases a
/// segment's plaintext only after its tag verified, and reports the end of
/// the stream only after the segment sealed as the last one verified.
///
/// | form | method |
/// |------|--------|
/// | whole buffer, new `Vec` | [`Opener::open`] |
/// | whole buffer, caller's buffer | [`Opener::open_into`] |
/// | `std::io::Read` adapter, `Seek` over `Read + Seek` | [`Opener::reader`] |
/// | byte ranges from positioned reads, shareable | [`Opener::random_access`] |
/// | `Read` to `Write`, pipelined on threads | [`Opener::open_stream`] |
/// | `Read` to a [`PlaintextSink`] that takes each run of segments in its own buffer, pipelined | [`Opener::open_stream_into`] |
/// | `tokio::io::AsyncRead` adapter (feature `tokio`) | `Opener::async_reader` |
/// | runs of segments from any segment on, no I/O, the caller fetching the bytes | [`Opener::runs`] |
///
/// The segment size comes from the stream's prefix; [`Options`] choose the
/// backend and, for the whole-buffer and pipelined forms, how many threads.
/// A caller that recorded the segment size a stream was sealed with (a file
/// record, say) requires it with [`Opener::expect_segment_size`]: every form
/// then refuses a stream whose prefix declares another size with
/// [`Error::SegmentSizeMismatch`], before reading past the header.
#[derive(Clone, Copy)]
pub struct Opener<'a> {
    key: &'a FileKey,
    associated_data: &'a [u8],
    options: Options,
    expected_segment_size: Option<SegmentSize>,
}

impl<'a> Opener<'a> {
    /// Opens streams sealed under `key` and bound to `associated_data`,
    /// whatever segment size their prefix declares.
    pub const fn new(key: &'a FileKey, associated_data: &'a [u8], options: Options) -> Self {
        Self {
            key,
            associated_data,
            options,
            expected_segment_size: None,
        }
    }

    /// Requires streams to have been sealed with `segment_size`: every form
    /// of opening ([`Opener::open`], [`Opener::open_into`],
    /// [`Opener::reader`], [`Opener::random_access`], [`Opener::open_stream`]
    /// and `Opener::async_reader`) fails with [`Error::SegmentSizeMismatch`]
    /// when the stream's prefix declares another size. The check is made as
    /// soon as the prefix is read, before the key commitment, before any
    /// segment is read and so before any plaintext is released.
    ///
    /// Without it ([`Opener::new`]'s default) the size in the prefix is
    /// accepted; it is authenticated either way (the prefix is bound into
    /// the stream key), so this adds no integrity a stream lacks. What it
    /// adds is agreement with the caller's record, and an early, typed
    /// refusal of a stream that is not the one the record describes.
    ///
    /// ```
    /// use atrest_filekey::FileKey;
    /// use atrest_stream::{Error, Opener, Options, Sealer, SegmentSize};
    ///
    /// let key = FileKey::generate()?;
    /// let sealed_with = SegmentSize::new(4096)?;
    /// let stream = Sealer::new(&key, b"ctx", Options::from(sealed_with)).seal(b"data")?;
    ///
    /// let opener = Opener::new(&key, b"ctx", Options::default());
    /// assert_eq!(opener.expect_segment_size(sealed_with).open(&stream)?, b"data");
    /// let err = opener.expect_segment_size(SegmentSize::DEFAULT).open(&stream).unwrap_err();
    /// assert!(matches!(
    ///     err,
    ///     Error::SegmentSizeMismatch { expected: 65536, found: 4096 }
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub const fn expect_segment_size(mut self, segment_size: SegmentSize) -> Self {
        self.expected_segment_size = Some(segment_size);
        self
    }

    /// The segment size streams are required to have, if one was set with
    /// [`Opener::expect_segment_size`].
    pub const fn expected_segment_size(&self) -> Option<SegmentSize> {
        self.expected_segment_size
    }

    /// The options in use.
    pub const fn options(&self) -> Options {
        self.options
    }

    /// Decrypts a whole stream into a new buffer. Returns nothing unless
    /// the whole stream authenticates; on failure the partial plaintext is
    /// wiped.
    ///
    /// # Errors
    /// Any decryption error: see [`Error`].
    pub fn open(&self, stream: &[u8]) -> Result<Vec<u8>, Error> {
        let (segment_size, cipher) = self.header(stream)?;
        parallel::decrypt(
            &cipher,
            segment_size,
            stream,
            self.options.parallelism.get(),
        )
    }

    /// Decrypts a whole stream into the caller's buffer `out` (at least the
    /// plaintext length). Returns the plaintext length; on failure `out` is
    /// wiped.
    ///
    /// # Errors
    /// [`Error::OutputTooSmall`]; otherwise as for [`Opener::open`].
    pub fn open_into(&self, stream: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let (segment_size, cipher) = self.header(stream)?;
        parallel::decrypt_to(
            &cipher,
            segment_size,
            stream,
            self.options.parallelism.get(),
            out,
        )
    }

    /// A [`Decryptor`] over `reader`: reads and checks the prefix and
    /// header, and verifies the key commitment.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::Malformed`], [`Error::UnsupportedVersion`],
    /// [`Error::UnsupportedSuite`], [`Error::SegmentSizeMismatch`],
    /// [`Error::CommitmentMismatch`], or [`Error::Io`] from the reader.
    pub fn reader<R: Read>(&self, reader: R) -> Result<Decryptor<R>, Error> {
        Decryptor::new(
            reader,
            self.key,
            self.associated_data,
            self.options.backend,
            self.expected_segment_size,
        )
    }

    /// A [`RandomAccess`] over `source`: checks the header and the key
    /// commitment, and authenticates the final segment.
    ///
    /// # Errors
    /// As for [`Opener::reader`], plus [`Error::Truncated`],
    /// [`Error::AuthenticationFailed`] or [`Error::TrailingData`] if the end
    /// of the stream does not verify.
    pub fn random_access<S: ReadAt>(&self, source: S) -> Result<RandomAccess<S>, Error> {
        RandomAccess::new(
            source,
            self.key,
            self.associated_data,
            self.options.backend,
            self.expected_segment_size,
        )
    }

    /// Decrypts the stream `reader` yields into `writer`, with reading, the
    /// cipher (on the options' threads) and writing overlapped. Returns the
    /// writer (flushed) and the plaintext length.
    ///
    /// Plaintext reaches `writer` only once verified, in order, a run of
    /// segments (about 256 KiB) at a time; only an `Ok` return means the
    /// whole stream, end included, was authentic. On an error, discard what
    /// was written.
    ///
    /// # Errors
    /// As for reading from a [`Decryptor`].
    pub fn open_stream<R: Read + Send, W: Write + Send>(
        &self,
        reader: R,
        writer: W,
    ) -> Result<(W, u64), Error> {
        let mut sink = WriteSink(writer);
        let len = self.open_stream_into(reader, &mut sink)?;
        Ok((sink.0, len))
    }

    /// As [`Opener::open_stream`], into a [`PlaintextSink`]: each run of
    /// verified segments is handed over in a buffer of its own
    /// ([`PlaintextChunk`]), so a sink that passes the plaintext on (to an
    /// HTTP body, say) need not copy it. Returns the plaintext length.
    ///
    /// # Errors
    /// As for [`Opener::open_stream`].
    pub fn open_stream_into<R: Read + Send, S: PlaintextSink + Send>(
        &self,
        reader: R,
        sink: &mut S,
    ) -> Result<u64, Error> {
        pipeline::decrypt_stream(
            reader,
            sink,
            self.key,
            self.associated_data,
            self.options,
            self.expected_segment_size,
        )
    }

    /// An [`AsyncDecryptor`] over `reader`: reads and checks the prefix and
    /// header, and verifies the key commitment.
    ///
    /// # Errors
    /// As for [`Opener::reader`].
    #[cfg(feature = "tokio")]
    pub async fn async_reader<R: ::tokio::io::AsyncRead + Unpin>(
        &self,
        reader: R,
    ) -> Result<AsyncDecryptor<R>, Error> {
        AsyncDecryptor::new(
            reader,
            self.key,
            self.associated_data,
            self.options.backend,
            self.expected_segment_size,
        )
        .await
    }

    fn header(&self, stream: &[u8]) -> Result<(SegmentSize, segment::SegmentOpener), Error> {
        let header: &[u8; HEADER_LEN] = stream
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        self.open_header(header)
    }

    fn open_header(
        &self,
        header: &[u8; HEADER_LEN],
    ) -> Result<(SegmentSize, segment::SegmentOpener), Error> {
        schedule::open_stream(
            header,
            self.key,
            self.associated_data,
            self.options.backend,
            self.expected_segment_size,
        )
    }
}

impl std::fmt::Debug for Opener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("options", &self.options)
            .field("expected_segment_size", &self.expected_segment_size)
            .finish_non_exhaustive()
    }
}
