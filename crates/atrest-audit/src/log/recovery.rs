//! Catching up with the log at the lock: what other writers appended is
//! walked and checked, and an unacknowledged batch at the end (a writer
//! that died in the middle of it) is cut off and kept aside.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::writer::{Tail, Writer};
use crate::Error;
use crate::chain::{self, ChainState, LinkError};
use crate::fs::{RECOVERED_DIR, io, private_dirs, private_file, segment_path, sync_dir};
use crate::line::{checkpoint_of_line, is_checkpoint_line};

/// What happened to the end of the last segment while reading it.
#[derive(Default)]
pub(super) struct Repair {
    pub(super) cut_bytes: u64,
    pub(super) cut_lines: u64,
    pub(super) saved_as: Option<PathBuf>,
    pub(super) newline_restored: bool,
}

impl Writer {
    /// Reads what other writers appended since `tail`, checks it, and
    /// repairs an unacknowledged batch at the end. The lock must be held.
    pub(super) fn catch_up(&self, tail: &mut Tail) -> Result<Repair, Error> {
        let mut repair = Repair::default();
        loop {
            let path = segment_path(&self.dir, tail.index);
            let len = io(&path, tail.file.metadata())?.len();
            let next = segment_path(&self.dir, tail.index + 1);
            let has_next = next.exists();
            if len < tail.len {
                return Err(Error::Corrupt {
                    path,
                    line: 0,
                    reason: format!(
                        "the segment shrank from {} to {len} bytes under a running writer",
                        tail.len
                    ),
                });
            }
            if len > tail.len {
                let mut bytes = Vec::new();
                io(
                    &path,
                    tail.file
                        .seek(SeekFrom::Start(tail.len))
                        .and_then(|_| tail.file.read_to_end(&mut bytes)),
                )?;
                self.absorb(tail, &path, &bytes, has_next, &mut repair)?;
            }
            if !has_next {
                break;
            }
            tail.file = io(&next, private_file().read(true).append(true).open(&next))?;
            tail.index += 1;
            tail.len = 0;
        }
        Ok(repair)
    }

    /// Walks `bytes`, the segment `path` from `tail.len` on, and advances
    /// `tail` over every signed batch; cuts an unacknowledged batch at the
    /// end of the last segment.
    fn absorb(
        &self,
        tail: &mut Tail,
        path: &Path,
        bytes: &[u8],
        has_next: bool,
        repair: &mut Repair,
    ) -> Result<(), Error> {
        let mut state = tail.chain;
        let witnessed = tail.expect.map(|(size, _)| size);
        // End of the last checkpoint line walked, and the chain after it.
        let mut sealed: Option<(usize, ChainState, (usize, usize))> = None;
        let mut offset = 0usize;
        let mut expect = tail.expect;
        let broken = chain::walk(bytes, &mut state, |after, line| {
            let start = offset;
            offset += line.len() + 1;
            if let Some((size, head)) = expect
                && after.next_seq == size
            {
                expect = None;
                if after.head != head {
                    // Reported below, as a mismatch with the witness.
                    expect = Some((u64::MAX, head));
                }
            }
            if is_checkpoint_line(line) {
                sealed = Some((offset, *after, (start, line.len())));
            }
        });
        let corrupt = |line: u64, reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if let Some((u64::MAX, _)) = expect {
            return Err(corrupt(
                0,
                "the log does not match its witness's checkpoint: it was rewritten".into(),
            ));
        }
        tail.expect = expect;
        let adopt = |tail: &mut Tail,
                     end: usize,
                     after: ChainState,
                     (start, len): (usize, usize)|
         -> Result<(), Error> {
            let line = bytes.get(start..start + len).unwrap_or_default();
            let checkpoint =
                checkpoint_of_line(&self.origin, line).map_err(|reason| Error::Corrupt {
                    path: path.to_path_buf(),
                    line: 0,
                    reason: format!("the checkpoint line {}: {reason}", after.next_seq - 1),
                })?;
            // Never sign over lines whose signature has not been checked.
            if checkpoint.verify(&self.verifying_key).is_err() {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    line: 0,
                    reason: format!(
                        "the checkpoint line {} is not signed by this log's key ({})",
                        after.next_seq - 1,
                        self.verifying_key.name()
                    ),
                });
            }
            tail.checkpoint = Some(checkpoint);
            tail.len += end as u64;
            tail.chain = after;
            Ok(())
        };
        let sealed_end = sealed.map_or(0, |(end, _, _)| end);
        match broken {
            None if sealed_end == bytes.len() => {
                if let Some((end, after, line)) = sealed {
                    adopt(tail, end, after, line)?;
                }
                return Ok(());
            }
            Some(broken) if broken.error != LinkError::Torn => {
                // A crash leaves a prefix of the batch, perhaps followed by
                // zeros: lines that do not parse, and nothing after them.
                // A well-formed line that does not link, a complete line
                // without zeros that does not parse, or records after the
                // break, are edits: evidence, never cut.
                let rest = bytes.get(broken.offset..).unwrap_or_default();
                let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
                let complete_without_zeros = line.len() < rest.len() && !line.contains(&0);
                let edited = !matches!(broken.error, LinkError::Unparseable(_))
                    || complete_without_zeros
                    || chain::record_follows(bytes, broken.offset);
                if edited || has_next {
                    return Err(corrupt(broken.line, broken.error.to_string()));
                }
            }
            Some(broken) => {
                // The segment ends inside a line. If that line is a whole,
                // correctly chained checkpoint line and every line before it
                // links, the batch was written in full: restore its newline.
                let last = bytes.get(broken.offset..).unwrap_or_default();
                let mut probe = state;
                let whole = chain::link(&mut probe, last).is_ok()
                    && is_checkpoint_line(last)
                    && checkpoint_of_line(&self.origin, last)
                        .is_ok_and(|c| c.verify(&self.verifying_key).is_ok());
                if whole && !has_next {
                    io(
                        path,
                        tail.file
                            .write_all(b"\n")
                            .and_then(|()| tail.file.sync_data()),
                    )?;
                    repair.newline_restored = true;
                    let end = bytes.len() + 1;
                    return adopt(tail, end, probe, (broken.offset, last.len()));
                }
            }
            None => {}
        }
        if has_next {
            return Err(corrupt(
                0,
                "a closed segment ends with lines no checkpoint signs".into(),
            ));
        }
        // A batch the witness has a checkpoint of was acknowledged: its
        // damage is evidence, never cut.
        let kept = sealed.map_or(tail.chain.next_seq, |(_, after, _)| after.next_seq);
        if let Some(size) = witnessed
            && size >= kept
        {
            return Err(corrupt(
                0,
                format!(
                    "the log is damaged after line {kept}, but its witness has a checkpoint of {size} lines: not cut"
                ),
            ));
        }
        // An unacknowledged batch: keep its bytes aside, cut them off.
        let cut = bytes.get(sealed_end..).unwrap_or_default();
        let at = tail.len + sealed_end as u64;
        let saved = self.save_cut(tail.index, at, cut)?;
        io(
            path,
            tail.file.set_len(at).and_then(|()| tail.file.sync_all()),
        )?;
        repair.cut_bytes += cut.len() as u64;
        repair.cut_lines += cut.iter().filter(|&&b| b == b'\n').count() as u64;
        repair.saved_as = Some(saved);
        if let Some((end, after, line)) = sealed {
            adopt(tail, end, after, line)?;
        }
        Ok(())
    }

    /// Saves bytes about to be cut off to `recovered/`.
    fn save_cut(&self, index: u32, offset: u64, bytes: &[u8]) -> Result<PathBuf, Error> {
        let dir = self.dir.join(RECOVERED_DIR);
        io(&dir, private_dirs(&dir))?;
        let mut path = dir.join(format!("{index:08}-{offset}.partial"));
        let mut attempt = 1;
        let mut file = loop {
            match private_file().write(true).create_new(true).open(&path) {
                Ok(file) => break file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    attempt += 1;
                    path = dir.join(format!("{index:08}-{offset}.{attempt}.partial"));
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        if let Err(error) = file.write_all(bytes).and_then(|()| file.sync_all()) {
            // Not saved (the disk is full, say): no empty or partial copy
            // is left to mislead.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(Error::io(&path, error));
        }
        sync_dir(&dir)?;
        Ok(path)
    }
}
