//! Reader-to-writer encryption and decryption on several threads, with
//! reading, the cipher and writing overlapped.
//!
//! One thread reads runs of segments ("chunks", about 256 KiB) into buffers
//! laid out like the ciphertext: plaintext is read straight into each
//! segment's slot, with room left for its tag, so workers seal in place.
//! When opening, each segment's plaintext is written just after the
//! previous one's, so a chunk's plaintext leaves in one piece: `ring` does
//! that in the same pass as the cipher, the other backends move the
//! ciphertext first (one `memmove` per segment), and the last segment of
//! each chunk is opened from a copy (see `open_chunk`). Workers take chunks
//! in any order; one writer puts them back in order. A fixed pool of chunk
//! buffers bounds memory: at most `min(2 × workers + 2, 12)` chunks are in
//! flight (in the pipeline or held by the sink), each about 256 KiB (one
//! segment when segments are larger), so with the default 64 KiB segments
//! never more than about 3 MiB. Slots grow with
//! the data actually read, so a short stream that claims a large segment
//! size costs little.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use atrest_filekey::FileKey;

use crate::buffer::grow_wiping;
use crate::chunk::{Chunk, open_chunk, seal_chunk};
use crate::format::{HEADER_LEN, Layout, SegmentSize, TAG_LEN};
use crate::schedule;
use crate::sink::{Buffer, PlaintextChunk, PlaintextSink, Pool};
use crate::{Error, Options};

/// Most chunks in flight at once.
const MAX_IN_FLIGHT: usize = 12;

// A chunk buffer ([`Buffer`]) holds plaintext at times (the plaintext read
// when encrypting, the opened segments when decrypting, and what the
// previous chunk left when it is reused), so it is wiped when dropped and
// grows only through [`grow_wiping`], which wipes the allocation it leaves.

/// The first read into a slot: slots grow with the data actually read, so a
/// short stream that claims a large segment size costs little memory.
const INITIAL_SLOT: usize = 16 * 1024;

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Cuts `reader` into chunks of `per_chunk` slots. `slot(index)` is the
/// slot size of segment `index` and `data(index)` how many bytes of it to
/// read; a segment that comes back short, or is followed by the end of the
/// source, is the last one.
struct Chunker<R> {
    reader: R,
    carry: Option<u8>,
    next_segment: u64,
    next_chunk: u64,
    done: bool,
}

impl<R: Read> Chunker<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            carry: None,
            next_segment: 0,
            next_chunk: 0,
            done: false,
        }
    }

    /// Reads up to `want` bytes into the slot at `offset`, growing `buf`
    /// (doubling) only as data arrives; returns the bytes read.
    fn read_slot(&mut self, buf: &mut Vec<u8>, offset: usize, want: usize) -> Result<usize, Error> {
        let mut got = 0;
        if want > 0
            && let Some(byte) = self.carry.take()
        {
            grow_wiping(buf, offset + 1);
            if let Some(first) = buf.get_mut(offset) {
                *first = byte;
            }
            got = 1;
        }
        while got < want {
            let target = want.min(got.saturating_mul(2).max(INITIAL_SLOT));
            grow_wiping(buf, offset + target);
            let space = buf
                .get_mut(offset + got..offset + target)
                .ok_or(Error::Malformed("chunk"))?;
            let n = fill(&mut self.reader, space)?;
            got += n;
            if got < target {
                break; // the source ended
            }
        }
        Ok(got)
    }

    fn next(
        &mut self,
        mut buf: Buffer,
        per_chunk: usize,
        slot: impl Fn(u64) -> usize,
        data: impl Fn(u64) -> usize,
    ) -> Result<Option<Chunk>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut chunk = Chunk {
            number: self.next_chunk,
            buf: Buffer::default(),
            first_segment: self.next_segment,
            segments: Vec::with_capacity(per_chunk),
            last: false,
            output: 0..0,
        };
        let mut offset = 0usize;
        for _ in 0..per_chunk {
            let index = self.next_segment;
            let (size, want) = (slot(index), data(index));
            let got = self.read_slot(&mut buf, offset, want)?;
            // Room for the tag after the data (when encrypting).
            let end = offset + got + (size - want);
            grow_wiping(&mut buf, end);
            chunk.segments.push((offset, got));
            self.next_segment += 1;
            offset += size;
            let mut peek = [0u8; 1];
            if got < want || fill(&mut self.reader, &mut peek)? == 0 {
                chunk.last = true;
                self.done = true;
                break;
            }
            self.carry = Some(peek[0]);
        }
        chunk.buf = buf;
        self.next_chunk += 1;
        Ok(Some(chunk))
    }
}

/// Runs the read → work → ordered write pipeline. `consume` gets each
/// chunk in order and gives its buffer back to the pool, at once or (when
/// it hands the buffer on) when it is done with it.
fn run<P, F, C>(threads: usize, produce: P, work: F, mut consume: C) -> Result<(), Error>
where
    P: FnMut(Buffer) -> Result<Option<Chunk>, Error> + Send,
    F: Fn(&mut Chunk) -> Result<(), Error> + Sync,
    C: FnMut(Chunk, &Pool) -> Result<(), Error> + Send,
{
    let workers = threads.max(1);
    let in_flight = (2 * workers + 2).min(MAX_IN_FLIGHT);
    let (free_tx, free_rx): (SyncSender<Buffer>, Receiver<Buffer>) = sync_channel(in_flight);
    for _ in 0..in_flight {
        free_tx
            .send(Buffer::default())
            .map_err(|_| Error::Backend)?;
    }
    let pool = Pool::new(free_tx);
    let (todo_tx, todo_rx) = sync_channel::<Chunk>(in_flight);
    let (done_tx, done_rx) = sync_channel::<(u64, Result<Chunk, Error>)>(in_flight);
    let todo_rx = Mutex::new(todo_rx);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |error: Error| {
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(error);
        }
    };

    let (fail, todo_rx, work, pool) = (&fail, &todo_rx, &work, &pool);
    std::thread::scope(move |scope| {
        // Reader. It holds a free buffer before producing a chunk, and there
        // are as many buffers as places in each channel, so no send blocks
        // for ever.
        let mut produce = produce;
        let mut threads = Vec::with_capacity(workers + 1);
        threads.push(scope.spawn(move || {
            while let Ok(buf) = free_rx.recv() {
                match produce(buf) {
                    Ok(Some(chunk)) => {
                        let last = chunk.last;
                        if todo_tx.send(chunk).is_err() || last {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        fail(error);
                        break;
                    }
                }
            }
        }));
        // Workers.
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            threads.push(scope.spawn(move || {
                loop {
                    let next = todo_rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|rx| rx.recv().map_err(|_| ()));
                    let Ok(mut chunk) = next else { break };
                    let number = chunk.number;
                    let result = work(&mut chunk).map(|()| chunk);
                    if done_tx.send((number, result)).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(done_tx);
        // Writer (this thread): in order, returning buffers to the pool.
        let mut write = || {
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            let mut finished = false;
            // Results, errors included, are taken in stream order, so the
            // error reported is the first one in the stream, as with the
            // sequential reader, whichever worker finishes first.
            while let Ok((number, result)) = done_rx.recv() {
                pending.insert(number, result);
                while let Some(result) = pending.remove(&next) {
                    let chunk = match result {
                        Ok(chunk) => chunk,
                        Err(error) => {
                            fail(error);
                            return;
                        }
                    };
                    finished = chunk.last;
                    if let Err(error) = consume(chunk, pool) {
                        fail(error);
                        // Closing the pool and dropping the results channel
                        // (after this returns) stops the reader and the
                        // workers.
                        return;
                    }
                    next += 1;
                }
                if finished {
                    break;
                }
            }
            if !finished {
                fail(Error::Backend);
            }
        };
        write();
        // Unblock the reader and workers if the writer stopped early; a
        // buffer given back from now on is wiped and freed.
        pool.close();
        drop(done_rx);
        // Join each thread rather than leave it to the scope: a joined
        // thread has also run its thread-local destructors, so nothing of
        // the pipeline outlives the call.
        for thread in threads {
            if thread.join().is_err() {
                fail(Error::Backend);
            }
        }
    });
    match first_error.into_inner().unwrap_or(None) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Encrypts everything `reader` yields into `writer`, overlapping reading,
/// encryption and writing. Returns the writer (flushed) and the plaintext
/// length.
pub(crate) fn encrypt_stream<R: Read + Send, W: Write + Send>(
    reader: R,
    mut writer: W,
    key: &FileKey,
    associated_data: &[u8],
    options: Options,
) -> Result<(W, u64), Error> {
    let threads = options.parallelism.get();
    let (header, cipher) =
        schedule::new_stream(key, associated_data, options.segment_size, options.backend)?;
    let layout = Layout::new(options.segment_size);
    writer.write_all(&header)?;
    let per_chunk = crate::chunk::segments_per_chunk(options.segment_size.get() as usize);
    let mut chunker = Chunker::new(reader);
    let mut total = 0u64;
    run(
        threads,
        |buf| {
            chunker.next(
                buf,
                per_chunk,
                |i| layout.full_segment_len(i),
                |i| layout.full_segment_len(i) - TAG_LEN,
            )
        },
        |chunk| seal_chunk(&cipher, chunk),
        |chunk, pool| {
            writer.write_all(chunk.buf.get(chunk.output.clone()).unwrap_or_default())?;
            total += chunk
                .segments
                .iter()
                .map(|&(_, len)| len as u64)
                .sum::<u64>();
            pool.give_back(chunk.buf);
            Ok(())
        },
    )?;
    writer.flush()?;
    Ok((writer, total))
}

/// Decrypts the stream `reader` yields into `sink`, overlapping reading,
/// decryption and writing; with `expected`, a stream of another segment size
/// is refused before anything past the header is read. Each chunk's
/// plaintext is handed to the sink in its own buffer. Returns the plaintext
/// length.
pub(crate) fn decrypt_stream<R: Read + Send, S: PlaintextSink + Send>(
    mut reader: R,
    sink: &mut S,
    key: &FileKey,
    associated_data: &[u8],
    options: Options,
    expected: Option<SegmentSize>,
) -> Result<u64, Error> {
    let threads = options.parallelism.get();
    let mut header = [0u8; HEADER_LEN];
    crate::read::read_full(&mut reader, &mut header)?;
    let (segment_size, cipher) =
        schedule::open_stream(&header, key, associated_data, options.backend, expected)?;
    let layout = Layout::new(segment_size);
    let per_chunk = crate::chunk::segments_per_chunk(segment_size.get() as usize);
    let mut chunker = Chunker::new(reader);
    let mut total = 0u64;
    run(
        threads,
        |buf| {
            chunker.next(
                buf,
                per_chunk,
                |i| layout.full_segment_len(i),
                |i| layout.full_segment_len(i),
            )
        },
        |chunk| open_chunk(&cipher, layout, chunk),
        |chunk, pool| {
            total += chunk.output.len() as u64;
            sink.take_chunk(PlaintextChunk::new(chunk.buf, chunk.output, pool.clone()))?;
            Ok(())
        },
    )?;
    sink.finish_plaintext()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of one 16 MiB slot (what a prefix declaring the largest
    /// segment size gets) holds about what was read, however little that is.
    #[test]
    fn slots_grow_with_the_data_read() {
        let slot = 16 << 20;
        for available in [0usize, 1, 1000, 100_000, 300_000] {
            let data = vec![7u8; available];
            let mut chunker = Chunker::new(&data[..]);
            let chunk = chunker
                .next(Buffer::default(), 1, |_| slot, |_| slot)
                .unwrap()
                .unwrap();
            assert!(chunk.last);
            assert_eq!(chunk.segments, [(0, available)]);
            assert_eq!(chunk.buf.get(..available), Some(&data[..]));
            let capacity = chunk.buf.capacity();
            assert!(
                capacity <= 2 * available.max(INITIAL_SLOT),
                "{available} bytes read, {capacity} allocated"
            );
        }
    }

    /// A reused buffer keeps its allocation; a new one starts empty, so the
    /// pool costs nothing until data arrives.
    #[test]
    fn the_pool_starts_empty_and_buffers_are_reused() {
        assert_eq!(Buffer::default().capacity(), 0);
        let data = vec![7u8; 50_000];
        let mut chunker = Chunker::new(&data[..]);
        let mut reused = Buffer::default();
        reused.resize(70_000, 1);
        let before = reused.as_ptr();
        let chunk = chunker
            .next(reused, 1, |_| 65_536, |_| 65_536)
            .unwrap()
            .unwrap();
        assert_eq!(chunk.buf.as_ptr(), before);
        assert_eq!(chunk.buf.get(..50_000), Some(&data[..]));
    }
}
