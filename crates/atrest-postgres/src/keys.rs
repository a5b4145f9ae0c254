//! Tenant key metadata in PostgreSQL: [`PgMetadataStore`].

use std::sync::Arc;

use atrest_core::ErrorKind;
use atrest_filekey::{KeyVersion, TenantId};
use atrest_tenant::store::stored;
use atrest_tenant::{
    CHANGE_LOG_KEPT, Error, FallbackPolicy, KeyChanges, MetadataStore, RootKeyRef, StoredFallback,
    StoredSlot, StoredTenant, TagUpdate, TenantRecord, TenantTag, TikWrap,
};
use tokio_postgres::Transaction;

use crate::db::{BoxFuture, Failure, Mode, PgError, Postgres, Schema, check_objects};

/// The key metadata tables, as `atrest_sqlite::SqliteStore` has them, with
/// PostgreSQL's types: integers are `bigint`, so every `u32` fits.
pub(crate) const SCHEMA: Schema = Schema {
    component: "keys",
    migrations: &[
        "
CREATE TABLE atrest_tenants (
    tenant      bytea   PRIMARY KEY,
    kind        text    NOT NULL CHECK (kind IN ('service', 'customer')),
    state       text    NOT NULL CHECK (state IN ('active', 'purged')),
    tik_id      bytea   NOT NULL,
    current_tik bigint  NOT NULL CHECK (current_tik > 0),
    tag         bytea   -- NULL once purged
);
CREATE TABLE atrest_root_key_slots (
    tenant   bytea   NOT NULL REFERENCES atrest_tenants (tenant),
    slot     integer NOT NULL,
    role     text    NOT NULL CHECK (role IN ('service', 'customer', 'availability')),
    key      text    NOT NULL,
    revoked  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, slot)
);
CREATE TABLE atrest_tik_versions (
    tenant  bytea   NOT NULL REFERENCES atrest_tenants (tenant),
    version bigint  NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant, version)
);
CREATE TABLE atrest_tik_wraps (
    tenant  bytea   NOT NULL,
    version bigint  NOT NULL,
    slot    integer NOT NULL,
    wrapped bytea   NOT NULL,
    PRIMARY KEY (tenant, version, slot),
    FOREIGN KEY (tenant, version) REFERENCES atrest_tik_versions (tenant, version)
);
",
        "
-- The change log (see `MetadataStore::changes_since`). Each changing
-- transaction takes the next value of the one counter row, which
-- serializes them, so the log's order is their commit order.
CREATE TABLE atrest_key_change_counter (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    counter bigint  NOT NULL CHECK (counter >= 0)
);
INSERT INTO atrest_key_change_counter (counter) VALUES (0);
CREATE TABLE atrest_key_changes (
    counter bigint PRIMARY KEY CHECK (counter > 0),
    tenant  bytea  NOT NULL
);
",
        "
-- The tenant's fallback policy and declared outage window (see
-- `FallbackPolicy`), covered by the record's tag.
ALTER TABLE atrest_tenants
    ADD COLUMN fallback      text   NOT NULL DEFAULT 'automatic',
    ADD COLUMN outage_start  bigint,
    ADD COLUMN outage_end    bigint,
    ADD COLUMN outage_reason text;
",
    ],
    tables: &[
        "atrest_tenants",
        "atrest_root_key_slots",
        "atrest_tik_versions",
        "atrest_tik_wraps",
        "atrest_key_change_counter",
        "atrest_key_changes",
    ],
};

/// Tenant key metadata ([`MetadataStore`]) in PostgreSQL: the same tables,
/// transactions and answers as `atrest_sqlite::SqliteStore`, for a
/// service whose instances share one database.
///
/// Every changing method is one serializable transaction, run again when it
/// loses a race to another instance's, so two instances changing one
/// tenant at once behave as if one ran after the other: the second sees
/// the first's record tag and gets [`Error::Conflict`].
///
/// Errors: [`Error::Store`] with a [`PgError`] as its source (its
/// [`PgError::kind`] says whether the server was unreachable, refused the
/// request, …); [`Error::Conflict`] for a race still lost after the
/// retries or a violated unique key; [`Error::Corrupt`] for a stored value
/// that is not valid.
#[derive(Debug, Clone)]
pub struct PgMetadataStore {
    db: Postgres,
}

impl PgMetadataStore {
    /// The key metadata in the database `db` connects to; creates or
    /// migrates its tables first.
    ///
    /// # Errors
    /// [`Error::Store`] if the server cannot be reached or the schema
    /// cannot be applied, or if the database was migrated by a newer
    /// version ([`PgError::is_newer_schema`]); [`Error::Corrupt`] if a key
    /// table carries a trigger or a rule.
    pub async fn open(db: &Postgres) -> Result<Self, Error> {
        db.migrate(&SCHEMA).await.map_err(store_error)?;
        Ok(Self { db: db.clone() })
    }

    async fn run<T, F>(&self, mode: Mode, body: F) -> Result<T, Error>
    where
        F: for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, Failure<Error>>>,
    {
        self.db
            .transaction(mode, body)
            .await
            .map_err(|failure| match failure {
                Failure::Db(error) => store_error(error),
                Failure::Stop(error) => error,
            })
    }
}

/// The tenant crate's error for a database failure.
pub(crate) fn store_error(error: PgError) -> Error {
    if error.is_race() || error.is_key_violation() {
        Error::Conflict(error.what())
    } else if error.kind() == ErrorKind::Integrity && error.code().is_none() {
        Error::Corrupt(error.what())
    } else {
        Error::store(error.kind(), error)
    }
}

fn corrupt(what: &'static str) -> Failure<Error> {
    Failure::Stop(Error::Corrupt(what))
}

fn version(value: i64) -> Result<KeyVersion, Failure<Error>> {
    stored::tik_version(value).map_err(Failure::Stop)
}

fn number(version: KeyVersion) -> i64 {
    i64::from(u32::from(version))
}

fn tenant_id(bytes: &[u8]) -> Result<TenantId, Failure<Error>> {
    stored::tenant_id(bytes).map_err(Failure::Stop)
}

async fn insert_wraps(
    tx: &Transaction<'_>,
    tenant: &[u8],
    wraps: &[TikWrap],
) -> Result<(), Failure<Error>> {
    let insert = tx
        .prepare(
            "INSERT INTO atrest_tik_wraps (tenant, version, slot, wrapped) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    for wrap in wraps {
        let _ = tx
            .execute(
                &insert,
                &[
                    &tenant,
                    &number(wrap.version),
                    &i32::from(wrap.slot),
                    &wrap.wrapped,
                ],
            )
            .await?;
    }
    Ok(())
}

/// Adds `tenant` to the change log, in the changing transaction, and
/// forgets entries beyond the ones kept.
async fn note_change(tx: &Transaction<'_>, tenant: &[u8]) -> Result<(), Failure<Error>> {
    let counter: i64 = tx
        .query_one(
            "UPDATE atrest_key_change_counter SET counter = counter + 1 RETURNING counter",
            &[],
        )
        .await?
        .try_get(0)?;
    let _ = tx
        .execute(
            "INSERT INTO atrest_key_changes (counter, tenant) VALUES ($1, $2)",
            &[&counter, &tenant],
        )
        .await?;
    let kept = i64::try_from(CHANGE_LOG_KEPT).unwrap_or(i64::MAX);
    let _ = tx
        .execute(
            "DELETE FROM atrest_key_changes WHERE counter <= $1",
            &[&counter.saturating_sub(kept)],
        )
        .await?;
    Ok(())
}

/// Replaces an active tenant's tag `tag.previous` by `tag.next`.
async fn retag(tx: &Transaction<'_>, tenant: &[u8], tag: &TagUpdate) -> Result<(), Failure<Error>> {
    let changed = tx
        .execute(
            "UPDATE atrest_tenants SET tag = $3 WHERE tenant = $1 AND state = 'active' AND tag = $2",
            &[
                &tenant,
                &tag.previous.to_bytes(),
                &tag.next.to_bytes(),
            ],
        )
        .await?;
    if changed == 0 {
        return Err(Failure::Stop(Error::Conflict(
            "the tenant's record changed meanwhile (another change, or a purge)",
        )));
    }
    Ok(())
}

async fn read_tenant(
    tx: &Transaction<'_>,
    tenant: TenantId,
) -> Result<Option<TenantRecord>, Failure<Error>> {
    let id = tenant.as_bytes().as_slice();
    let Some(row) = tx
        .query_opt(
            "SELECT kind, state, tik_id, current_tik, tag,
                    fallback, outage_start, outage_end, outage_reason
             FROM atrest_tenants WHERE tenant = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut stored = StoredTenant {
        tenant,
        kind: row.try_get(0)?,
        state: row.try_get(1)?,
        tik_id: row.try_get(2)?,
        current_tik: row.try_get(3)?,
        tag: row.try_get(4)?,
        slots: Vec::new(),
        fallback: StoredFallback {
            policy: row.try_get(5)?,
            start: row.try_get(6)?,
            end: row.try_get(7)?,
            reason: row.try_get(8)?,
        },
    };
    for row in tx
        .query(
            "SELECT role, key, revoked FROM atrest_root_key_slots WHERE tenant = $1 ORDER BY slot",
            &[&id],
        )
        .await?
    {
        stored.slots.push(StoredSlot {
            role: row.try_get(0)?,
            key: row.try_get(1)?,
            revoked: row.try_get(2)?,
        });
    }
    Ok(Some(stored.decode().map_err(Failure::Stop)?))
}

#[async_trait::async_trait]
impl MetadataStore for PgMetadataStore {
    async fn create_tenant(&self, record: &TenantRecord, wraps: &[TikWrap]) -> Result<(), Error> {
        let input = Arc::new((record.clone(), wraps.to_vec()));
        self.run(Mode::Write, move |tx| {
            let input = Arc::clone(&input);
            Box::pin(async move {
                let (record, wraps) = &*input;
                let id = record.tenant.as_bytes().as_slice();
                let fallback = StoredFallback::from_policy(&record.fallback);
                let inserted = tx
                    .execute(
                        "INSERT INTO atrest_tenants (tenant, kind, state, tik_id, current_tik, tag,
                                                    fallback, outage_start, outage_end, outage_reason)
                         VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT DO NOTHING",
                        &[
                            &id,
                            &record.kind.as_stored(),
                            &record.tik_id.as_bytes().as_slice(),
                            &number(record.current_tik),
                            &record.tag.as_ref().map(TenantTag::to_bytes),
                            &fallback.policy,
                            &fallback.start,
                            &fallback.end,
                            &fallback.reason,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Err(Failure::Stop(Error::TenantExists(record.tenant)));
                }
                for (slot, root) in record.slots.iter().enumerate() {
                    let slot = i32::try_from(slot)
                        .map_err(|_| Failure::Stop(Error::Misuse("too many root key slots")))?;
                    let _ = tx
                        .execute(
                            "INSERT INTO atrest_root_key_slots (tenant, slot, role, key, revoked)
                             VALUES ($1, $2, $3, $4, $5)",
                            &[
                                &id,
                                &slot,
                                &root.role.as_stored(),
                                &root.key.to_string(),
                                &root.revoked,
                            ],
                        )
                        .await?;
                }
                let _ = tx
                    .execute(
                        "INSERT INTO atrest_tik_versions (tenant, version) VALUES ($1, $2)",
                        &[&id, &number(record.current_tik)],
                    )
                    .await?;
                insert_wraps(tx, id, wraps).await?;
                note_change(tx, id).await
            })
        })
        .await
    }

    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>, Error> {
        self.run(Mode::Read, move |tx| Box::pin(read_tenant(tx, tenant)))
            .await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, Error> {
        self.run(Mode::Read, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query("SELECT tenant FROM atrest_tenants ORDER BY tenant", &[])
                    .await?;
                rows.iter()
                    .map(|row| tenant_id(&row.try_get::<_, Vec<u8>>(0)?))
                    .collect()
            })
        })
        .await
    }

    async fn tik_versions(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        self.run(Mode::Read, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT version FROM atrest_tik_versions WHERE tenant = $1 ORDER BY version",
                        &[&tenant.as_bytes().as_slice()],
                    )
                    .await?;
                rows.iter().map(|row| version(row.try_get(0)?)).collect()
            })
        })
        .await
    }

    async fn tik_wraps(&self, tenant: TenantId, tik: KeyVersion) -> Result<Vec<TikWrap>, Error> {
        self.run(Mode::Read, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT slot, wrapped FROM atrest_tik_wraps
                         WHERE tenant = $1 AND version = $2 ORDER BY slot",
                        &[&tenant.as_bytes().as_slice(), &number(tik)],
                    )
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(TikWrap {
                            version: tik,
                            slot: u8::try_from(row.try_get::<_, i32>(0)?)
                                .map_err(|_| corrupt("root key slot"))?,
                            wrapped: row.try_get(1)?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn add_tik_version(
        &self,
        tenant: TenantId,
        previous: KeyVersion,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let new = wraps
            .first()
            .ok_or(Error::Misuse("a TIK version needs wraps"))?
            .version;
        let input = Arc::new((wraps.to_vec(), *tag));
        self.run(Mode::Write, move |tx| {
            let input = Arc::clone(&input);
            Box::pin(async move {
                let (wraps, tag) = &*input;
                let id = tenant.as_bytes().as_slice();
                retag(tx, id, tag).await?;
                let changed = tx
                    .execute(
                        "UPDATE atrest_tenants SET current_tik = $3
                         WHERE tenant = $1 AND current_tik = $2",
                        &[&id, &number(previous), &number(new)],
                    )
                    .await?;
                if changed == 0 {
                    return Err(Failure::Stop(Error::Conflict(
                        "the tenant's TIK changed meanwhile (another roll, or a purge)",
                    )));
                }
                let _ = tx
                    .execute(
                        "INSERT INTO atrest_tik_versions (tenant, version) VALUES ($1, $2)",
                        &[&id, &number(new)],
                    )
                    .await?;
                insert_wraps(tx, id, wraps).await?;
                note_change(tx, id).await
            })
        })
        .await
    }

    async fn replace_root_key(
        &self,
        tenant: TenantId,
        slot: u8,
        key: &RootKeyRef,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let input = Arc::new((key.to_string(), wraps.to_vec(), *tag));
        self.run(Mode::Write, move |tx| {
            let input = Arc::clone(&input);
            Box::pin(async move {
                let (key, wraps, tag) = &*input;
                let id = tenant.as_bytes().as_slice();
                let versions: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM atrest_tik_versions WHERE tenant = $1",
                        &[&id],
                    )
                    .await?
                    .try_get(0)?;
                if u64::try_from(versions).ok() != Some(wraps.len() as u64)
                    || wraps.iter().any(|w| w.slot != slot)
                {
                    return Err(Failure::Stop(Error::Conflict(
                        "the tenant's TIK versions changed during the root key roll; run it again",
                    )));
                }
                retag(tx, id, tag).await?;
                let changed = tx
                    .execute(
                        "UPDATE atrest_root_key_slots SET key = $3 WHERE tenant = $1 AND slot = $2",
                        &[&id, &i32::from(slot), key],
                    )
                    .await?;
                if changed != 1 {
                    return Err(corrupt("root key slot"));
                }
                let update = tx
                    .prepare(
                        "UPDATE atrest_tik_wraps SET wrapped = $4
                         WHERE tenant = $1 AND version = $2 AND slot = $3",
                    )
                    .await?;
                for wrap in wraps {
                    let changed = tx
                        .execute(
                            &update,
                            &[&id, &number(wrap.version), &i32::from(slot), &wrap.wrapped],
                        )
                        .await?;
                    if changed != 1 {
                        return Err(corrupt("TIK version without a wrap in this slot"));
                    }
                }
                note_change(tx, id).await
            })
        })
        .await
    }

    async fn set_revoked(
        &self,
        tenant: TenantId,
        slot: u8,
        revoked: bool,
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let tag = *tag;
        self.run(Mode::Write, move |tx| {
            Box::pin(async move {
                let id = tenant.as_bytes().as_slice();
                retag(tx, id, &tag).await?;
                let changed = tx
                    .execute(
                        "UPDATE atrest_root_key_slots SET revoked = $3
                         WHERE tenant = $1 AND slot = $2",
                        &[&id, &i32::from(slot), &revoked],
                    )
                    .await?;
                if changed == 0 {
                    return Err(Failure::Stop(Error::Misuse("no such root key slot")));
                }
                note_change(tx, id).await
            })
        })
        .await
    }

    async fn set_fallback(
        &self,
        tenant: TenantId,
        policy: &FallbackPolicy,
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let input = Arc::new((StoredFallback::from_policy(policy), *tag));
        self.run(Mode::Write, move |tx| {
            let input = Arc::clone(&input);
            Box::pin(async move {
                let (stored, tag) = &*input;
                let id = tenant.as_bytes().as_slice();
                retag(tx, id, tag).await?;
                let _ = tx
                    .execute(
                        "UPDATE atrest_tenants
                         SET fallback = $2, outage_start = $3, outage_end = $4, outage_reason = $5
                         WHERE tenant = $1",
                        &[
                            &id,
                            &stored.policy,
                            &stored.start,
                            &stored.end,
                            &stored.reason,
                        ],
                    )
                    .await?;
                note_change(tx, id).await
            })
        })
        .await
    }

    async fn retire_tik_version(&self, tenant: TenantId, tik: KeyVersion) -> Result<(), Error> {
        self.run(Mode::Write, move |tx| {
            Box::pin(async move {
                let id = tenant.as_bytes().as_slice();
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_tik_wraps WHERE tenant = $1 AND version = $2",
                        &[&id, &number(tik)],
                    )
                    .await?;
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_tik_versions WHERE tenant = $1 AND version = $2",
                        &[&id, &number(tik)],
                    )
                    .await?;
                note_change(tx, id).await
            })
        })
        .await
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64, Error> {
        self.run(Mode::Write, move |tx| {
            Box::pin(async move {
                // Nothing may copy the rows this deletes.
                check_objects(tx, SCHEMA.tables).await?;
                let id = tenant.as_bytes().as_slice();
                let _ = tx
                    .execute("DELETE FROM atrest_tik_wraps WHERE tenant = $1", &[&id])
                    .await?;
                let destroyed = tx
                    .execute("DELETE FROM atrest_tik_versions WHERE tenant = $1", &[&id])
                    .await?;
                let _ = tx
                    .execute(
                        "UPDATE atrest_tenants SET state = 'purged', tag = NULL WHERE tenant = $1",
                        &[&id],
                    )
                    .await?;
                note_change(tx, id).await?;
                Ok(destroyed)
            })
        })
        .await
    }

    async fn changes_since(&self, after: u64) -> Result<KeyChanges, Error> {
        let number = |value: i64| u64::try_from(value).map_err(|_| corrupt("change log counter"));
        self.run(Mode::Read, move |tx| {
            Box::pin(async move {
                let row = tx
                    .query_one(
                        "SELECT (SELECT counter FROM atrest_key_change_counter),
                                (SELECT min(counter) FROM atrest_key_changes)",
                        &[],
                    )
                    .await?;
                let counter: Option<i64> = row.try_get(0)?;
                let counter =
                    counter.ok_or_else(|| corrupt("the change counter row is missing"))?;
                let oldest: Option<i64> = row.try_get(1)?;
                let rows = tx
                    .query(
                        "SELECT DISTINCT tenant FROM atrest_key_changes WHERE counter > $1",
                        &[&i64::try_from(after).unwrap_or(i64::MAX)],
                    )
                    .await?;
                let changed = rows
                    .iter()
                    .map(|row| tenant_id(&row.try_get::<_, Vec<u8>>(0)?))
                    .collect::<Result<Vec<_>, Failure<Error>>>()?;
                Ok(KeyChanges::from_log(
                    after,
                    number(counter)?,
                    oldest.map(number).transpose()?,
                    changed,
                ))
            })
        })
        .await
    }
}
