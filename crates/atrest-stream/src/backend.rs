//! AES-256-GCM implementations ("backends"), chosen by cargo features and,
//! among the compiled-in ones, at run time.
//!
//! | feature | backend | notes |
//! |---------|---------|-------|
//! | `ring` (default) | [`Backend::Ring`] | BoringSSL-derived assembly, VAES/AVX2; seals and opens in place only, and opens a segment to an earlier place in its buffer in one pass (the pipelined open packs each chunk's plaintext that way) |
//! | `aws-lc-rs` (default) | [`Backend::AwsLc`] | AWS-LC: the fastest on VAES/AVX-512 CPUs, seals and opens out of place (but the pipelined open moves each segment's ciphertext before opening it); its `fips` build is FIPS 140-3 validated |
//! | `rustcrypto` | [`Backend::RustCrypto`] | the pure-Rust `aes-gcm` crate (AES-NI and CLMUL intrinsics) |
//!
//! All backends produce identical bytes: the format does not depend on the
//! backend, and the test suite checks it.

use zeroize::Zeroize;

use atrest_filekey::FromDerivedBytes;

use crate::Error;
use crate::format::TAG_LEN;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs", feature = "rustcrypto")))]
compile_error!(
    "atrest-stream needs at least one backend feature: `ring`, `aws-lc-rs` or `rustcrypto`"
);

/// An AES-256-GCM implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `ring`.
    #[cfg(feature = "ring")]
    Ring,
    /// `aws-lc-rs` (AWS-LC).
    #[cfg(feature = "aws-lc-rs")]
    AwsLc,
    /// RustCrypto's `aes-gcm` (pure Rust).
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

impl Backend {
    /// Every backend compiled into this build.
    pub const ALL: &'static [Self] = &[
        #[cfg(feature = "ring")]
        Self::Ring,
        #[cfg(feature = "aws-lc-rs")]
        Self::AwsLc,
        #[cfg(feature = "rustcrypto")]
        Self::RustCrypto,
    ];

    /// The backend's name, as in the throughput report.
    pub const fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "ring")]
            Self::Ring => "ring",
            #[cfg(feature = "aws-lc-rs")]
            Self::AwsLc => "aws-lc-rs",
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => "rustcrypto",
        }
    }
}

impl Default for Backend {
    /// The fastest compiled-in backend for this CPU, chosen by measurement
    /// (the throughput report, `atrest-benches`' `throughput`):
    ///
    /// - `aws-lc-rs` on x86-64 CPUs with AVX-512, VAES and VPCLMULQDQ, where
    ///   AWS-LC runs its AVX-512 AES-GCM: one-shot AES-256-GCM measured 23.1
    ///   GB/s per core against `ring`'s 10.9 (AMD EPYC, AVX-512). AWS-LC also
    ///   seals and opens out of place, so the whole-buffer forms and the
    ///   adapters make one pass over each byte; and its `fips` build is the
    ///   FIPS 140-3 validated path.
    /// - `ring` everywhere else: on VAES CPUs without AVX-512 (AMD EPYC,
    ///   AVX2 only) `ring`'s VAES/AVX2 AES-GCM measured 6.4 GB/s per core,
    ///   AWS-LC's AES-NI/AVX code 2.8 GB/s, and `ring` stayed ahead in
    ///   absolute terms on the streaming adapters (3.0 against 2.1 GB/s
    ///   decrypting, 2.6 against 2.0 encrypting) while the whole-buffer
    ///   forms were even (3.4 against 2.6–3.1 GB/s).
    /// - otherwise whichever backend is compiled in, RustCrypto's last.
    ///
    /// The bytes never depend on the backend, so the choice is only about
    /// speed; pin one with [`Options::backend`](crate::Options::backend).
    fn default() -> Self {
        #[cfg(feature = "aws-lc-rs")]
        if aws_lc_runs_avx512_gcm() {
            return Self::AwsLc;
        }
        #[cfg(feature = "ring")]
        return Self::Ring;
        #[cfg(all(not(feature = "ring"), feature = "aws-lc-rs"))]
        return Self::AwsLc;
        #[cfg(all(
            not(feature = "ring"),
            not(feature = "aws-lc-rs"),
            feature = "rustcrypto"
        ))]
        return Self::RustCrypto;
    }
}

/// Whether this CPU has what AWS-LC's AVX-512 AES-GCM needs (the test
/// AWS-LC itself makes before using it).
#[cfg(feature = "aws-lc-rs")]
fn aws_lc_runs_avx512_gcm() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512ifma")
            && std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    /// One backend's AES-256-GCM key with its schedule precomputed.
    pub(super) trait Aes256GcmKey: Sized + Send + Sync {
        fn new(key: &[u8; 32]) -> Option<Self>;
        /// Encrypts `in_out` in place; returns the tag.
        fn seal(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> Option<[u8; 16]>;
        /// Decrypts `in_out` in place if `tag` verifies.
        fn open(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8], tag: &[u8; 16]) -> bool;

        /// Encrypts `input` into `out` (the same length); returns the tag.
        /// Backends without an out-of-place operation copy and seal in
        /// place.
        fn seal_to(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            input: &[u8],
            out: &mut [u8],
        ) -> Option<[u8; 16]> {
            out.get_mut(..input.len())?.copy_from_slice(input);
            self.seal(nonce, aad, out)
        }

        /// Decrypts `input` into `out` (the same length) if `tag` verifies.
        /// On failure `out` holds no plaintext the caller may use (the
        /// caller wipes it).
        fn open_to(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            input: &[u8],
            tag: &[u8; 16],
            out: &mut [u8],
        ) -> bool {
            if input.len() != out.len() {
                return false;
            }
            out.copy_from_slice(input);
            self.open(nonce, aad, out, tag)
        }

        /// Decrypts the ciphertext at `in_out[src..]` into the start of
        /// `in_out` (the plaintext ends `src` bytes before the ciphertext
        /// did) if `tag` verifies. Backends without such an operation move
        /// the ciphertext first and open it in place. On failure the
        /// caller wipes `in_out`.
        fn open_shifted(
            &self,
            nonce: [u8; 12],
            aad: &[u8],
            in_out: &mut [u8],
            src: usize,
            tag: &[u8; 16],
        ) -> bool {
            let Some(len) = in_out.len().checked_sub(src) else {
                return false;
            };
            in_out.copy_within(src.., 0);
            in_out
                .get_mut(..len)
                .is_some_and(|body| self.open(nonce, aad, body, tag))
        }
    }
}
use sealed::Aes256GcmKey;

#[cfg(feature = "ring")]
impl Aes256GcmKey for ring::aead::LessSafeKey {
    fn new(key: &[u8; 32]) -> Option<Self> {
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .ok()
            .map(Self::new)
    }
    fn seal(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> Option<[u8; 16]> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        let tag = self
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), in_out)
            .ok()?;
        tag.as_ref().try_into().ok()
    }
    fn open(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8], tag: &[u8; 16]) -> bool {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        let tag = ring::aead::Tag::from(*tag);
        self.open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, in_out, 0..)
            .is_ok()
    }
    // `ring` decrypts from one place in the buffer to an earlier one in a
    // single pass.
    fn open_shifted(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        src: usize,
        tag: &[u8; 16],
    ) -> bool {
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        let tag = ring::aead::Tag::from(*tag);
        src <= in_out.len()
            && self
                .open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, in_out, src..)
                .is_ok()
    }
}

#[cfg(feature = "aws-lc-rs")]
impl Aes256GcmKey for aws_lc_rs::aead::LessSafeKey {
    fn new(key: &[u8; 32]) -> Option<Self> {
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
            .ok()
            .map(Self::new)
    }
    fn seal(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> Option<[u8; 16]> {
        let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
        let tag = self
            .seal_in_place_separate_tag(nonce, aws_lc_rs::aead::Aad::from(aad), in_out)
            .ok()?;
        tag.as_ref().try_into().ok()
    }
    fn open(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8], tag: &[u8; 16]) -> bool {
        let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
        self.open_in_place_separate_tag(nonce, aws_lc_rs::aead::Aad::from(aad), tag, in_out)
            .is_ok()
    }
    // AWS-LC seals and opens from one buffer into another in a single pass,
    // so the one-call and streaming paths need no copy besides the cipher's.
    fn seal_to(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        input: &[u8],
        out: &mut [u8],
    ) -> Option<[u8; 16]> {
        let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
        let mut tag = [0u8; 16];
        self.seal_out_of_place_scatter(
            nonce,
            aws_lc_rs::aead::Aad::from(aad),
            input,
            out,
            &[],
            &mut tag,
        )
        .ok()?;
        Some(tag)
    }
    fn open_to(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        input: &[u8],
        tag: &[u8; 16],
        out: &mut [u8],
    ) -> bool {
        let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
        self.open_separate_gather(nonce, aws_lc_rs::aead::Aad::from(aad), input, tag, out)
            .is_ok()
    }
}

#[cfg(feature = "rustcrypto")]
impl Aes256GcmKey for Box<aes_gcm::Aes256Gcm> {
    fn new(key: &[u8; 32]) -> Option<Self> {
        use aes_gcm::KeyInit;
        Some(Box::new(aes_gcm::Aes256Gcm::new(key.into())))
    }
    fn seal(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> Option<[u8; 16]> {
        use aes_gcm::aead::AeadInPlace;
        let tag = self
            .encrypt_in_place_detached(&nonce.into(), aad, in_out)
            .ok()?;
        Some(tag.into())
    }
    fn open(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8], tag: &[u8; 16]) -> bool {
        use aes_gcm::aead::AeadInPlace;
        self.decrypt_in_place_detached(&nonce.into(), aad, in_out, tag.into())
            .is_ok()
    }
}

/// The per-stream AES-256-GCM key in the chosen backend. The key schedule is
/// computed once per stream.
// One per stream and never moved on the hot path: boxing the large key
// schedules would only add an indirection per segment.
#[allow(clippy::large_enum_variant)]
pub(crate) enum StreamKey {
    #[cfg(feature = "ring")]
    Ring(ring::aead::LessSafeKey),
    #[cfg(feature = "aws-lc-rs")]
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    RustCrypto(Box<aes_gcm::Aes256Gcm>),
}

/// HKDF output on its way into a [`StreamKey`]: in one heap allocation, so
/// moving it copies no key bytes, and zeroized on drop.
pub(crate) struct DerivedKey(Box<[u8; 32]>);

impl FromDerivedBytes for DerivedKey {
    fn from_derived_bytes(bytes: &[u8; 32]) -> Self {
        let mut key = Self(Box::new([0; 32]));
        key.0.copy_from_slice(bytes);
        key
    }
}

impl Drop for DerivedKey {
    fn drop(&mut self) {
        self.0[..].zeroize();
    }
}

macro_rules! dispatch {
    ($key:expr, $k:ident => $body:expr) => {
        match $key {
            #[cfg(feature = "ring")]
            StreamKey::Ring($k) => $body,
            #[cfg(feature = "aws-lc-rs")]
            StreamKey::AwsLc($k) => $body,
            #[cfg(feature = "rustcrypto")]
            StreamKey::RustCrypto($k) => $body,
        }
    };
}

impl StreamKey {
    pub(crate) fn new(backend: Backend, key: &DerivedKey) -> Result<Self, Error> {
        let built = match backend {
            #[cfg(feature = "ring")]
            Backend::Ring => Aes256GcmKey::new(&key.0).map(Self::Ring),
            #[cfg(feature = "aws-lc-rs")]
            Backend::AwsLc => Aes256GcmKey::new(&key.0).map(Self::AwsLc),
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto => Aes256GcmKey::new(&key.0).map(Self::RustCrypto),
        };
        built.ok_or(Error::Backend)
    }

    pub(crate) fn seal(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        dispatch!(self, k => k.seal(nonce, aad, in_out)).ok_or(Error::TooLong)
    }

    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        dispatch!(self, k => k.open(nonce, aad, in_out, tag))
    }

    /// Seals `input` into `out` (the same length): one pass where the
    /// backend can, else a copy and an in-place seal.
    pub(crate) fn seal_to(
        &self,
        nonce: [u8; 12],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        if input.len() != out.len() {
            return Err(Error::Misuse("output length differs from input length"));
        }
        dispatch!(self, k => k.seal_to(nonce, &[], input, out)).ok_or(Error::TooLong)
    }

    /// Opens the ciphertext at `in_out[src..]` into the start of `in_out`
    /// if `tag` verifies.
    pub(crate) fn open_shifted(
        &self,
        nonce: [u8; 12],
        in_out: &mut [u8],
        src: usize,
        tag: &[u8; TAG_LEN],
    ) -> bool {
        dispatch!(self, k => k.open_shifted(nonce, &[], in_out, src, tag))
    }

    /// Opens `input` into `out` (the same length) if `tag` verifies.
    pub(crate) fn open_to(
        &self,
        nonce: [u8; 12],
        input: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> bool {
        input.len() == out.len() && dispatch!(self, k => k.open_to(nonce, &[], input, tag, out))
    }
}
