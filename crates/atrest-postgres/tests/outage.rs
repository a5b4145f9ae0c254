//! A PostgreSQL server that goes down (every connection to it cut, through
//! a proxy, while the server keeps running for the other tests) is a
//! failure of kind `Unavailable` through `Files`, whether it holds the key
//! metadata or the catalog: a retry may succeed, nothing was refused and
//! nothing is damaged.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use atrest::{ErrorKind, MemoryBlobs};
use atrest_test_support::files::read;
use atrest_test_support::proxy::Proxy;
use common::{ALICE, TempDir, TestDatabase, World};

/// `url` with its host and port replaced by the proxy's.
fn through(proxy: &Proxy, url: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_store_or_catalog_that_is_down_is_unavailable_through_files() {
    let database = TestDatabase::new("outage");
    let dir = TempDir::new("pg-outage");
    let blobs = Arc::new(MemoryBlobs::new());
    {
        let world = World::open(dir.path(), database.url(), blobs.clone()).await;
        let _ = world
            .files
            .seal(&ALICE, world.a, "kept.txt", &b"kept"[..])
            .await
            .unwrap();
    }
    let url = url::Url::parse(database.url()).unwrap();
    let server = (
        url.host_str().unwrap().to_owned(),
        url.port().unwrap_or(5432),
    );
    for down in ["metadata store", "catalog"] {
        let proxy = Proxy::start((server.0.as_str(), server.1));
        let proxied = through(&proxy, database.url());
        let (store_url, catalog_url) = match down {
            "metadata store" => (proxied.as_str(), database.url()),
            _ => (database.url(), proxied.as_str()),
        };
        // No cache: every request asks the metadata store.
        let world = World::open_split(
            dir.path(),
            store_url,
            catalog_url,
            blobs.clone(),
            Duration::ZERO,
        )
        .await;
        let (_, kept) = read(&world.files, &ALICE, world.a, "kept.txt", None, None)
            .await
            .unwrap();
        assert_eq!(kept, b"kept");

        proxy.cut();
        let sealed = world
            .files
            .seal(&ALICE, world.a, "new.txt", &b"new"[..])
            .await
            .unwrap_err();
        assert_eq!(sealed.kind(), ErrorKind::Unavailable, "{down}: {sealed}");
        let opened = read(&world.files, &ALICE, world.a, "kept.txt", None, None)
            .await
            .unwrap_err();
        assert_eq!(opened.kind(), ErrorKind::Unavailable, "{down}: {opened}");

        // Back up: served again, nothing lost.
        proxy.restore();
        let (_, kept) = read(&world.files, &ALICE, world.a, "kept.txt", None, None)
            .await
            .unwrap();
        assert_eq!(kept, b"kept", "{down}");
    }
}
