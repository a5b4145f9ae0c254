//! Where a deployment keeps its key metadata and catalog (SQLite files in
//! its directory, or PostgreSQL), and the service's sealed root keys.

use std::path::Path;
use std::sync::Arc;

use atrest::Catalog;
use atrest::tenant::{MasterKey, MetadataStore, ServiceKeys};
use atrest_sqlite::{SqliteCatalog, SqliteSealedKeys, SqliteStore};

use crate::config::{Config, MetadataConfig};
use crate::{Error, SERVICE_PROVIDER};

/// A deployment's key store and its catalog.
pub(crate) type Metadata = (Arc<dyn MetadataStore>, Arc<dyn Catalog>);

/// The service's root keys of the deployment in `dir`, sealed under
/// `master` in its key store (`keys.sqlite`).
pub(crate) async fn service_keys(dir: &Path, master: MasterKey) -> Result<ServiceKeys, Error> {
    let store = SqliteSealedKeys::open(&dir.join("keys.sqlite")).await?;
    Ok(ServiceKeys::new(SERVICE_PROVIDER, Arc::new(store), master)?)
}

/// The key store and catalog of the deployment in `dir`, where its
/// configuration says they are; the seals the catalog begins are marked
/// with `owner` (this process's lease).
pub(crate) async fn open(
    dir: &Path,
    config: &Config,
    owner: Option<&str>,
) -> Result<Metadata, Error> {
    match &config.metadata {
        None | Some(MetadataConfig::Sqlite) => {
            let mut catalog = SqliteCatalog::open(&dir.join("catalog.sqlite")).await?;
            if let Some(owner) = owner {
                catalog = catalog.owned_by(owner);
            }
            Ok((
                Arc::new(SqliteStore::open(&dir.join("atrest.sqlite")).await?),
                Arc::new(catalog),
            ))
        }
        Some(postgres @ MetadataConfig::Postgres { .. }) => open_postgres(postgres, owner).await,
    }
}

/// The PostgreSQL key store and catalog (their tables made or migrated).
pub(crate) async fn open_postgres(
    metadata: &MetadataConfig,
    owner: Option<&str>,
) -> Result<Metadata, Error> {
    let MetadataConfig::Postgres { url, url_env } = metadata else {
        return Err(Error::MetadataUrl("not a PostgreSQL configuration"));
    };
    let url = match (url, url_env) {
        (Some(url), None) => {
            let parsed: atrest_postgres::tokio_postgres::Config = url
                .parse()
                .map_err(|_| Error::MetadataUrl("the URL does not parse"))?;
            if parsed.get_password().is_some() {
                return Err(Error::MetadataUrl(
                    "the URL holds a password; give the URL in an environment variable instead (--metadata-url-env)",
                ));
            }
            zeroize::Zeroizing::new(url.clone())
        }
        (None, Some(var)) => zeroize::Zeroizing::new(
            std::env::var(var)
                .map_err(|_| Error::MetadataUrl("the metadata URL variable is not set"))?,
        ),
        _ => {
            return Err(Error::MetadataUrl(
                "give either the URL or the variable that holds it",
            ));
        }
    };
    let db = atrest_postgres::Postgres::connect(&url, &atrest_postgres::PgOptions::default())?;
    let store = atrest_postgres::PgMetadataStore::open(&db).await?;
    let mut catalog = atrest_postgres::PgCatalog::open(&db).await?;
    if let Some(owner) = owner {
        catalog = catalog.owned_by(owner);
    }
    Ok((Arc::new(store), Arc::new(catalog)))
}
