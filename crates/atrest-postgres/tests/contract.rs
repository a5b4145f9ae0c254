//! The contract of the key metadata store and the catalog
//! (`atrest_test_support::contract`), run against `PgMetadataStore` and
//! `PgCatalog`: a database of each test's own on the server `scripts/test`
//! starts.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use atrest::Catalog;
use atrest_postgres::{PgCatalog, PgMetadataStore, PgOptions, Postgres};
use atrest_tenant::MetadataStore;
use atrest_test_support::contract::Backend;
use common::TestDatabase;

struct Pg {
    database: TestDatabase,
}

impl Pg {
    fn new(test: &str) -> Self {
        Self {
            database: TestDatabase::new(test),
        }
    }

    /// A pool of its own: each instance has its own connections.
    fn connect(&self) -> Postgres {
        Postgres::connect(self.database.url(), &PgOptions::default()).unwrap()
    }
}

#[async_trait::async_trait]
impl Backend for Pg {
    async fn store(&self) -> Arc<dyn MetadataStore> {
        Arc::new(PgMetadataStore::open(&self.connect()).await.unwrap())
    }

    async fn catalog(&self) -> Arc<dyn Catalog> {
        Arc::new(PgCatalog::open(&self.connect()).await.unwrap())
    }
}

atrest_test_support::contract_suite!(Pg::new);
