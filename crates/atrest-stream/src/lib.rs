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
/// Each segment is copied once, into the output, and sealed there.
///
/// # Errors
/// As for [`encrypt`].
pub fn encrypt_with_segment_size(
    key: &FileKey,
    associated_data: &[u8],
    plaintext: &[u8],
    segment_size: SegmentSize,
) -> Result<Vec<u8>, Error> {
    let stream = format::new_stream(key, associated_data, segment_size)?;
    encrypt_segments(stream, segment_size, plaintext)
}

fn encrypt_segments(
    (header, cipher): ([u8; HEADER_LEN], segment::SegmentCipher),
    segment_size: SegmentSize,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let layout = format::Layout::new(segment_size);
    let extent = layout.for_plaintext(plaintext.len() as u64)?;
    let capacity = usize::try_from(layout.stream_len(extent)).map_err(|_| Error::TooLong)?;
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&header);
    let mut rest = plaintext;
    for index in 0..extent.segments {
        let take = rest.len().min(layout.full_segment_len(index) - TAG_LEN);
        let (chunk, tail) = rest.split_at(take);
        let start = out.len();
        out.extend_from_slice(chunk);
        let sealed = out.get_mut(start..).ok_or(Error::Malformed("segment"))?;
        let tag = cipher.seal(index, index + 1 == extent.segments, sealed)?;
        out.extend_from_slice(&tag);
        rest = tail;
    }
    Ok(out)
}

/// Decrypts a whole stream in one call. Returns nothing unless the whole
/// stream authenticates; on failure the partial plaintext is wiped.
///
/// Each segment is copied once, into the output, and opened there.
///
/// # Errors
/// Any decryption error: see [`Error`].
pub fn decrypt(key: &FileKey, associated_data: &[u8], stream: &[u8]) -> Result<Vec<u8>, Error> {
    let header: &[u8; HEADER_LEN] = stream
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Truncated)?;
    let (segment_size, cipher) = format::open_stream(header, key, associated_data)?;
    let layout = format::Layout::new(segment_size);
    let extent = layout.for_stream(stream.len() as u64)?;
    let capacity = usize::try_from(extent.plaintext_len).map_err(|_| Error::TooLong)?;
    let mut out = Vec::with_capacity(capacity);
    let result = decrypt_segments(&cipher, layout, extent, stream, &mut out);
    match result {
        Ok(()) => Ok(out),
        Err(error) => {
            zeroize::Zeroize::zeroize(&mut out);
            Err(error)
        }
    }
}

fn decrypt_segments(
    cipher: &segment::SegmentCipher,
    layout: format::Layout,
    extent: format::Extent,
    stream: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    for index in 0..extent.segments {
        let start = usize::try_from(layout.ciphertext_start(index)).map_err(|_| Error::TooLong)?;
        let len = layout.segment_len(extent, index);
        let segment = stream.get(start..start + len).ok_or(Error::Truncated)?;
        let (body, tag) = segment.split_at(len - TAG_LEN);
        if index + 1 == extent.segments {
            let mut last = segment.to_vec();
            let opened = cipher.open_last(index, &mut last, layout.full_segment_len(index));
            if let Ok(segment::LastSegment::Last(n)) = opened {
                out.extend_from_slice(last.get(..n).unwrap_or_default());
            }
            zeroize::Zeroize::zeroize(&mut last);
            return match opened? {
                segment::LastSegment::Last(_) => Ok(()),
                segment::LastSegment::CutAfter(_) => Err(Error::Truncated),
            };
        }
        let at = out.len();
        out.extend_from_slice(body);
        cipher.open_detached(index, false, out.get_mut(at..).unwrap_or_default(), tag)?;
    }
    Ok(())
}
