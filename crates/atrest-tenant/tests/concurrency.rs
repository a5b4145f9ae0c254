//! Wraps and unwraps from several tasks, on several threads, while the TIK
//! is rolled and file keys are re-wrapped: none fails, and every key still
//! unwraps afterwards.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_filekey::FileContext;
use common::{Fixture, USER};

type FileKeyBytes = [u8; 32];

/// Four tasks wrap and unwrap on a runtime with four worker threads while
/// the test body rolls and re-wraps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wraps_and_unwraps_during_rotation_never_fail() {
    let f = Arc::new(Fixture::new("concurrency").await);
    let tenants = [f.customer_tenant().await, f.service_tenant().await];
    // Each file made so far, with its key.
    let files: Arc<Mutex<Vec<(FileContext, FileKeyBytes)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (f, files, done) = (Arc::clone(&f), Arc::clone(&files), Arc::clone(&done));
            tokio::spawn(async move {
                let mut i = 0usize;
                while !done.load(Ordering::Relaxed) || i < 50 {
                    let tenant = tenants[(worker + i) % 2];
                    let (ctx, key, wrapped) =
                        f.file_keys.new_file(&f.hierarchy, &USER, tenant).await;
                    let released = f
                        .hierarchy
                        .release_file_key(&USER, &ctx, &wrapped)
                        .await
                        .unwrap();
                    assert_eq!(released.expose_secret(), key.expose_secret());
                    // An older file, whose wrapped key a re-wrap may be
                    // replacing right now.
                    let older = files.lock().unwrap().get(i * 7 % (i + 1)).copied();
                    if let Some((old_ctx, old_key)) = older {
                        let wrapped = f.file_keys.wrapped(&old_ctx).await;
                        let released = f
                            .hierarchy
                            .release_file_key(&USER, &old_ctx, &wrapped)
                            .await
                            .unwrap();
                        assert_eq!(released.expose_secret(), &old_key);
                    }
                    files.lock().unwrap().push((ctx, *key.expose_secret()));
                    i += 1;
                }
            })
        })
        .collect();
    let mut rolls = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        for tenant in tenants {
            f.hierarchy.roll_tik(tenant).await.unwrap();
            f.hierarchy
                .rewrap_file_keys(tenant, f.file_keys.index(), 16, &mut |_| {})
                .await
                .unwrap();
            rolls += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    for worker in workers {
        // A worker's failed assertion fails the test here.
        worker.await.unwrap();
    }
    assert_eq!(rolls, 20);
    // Keys wrapped while a roll was under way may still be under an older
    // version; one more re-wrap moves them, and everything unwraps.
    for tenant in tenants {
        f.hierarchy
            .rewrap_file_keys(tenant, f.file_keys.index(), 64, &mut |_| {})
            .await
            .unwrap();
    }
    f.hierarchy.flush_cache();
    let files = std::mem::take(&mut *files.lock().unwrap());
    assert!(files.len() >= 200);
    for (ctx, key) in &files {
        let wrapped = f.file_keys.wrapped(ctx).await;
        assert_eq!(u32::from(wrapped.kek_version()), 11);
        assert_eq!(
            f.hierarchy
                .release_file_key(&USER, ctx, &wrapped)
                .await
                .unwrap()
                .expose_secret(),
            key
        );
    }
}
