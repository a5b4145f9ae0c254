//! Reading an item of the source: whole if it is small, as it is sent if
//! it is large, and in either case refused if it changed meanwhile.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;

/// Items up to this size are read whole when their batch is prepared;
/// larger ones are read as they are sealed.
pub(crate) const READ_WHOLE: u64 = 64 << 10;

/// Why an item that changed while it was read is not stored.
pub(crate) const CHANGED: &str =
    "it changed while it was read (not stored; move it again once it is still)";

/// How many times a small item is read whole before it counts as changing.
const READ_TRIES: u32 = 3;

/// What tells that a file changed: its inode, size, and modification and
/// change times (the change time moves on every write and cannot be set
/// back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) ino: u64,
    pub(crate) len: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
}

impl Seen {
    /// Whether `stat` (of the item, by its path) is still this.
    pub(crate) fn matches(&self, stat: &rustix::fs::Stat) -> bool {
        let ns = |secs: i64, nanos: u64| {
            secs.saturating_mul(1_000_000_000)
                .saturating_add(i64::try_from(nanos).unwrap_or(0))
        };
        *self
            == Self {
                ino: stat.st_ino,
                len: u64::try_from(stat.st_size).unwrap_or(u64::MAX),
                mtime_ns: ns(stat.st_mtime, stat.st_mtime_nsec),
                ctime_ns: ns(stat.st_ctime, stat.st_ctime_nsec),
            }
    }

    pub(crate) fn of(file: &std::fs::File) -> std::io::Result<Self> {
        let meta = file.metadata()?;
        let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        Ok(Self {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// A large item's file, read as it is sealed: at its end it must still be
/// what it was when it was opened, or the read fails, and so does the
/// item's seal (nothing is stored).
pub(crate) struct Unchanged {
    file: tokio::fs::File,
    /// The same file, for `fstat`.
    probe: std::fs::File,
    seen: Seen,
}

impl Unchanged {
    pub(crate) fn new(file: std::fs::File, seen: Seen) -> std::io::Result<Self> {
        Ok(Self {
            probe: file.try_clone()?,
            file: tokio::fs::File::from_std(file),
            seen,
        })
    }
}

impl tokio::io::AsyncRead for Unchanged {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let asked = buf.remaining() > 0;
        let read = std::pin::Pin::new(&mut self.file).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &read
            && asked
            && buf.filled().len() == before
            && Seen::of(&self.probe)? != self.seen
        {
            // The end: one `fstat`, which does not wait on the disk.
            return std::task::Poll::Ready(Err(std::io::Error::other(CHANGED)));
        }
        read
    }
}

/// A small item read whole, from its start, until it reads the same before
/// and after (a few tries): its bytes and what it was. Blocks.
pub(crate) fn read_whole(file: &std::fs::File, mut seen: Seen) -> Result<(Vec<u8>, Seen), String> {
    let mut tries = 0;
    loop {
        let mut bytes = Vec::with_capacity(usize::try_from(seen.len).unwrap_or(0));
        let _ = file
            .take(READ_WHOLE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        let after = Seen::of(file).map_err(|e| e.to_string())?;
        if after == seen && bytes.len() as u64 == seen.len {
            return Ok((bytes, seen));
        }
        tries += 1;
        if tries == READ_TRIES || after.len > READ_WHOLE {
            return Err(CHANGED.to_owned());
        }
        seen = after;
        std::io::Seek::rewind(&mut &*file).map_err(|e| e.to_string())?;
    }
}
