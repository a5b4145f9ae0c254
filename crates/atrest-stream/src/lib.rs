#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod decoder;
mod encoder;
mod error;
mod format;
mod random_access;
mod read;
mod segment;
#[cfg(feature = "tokio")]
mod tokio;
mod write;

use std::io::Write as _;

use atrest_filekey::FileKey;

pub use error::Error;
pub use format::{
    FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_SEGMENTS, PREFIX_LEN, Prefix,
    SUITE_AES256_GCM_HKDF_SHA256, SegmentSize, TAG_LEN, TINK_HEADER_LEN, parse_prefix,
};
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
    let layout = format::Layout::new(segment_size);
    Ok(layout.stream_len(layout.for_plaintext(plaintext_len)?))
}

/// Encrypts `plaintext` in one call, with the default segment size.
///
/// # Errors
/// [`Error::Rng`] if the operating system's random number generator fails, or
/// [`Error::TooLong`].
pub fn encrypt(key: &FileKey, associated_data: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    encrypt_with_segment_size(key, associated_data, plaintext, SegmentSize::DEFAULT)
}

/// Encrypts `plaintext` in one call, with the given segment size.
///
/// # Errors
/// As for [`encrypt`].
pub fn encrypt_with_segment_size(
    key: &FileKey,
    associated_data: &[u8],
    plaintext: &[u8],
    segment_size: SegmentSize,
) -> Result<Vec<u8>, Error> {
    let len = stream_len(plaintext.len() as u64, segment_size)?;
    let capacity = usize::try_from(len).map_err(|_| Error::TooLong)?;
    let mut encryptor = Encryptor::with_segment_size(
        Vec::with_capacity(capacity),
        key,
        associated_data,
        segment_size,
    )?;
    encryptor.write_all(plaintext)?;
    encryptor.finish()
}

/// Decrypts a whole stream in one call. Returns nothing unless the whole
/// stream authenticates.
///
/// # Errors
/// Any decryption error: see [`Error`].
pub fn decrypt(key: &FileKey, associated_data: &[u8], stream: &[u8]) -> Result<Vec<u8>, Error> {
    let access = RandomAccess::new(stream, key, associated_data)?;
    let len = usize::try_from(access.plaintext_len()).map_err(|_| Error::TooLong)?;
    let mut plaintext = Vec::with_capacity(len);
    access.copy_range(0..access.plaintext_len(), &mut plaintext)?;
    Ok(plaintext)
}
