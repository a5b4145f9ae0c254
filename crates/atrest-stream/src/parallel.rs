//! Whole-buffer encryption and decryption, on one thread or many.
//!
//! Segments are independent (each has its own nonce), so a buffer is cut
//! into contiguous runs of segments, one per thread, and each thread seals
//! or opens its run straight into its own part of the output. The output is
//! byte-identical whatever the number of threads.

use std::ops::Range;

use zeroize::Zeroize;

use crate::Error;
use crate::format::{Extent, HEADER_LEN, Layout, SegmentSize, TAG_LEN};
use crate::segment::{SegmentOpener, SegmentSealer, diagnose_end};

/// Cuts `segments` into at most `threads` contiguous, nearly equal runs.
fn runs(segments: u64, threads: usize) -> Vec<Range<u64>> {
    let threads = (threads as u64).clamp(1, segments.max(1));
    let (per, extra) = (segments / threads, segments % threads);
    let mut start = 0;
    (0..threads)
        .map(|t| {
            let len = per + u64::from(t < extra);
            let run = start..start + len;
            start += len;
            run
        })
        .collect()
}

fn index_to_usize(n: u64) -> Result<usize, Error> {
    usize::try_from(n).map_err(|_| Error::TooLong)
}

/// Splits `buffer` (which starts at offset `base`) at the given absolute
/// offsets, one piece per run.
fn split_regions<'a>(
    mut buffer: &'a mut [u8],
    base: usize,
    bounds: &[usize],
) -> Result<Vec<&'a mut [u8]>, Error> {
    let mut pieces = Vec::with_capacity(bounds.len());
    let mut position = base;
    for &end in bounds {
        let (piece, rest) = buffer
            .split_at_mut_checked(end - position)
            .ok_or(Error::Malformed("region"))?;
        pieces.push(piece);
        buffer = rest;
        position = end;
    }
    Ok(pieces)
}

/// Runs `work` on each (run, region) pair, on separate threads if more than one.
fn run_all<F>(runs: Vec<Range<u64>>, regions: Vec<&mut [u8]>, work: F) -> Result<(), Error>
where
    F: Fn(Range<u64>, &mut [u8]) -> Result<(), Error> + Sync,
{
    if runs.len() == 1 {
        return runs
            .into_iter()
            .zip(regions)
            .try_for_each(|(run, region)| work(run, region));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .into_iter()
            .zip(regions)
            .map(|(run, region)| {
                let work = &work;
                scope.spawn(move || work(run, region))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or(Err(Error::Backend)))
    })
}

/// Encrypts `plaintext` into `out` as a complete stream (header included);
/// returns the stream's length.
pub(crate) fn encrypt_to(
    (header, cipher): ([u8; HEADER_LEN], SegmentSealer),
    segment_size: SegmentSize,
    plaintext: &[u8],
    threads: usize,
    out: &mut [u8],
) -> Result<usize, Error> {
    let layout = Layout::new(segment_size);
    let extent = layout.for_plaintext(plaintext.len() as u64)?;
    let len = index_to_usize(extent.stream_len())?;
    let out = out
        .get_mut(..len)
        .ok_or(Error::OutputTooSmall { needed: len as u64 })?;
    let (head, body) = out.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&header);

    let runs = runs(extent.segments, threads);
    let bounds = runs
        .iter()
        .map(|run| {
            index_to_usize(layout.ciphertext_start(run.end - 1))
                .map(|s| s + layout.segment_len(extent, run.end - 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let regions = split_regions(body, HEADER_LEN, &bounds)?;
    run_all(runs, regions, |run, region| {
        seal_run(&cipher, layout, extent, plaintext, run, region)
    })?;
    Ok(len)
}

/// Encrypts `plaintext` into a new buffer.
pub(crate) fn encrypt(
    stream: ([u8; HEADER_LEN], SegmentSealer),
    segment_size: SegmentSize,
    plaintext: &[u8],
    threads: usize,
) -> Result<Vec<u8>, Error> {
    let layout = Layout::new(segment_size);
    let len = layout.for_plaintext(plaintext.len() as u64)?.stream_len();
    let mut out = vec![0u8; index_to_usize(len)?];
    encrypt_to(stream, segment_size, plaintext, threads, &mut out)?;
    Ok(out)
}

/// Seals segments `run` of `plaintext` into `region` (their ciphertext).
fn seal_run(
    cipher: &SegmentSealer,
    layout: Layout,
    extent: Extent,
    plaintext: &[u8],
    run: Range<u64>,
    region: &mut [u8],
) -> Result<(), Error> {
    let mut offset = 0usize;
    for index in run {
        let start = index_to_usize(layout.plaintext_start(index))?;
        let len = layout.segment_len(extent, index) - TAG_LEN;
        let chunk = plaintext
            .get(start..start + len)
            .ok_or(Error::Malformed("plaintext"))?;
        let segment = region
            .get_mut(offset..offset + len + TAG_LEN)
            .ok_or(Error::Malformed("region"))?;
        let (body, tag) = segment.split_at_mut(len);
        let last = index + 1 == extent.segments;
        tag.copy_from_slice(&cipher.seal_to(index, last, chunk, body)?);
        offset += len + TAG_LEN;
    }
    Ok(())
}

/// Decrypts a complete stream whose header was already opened into `out`;
/// returns the plaintext length. On failure the partial plaintext is wiped.
pub(crate) fn decrypt_to(
    cipher: &SegmentOpener,
    segment_size: SegmentSize,
    stream: &[u8],
    threads: usize,
    out: &mut [u8],
) -> Result<usize, Error> {
    let layout = Layout::new(segment_size);
    let extent = stream_extent(cipher, layout, stream)?;
    let len = index_to_usize(extent.plaintext_len)?;
    let out = out
        .get_mut(..len)
        .ok_or(Error::OutputTooSmall { needed: len as u64 })?;
    let runs = runs(extent.segments, threads);
    let bounds = runs
        .iter()
        .map(|run| {
            let last = run.end - 1;
            index_to_usize(layout.plaintext_start(last))
                .map(|s| s + layout.segment_len(extent, last) - TAG_LEN)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let regions = split_regions(out, 0, &bounds)?;
    let result = run_all(runs, regions, |run, region| {
        open_run(cipher, layout, extent, stream, run, region)
    });
    if let Err(error) = result {
        out.zeroize();
        // Runs report their first failure and are joined in order, so this
        // is the first failing segment in the stream, classified as a
        // sequential reader would (an inner one that verifies as the last
        // is TrailingData).
        return Err(error);
    }
    Ok(len)
}

/// The extent of a whole stream held in memory, with a rejected length
/// explained as a sequential reader would explain it.
fn stream_extent(cipher: &SegmentOpener, layout: Layout, stream: &[u8]) -> Result<Extent, Error> {
    layout.for_stream(stream.len() as u64).map_err(|error| {
        diagnose_end(cipher, layout, stream.len() as u64, error, |at, buf| {
            read_slice(stream, at, buf)
        })
    })
}

fn read_slice(stream: &[u8], at: u64, buf: &mut [u8]) -> Result<(), Error> {
    let start = index_to_usize(at)?;
    let src = stream
        .get(start..start + buf.len())
        .ok_or(Error::Truncated)?;
    buf.copy_from_slice(src);
    Ok(())
}

/// Decrypts a complete stream into a new buffer.
pub(crate) fn decrypt(
    cipher: &SegmentOpener,
    segment_size: SegmentSize,
    stream: &[u8],
    threads: usize,
) -> Result<Vec<u8>, Error> {
    let extent = stream_extent(cipher, Layout::new(segment_size), stream)?;
    let mut out = vec![0u8; index_to_usize(extent.plaintext_len)?];
    decrypt_to(cipher, segment_size, stream, threads, &mut out)?;
    Ok(out)
}

/// Opens segments `run` of `stream` into `region` (their plaintext).
fn open_run(
    cipher: &SegmentOpener,
    layout: Layout,
    extent: Extent,
    stream: &[u8],
    run: Range<u64>,
    region: &mut [u8],
) -> Result<(), Error> {
    let mut offset = 0usize;
    for index in run {
        let start = index_to_usize(layout.ciphertext_start(index))?;
        let len = layout.segment_len(extent, index);
        let segment = stream.get(start..start + len).ok_or(Error::Truncated)?;
        let out = region
            .get_mut(offset..offset + len - TAG_LEN)
            .ok_or(Error::Malformed("region"))?;
        if index + 1 == extent.segments {
            // The final segment; one that verifies only as an inner segment
            // means the stream was cut right after it.
            if cipher.open_to(index, true, segment, out).is_err() {
                let cut = len == layout.full_segment_len(index)
                    && cipher.open_to(index, false, segment, out).is_ok();
                out.zeroize();
                return Err(if cut {
                    Error::Truncated
                } else {
                    Error::AuthenticationFailed
                });
            }
        } else {
            cipher.open_inner_to(index, segment, out)?;
        }
        offset += len - TAG_LEN;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_cover_every_segment_once() {
        for segments in [1u64, 2, 3, 7, 100] {
            for threads in [1usize, 2, 3, 8, 200] {
                let r = runs(segments, threads);
                assert!(r.len() <= threads && !r.is_empty());
                assert_eq!(r.first().map(|r| r.start), Some(0));
                assert_eq!(r.last().map(|r| r.end), Some(segments));
                assert!(
                    r.windows(2)
                        .all(|w| w[0].end == w[1].start && !w[0].is_empty())
                );
            }
        }
    }
}
