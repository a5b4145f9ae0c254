//! The key schedule: from the file key, the associated data and the header's
//! salt to the per-stream AES-256-GCM key and nonce prefix, for sealing a new
//! stream or opening an existing one. Byte layout lives in `format`.

use atrest_filekey::{FileKey, OsRng, SecureRandom};

use crate::Error;
use crate::backend::{Backend, DerivedKey, StreamKey};
use crate::format::{
    HEADER_LEN, NONCE_PREFIX_LEN, PREFIX_LEN, SALT_LEN, SegmentSize, TINK_HEADER_LEN_BYTE,
    encode_prefix, parse_prefix,
};
use crate::segment::{SegmentOpener, SegmentSealer};

fn info(prefix: &[u8; PREFIX_LEN], associated_data: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(PREFIX_LEN + associated_data.len());
    info.extend_from_slice(prefix);
    info.extend_from_slice(associated_data);
    info
}

/// The backend's stream key: HKDF-SHA256 from the file key, salt and
/// `info`. The derived bytes are wiped as soon as the backend holds the key.
fn stream_key(
    key: &FileKey,
    salt: &[u8],
    info: &[u8],
    backend: Backend,
) -> Result<StreamKey, Error> {
    let derived: DerivedKey = key.derive_stream_key(salt, info);
    StreamKey::new(backend, &derived)
}

/// Starts a new stream: draws the salt and nonce prefix, and returns the
/// encoded prefix and header with the segment sealer.
pub(crate) fn new_stream(
    key: &FileKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    backend: Backend,
) -> Result<([u8; HEADER_LEN], SegmentSealer), Error> {
    let mut random = [0u8; SALT_LEN + NONCE_PREFIX_LEN];
    OsRng.fill(&mut random).map_err(|_| Error::Rng)?;
    new_stream_from(key, associated_data, segment_size, backend, &random)
}

/// [`new_stream`] with the salt and nonce prefix given (`salt || nonce_prefix`).
pub(crate) fn new_stream_from(
    key: &FileKey,
    associated_data: &[u8],
    segment_size: SegmentSize,
    backend: Backend,
    random: &[u8; SALT_LEN + NONCE_PREFIX_LEN],
) -> Result<([u8; HEADER_LEN], SegmentSealer), Error> {
    let prefix = encode_prefix(segment_size, &key.commitment());
    let (salt, nonce_prefix) = random.split_at(SALT_LEN);

    let mut header = [0u8; HEADER_LEN];
    let (p, rest) = header.split_at_mut(PREFIX_LEN);
    let (len_byte, rest) = rest.split_at_mut(1);
    p.copy_from_slice(&prefix);
    len_byte.copy_from_slice(&[TINK_HEADER_LEN_BYTE]);
    rest.copy_from_slice(random);

    let cipher = SegmentSealer::new(
        stream_key(key, salt, &info(&prefix, associated_data), backend)?,
        nonce_prefix
            .try_into()
            .map_err(|_| Error::Malformed("nonce prefix"))?,
    );
    Ok((header, cipher))
}

/// Opens a stream from its header: parses the prefix, checks the segment
/// size against `expected` (if any) and the key commitment in constant time,
/// parses the Tink header and derives the segment opener.
pub(crate) fn open_stream(
    header: &[u8; HEADER_LEN],
    key: &FileKey,
    associated_data: &[u8],
    backend: Backend,
    expected: Option<SegmentSize>,
) -> Result<(SegmentSize, SegmentOpener), Error> {
    let (prefix, tink) = header.split_at(PREFIX_LEN);
    let prefix: &[u8; PREFIX_LEN] = prefix.try_into().map_err(|_| Error::Malformed("prefix"))?;
    let parsed = parse_prefix(prefix)?;
    if let Some(expected) = expected
        && expected != parsed.segment_size
    {
        return Err(Error::SegmentSizeMismatch {
            expected: expected.get(),
            found: parsed.segment_size.get(),
        });
    }
    if !parsed.commitment.verify(key) {
        return Err(Error::CommitmentMismatch);
    }
    let (len_byte, rest) = tink.split_at(1);
    if len_byte != [TINK_HEADER_LEN_BYTE] {
        return Err(Error::Malformed("header length byte is not 40"));
    }
    let (salt, nonce_prefix) = rest.split_at(SALT_LEN);
    let cipher = SegmentOpener::new(
        stream_key(key, salt, &info(prefix, associated_data), backend)?,
        nonce_prefix
            .try_into()
            .map_err(|_| Error::Malformed("nonce prefix"))?,
    );
    Ok((parsed.segment_size, cipher))
}
