//! How to seal and open streams: one options value for both.

use std::num::NonZeroUsize;

use crate::{Backend, SegmentSize};

/// How many threads the whole-buffer and reader-to-writer forms use.
///
/// The output never depends on it: a stream sealed on many threads is
/// byte-identical to one sealed on one (for the same salt and nonce prefix).
/// The `Read`/`Write`/`Seek` and async adapters and range reads always run on
/// the calling thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Parallelism {
    /// The calling thread only (reader-to-writer forms: one cryptography
    /// thread besides the reading and writing ones).
    #[default]
    One,
    /// This many threads.
    Threads(NonZeroUsize),
    /// One thread per available core.
    AllCores,
}

impl Parallelism {
    /// `n` threads; `Parallelism::One` for `n <= 1`.
    pub const fn threads(n: usize) -> Self {
        match NonZeroUsize::new(n) {
            Some(n) if n.get() > 1 => Self::Threads(n),
            _ => Self::One,
        }
    }

    /// The number of threads this stands for on this machine.
    pub fn get(self) -> usize {
        match self {
            Self::One => 1,
            Self::Threads(n) => n.get(),
            Self::AllCores => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

/// How to seal and open streams: segment size, backend and parallelism.
///
/// Opening reads the segment size from the stream's prefix, so
/// `segment_size` applies to sealing only. To require a stream to have a
/// given segment size when opening it (the one a file record says it was
/// sealed with), use
/// [`Opener::expect_segment_size`](crate::Opener::expect_segment_size).
///
/// ```
/// use atrest_stream::{Backend, Options, Parallelism, SegmentSize};
/// let options = Options::default()
///     .segment_size(SegmentSize::new(1 << 20)?)
///     .backend(Backend::default())
///     .parallelism(Parallelism::AllCores);
/// # Ok::<(), atrest_stream::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The segment size of new streams (default 64 KiB).
    pub segment_size: SegmentSize,
    /// The AES-256-GCM implementation (default: see [`Backend::default`]).
    pub backend: Backend,
    /// Threads for the whole-buffer and reader-to-writer forms (default:
    /// one).
    pub parallelism: Parallelism,
}

impl Options {
    /// With this segment size.
    #[must_use]
    pub const fn segment_size(mut self, segment_size: SegmentSize) -> Self {
        self.segment_size = segment_size;
        self
    }

    /// With this backend.
    #[must_use]
    pub const fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// With this parallelism.
    #[must_use]
    pub const fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }
}

impl From<SegmentSize> for Options {
    fn from(segment_size: SegmentSize) -> Self {
        Self::default().segment_size(segment_size)
    }
}
