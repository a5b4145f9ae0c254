//! Feeds arbitrary bytes to the streaming reader (in reads of a fuzzed size),
//! to the reader-to-writer pipeline and to the run-at-a-time opener (runs
//! read in order, the end found by the source running out), under a fixed
//! key and context. Nothing may panic, and each must agree with the
//! length-aware reader: both accept with the same plaintext, or both reject; a rejecting streaming reader may have released
//! only a prefix of what was authentic. With a segment size required, a
//! stream that declares another never opens, and one that declares it opens
//! exactly as without the requirement.
#![no_main]

use std::io::Read;

use atrest_filekey::FileKey;
use atrest_stream::format::{HEADER_LEN, PREFIX_LEN, parse_prefix};
use atrest_stream::{Error, Opener, Options, SegmentSize};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];
const CONTEXT: &[u8] = b"fuzz context";

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let key = FileKey::from_secret_bytes(&KEY);
    let whole = Opener::new(&key, CONTEXT, Options::default()).open(stream);

    let mut released = Vec::new();
    let mut buf = vec![0u8; usize::from(chunk) * 97 + 1];
    let streamed = Opener::new(&key, CONTEXT, Options::default())
        .reader(stream)
        .map_err(std::io::Error::from)
        .and_then(|mut d| {
            loop {
                match d.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => released.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e),
                }
            }
        });
    let by_runs = open_by_runs(&key, stream);
    let piped = Opener::new(&key, CONTEXT, Options::default()).open_stream(stream, Vec::new());
    let expected = SegmentSize::MIN;
    let required = Opener::new(&key, CONTEXT, Options::default())
        .expect_segment_size(expected)
        .open(stream);
    let declared = stream
        .get(..PREFIX_LEN)
        .and_then(|prefix| prefix.try_into().ok())
        .and_then(|prefix| parse_prefix(prefix).ok())
        .map(|prefix| prefix.segment_size);
    match declared {
        // Too short for the header, or refused for the size.
        Some(size) if size != expected => assert!(
            matches!(
                required,
                Err(Error::SegmentSizeMismatch { .. } | Error::Truncated)
            ),
            "opened a stream of segment size {size:?} when {expected:?} was required: {:?}",
            required.map(|p| p.len())
        ),
        _ => assert_eq!(
            required.as_ref().ok(),
            whole.as_ref().ok(),
            "the requirement changed the outcome of a stream that meets it"
        ),
    }
    match (&whole, &by_runs) {
        (Ok(plaintext), Ok(out)) => assert_eq!(plaintext, out),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "runs disagree: whole {:?}, runs {:?}",
            whole.as_ref().map(Vec::len),
            by_runs.as_ref().map(Vec::len)
        ),
    }
    match (&whole, &piped) {
        (Ok(plaintext), Ok((out, _))) => assert_eq!(plaintext, out),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "pipeline disagrees: whole {:?}, pipeline {:?}",
            whole.as_ref().map(Vec::len),
            piped.as_ref().map(|p| p.1)
        ),
    }
    match (whole, streamed) {
        (Ok(plaintext), Ok(())) => assert_eq!(plaintext, released),
        (Err(_), Err(_)) => {}
        (whole, streamed) => panic!(
            "readers disagree: whole {:?}, streaming {:?}",
            whole.map(|p| p.len()),
            streamed
        ),
    }
});

/// Opens `stream` a run at a time, as an async reader would: a full run is
/// the last one only if nothing follows it.
fn open_by_runs(key: &FileKey, stream: &[u8]) -> Result<Vec<u8>, Error> {
    let header: &[u8; HEADER_LEN] = stream
        .get(..HEADER_LEN)
        .and_then(|header| header.try_into().ok())
        .ok_or(Error::Truncated)?;
    let runs = Opener::new(key, CONTEXT, Options::default()).runs(header)?;
    let mut rest = stream.get(HEADER_LEN..).unwrap_or_default();
    let mut segment = 0;
    let mut opened = Vec::new();
    loop {
        let len = runs.run_len(segment).min(rest.len());
        let (run, after) = rest.split_at(len);
        let last = after.is_empty();
        let mut ciphertext = runs.buffer();
        ciphertext.extend_from_slice(run);
        opened.extend_from_slice(&runs.open(segment, ciphertext, last)?);
        if last {
            return Ok(opened);
        }
        rest = after;
        segment += runs.segments_per_run();
    }
}
