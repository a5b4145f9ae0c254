//! Tenant key metadata in SQLite: [`SqliteStore`].

use std::path::Path;

use atrest_filekey::{KeyVersion, TenantId};
use atrest_tenant::store::stored;
use atrest_tenant::{
    CHANGE_LOG_KEPT, Error, FallbackPolicy, KeyChanges, MetadataStore, RootKeyRef, StoredFallback,
    StoredSlot, StoredTenant, TagUpdate, TenantRecord, TenantTag, TikWrap,
};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

use crate::db::{self, Failure, Shared};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    tenant      BLOB    PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('service', 'customer')),
    state       TEXT    NOT NULL CHECK (state IN ('active', 'purged')),
    tik_id      BLOB    NOT NULL,
    current_tik INTEGER NOT NULL CHECK (current_tik > 0),
    tag         BLOB,   -- NULL once purged
    fallback    TEXT    NOT NULL DEFAULT 'automatic',
    outage_start  INTEGER,
    outage_end    INTEGER,
    outage_reason TEXT
);
CREATE TABLE IF NOT EXISTS root_key_slots (
    tenant   BLOB    NOT NULL REFERENCES tenants (tenant),
    slot     INTEGER NOT NULL,
    role     TEXT    NOT NULL CHECK (role IN ('service', 'customer', 'availability')),
    key      TEXT    NOT NULL,
    revoked  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, slot)
);
CREATE TABLE IF NOT EXISTS tik_versions (
    tenant  BLOB    NOT NULL REFERENCES tenants (tenant),
    version INTEGER NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS tik_wraps (
    tenant  BLOB    NOT NULL,
    version INTEGER NOT NULL,
    slot    INTEGER NOT NULL,
    wrapped BLOB    NOT NULL,
    PRIMARY KEY (tenant, version, slot),
    FOREIGN KEY (tenant, version) REFERENCES tik_versions (tenant, version)
);
-- The change log (see `MetadataStore::changes_since`): one entry per
-- changing transaction, numbered in commit order (SQLite has one writer).
CREATE TABLE IF NOT EXISTS key_changes (
    counter INTEGER PRIMARY KEY CHECK (counter > 0),
    tenant  BLOB    NOT NULL
);
";

/// Tables that stores made by earlier versions kept, for an index of
/// wrapped file keys the catalog now is the one home of: dropped when
/// empty, refused otherwise.
const RETIRED_TABLES: [&str; 2] = ["file_keys", "retired_tiks"];

/// Tenant key metadata ([`MetadataStore`]) in one SQLite database: the
/// embedded default.
///
/// Every change is one transaction: a crash in the middle of a rotation or
/// a purge leaves either the state before it or the state after it, never
/// a mixture (SQLite's write-ahead log with `synchronous = FULL`). Deleted
/// key material is overwritten in the database file (`secure_delete`), and
/// a purge checkpoints the write-ahead log so no copy remains there either.
/// Several processes may share the file. Each call runs on the async
/// runtime's blocking pool.
#[derive(Clone)]
pub struct SqliteStore {
    db: Shared<Connection>,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` (a file, or
    /// `:memory:`).
    ///
    /// # Errors
    /// [`Error::Store`] if it cannot be opened; [`Error::Corrupt`] for a
    /// store made by an earlier version whose tenant records carry no tag,
    /// for one that still holds wrapped file keys of its own (keep them in
    /// a catalog), and for a database holding objects the schema does not
    /// create.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let db = Shared::open(path, SCHEMA, migrate)
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

    /// As [`SqliteStore::run`], for work that grows with the number of
    /// tenants: on the blocking pool.
    async fn scan<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Error> {
        self.db.run_scan(work).await.map_err(Failure::into_keys)
    }
}

/// Refuses a store of a version before tagged records, and drops the
/// tables of the wrapped-key index earlier versions kept, if empty.
fn migrate(connection: &Connection) -> Result<(), Failure> {
    if connection
        .prepare("SELECT tag FROM tenants LIMIT 0")
        .is_err()
    {
        return Err(Failure::Keys(Error::Corrupt(
            "schema: the store was made by an earlier version (tenant records without tags)",
        )));
    }
    // The fallback policy's columns, added to a store made before them
    // (every tenant `automatic`, as it was).
    if connection
        .prepare("SELECT fallback FROM tenants LIMIT 0")
        .is_err()
    {
        connection.execute_batch(
            "ALTER TABLE tenants ADD COLUMN fallback TEXT NOT NULL DEFAULT 'automatic';
             ALTER TABLE tenants ADD COLUMN outage_start INTEGER;
             ALTER TABLE tenants ADD COLUMN outage_end INTEGER;
             ALTER TABLE tenants ADD COLUMN outage_reason TEXT;",
        )?;
    }
    for table in RETIRED_TABLES {
        if !db::has_table(connection, table)? {
            continue;
        }
        let rows: i64 =
            connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })?;
        if rows > 0 {
            return Err(Failure::Keys(Error::Corrupt(
                "schema: the store holds wrapped file keys of its own, which the catalog now keeps",
            )));
        }
        connection.execute_batch(&format!("DROP TABLE {table}"))?;
    }
    Ok(())
}

fn insert_wraps(tx: &Transaction<'_>, tenant: TenantId, wraps: &[TikWrap]) -> Result<(), Failure> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO tik_wraps (tenant, version, slot, wrapped) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for wrap in wraps {
        let _ = insert.execute(params![
            tenant.as_bytes(),
            u32::from(wrap.version),
            wrap.slot,
            wrap.wrapped
        ])?;
    }
    Ok(())
}

/// Adds `tenant` to the change log, in the changing transaction, and
/// forgets entries beyond the ones kept.
fn note_change(tx: &Transaction<'_>, tenant: TenantId) -> Result<(), Failure> {
    let counter: i64 = tx.query_row(
        "INSERT INTO key_changes (counter, tenant)
         SELECT coalesce(max(counter), 0) + 1, ?1 FROM key_changes
         RETURNING counter",
        params![tenant.as_bytes()],
        |row| row.get(0),
    )?;
    let _ = tx.execute(
        "DELETE FROM key_changes WHERE counter <= ?1",
        params![counter.saturating_sub(i64::try_from(CHANGE_LOG_KEPT).unwrap_or(i64::MAX))],
    )?;
    Ok(())
}

/// The change log after `after`, in one statement (one read of one
/// snapshot): asked before every acknowledged upload, so it is one cached
/// statement rather than a transaction of several.
fn changes_since(db: &mut Connection, after: u64) -> Result<KeyChanges, Failure> {
    let mut select = db.prepare_cached(
        "SELECT newest.counter, newest.oldest, changed.found, changed.tenant
         FROM (SELECT coalesce(max(counter), 0) AS counter, min(counter) AS oldest
               FROM key_changes) AS newest
         LEFT JOIN (SELECT DISTINCT tenant, 1 AS found FROM key_changes WHERE counter > ?1)
              AS changed
         ON true",
    )?;
    let mut rows = select.query(params![i64::try_from(after).unwrap_or(i64::MAX)])?;
    let mut log: Option<(i64, Option<i64>)> = None;
    let mut changed = Vec::new();
    while let Some(row) = rows.next()? {
        if log.is_none() {
            log = Some((row.get(0)?, row.get(1)?));
        }
        // `found` tells a change from the empty side of the join (no change
        // since `after`): a change whose tenant is not a tenant id, NULL
        // included, fails the read as any bad stored value does.
        if row.get::<_, Option<i64>>(2)?.is_some() {
            let tenant: Vec<u8> = row.get(3)?;
            changed.push(stored::tenant_id(&tenant)?);
        }
    }
    // The aggregate gives exactly one row of counters, even for an empty log.
    let (counter, oldest) = log.ok_or(Failure::Keys(Error::Corrupt("change log counter")))?;
    let number = |value: i64| {
        u64::try_from(value).map_err(|_| Failure::Keys(Error::Corrupt("change log counter")))
    };
    Ok(KeyChanges::from_log(
        after,
        number(counter)?,
        oldest.map(number).transpose()?,
        changed,
    ))
}

/// Replaces an active tenant's tag `tag.previous` by `tag.next`.
fn retag(tx: &Transaction<'_>, tenant: TenantId, tag: &TagUpdate) -> Result<(), Failure> {
    let changed = tx.execute(
        "UPDATE tenants SET tag = ?3 WHERE tenant = ?1 AND state = 'active' AND tag = ?2",
        params![
            tenant.as_bytes(),
            tag.previous.to_bytes(),
            tag.next.to_bytes()
        ],
    )?;
    if changed == 0 {
        return Err(Failure::Keys(Error::Conflict(
            "the tenant's record changed meanwhile (another change, or a purge)",
        )));
    }
    Ok(())
}

fn create_tenant(
    db: &mut Connection,
    record: &TenantRecord,
    wraps: &[TikWrap],
) -> Result<(), Failure> {
    let tx = db.transaction()?;
    let fallback = StoredFallback::from_policy(&record.fallback);
    let inserted = tx.execute(
        "INSERT INTO tenants (tenant, kind, state, tik_id, current_tik, tag,
                              fallback, outage_start, outage_end, outage_reason)
         VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT DO NOTHING",
        params![
            record.tenant.as_bytes(),
            record.kind.as_stored(),
            record.tik_id.as_bytes(),
            u32::from(record.current_tik),
            record.tag.as_ref().map(TenantTag::to_bytes),
            fallback.policy,
            fallback.start,
            fallback.end,
            fallback.reason,
        ],
    )?;
    if inserted == 0 {
        return Err(Failure::Keys(Error::TenantExists(record.tenant)));
    }
    for (slot, root) in record.slots.iter().enumerate() {
        let _ = tx.execute(
            "INSERT INTO root_key_slots (tenant, slot, role, key, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.tenant.as_bytes(),
                slot,
                root.role.as_stored(),
                root.key.to_string(),
                root.revoked
            ],
        )?;
    }
    let _ = tx.execute(
        "INSERT INTO tik_versions (tenant, version) VALUES (?1, ?2)",
        params![record.tenant.as_bytes(), u32::from(record.current_tik)],
    )?;
    insert_wraps(&tx, record.tenant, wraps)?;
    note_change(&tx, record.tenant)?;
    tx.commit()?;
    Ok(())
}

fn read_tenant(db: &mut Connection, tenant: TenantId) -> Result<Option<TenantRecord>, Failure> {
    // The row and its slots from one snapshot: a change committed by
    // another process in between would otherwise give a mixture, which
    // fails its tag.
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    let row = tx
        .query_row(
            "SELECT kind, state, tik_id, current_tik, tag,
                    fallback, outage_start, outage_end, outage_reason
             FROM tenants WHERE tenant = ?1",
            params![tenant.as_bytes()],
            |row| {
                Ok(StoredTenant {
                    tenant,
                    kind: row.get(0)?,
                    state: row.get(1)?,
                    tik_id: row.get(2)?,
                    current_tik: row.get(3)?,
                    tag: row.get(4)?,
                    slots: Vec::new(),
                    fallback: StoredFallback {
                        policy: row.get(5)?,
                        start: row.get(6)?,
                        end: row.get(7)?,
                        reason: row.get(8)?,
                    },
                })
            },
        )
        .optional()?;
    let Some(mut stored) = row else {
        return Ok(None);
    };
    let mut statement = tx.prepare_cached(
        "SELECT role, key, revoked FROM root_key_slots WHERE tenant = ?1 ORDER BY slot",
    )?;
    let rows = statement.query_map(params![tenant.as_bytes()], |row| {
        Ok(StoredSlot {
            role: row.get(0)?,
            key: row.get(1)?,
            revoked: row.get(2)?,
        })
    })?;
    for slot in rows {
        stored.slots.push(slot?);
    }
    Ok(Some(stored.decode()?))
}

fn tenants(db: &mut Connection) -> Result<Vec<TenantId>, Failure> {
    let mut statement = db.prepare_cached("SELECT tenant FROM tenants ORDER BY tenant")?;
    let rows = statement.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
    let mut tenants = Vec::new();
    for row in rows {
        tenants.push(stored::tenant_id(&row?)?);
    }
    Ok(tenants)
}

fn tik_versions(db: &mut Connection, tenant: TenantId) -> Result<Vec<KeyVersion>, Failure> {
    let mut statement =
        db.prepare_cached("SELECT version FROM tik_versions WHERE tenant = ?1 ORDER BY version")?;
    let rows = statement.query_map(params![tenant.as_bytes()], |row| row.get::<_, i64>(0))?;
    let mut versions = Vec::new();
    for row in rows {
        versions.push(stored::tik_version(row?)?);
    }
    Ok(versions)
}

fn tik_wraps(
    db: &mut Connection,
    tenant: TenantId,
    tik: KeyVersion,
) -> Result<Vec<TikWrap>, Failure> {
    let mut statement = db.prepare_cached(
        "SELECT slot, wrapped FROM tik_wraps WHERE tenant = ?1 AND version = ?2 ORDER BY slot",
    )?;
    let rows = statement.query_map(params![tenant.as_bytes(), u32::from(tik)], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut wraps = Vec::new();
    for row in rows {
        let (slot, wrapped) = row?;
        wraps.push(TikWrap {
            version: tik,
            slot: stored::slot(slot)?,
            wrapped,
        });
    }
    Ok(wraps)
}

fn add_tik_version(
    db: &mut Connection,
    tenant: TenantId,
    previous: KeyVersion,
    wraps: &[TikWrap],
    tag: &TagUpdate,
) -> Result<(), Failure> {
    let new = wraps
        .first()
        .ok_or(Error::Misuse("a TIK version needs wraps"))?
        .version;
    let tx = db.transaction()?;
    retag(&tx, tenant, tag)?;
    let changed = tx.execute(
        "UPDATE tenants SET current_tik = ?3 WHERE tenant = ?1 AND current_tik = ?2",
        params![tenant.as_bytes(), u32::from(previous), u32::from(new)],
    )?;
    if changed == 0 {
        return Err(Failure::Keys(Error::Conflict(
            "the tenant's TIK changed meanwhile (another roll, or a purge)",
        )));
    }
    let _ = tx.execute(
        "INSERT INTO tik_versions (tenant, version) VALUES (?1, ?2)",
        params![tenant.as_bytes(), u32::from(new)],
    )?;
    insert_wraps(&tx, tenant, wraps)?;
    note_change(&tx, tenant)?;
    tx.commit()?;
    Ok(())
}

fn replace_root_key(
    db: &mut Connection,
    tenant: TenantId,
    slot: u8,
    key: &RootKeyRef,
    wraps: &[TikWrap],
    tag: &TagUpdate,
) -> Result<(), Failure> {
    let tx = db.transaction()?;
    let versions: i64 = tx.query_row(
        "SELECT count(*) FROM tik_versions WHERE tenant = ?1",
        params![tenant.as_bytes()],
        |row| row.get(0),
    )?;
    if u64::try_from(versions).ok() != Some(wraps.len() as u64)
        || wraps.iter().any(|w| w.slot != slot)
    {
        return Err(Failure::Keys(Error::Conflict(
            "the tenant's TIK versions changed during the root key roll; run it again",
        )));
    }
    retag(&tx, tenant, tag)?;
    if tx.execute(
        "UPDATE root_key_slots SET key = ?3 WHERE tenant = ?1 AND slot = ?2",
        params![tenant.as_bytes(), slot, key.to_string()],
    )? != 1
    {
        return Err(Failure::Keys(Error::Corrupt("root key slot")));
    }
    {
        let mut update = tx.prepare_cached(
            "UPDATE tik_wraps SET wrapped = ?4 WHERE tenant = ?1 AND version = ?2 AND slot = ?3",
        )?;
        for wrap in wraps {
            if update.execute(params![
                tenant.as_bytes(),
                u32::from(wrap.version),
                slot,
                wrap.wrapped
            ])? != 1
            {
                return Err(Failure::Keys(Error::Corrupt(
                    "TIK version without a wrap in this slot",
                )));
            }
        }
    }
    note_change(&tx, tenant)?;
    tx.commit()?;
    Ok(())
}

fn set_revoked(
    db: &mut Connection,
    tenant: TenantId,
    slot: u8,
    revoked: bool,
    tag: &TagUpdate,
) -> Result<(), Failure> {
    let tx = db.transaction()?;
    retag(&tx, tenant, tag)?;
    let changed = tx.execute(
        "UPDATE root_key_slots SET revoked = ?3 WHERE tenant = ?1 AND slot = ?2",
        params![tenant.as_bytes(), slot, revoked],
    )?;
    if changed == 0 {
        return Err(Failure::Keys(Error::Misuse("no such root key slot")));
    }
    note_change(&tx, tenant)?;
    tx.commit()?;
    Ok(())
}

fn set_fallback(
    db: &mut Connection,
    tenant: TenantId,
    policy: &FallbackPolicy,
    tag: &TagUpdate,
) -> Result<(), Failure> {
    let stored = StoredFallback::from_policy(policy);
    let tx = db.transaction()?;
    retag(&tx, tenant, tag)?;
    let _ = tx.execute(
        "UPDATE tenants SET fallback = ?2, outage_start = ?3, outage_end = ?4, outage_reason = ?5
         WHERE tenant = ?1",
        params![
            tenant.as_bytes(),
            stored.policy,
            stored.start,
            stored.end,
            stored.reason
        ],
    )?;
    note_change(&tx, tenant)?;
    tx.commit()?;
    Ok(())
}

fn retire_tik_version(
    db: &mut Connection,
    tenant: TenantId,
    tik: KeyVersion,
) -> Result<(), Failure> {
    let tx = db.transaction()?;
    let _ = tx.execute(
        "DELETE FROM tik_wraps WHERE tenant = ?1 AND version = ?2",
        params![tenant.as_bytes(), u32::from(tik)],
    )?;
    let _ = tx.execute(
        "DELETE FROM tik_versions WHERE tenant = ?1 AND version = ?2",
        params![tenant.as_bytes(), u32::from(tik)],
    )?;
    note_change(&tx, tenant)?;
    tx.commit()?;
    Ok(())
}

fn purge_tenant(db: &mut Connection, tenant: TenantId) -> Result<u64, Failure> {
    let tx = db.transaction()?;
    let _ = tx.execute(
        "DELETE FROM tik_wraps WHERE tenant = ?1",
        params![tenant.as_bytes()],
    )?;
    let destroyed = tx.execute(
        "DELETE FROM tik_versions WHERE tenant = ?1",
        params![tenant.as_bytes()],
    )?;
    let _ = tx.execute(
        "UPDATE tenants SET state = 'purged', tag = NULL WHERE tenant = ?1",
        params![tenant.as_bytes()],
    )?;
    note_change(&tx, tenant)?;
    tx.commit()?;
    db::checkpoint(db)?;
    Ok(destroyed as u64)
}

#[async_trait::async_trait]
impl MetadataStore for SqliteStore {
    async fn create_tenant(&self, record: &TenantRecord, wraps: &[TikWrap]) -> Result<(), Error> {
        let (record, wraps) = (record.clone(), wraps.to_vec());
        self.run(move |db| create_tenant(db, &record, &wraps)).await
    }

    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>, Error> {
        self.run(move |db| read_tenant(db, tenant)).await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, Error> {
        self.scan(tenants).await
    }

    async fn tik_versions(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        self.run(move |db| tik_versions(db, tenant)).await
    }

    async fn tik_wraps(&self, tenant: TenantId, tik: KeyVersion) -> Result<Vec<TikWrap>, Error> {
        self.run(move |db| tik_wraps(db, tenant, tik)).await
    }

    async fn add_tik_version(
        &self,
        tenant: TenantId,
        previous: KeyVersion,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let (wraps, tag) = (wraps.to_vec(), *tag);
        self.run(move |db| add_tik_version(db, tenant, previous, &wraps, &tag))
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
        let (key, wraps, tag) = (key.clone(), wraps.to_vec(), *tag);
        self.run(move |db| replace_root_key(db, tenant, slot, &key, &wraps, &tag))
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
        self.run(move |db| set_revoked(db, tenant, slot, revoked, &tag))
            .await
    }

    async fn set_fallback(
        &self,
        tenant: TenantId,
        policy: &FallbackPolicy,
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let (policy, tag) = (policy.clone(), *tag);
        self.run(move |db| set_fallback(db, tenant, &policy, &tag))
            .await
    }

    async fn retire_tik_version(&self, tenant: TenantId, tik: KeyVersion) -> Result<(), Error> {
        self.run(move |db| retire_tik_version(db, tenant, tik))
            .await
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64, Error> {
        self.run(move |db| purge_tenant(db, tenant)).await
    }

    async fn changes_since(&self, after: u64) -> Result<KeyChanges, Error> {
        self.run(move |db| changes_since(db, after)).await
    }
}
