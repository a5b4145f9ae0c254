//! The encrypting state machine, independent of any I/O: the sync and async
//! writers feed it plaintext and drain its output.

use atrest_filekey::FileKey;
use zeroize::Zeroize;

use crate::Error;
use crate::Options;
use crate::buffer::grow_wiping;
use crate::format::{HEADER_LEN, Layout, MAX_SEGMENTS, SegmentSize, TAG_LEN};
use crate::schedule;
use crate::segment::SegmentSealer;

/// Held by the writers: dropping one that was neither finished nor broken
/// by an error fails a debug assertion, so a forgotten `finish` (which
/// leaves a stream every reader rejects) shows up in tests.
#[derive(Default)]
pub(crate) struct FinishGuard {
    released: bool,
}

impl FinishGuard {
    /// Dropping is expected from now on: `finish` ran, or a write failed.
    pub(crate) fn release(&mut self) {
        self.released = true;
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        debug_assert!(
            self.released || std::thread::panicking(),
            "an atrest-stream encryptor was dropped without `finish`: the stream it wrote \
             lacks its final segment and every reader rejects it"
        );
    }
}

pub(crate) struct Encoder {
    cipher: SegmentSealer,
    layout: Layout,
    header: [u8; HEADER_LEN],
    header_sent: usize,
    /// The current segment: plaintext in `..filled`, then, once sealed, the
    /// ciphertext and tag in `..sealed`, of which `..sent` is written.
    buf: Vec<u8>,
    filled: usize,
    sealed: usize,
    sent: usize,
    index: u64,
    finished: bool,
}

impl Encoder {
    pub(crate) fn new(
        key: &FileKey,
        associated_data: &[u8],
        options: Options,
    ) -> Result<Self, Error> {
        let parts =
            schedule::new_stream(key, associated_data, options.segment_size, options.backend)?;
        Ok(Self::from_parts(parts, options.segment_size))
    }

    fn from_parts(
        (header, cipher): ([u8; HEADER_LEN], SegmentSealer),
        segment_size: SegmentSize,
    ) -> Self {
        Self {
            cipher,
            layout: Layout::new(segment_size),
            header,
            header_sent: 0,
            // Grown as plaintext arrives, up to one segment: a small file
            // never allocates (nor wipes) a whole segment.
            buf: Vec::new(),
            filled: 0,
            sealed: 0,
            sent: 0,
            index: 0,
            finished: false,
        }
    }

    /// Output that must be written before more input is accepted.
    pub(crate) fn pending(&self) -> &[u8] {
        if self.header_sent < HEADER_LEN {
            return self.header.get(self.header_sent..).unwrap_or_default();
        }
        self.buf.get(self.sent..self.sealed).unwrap_or_default()
    }

    /// Records that `n` bytes of [`Self::pending`] were written.
    pub(crate) fn consume(&mut self, n: usize) {
        if self.header_sent < HEADER_LEN {
            self.header_sent = (self.header_sent + n).min(HEADER_LEN);
            return;
        }
        self.sent = (self.sent + n).min(self.sealed);
        if self.sent == self.sealed && self.sealed > 0 {
            // The buffer now holds only ciphertext, which the next segment's
            // plaintext overwrites: nothing secret to wipe.
            self.sent = 0;
            self.sealed = 0;
            self.filled = 0;
        }
    }

    fn capacity(&self) -> usize {
        self.layout.full_segment_len(self.index) - TAG_LEN
    }

    /// Takes plaintext from `data`; returns how much. Returns 0 with new
    /// pending output when a full segment had to be sealed first. Call only
    /// with nothing pending.
    pub(crate) fn accept(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.finished {
            return Err(Error::Misuse("already finished"));
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.filled == self.capacity() {
            // More data follows a full segment, so it is an inner segment.
            self.seal(false)?;
            return Ok(0);
        }
        if self.filled == 0 && data.len() > self.capacity() {
            // A whole segment with more data after it (so an inner one):
            // seal it from the caller's bytes straight into the output
            // buffer, without copying the plaintext first.
            return self.seal_from(data);
        }
        let n = (self.capacity() - self.filled).min(data.len());
        grow_wiping(&mut self.buf, self.filled + n);
        let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.filled..self.filled + n),
            data.get(..n),
        ) else {
            return Err(Error::Misuse("segment buffer"));
        };
        dst.copy_from_slice(src);
        self.filled += n;
        Ok(n)
    }

    fn seal_from(&mut self, data: &[u8]) -> Result<usize, Error> {
        let n = self.capacity();
        if self.index + 1 >= MAX_SEGMENTS {
            return Err(Error::TooLong);
        }
        grow_wiping(&mut self.buf, n + TAG_LEN);
        let (Some(input), Some((body, rest))) = (
            data.get(..n),
            self.buf.get_mut(..n + TAG_LEN).map(|s| s.split_at_mut(n)),
        ) else {
            return Err(Error::Misuse("segment buffer"));
        };
        rest.copy_from_slice(&self.cipher.seal_to(self.index, false, input, body)?);
        self.sealed = n + TAG_LEN;
        self.sent = 0;
        self.index += 1;
        Ok(n)
    }

    fn seal(&mut self, last: bool) -> Result<(), Error> {
        if !last && self.index + 1 >= MAX_SEGMENTS {
            return Err(Error::TooLong);
        }
        grow_wiping(&mut self.buf, self.filled + TAG_LEN);
        let (plaintext, rest) = self.buf.split_at_mut(self.filled);
        let tag = self.cipher.seal(self.index, last, plaintext)?;
        rest.get_mut(..TAG_LEN)
            .ok_or(Error::Misuse("segment buffer"))?
            .copy_from_slice(&tag);
        self.sealed = self.filled + TAG_LEN;
        self.sent = 0;
        if !last {
            self.index += 1;
        }
        Ok(())
    }

    /// Seals the final segment. Its output becomes pending; once written the
    /// stream is complete. Idempotent.
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        if !self.finished {
            self.seal(true)?;
            self.finished = true;
        }
        Ok(())
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::new_stream_from;

    fn unhex(value: &serde_json::Value) -> Vec<u8> {
        hex::decode(value.as_str().unwrap()).unwrap()
    }

    /// Encrypting the published vectors' inputs with their salt and nonce
    /// prefix gives their streams byte for byte (they were made by an
    /// independent implementation, `vectors/generate.py`).
    #[test]
    fn encryption_matches_the_published_vectors() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../vectors/stream_v1.json")).unwrap();
        let mut checked = 0;
        for v in file["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["result"] == "valid")
        {
            let key = FileKey::from_secret_bytes(&unhex(&v["key"]).try_into().unwrap());
            let size = u32::try_from(v["segment_size"].as_u64().unwrap()).unwrap();
            let segment_size = SegmentSize::new(size).unwrap();
            let mut random = [0u8; 39];
            random[..32].copy_from_slice(&unhex(&v["salt"]));
            random[32..].copy_from_slice(&unhex(&v["nonce_prefix"]));
            // Every compiled-in backend gives the same bytes.
            for &backend in crate::Backend::ALL {
                let parts =
                    new_stream_from(&key, &unhex(&v["context"]), segment_size, backend, &random)
                        .unwrap();
                let mut encoder = Encoder::from_parts(parts, segment_size);
                let plaintext = unhex(&v["plaintext"]);
                let mut input = &plaintext[..];
                let mut out = Vec::new();
                let mut drain = |encoder: &mut Encoder| {
                    out.extend_from_slice(encoder.pending());
                    let n = encoder.pending().len();
                    encoder.consume(n);
                };
                while !input.is_empty() {
                    drain(&mut encoder);
                    let taken = encoder.accept(input).unwrap();
                    input = &input[taken..];
                }
                drain(&mut encoder);
                encoder.finish().unwrap();
                drain(&mut encoder);
                assert_eq!(
                    hex::encode(&out),
                    v["stream"].as_str().unwrap(),
                    "{} ({backend})",
                    v["comment"]
                );

                // The one-call path splits and seals exactly the same way.
                let parts =
                    new_stream_from(&key, &unhex(&v["context"]), segment_size, backend, &random)
                        .unwrap();
                let one_call =
                    crate::parallel::encrypt(parts, segment_size, &plaintext, 1).unwrap();
                // And so does the parallel path, on any number of threads.
                for threads in [2, 3, 8] {
                    let parts = new_stream_from(
                        &key,
                        &unhex(&v["context"]),
                        segment_size,
                        backend,
                        &random,
                    )
                    .unwrap();
                    let parallel =
                        crate::parallel::encrypt(parts, segment_size, &plaintext, threads).unwrap();
                    assert_eq!(
                        parallel, out,
                        "{}: {threads} threads ({backend})",
                        v["comment"]
                    );
                }
                assert_eq!(
                    one_call, out,
                    "{}: one-call encryption ({backend})",
                    v["comment"]
                );
            }
            checked += 1;
        }
        assert!(checked >= 7);
    }
}
