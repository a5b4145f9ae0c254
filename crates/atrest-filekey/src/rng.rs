//! The random number source for keys, ids and salts: the operating system's
//! generator, and nothing else.
//!
//! [`OsRng`] asks the kernel (`getrandom(2)` on Linux) for every request. It
//! survives `fork`, VM clones and restored snapshots (the kernel reseeds),
//! it is the approved generator a FIPS deployment relies on, and one system
//! call is cheap next to the durable audit write that accompanies every new
//! file key. A batch of files draws the bytes of many keys in one call
//! ([`Kek::generate_wrapped_many`](crate::Kek::generate_wrapped_many)). [`SecureRandom`] is sealed, so no user-space generator can be
//! plugged in.

use crate::Error;

mod sealed {
    pub trait Sealed {}
}

/// A cryptographically secure random number source.
///
/// Sealed: implemented only by [`OsRng`].
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
