//! The service's root keys, sealed, in SQLite: [`SqliteSealedKeys`].

use std::path::Path;

use atrest_tenant::Error;
use atrest_tenant::service::{SealedKey, SealedKeyStore};
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::db::{self, Failure, Shared};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS service_root_keys (
    label   TEXT    NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    sealed  BLOB,               -- NULL once destroyed
    PRIMARY KEY (label, version)
);";

/// Where `ServiceKeys` keeps the service's root keys, each version sealed
/// under the master key ([`SealedKeyStore`]), in one SQLite database: the
/// embedded default. A destroyed version's bytes are overwritten in the
/// database file and its write-ahead log. Several processes may share the
/// file. Each call runs on the async runtime's blocking pool.
#[derive(Clone)]
pub struct SqliteSealedKeys {
    db: Shared<Connection>,
}

impl core::fmt::Debug for SqliteSealedKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteSealedKeys").finish_non_exhaustive()
    }
}

impl SqliteSealedKeys {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`Error::Store`] if it cannot be opened; [`Error::Corrupt`] for a
    /// database holding objects the schema does not create.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let db = Shared::open(path, SCHEMA, |_| Ok(()))
            .await
            .map_err(Failure::into_keys)?;
        Ok(Self { db })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Error> {
        self.db.run(work).await.map_err(Failure::into_keys)
    }
}

#[async_trait::async_trait]
impl SealedKeyStore for SqliteSealedKeys {
    async fn add(&self, label: &str, version: u32, sealed: &[u8]) -> Result<bool, Error> {
        let (label, sealed) = (label.to_owned(), sealed.to_vec());
        self.run(move |db| {
            let inserted = db.execute(
                "INSERT INTO service_root_keys (label, version, sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![label, version, sealed],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn get(&self, label: &str, version: u32) -> Result<Option<SealedKey>, Error> {
        let label = label.to_owned();
        self.run(move |db| {
            let row: Option<Option<Vec<u8>>> = db
                .prepare_cached(
                    "SELECT sealed FROM service_root_keys WHERE label = ?1 AND version = ?2",
                )?
                .query_row(params![label, version], |row| row.get(0))
                .optional()?;
            Ok(row.map(|sealed| sealed.map_or(SealedKey::Destroyed, SealedKey::Sealed)))
        })
        .await
    }

    async fn newest(&self, label: &str) -> Result<Option<u32>, Error> {
        let label = label.to_owned();
        self.run(move |db| {
            let newest: Option<i64> = db
                .prepare_cached(
                    "SELECT max(version) FROM service_root_keys
                     WHERE label = ?1 AND sealed IS NOT NULL",
                )?
                .query_row(params![label], |row| row.get(0))?;
            newest
                .map(|version| {
                    u32::try_from(version)
                        .map_err(|_| Failure::Keys(Error::Corrupt("root key version")))
                })
                .transpose()
        })
        .await
    }

    async fn destroy(&self, label: &str, version: u32) -> Result<bool, Error> {
        let label = label.to_owned();
        self.run(move |db| {
            let changed = db.execute(
                "UPDATE service_root_keys SET sealed = NULL WHERE label = ?1 AND version = ?2",
                params![label, version],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            db::checkpoint(db)?;
            Ok(true)
        })
        .await
    }

    async fn versions(&self) -> Result<Vec<(String, u32, bool)>, Error> {
        self.run(|db| {
            let mut statement = db.prepare_cached(
                "SELECT label, version, sealed IS NULL FROM service_root_keys
                 ORDER BY label, version",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, bool>(2)?,
                ))
            })?;
            let mut versions = Vec::new();
            for row in rows {
                let (label, version, destroyed) = row?;
                let version = u32::try_from(version)
                    .map_err(|_| Failure::Keys(Error::Corrupt("root key version")))?;
                versions.push((label, version, destroyed));
            }
            Ok(versions)
        })
        .await
    }
}
