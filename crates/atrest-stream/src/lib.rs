#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod decoder;
mod encoder;
mod error;
mod format;
mod parallel;
mod pipeline;
mod random_access;
mod read;
mod segment;
#[cfg(feature = "tokio")]
mod tokio;
mod write;

use atrest_filekey::FileKey;

pub use backend::Backend;
pub use error::Error;
pub use format::{
    Extent, FORMAT_VERSION, HEADER_LEN, Layout, MAGIC, MAX_SEGMENTS, Options, PREFIX_LEN, Prefix,
    SUITE_AES256_GCM_HKDF_SHA256, SegmentSize, TAG_LEN, TINK_HEADER_LEN, parse_prefix,
};
pub use pipeline::{decrypt_stream, encrypt_stream};
pub use random_access::{RandomAccess, ReadAt};
pub use read::Decryptor;
#[cfg(feature = "tokio")]
pub use tokio::{AsyncDecryptor, AsyncEncryptor};
pub use write::Encryptor;

#[doc = include_str!("../FORMAT.md")]
pub mod spec {}

/// The envelope prefix a stream under `key` with `segment_size` starts with.
///
/// It is deterministic, so it can be put in front of a Tink ciphertext made
/// with associated data `prefix || ctx`: the result is an atrest stream for
/// context `ctx` (see [`spec`]).
pub fn envelope_prefix(key: &FileKey, segment_size: SegmentSize) -> [u8; PREFIX_LEN] {
    format::encode_prefix(segment_size, &key.commitment())
}

/// The length of the stream for a plaintext of `plaintext_len` bytes.
///
/// # Errors
/// [`Error::TooLong`] if the plaintext needs more than 2^32 segments.
pub fn stream_len(plaintext_len: u64, segment_size: SegmentSize) -> Result<u64, Error> {
    let layout = Layout::new(segment_size);
    Ok(layout.stream_len(layout.for_plaintext(plaintext_len)?))
}

/// Encrypts `plaintext` in one call, with the default segment size.
///
/// # Errors
/// [`Error::Rng`] if the operating system's random number generator fails, or
/// [`Error::TooLong`].
pub fn encrypt(key: &FileKey, associated_data: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    encrypt_with(key, associated_data, plaintext, Options::default())
}

/// Encrypts `plaintext` in one call, with the given options (a
/// [`SegmentSize`] converts). Each segment is copied once, into the output,
/// and sealed there.
///
/// # Errors
/// As for [`encrypt`].
pub fn encrypt_with(
    key: &FileKey,
    associated_data: &[u8],
    plaintext: &[u8],
    options: impl Into<Options>,
) -> Result<Vec<u8>, Error> {
    encrypt_parallel(key, associated_data, plaintext, options, 1)
}

/// Encrypts `plaintext` on `threads` threads (`0`: one per core). The output
/// is byte-identical to single-threaded encryption with the same salt and
/// nonce prefix.
///
/// # Errors
/// As for [`encrypt`].
pub fn encrypt_parallel(
    key: &FileKey,
    associated_data: &[u8],
    plaintext: &[u8],
    options: impl Into<Options>,
    threads: usize,
) -> Result<Vec<u8>, Error> {
    let options = options.into();
    let stream = format::new_stream(key, associated_data, options)?;
    parallel::encrypt(stream, options.segment_size, plaintext, threads)
}

/// Encrypts `plaintext` into the caller's buffer `out` (at least
/// [`stream_len`] bytes; reuse it across calls to avoid fresh allocations) on
/// `threads` threads (`0`: one per core). Returns the stream's length.
///
/// # Errors
/// [`Error::OutputTooSmall`]; otherwise as for [`encrypt`].
pub fn encrypt_to(
    key: &FileKey,
    associated_data: &[u8],
    plaintext: &[u8],
    options: impl Into<Options>,
    threads: usize,
    out: &mut [u8],
) -> Result<usize, Error> {
    let options = options.into();
    let stream = format::new_stream(key, associated_data, options)?;
    parallel::encrypt_to(stream, options.segment_size, plaintext, threads, out)
}

/// Decrypts a whole stream into the caller's buffer `out` (at least the
/// plaintext length) on `threads` threads (`0`: one per core). Returns the
/// plaintext length; on failure `out` is wiped.
///
/// # Errors
/// [`Error::OutputTooSmall`]; otherwise as for [`decrypt`].
pub fn decrypt_to(
    key: &FileKey,
    associated_data: &[u8],
    stream: &[u8],
    backend: Backend,
    threads: usize,
    out: &mut [u8],
) -> Result<usize, Error> {
    let (segment_size, cipher) = open_header(key, associated_data, stream, backend)?;
    parallel::decrypt_to(&cipher, segment_size, stream, threads, out)
}

fn open_header(
    key: &FileKey,
    associated_data: &[u8],
    stream: &[u8],
    backend: Backend,
) -> Result<(SegmentSize, segment::SegmentCipher), Error> {
    let header: &[u8; HEADER_LEN] = stream
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Truncated)?;
    format::open_stream(header, key, associated_data, backend)
}

/// Decrypts a whole stream in one call. Returns nothing unless the whole
/// stream authenticates; on failure the partial plaintext is wiped. Each
/// segment is copied once, into the output, and opened there.
///
/// # Errors
/// Any decryption error: see [`Error`].
pub fn decrypt(key: &FileKey, associated_data: &[u8], stream: &[u8]) -> Result<Vec<u8>, Error> {
    decrypt_parallel(key, associated_data, stream, Backend::default(), 1)
}

/// [`decrypt`] with a chosen backend.
///
/// # Errors
/// As for [`decrypt`].
pub fn decrypt_with(
    key: &FileKey,
    associated_data: &[u8],
    stream: &[u8],
    backend: Backend,
) -> Result<Vec<u8>, Error> {
    decrypt_parallel(key, associated_data, stream, backend, 1)
}

/// [`decrypt`] on `threads` threads (`0`: one per core), with a chosen
/// backend.
///
/// # Errors
/// As for [`decrypt`].
pub fn decrypt_parallel(
    key: &FileKey,
    associated_data: &[u8],
    stream: &[u8],
    backend: Backend,
    threads: usize,
) -> Result<Vec<u8>, Error> {
    let (segment_size, cipher) = open_header(key, associated_data, stream, backend)?;
    parallel::decrypt(&cipher, segment_size, stream, threads)
}
