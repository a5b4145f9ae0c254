//! The contract of the key metadata store and the catalog
//! (`atrest_test_support::contract`), run against `SqliteStore` and
//! `SqliteCatalog`: files in a temporary directory of each test's own.

#![allow(unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use atrest::Catalog;
use atrest_sqlite::{SqliteCatalog, SqliteStore};
use atrest_tenant::MetadataStore;
use atrest_test_support::TempDir;
use atrest_test_support::contract::Backend;

struct Sqlite {
    dir: TempDir,
}

impl Sqlite {
    fn new(test: &str) -> Self {
        Self {
            dir: TempDir::new(test),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn store(&self) -> Arc<dyn MetadataStore> {
        Arc::new(SqliteStore::open(&self.file("keys.sqlite")).await.unwrap())
    }

    async fn catalog(&self) -> Arc<dyn Catalog> {
        Arc::new(
            SqliteCatalog::open(&self.file("catalog.sqlite"))
                .await
                .unwrap(),
        )
    }
}

atrest_test_support::contract_suite!(Sqlite::new);
