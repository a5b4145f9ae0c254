//! The batch key generator: distinct output, reseeding, and agreement in
//! distribution with the OS generator (a smoke test, not a statistical proof).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;

use atrest_filekey::{FileKey, KeyGenerator, SecureRandom};

#[test]
fn keys_are_distinct_across_refills_and_reseeds() {
    let mut generator = KeyGenerator::new().unwrap();
    let mut seen = HashSet::new();
    // 10,000 keys cross many 1 KiB refills and several 64 KiB reseeds.
    for i in 0..10_000 {
        if i == 5_000 {
            generator.reseed().unwrap();
        }
        let key = FileKey::generate_with(&mut generator).unwrap();
        assert!(seen.insert(*key.expose_secret()));
    }
}

#[test]
fn two_generators_differ() {
    let mut a = KeyGenerator::new().unwrap();
    let mut b = KeyGenerator::new().unwrap();
    let (mut x, mut y) = ([0u8; 64], [0u8; 64]);
    a.fill(&mut x).unwrap();
    b.fill(&mut y).unwrap();
    assert_ne!(x, y);
}

#[test]
fn large_and_odd_sized_requests() {
    let mut generator = KeyGenerator::new().unwrap();
    for len in [0usize, 1, 31, 33, 991, 992, 993, 4096, 100_000] {
        let mut out = vec![0u8; len];
        generator.fill(&mut out).unwrap();
        if len >= 64 {
            // Crude sanity: all 256 byte values are plausible, no long zero runs.
            assert!(!out.windows(16).any(|w| w.iter().all(|&b| b == 0)));
        }
    }
}

#[test]
fn bit_balance_is_plausible() {
    let mut generator = KeyGenerator::new().unwrap();
    let mut out = vec![0u8; 1 << 20];
    generator.fill(&mut out).unwrap();
    let ones: u64 = out.iter().map(|b| u64::from(b.count_ones())).sum();
    let bits = (out.len() * 8) as f64;
    // Binomial(8 Mi, 1/2): standard deviation about 1448; allow 8 sigma.
    assert!(
        (ones as f64 - bits / 2.0).abs() < 8.0 * (bits / 4.0).sqrt(),
        "{ones} ones in {bits} bits"
    );
}
