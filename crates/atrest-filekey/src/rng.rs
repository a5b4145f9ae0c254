//! Random number sources for keys, ids and salts.
//!
//! Two sources implement [`SecureRandom`], and the trait is sealed so that no
//! weaker source can be plugged in:
//!
//! - [`OsRng`]: the operating system's CSPRNG (`getrandom(2)` on Linux), one
//!   system call per request.
//! - [`KeyGenerator`]: a fast-key-erasure generator for services that create
//!   many keys per second, reseeded from the OS.
//!
//! # The batch generator's design
//!
//! [`KeyGenerator`] follows the "fast-key-erasure" construction (D. J.
//! Bernstein, 2017) with ChaCha20 as the stream cipher:
//!
//! 1. The state is a 256-bit ChaCha20 key `K`, seeded from the OS.
//! 2. To refill, it runs ChaCha20 under `K` (nonce zero, counter from zero) over
//!    a 1 KiB buffer. The first 32 bytes of that keystream *replace* `K` at once;
//!    the other 992 bytes are handed out, and every byte is overwritten with
//!    zeros as soon as it has been copied to the caller.
//!
//! So at any moment the generator holds only the next key and the output not
//! yet handed out: capturing its memory reveals nothing about keys it produced
//! earlier (forward secrecy), and no key schedule or buffer outlives its use.
//!
//! **Reseeding.** Every 64 KiB of output (2,048 file keys) the generator mixes
//! 32 fresh bytes from the OS into `K` before the next refill, so a state
//! compromise heals within that many bytes. [`KeyGenerator::reseed`] does the
//! same on demand.
//!
//! **Across `fork`.** A forked child process inherits a copy of the state, and
//! without care parent and child would hand out the *same* keys. Every request
//! therefore compares the current process id with the one recorded at the last
//! (re)seed; on a change the generator drops its buffered output and reseeds
//! from the OS before producing anything. The remaining gap is process-id reuse:
//! a child forked from a child, after the original process exited, can get the
//! original's process id back. Services that fork should either create their
//! generators after forking, or call [`KeyGenerator::reseed`] in the child.
//!
//! The generator is not `Sync`; give each thread its own (they are cheap: 1 KiB
//! of state).

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroize;

use crate::Error;

mod sealed {
    pub trait Sealed {}
}

/// A cryptographically secure random number source.
///
/// Sealed: implemented only by [`OsRng`] and [`KeyGenerator`].
pub trait SecureRandom: sealed::Sealed {
    /// Fills `dest` with random bytes.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's generator fails.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), Error>;
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRng;

impl sealed::Sealed for OsRng {}

impl SecureRandom for OsRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        getrandom::fill(dest).map_err(|_| Error::Rng)
    }
}

/// Bytes of ChaCha20 keystream produced per refill.
const BUFFER_LEN: usize = 1024;
/// Length of the generator's own key.
const KEY_LEN: usize = 32;
/// Output between two reseeds from the OS.
const RESEED_INTERVAL: u64 = 64 * 1024;

/// A fast-key-erasure random generator, reseeded from the OS and safe across
/// `fork`. See the [module documentation](self) for its design.
///
/// ```
/// use atrest_filekey::{FileKey, KeyGenerator};
/// let mut generator = KeyGenerator::new()?;
/// let a = FileKey::generate_with(&mut generator)?;
/// let b = FileKey::generate_with(&mut generator)?;
/// assert_ne!(a.expose_secret(), b.expose_secret());
/// # Ok::<(), atrest_filekey::Error>(())
/// ```
pub struct KeyGenerator {
    key: [u8; KEY_LEN],
    buffer: [u8; BUFFER_LEN],
    /// Index of the first unused byte of `buffer`; `BUFFER_LEN` when empty.
    position: usize,
    /// Output produced since the last reseed.
    since_reseed: u64,
    /// Process id at the last (re)seed.
    pid: u32,
}

impl KeyGenerator {
    /// A generator seeded from the operating system.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's generator fails.
    pub fn new() -> Result<Self, Error> {
        let mut generator = Self {
            key: [0; KEY_LEN],
            buffer: [0; BUFFER_LEN],
            position: BUFFER_LEN,
            since_reseed: 0,
            pid: std::process::id(),
        };
        generator.reseed()?;
        Ok(generator)
    }

    /// Drops all buffered output and mixes 32 fresh bytes from the operating
    /// system into the state.
    ///
    /// # Errors
    /// [`Error::Rng`] if the operating system's generator fails.
    pub fn reseed(&mut self) -> Result<(), Error> {
        let mut seed = [0u8; KEY_LEN];
        OsRng.fill(&mut seed)?;
        for (k, s) in self.key.iter_mut().zip(seed.iter()) {
            *k ^= s;
        }
        seed.zeroize();
        self.buffer.zeroize();
        self.position = BUFFER_LEN;
        self.since_reseed = 0;
        self.pid = std::process::id();
        Ok(())
    }

    fn refill(&mut self) -> Result<(), Error> {
        if self.since_reseed >= RESEED_INTERVAL {
            self.reseed()?;
        }
        // All consumed bytes were zeroed, so the buffer holds zeros and
        // applying the keystream writes the keystream itself.
        self.buffer.zeroize();
        let mut cipher = ChaCha20::new(&self.key.into(), &[0u8; 12].into());
        cipher.apply_keystream(&mut self.buffer);
        let (next_key, _) = self.buffer.split_at_mut(KEY_LEN);
        self.key.copy_from_slice(next_key);
        next_key.zeroize();
        self.position = KEY_LEN;
        Ok(())
    }
}

impl sealed::Sealed for KeyGenerator {}

impl SecureRandom for KeyGenerator {
    fn fill(&mut self, mut dest: &mut [u8]) -> Result<(), Error> {
        if std::process::id() != self.pid {
            self.reseed()?;
        }
        while !dest.is_empty() {
            if self.position >= BUFFER_LEN {
                self.refill()?;
            }
            let available = self.buffer.get_mut(self.position..).unwrap_or_default();
            let n = available.len().min(dest.len());
            let (out, rest) = dest.split_at_mut(n);
            let (src, _) = available.split_at_mut(n);
            out.copy_from_slice(src);
            src.zeroize();
            self.position += n;
            self.since_reseed = self.since_reseed.saturating_add(n as u64);
            dest = rest;
        }
        Ok(())
    }
}

impl Drop for KeyGenerator {
    fn drop(&mut self) {
        self.key.zeroize();
        self.buffer.zeroize();
    }
}

impl core::fmt::Debug for KeyGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyGenerator").finish_non_exhaustive()
    }
}
