//! Several processes over one PostgreSQL database at once: each seals files
//! (names of its own and one name all share) while rolling the TIKs,
//! re-wrapping and retiring old versions. Afterwards every file opens to
//! the bytes sealed, no seal was lost or recorded twice, and every version
//! of the shared name is a distinct seal.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use atrest::ErrorKind;
use atrest::blobs::BlobStore;
use atrest_test_support::files::read;
use common::{ALICE, TempDir, TestDatabase, World};

const CHILD_DIR: &str = "ATREST_PG_CHILD_DIR";
const CHILD_URL: &str = "ATREST_PG_CHILD_URL";
const CHILD_ID: &str = "ATREST_PG_CHILD_ID";

const CHILDREN: u8 = 4;
const ROUNDS: u8 = 6;

/// The bytes child `child` seals in round `round`.
fn content(child: u8, round: u8) -> Vec<u8> {
    let len = 20_000 + usize::from(child) * 1000 + usize::from(round) * 10;
    (0..len)
        .map(|i| (i % 251) as u8 ^ child.wrapping_mul(37) ^ round.wrapping_mul(11))
        .collect()
}

async fn world(dir: &Path, url: &str) -> World {
    World::open(
        dir,
        url,
        Arc::new(BlobStore::local(&dir.join("blobs")).unwrap()),
    )
    .await
}

/// Tolerates what a lost race reports: a conflict.
fn allow_conflict<T>(outcome: Result<T, atrest::Error>, what: &str) {
    match outcome {
        Ok(_) => println!("{what} done"),
        Err(error) => {
            assert_eq!(error.kind(), ErrorKind::Conflict, "{what}: {error}");
            println!("{what} lost a race");
        }
    }
}

/// The child half of [`processes_rotating_and_sealing_at_once_lose_nothing`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_child() {
    let (Ok(dir), Ok(url), Ok(id)) = (
        std::env::var(CHILD_DIR),
        std::env::var(CHILD_URL),
        std::env::var(CHILD_ID),
    ) else {
        return; // run only as a child of the test below
    };
    let dir = PathBuf::from(dir);
    let child: u8 = id.parse().unwrap();
    let world = world(&dir, &url).await;
    while !dir.join("start").exists() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for round in 0..ROUNDS {
        for (tenant, name) in [
            (world.a, format!("child-{child}/round-{round}")),
            (world.a, "shared".to_owned()),
            (world.c, format!("child-{child}/round-{round}")),
        ] {
            let record = world
                .files
                .seal(&ALICE, tenant, &name, content(child, round).as_slice())
                .await
                .unwrap();
            println!("sealed {name} version {}", u64::from(record.version));
        }
        let tenant = if round % 2 == 0 { world.a } else { world.c };
        match (child + round) % 3 {
            0 => allow_conflict(
                world.keys.roll_tik(tenant).await.map_err(Into::into),
                "roll",
            ),
            1 => allow_conflict(world.files.rewrap(tenant, 4, &mut |_| {}).await, "rewrap"),
            _ => allow_conflict(world.files.retire_unused_tiks(tenant).await, "retire"),
        }
    }
    drop(world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_rotating_and_sealing_at_once_lose_nothing() {
    let database = TestDatabase::new("processes");
    let dir = TempDir::new("pg-processes");
    // Creates the keys and both tenants before the children start.
    let world = world(dir.path(), database.url()).await;
    let children: Vec<_> = (0..CHILDREN)
        .map(|child| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "rotation_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_URL, database.url())
                .env(CHILD_ID, child.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(dir.path().join("start"), b"").unwrap();
    let (mut done, mut lost) = (0, 0);
    for child in children {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.matches("sealed ").count(),
            3 * usize::from(ROUNDS),
            "{stdout}"
        );
        done += stdout.matches(" done").count();
        lost += stdout.matches(" lost a race").count();
    }
    println!("rotation steps: {done} done, {lost} lost a race");
    world.keys.flush_cache();
    for tenant in [world.a, world.c] {
        assert!(u32::from(world.keys.tenant(tenant).await.unwrap().current_tik) > 1);
    }

    // Finish the rotation, then check every record.
    for tenant in [world.a, world.c] {
        let (current, _, _) = world
            .files
            .rotate_tik(tenant, 50, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(
            world.keys.tik_versions(tenant).await.unwrap(),
            vec![current]
        );
        for record in records(&world, tenant).await {
            assert_eq!(record.tik_version(), current, "{}", record.name);
        }
    }
    for tenant in [world.a, world.c] {
        let mut own = BTreeMap::new();
        for record in records(&world, tenant).await {
            let (_, out) = read(
                &world.files,
                &ALICE,
                tenant,
                &record.name,
                Some(record.version),
                None,
            )
            .await
            .unwrap();
            if record.name == "shared" {
                continue;
            }
            let (child, round) = parse(&record.name);
            assert_eq!(out, content(child, round), "{}", record.name);
            assert_eq!(u64::from(record.version), 1, "{}", record.name);
            assert!(own.insert(record.name.clone(), ()).is_none());
        }
        assert_eq!(own.len(), usize::from(CHILDREN) * usize::from(ROUNDS));
    }
    // The shared name: one version per seal, each one child's bytes.
    let shared: Vec<_> = records(&world, world.a)
        .await
        .into_iter()
        .filter(|r| r.name == "shared")
        .collect();
    let total = u64::from(CHILDREN) * u64::from(ROUNDS);
    assert_eq!(
        shared
            .iter()
            .map(|r| u64::from(r.version))
            .collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let mut seen = BTreeMap::new();
    for record in &shared {
        let (_, out) = read(
            &world.files,
            &ALICE,
            world.a,
            "shared",
            Some(record.version),
            None,
        )
        .await
        .unwrap();
        let found = (0..CHILDREN)
            .flat_map(|child| (0..ROUNDS).map(move |round| (child, round)))
            .find(|&(child, round)| out == content(child, round))
            .expect("each version holds one seal's bytes");
        assert!(seen.insert(found, ()).is_none(), "{found:?} recorded twice");
    }
    assert!(
        atrest::Catalog::seals_in_progress(world.catalog.as_ref())
            .await
            .unwrap()
            .is_empty()
    );
    drop(world);
}

async fn records(world: &World, tenant: atrest_filekey::TenantId) -> Vec<atrest::FileRecord> {
    atrest::Catalog::records(world.catalog.as_ref(), tenant)
        .await
        .unwrap()
}

/// `child-<c>/round-<r>`.
fn parse(name: &str) -> (u8, u8) {
    let (child, round) = name
        .strip_prefix("child-")
        .and_then(|rest| rest.split_once("/round-"))
        .unwrap();
    (child.parse().unwrap(), round.parse().unwrap())
}
