//! Wraps and unwraps from several threads while the TIK is rolled and file
//! keys are re-wrapped: none fails, and every key still unwraps afterwards.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use atrest_filekey::FileContext;
use common::{Fixture, USER, block_on};

#[test]
fn wraps_and_unwraps_during_rotation_never_fail() {
    let f = Fixture::new("concurrency");
    let tenants = [f.customer_tenant(), f.service_tenant()];
    let files: Mutex<Vec<(FileContext, [u8; 32])>> = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let rolls = std::thread::scope(|scope| {
        for worker in 0..4 {
            let (f, files, done, tenants) = (&f, &files, &done, &tenants);
            scope.spawn(move || {
                let mut i = 0usize;
                while !done.load(Ordering::Relaxed) || i < 50 {
                    let tenant = tenants[(worker + i) % 2];
                    let (ctx, key, wrapped) = f.file_keys.new_file(&f.hierarchy, &USER, tenant);
                    let released =
                        block_on(f.hierarchy.release_file_key(&USER, &ctx, &wrapped)).unwrap();
                    assert_eq!(released.expose_secret(), key.expose_secret());
                    // An older file, whose wrapped key a re-wrap may be
                    // replacing right now.
                    let older = files.lock().unwrap().get(i * 7 % (i + 1)).copied();
                    if let Some((old_ctx, old_key)) = older {
                        let wrapped = f.file_keys.wrapped(&old_ctx);
                        let released =
                            block_on(f.hierarchy.release_file_key(&USER, &old_ctx, &wrapped))
                                .unwrap();
                        assert_eq!(released.expose_secret(), &old_key);
                    }
                    files.lock().unwrap().push((ctx, *key.expose_secret()));
                    i += 1;
                }
            });
        }
        let mut rolls = 0;
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            for tenant in tenants {
                block_on(f.hierarchy.roll_tik(tenant)).unwrap();
                block_on(f.hierarchy.rewrap_file_keys(
                    tenant,
                    f.file_keys.index(),
                    16,
                    &mut |_| {},
                ))
                .unwrap();
                rolls += 1;
            }
        }
        done.store(true, Ordering::Relaxed);
        rolls
    });
    assert_eq!(rolls, 20);
    // Keys wrapped while a roll was under way may still be under an older
    // version; one more re-wrap moves them, and everything unwraps.
    for tenant in tenants {
        block_on(
            f.hierarchy
                .rewrap_file_keys(tenant, f.file_keys.index(), 64, &mut |_| {}),
        )
        .unwrap();
    }
    f.hierarchy.flush_cache();
    let files = files.into_inner().unwrap();
    assert!(files.len() >= 200);
    for (ctx, key) in &files {
        let wrapped = f.file_keys.wrapped(ctx);
        assert_eq!(u32::from(wrapped.kek_version()), 11);
        assert_eq!(
            block_on(f.hierarchy.release_file_key(&USER, ctx, &wrapped))
                .unwrap()
                .expose_secret(),
            key
        );
    }
}
