//! Persistence of tenant key metadata, and of the wrapped file keys a
//! service keeps, with SQLite as the embedded default.
//!
//! Every method that changes state is one transaction: a crash in the middle
//! of a rotation or a purge leaves either the state before it or the state
//! after it, never a mixture (SQLite's write-ahead log with `synchronous =
//! FULL`). Deleted key material is overwritten in the database file
//! (`secure_delete`), and a purge checkpoints the write-ahead log so no copy
//! remains there either.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use atrest_filekey::{
    FileContext, FileId, FileVersion, KeyId, KeyVersion, TenantId, WrappedFileKey,
};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

use crate::{Error, RecordTag, RootKeyRef, db};

/// Who holds a tenant's root keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantKind {
    /// The service: one service root key wraps the TIK.
    ServiceManaged,
    /// The customer: two customer root keys and the availability key each
    /// wrap the TIK.
    CustomerKey,
}

/// Whether a tenant's keys still exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantState {
    /// Keys exist.
    Active,
    /// Every TIK was destroyed: nothing of the tenant can be decrypted.
    Purged,
}

/// What a root key is for, in one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotRole {
    /// The service root key of a service-managed tenant.
    Service,
    /// One of a customer-key tenant's own root keys.
    Customer,
    /// The service's availability key of a customer-key tenant.
    Availability,
}

/// One root key protecting a tenant's TIK versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeySlot {
    /// What it is for.
    pub role: SlotRole,
    /// Which key (and version) wraps the TIK versions in this slot.
    pub key: RootKeyRef,
    /// Whether the customer revoked the service's use of it.
    pub revoked: bool,
}

/// A tenant's key metadata (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// Who holds its root keys.
    pub kind: TenantKind,
    /// Whether its keys still exist.
    pub state: TenantState,
    /// The id of its TIK (the same across versions; the KEK id in its
    /// wrapped file keys).
    pub tik_id: KeyId,
    /// The TIK version new file keys are wrapped under.
    pub current_tik: KeyVersion,
    /// Its root keys, by slot number (the index).
    pub slots: Vec<RootKeySlot>,
    /// The record's authentication tag under the tenant's metadata key
    /// (see [`crate::tenant_key`]): what the key hierarchy checks before it
    /// obeys the record. `None` once the tenant is purged.
    pub tag: Option<RecordTag>,
}

/// A change of a tenant's record: the tag it must still have (so that of
/// two concurrent changes made from the same state, the second is refused
/// as a conflict rather than leaving a record that matches neither tag)
/// and the tag of the changed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagUpdate {
    /// The tag stored now.
    pub previous: RecordTag,
    /// The tag of the record after the change.
    pub next: RecordTag,
}

/// One TIK version wrapped under the root key of one slot.
#[derive(Clone, PartialEq, Eq)]
pub struct TikWrap {
    /// The TIK version.
    pub version: KeyVersion,
    /// The slot (index into [`TenantRecord::slots`]).
    pub slot: u8,
    /// What the slot's root-key provider returned.
    pub wrapped: Vec<u8>,
}

impl core::fmt::Debug for TikWrap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TikWrap")
            .field("version", &self.version)
            .field("slot", &self.slot)
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

/// Where tenant key metadata is kept. Implementations must make each
/// changing method atomic and durable.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync {
    /// Stores a new tenant with its first TIK version's wraps.
    ///
    /// # Errors
    /// [`Error::TenantExists`] if the tenant exists; [`Error::Store`].
    async fn create_tenant(&self, record: &TenantRecord, wraps: &[TikWrap]) -> Result<(), Error>;

    /// A tenant's metadata, if it exists.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>, Error>;

    /// Every tenant.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn tenants(&self) -> Result<Vec<TenantId>, Error>;

    /// A tenant's TIK versions, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn tik_versions(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error>;

    /// The wraps of one TIK version (empty if there is no such version).
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn tik_wraps(&self, tenant: TenantId, version: KeyVersion)
    -> Result<Vec<TikWrap>, Error>;

    /// Adds a TIK version (all of whose wraps are given) and makes it
    /// current, if the current version is still `previous` and the tag is
    /// still `tag.previous`; stores `tag.next`.
    ///
    /// # Errors
    /// [`Error::Conflict`] if another change happened first;
    /// [`Error::Store`].
    async fn add_tik_version(
        &self,
        tenant: TenantId,
        previous: KeyVersion,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error>;

    /// Points slot `slot` at `key` and replaces the wraps of every TIK
    /// version in that slot with `wraps` (one per version), if the tag is
    /// still `tag.previous`; stores `tag.next`.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the TIK versions or the record changed
    /// meanwhile; [`Error::Store`].
    async fn replace_root_key(
        &self,
        tenant: TenantId,
        slot: u8,
        key: &RootKeyRef,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error>;

    /// Marks slot `slot` revoked (or not), if the tag is still
    /// `tag.previous`; stores `tag.next`.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the record changed meanwhile;
    /// [`Error::Store`].
    async fn set_revoked(
        &self,
        tenant: TenantId,
        slot: u8,
        revoked: bool,
        tag: &TagUpdate,
    ) -> Result<(), Error>;

    /// Deletes a TIK version and its wraps.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn retire_tik_version(&self, tenant: TenantId, version: KeyVersion) -> Result<(), Error>;

    /// Deletes every TIK version and wrap of the tenant, removes its tag and
    /// marks it purged; returns how many TIK versions were destroyed.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64, Error>;
}

/// A wrapped file key moved to a newer TIK version.
#[derive(Debug, Clone)]
pub struct Rewrapped {
    /// The file version it belongs to.
    pub context: FileContext,
    /// What was stored.
    pub old: WrappedFileKey,
    /// What replaces it.
    pub new: WrappedFileKey,
}

/// The service's store of wrapped file keys (usually its file metadata
/// database), as far as re-wrapping and retiring TIK versions need it.
#[async_trait::async_trait]
pub trait WrappedKeyIndex: Send + Sync {
    /// Up to `limit` wrapped file keys of `tenant` under a TIK version older
    /// than `version`.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn older_than(
        &self,
        tenant: TenantId,
        version: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, Error>;

    /// How many wrapped file keys of `tenant` are under a TIK version older
    /// than `version`.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn count_older_than(&self, tenant: TenantId, version: KeyVersion) -> Result<u64, Error>;

    /// Claims TIK `version` of `tenant` for retirement: if no wrapped file
    /// key of the tenant is under it (nor may still be added under it, as
    /// far as the index knows), marks it retired — from then on the index
    /// refuses to store a key under it — and returns 0; otherwise marks
    /// nothing and returns how many keys refer to it.
    ///
    /// Must be atomic with respect to adding keys: a key stored under
    /// `version` either is counted here or is refused afterwards. That is
    /// what lets a hierarchy whose cached metadata is stale (another
    /// process rolled the TIK) never leave a key under a destroyed version.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn claim_retirement(&self, tenant: TenantId, version: KeyVersion) -> Result<u64, Error>;

    /// Replaces each `old` with its `new` in one transaction; an entry whose
    /// stored value is no longer `old` (changed meanwhile) is left alone.
    /// Returns how many were replaced.
    ///
    /// # Errors
    /// [`Error::Store`]; then nothing was replaced.
    async fn replace(&self, batch: &[Rewrapped]) -> Result<u64, Error>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    tenant      BLOB    PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('service', 'customer')),
    state       TEXT    NOT NULL CHECK (state IN ('active', 'purged')),
    tik_id      BLOB    NOT NULL,
    current_tik INTEGER NOT NULL CHECK (current_tik > 0),
    tag         BLOB    -- NULL once purged
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
CREATE TABLE IF NOT EXISTS file_keys (
    tenant      BLOB    NOT NULL,
    file        BLOB    NOT NULL,
    version     INTEGER NOT NULL,
    tik_version INTEGER NOT NULL,
    wrapped     BLOB    NOT NULL,
    PRIMARY KEY (tenant, file, version)
);
CREATE INDEX IF NOT EXISTS file_keys_by_tik ON file_keys (tenant, tik_version);
CREATE TABLE IF NOT EXISTS retired_tiks (
    tenant  BLOB    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, version)
);
";

/// The embedded key store: tenant key metadata ([`MetadataStore`]) and,
/// for services that want it, their wrapped file keys
/// ([`WrappedKeyIndex`] plus `put`/`get`), in one SQLite database.
pub struct SqliteStore {
    db: Mutex<Connection>,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// The text a store keeps for each value of the record's enumerations, the
/// same in every [`MetadataStore`] of this project (SQLite, PostgreSQL).
impl TenantKind {
    /// The stored text: `service` or `customer`.
    pub const fn as_stored(self) -> &'static str {
        match self {
            Self::ServiceManaged => "service",
            Self::CustomerKey => "customer",
        }
    }

    /// The kind of a stored text; `None` for anything else.
    pub fn from_stored(text: &str) -> Option<Self> {
        [Self::ServiceManaged, Self::CustomerKey]
            .into_iter()
            .find(|kind| kind.as_stored() == text)
    }
}

impl TenantState {
    /// The stored text: `active` or `purged`.
    pub const fn as_stored(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Purged => "purged",
        }
    }

    /// The state of a stored text; `None` for anything else.
    pub fn from_stored(text: &str) -> Option<Self> {
        [Self::Active, Self::Purged]
            .into_iter()
            .find(|state| state.as_stored() == text)
    }
}

impl SlotRole {
    /// The stored text: `service`, `customer` or `availability`.
    pub const fn as_stored(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Customer => "customer",
            Self::Availability => "availability",
        }
    }

    /// The role of a stored text; `None` for anything else.
    pub fn from_stored(text: &str) -> Option<Self> {
        [Self::Service, Self::Customer, Self::Availability]
            .into_iter()
            .find(|role| role.as_stored() == text)
    }
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt(what)
}

fn version(value: u32) -> Result<KeyVersion, Error> {
    KeyVersion::try_from(value).map_err(|_| corrupt("TIK version"))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`Error::Store`] if it cannot be opened.
    ///
    /// # Errors
    /// Also [`Error::Corrupt`] for a store made by an earlier version,
    /// whose tenant records carry no tag.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = db::open(path, SCHEMA)?;
        if db.prepare("SELECT tag FROM tenants LIMIT 0").is_err() {
            return Err(corrupt(
                "schema: the store was made by an earlier version (tenant records without tags)",
            ));
        }
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert_wraps(
        tx: &Transaction<'_>,
        tenant: TenantId,
        wraps: &[TikWrap],
    ) -> Result<(), Error> {
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

    /// Stores (or replaces) the wrapped key of a file version.
    ///
    /// # Errors
    /// [`Error::Conflict`] if its TIK version was retired meanwhile (make
    /// the key again: the hierarchy's metadata was stale);
    /// [`Error::Store`].
    pub fn put_file_key(
        &self,
        context: &FileContext,
        wrapped: &WrappedFileKey,
    ) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let retired: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM retired_tiks WHERE tenant = ?1 AND version = ?2)",
            params![context.tenant.as_bytes(), u32::from(wrapped.kek_version())],
            |row| row.get(0),
        )?;
        if retired {
            return Err(Error::Conflict(
                "the file key is wrapped under a TIK version retired meanwhile",
            ));
        }
        let _ = tx.execute(
            "INSERT OR REPLACE INTO file_keys (tenant, file, version, tik_version, wrapped)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                context.tenant.as_bytes(),
                context.file.as_bytes(),
                u64::from(context.version),
                u32::from(wrapped.kek_version()),
                wrapped.as_ref()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The wrapped key of a file version, if stored.
    ///
    /// # Errors
    /// [`Error::Store`], also if the stored key is malformed.
    pub fn file_key(&self, context: &FileContext) -> Result<Option<WrappedFileKey>, Error> {
        let bytes: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT wrapped FROM file_keys WHERE tenant = ?1 AND file = ?2 AND version = ?3",
                params![
                    context.tenant.as_bytes(),
                    context.file.as_bytes(),
                    u64::from(context.version)
                ],
                |row| row.get(0),
            )
            .optional()?;
        bytes
            .map(|bytes| {
                WrappedFileKey::from_bytes(&bytes).map_err(|_| corrupt("wrapped file key"))
            })
            .transpose()
    }

    /// Every stored file version of a tenant with its wrapped key.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn file_keys(&self, tenant: TenantId) -> Result<Vec<(FileContext, WrappedFileKey)>, Error> {
        self.select_file_keys(
            "SELECT file, version, wrapped FROM file_keys WHERE tenant = ?1 ORDER BY file, version",
            tenant,
            &[],
        )
    }

    fn select_file_keys(
        &self,
        sql: &str,
        tenant: TenantId,
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, Error> {
        let db = self.db();
        let mut statement = db.prepare_cached(sql)?;
        let tenant_bytes = tenant.as_bytes().to_vec();
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&tenant_bytes];
        all.extend_from_slice(extra);
        let rows = statement.query_map(all.as_slice(), |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, u64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (file, file_version, wrapped) = row?;
            let file = <[u8; 16]>::try_from(file.as_slice())
                .ok()
                .and_then(|bytes| FileId::from_bytes(bytes).ok())
                .ok_or_else(|| corrupt("file id"))?;
            let context = FileContext {
                tenant,
                file,
                version: FileVersion::try_from(file_version)
                    .map_err(|_| corrupt("file version"))?,
            };
            let wrapped =
                WrappedFileKey::from_bytes(&wrapped).map_err(|_| corrupt("wrapped file key"))?;
            out.push((context, wrapped));
        }
        Ok(out)
    }
}

fn key_id(bytes: &[u8]) -> Result<KeyId, Error> {
    <[u8; 16]>::try_from(bytes)
        .ok()
        .and_then(|bytes| KeyId::from_bytes(bytes).ok())
        .ok_or_else(|| corrupt("TIK id"))
}

/// The [`MetadataStore`] calls, blocking: SQLite answers without an async
/// runtime.
impl SqliteStore {
    /// The blocking form of [`MetadataStore::create_tenant`].
    ///
    /// # Errors
    /// As for [`MetadataStore::create_tenant`].
    pub fn create_tenant(&self, record: &TenantRecord, wraps: &[TikWrap]) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO tenants (tenant, kind, state, tik_id, current_tik, tag)
             VALUES (?1, ?2, 'active', ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![
                record.tenant.as_bytes(),
                record.kind.as_stored(),
                record.tik_id.as_bytes(),
                u32::from(record.current_tik),
                record.tag.as_ref().map(RecordTag::as_bytes)
            ],
        )?;
        if inserted == 0 {
            return Err(Error::TenantExists(record.tenant));
        }
        for (slot, root) in record.slots.iter().enumerate() {
            let _ = tx.execute(
                "INSERT INTO root_key_slots (tenant, slot, role, key, revoked) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![record.tenant.as_bytes(), slot, root.role.as_stored(), root.key.to_string(), root.revoked],
            )?;
        }
        let _ = tx.execute(
            "INSERT INTO tik_versions (tenant, version) VALUES (?1, ?2)",
            params![record.tenant.as_bytes(), u32::from(record.current_tik)],
        )?;
        Self::insert_wraps(&tx, record.tenant, wraps)?;
        tx.commit()?;
        Ok(())
    }

    /// The blocking form of [`MetadataStore::tenant`].
    ///
    /// # Errors
    /// As for [`MetadataStore::tenant`].
    pub fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>, Error> {
        let mut db = self.db();
        // The row and its slots from one snapshot: a change committed by
        // another process in between would otherwise give a mixture, which
        // fails its tag.
        let db = db.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let row = db
            .query_row(
                "SELECT kind, state, tik_id, current_tik, tag FROM tenants WHERE tenant = ?1",
                params![tenant.as_bytes()],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, Option<Vec<u8>>>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((kind, state, tik_id, current, tag)) = row else {
            return Ok(None);
        };
        let mut statement = db.prepare_cached(
            "SELECT role, key, revoked FROM root_key_slots WHERE tenant = ?1 ORDER BY slot",
        )?;
        let rows = statement.query_map(params![tenant.as_bytes()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, bool>(2)?,
            ))
        })?;
        let mut slots = Vec::new();
        for row in rows {
            let (role, key, revoked) = row?;
            let role = SlotRole::from_stored(&role).ok_or_else(|| corrupt("root key role"))?;
            let key = key.parse().map_err(|_| corrupt("root key reference"))?;
            slots.push(RootKeySlot { role, key, revoked });
        }
        Ok(Some(TenantRecord {
            tenant,
            kind: TenantKind::from_stored(&kind).ok_or_else(|| corrupt("tenant kind"))?,
            state: TenantState::from_stored(&state).ok_or_else(|| corrupt("tenant state"))?,
            tik_id: key_id(&tik_id)?,
            current_tik: version(current)?,
            slots,
            tag: tag
                .map(|tag| RecordTag::from_slice(&tag).ok_or_else(|| corrupt("tenant record tag")))
                .transpose()?,
        }))
    }

    /// The blocking form of [`MetadataStore::tenants`].
    ///
    /// # Errors
    /// As for [`MetadataStore::tenants`].
    pub fn tenants(&self) -> Result<Vec<TenantId>, Error> {
        let db = self.db();
        let mut statement = db.prepare("SELECT tenant FROM tenants ORDER BY tenant")?;
        let rows = statement.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
        let mut tenants = Vec::new();
        for row in rows {
            let bytes = row?;
            tenants.push(
                <[u8; 16]>::try_from(bytes.as_slice())
                    .ok()
                    .and_then(|bytes| TenantId::from_bytes(bytes).ok())
                    .ok_or_else(|| corrupt("tenant id"))?,
            );
        }
        Ok(tenants)
    }

    /// The blocking form of [`MetadataStore::tik_versions`].
    ///
    /// # Errors
    /// As for [`MetadataStore::tik_versions`].
    pub fn tik_versions(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT version FROM tik_versions WHERE tenant = ?1 ORDER BY version",
        )?;
        let rows = statement.query_map(params![tenant.as_bytes()], |row| row.get::<_, u32>(0))?;
        rows.map(|row| version(row?)).collect()
    }

    /// The blocking form of [`MetadataStore::tik_wraps`].
    ///
    /// # Errors
    /// As for [`MetadataStore::tik_wraps`].
    pub fn tik_wraps(&self, tenant: TenantId, tik: KeyVersion) -> Result<Vec<TikWrap>, Error> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT slot, wrapped FROM tik_wraps WHERE tenant = ?1 AND version = ?2 ORDER BY slot",
        )?;
        let rows = statement.query_map(params![tenant.as_bytes(), u32::from(tik)], |row| {
            Ok(TikWrap {
                version: tik,
                slot: row.get(0)?,
                wrapped: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The blocking form of [`MetadataStore::add_tik_version`].
    ///
    /// # Errors
    /// As for [`MetadataStore::add_tik_version`].
    pub fn add_tik_version(
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
        let mut db = self.db();
        let tx = db.transaction()?;
        Self::retag(&tx, tenant, tag)?;
        let changed = tx.execute(
            "UPDATE tenants SET current_tik = ?3 WHERE tenant = ?1 AND current_tik = ?2",
            params![tenant.as_bytes(), u32::from(previous), u32::from(new)],
        )?;
        if changed == 0 {
            return Err(Error::Conflict(
                "the tenant's TIK changed meanwhile (another roll, or a purge)",
            ));
        }
        let _ = tx.execute(
            "INSERT INTO tik_versions (tenant, version) VALUES (?1, ?2)",
            params![tenant.as_bytes(), u32::from(new)],
        )?;
        Self::insert_wraps(&tx, tenant, wraps)?;
        tx.commit()?;
        Ok(())
    }

    /// The blocking form of [`MetadataStore::replace_root_key`].
    ///
    /// # Errors
    /// As for [`MetadataStore::replace_root_key`].
    pub fn replace_root_key(
        &self,
        tenant: TenantId,
        slot: u8,
        key: &RootKeyRef,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let versions: u64 = tx.query_row(
            "SELECT count(*) FROM tik_versions WHERE tenant = ?1",
            params![tenant.as_bytes()],
            |row| row.get(0),
        )?;
        if versions != wraps.len() as u64 || wraps.iter().any(|w| w.slot != slot) {
            return Err(Error::Conflict(
                "the tenant's TIK versions changed during the root key roll; run it again",
            ));
        }
        Self::retag(&tx, tenant, tag)?;
        if tx.execute(
            "UPDATE root_key_slots SET key = ?3 WHERE tenant = ?1 AND slot = ?2",
            params![tenant.as_bytes(), slot, key.to_string()],
        )? != 1
        {
            return Err(Error::Corrupt("root key slot"));
        }
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
                return Err(Error::Corrupt("TIK version without a wrap in this slot"));
            }
        }
        drop(update);
        tx.commit()?;
        Ok(())
    }

    /// The blocking form of [`MetadataStore::set_revoked`].
    ///
    /// # Errors
    /// As for [`MetadataStore::set_revoked`].
    pub fn set_revoked(
        &self,
        tenant: TenantId,
        slot: u8,
        revoked: bool,
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        Self::retag(&tx, tenant, tag)?;
        let changed = tx.execute(
            "UPDATE root_key_slots SET revoked = ?3 WHERE tenant = ?1 AND slot = ?2",
            params![tenant.as_bytes(), slot, revoked],
        )?;
        if changed == 0 {
            return Err(Error::Misuse("no such root key slot"));
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces an active tenant's tag `tag.previous` by `tag.next`.
    fn retag(tx: &Transaction<'_>, tenant: TenantId, tag: &TagUpdate) -> Result<(), Error> {
        let changed = tx.execute(
            "UPDATE tenants SET tag = ?3 WHERE tenant = ?1 AND state = 'active' AND tag = ?2",
            params![
                tenant.as_bytes(),
                tag.previous.as_bytes(),
                tag.next.as_bytes()
            ],
        )?;
        if changed == 0 {
            return Err(Error::Conflict(
                "the tenant's record changed meanwhile (another change, or a purge)",
            ));
        }
        Ok(())
    }

    /// The blocking form of [`MetadataStore::retire_tik_version`].
    ///
    /// # Errors
    /// As for [`MetadataStore::retire_tik_version`].
    pub fn retire_tik_version(&self, tenant: TenantId, tik: KeyVersion) -> Result<(), Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let _ = tx.execute(
            "DELETE FROM tik_wraps WHERE tenant = ?1 AND version = ?2",
            params![tenant.as_bytes(), u32::from(tik)],
        )?;
        let _ = tx.execute(
            "DELETE FROM tik_versions WHERE tenant = ?1 AND version = ?2",
            params![tenant.as_bytes(), u32::from(tik)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The blocking form of [`MetadataStore::purge_tenant`].
    ///
    /// # Errors
    /// As for [`MetadataStore::purge_tenant`].
    pub fn purge_tenant(&self, tenant: TenantId) -> Result<u64, Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let versions = tx.execute(
            "DELETE FROM tik_wraps WHERE tenant = ?1",
            params![tenant.as_bytes()],
        )?;
        let _ = versions;
        let destroyed = tx.execute(
            "DELETE FROM tik_versions WHERE tenant = ?1",
            params![tenant.as_bytes()],
        )?;
        let _ = tx.execute(
            "UPDATE tenants SET state = 'purged', tag = NULL WHERE tenant = ?1",
            params![tenant.as_bytes()],
        )?;
        tx.commit()?;
        db::checkpoint(&db)?;
        Ok(destroyed as u64)
    }
}

#[async_trait::async_trait]
impl MetadataStore for SqliteStore {
    async fn create_tenant(&self, record: &TenantRecord, wraps: &[TikWrap]) -> Result<(), Error> {
        SqliteStore::create_tenant(self, record, wraps)
    }

    async fn tenant(&self, tenant: TenantId) -> Result<Option<TenantRecord>, Error> {
        SqliteStore::tenant(self, tenant)
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, Error> {
        SqliteStore::tenants(self)
    }

    async fn tik_versions(&self, tenant: TenantId) -> Result<Vec<KeyVersion>, Error> {
        SqliteStore::tik_versions(self, tenant)
    }

    async fn tik_wraps(&self, tenant: TenantId, tik: KeyVersion) -> Result<Vec<TikWrap>, Error> {
        SqliteStore::tik_wraps(self, tenant, tik)
    }

    async fn add_tik_version(
        &self,
        tenant: TenantId,
        previous: KeyVersion,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        SqliteStore::add_tik_version(self, tenant, previous, wraps, tag)
    }

    async fn replace_root_key(
        &self,
        tenant: TenantId,
        slot: u8,
        key: &RootKeyRef,
        wraps: &[TikWrap],
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        SqliteStore::replace_root_key(self, tenant, slot, key, wraps, tag)
    }

    async fn set_revoked(
        &self,
        tenant: TenantId,
        slot: u8,
        revoked: bool,
        tag: &TagUpdate,
    ) -> Result<(), Error> {
        SqliteStore::set_revoked(self, tenant, slot, revoked, tag)
    }

    async fn retire_tik_version(&self, tenant: TenantId, tik: KeyVersion) -> Result<(), Error> {
        SqliteStore::retire_tik_version(self, tenant, tik)
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<u64, Error> {
        SqliteStore::purge_tenant(self, tenant)
    }
}

/// The [`WrappedKeyIndex`] calls, blocking: SQLite answers without an async
/// runtime.
impl SqliteStore {
    /// The blocking form of [`WrappedKeyIndex::older_than`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::older_than`].
    pub fn older_than(
        &self,
        tenant: TenantId,
        tik: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.select_file_keys(
            "SELECT file, version, wrapped FROM file_keys WHERE tenant = ?1 AND tik_version < ?2
             ORDER BY file, version LIMIT ?3",
            tenant,
            &[&u32::from(tik), &limit],
        )
    }

    /// The blocking form of [`WrappedKeyIndex::count_older_than`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::count_older_than`].
    pub fn count_older_than(&self, tenant: TenantId, tik: KeyVersion) -> Result<u64, Error> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM file_keys WHERE tenant = ?1 AND tik_version < ?2",
            params![tenant.as_bytes(), u32::from(tik)],
            |row| row.get(0),
        )?)
    }

    /// The blocking form of [`WrappedKeyIndex::claim_retirement`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::claim_retirement`].
    pub fn claim_retirement(&self, tenant: TenantId, tik: KeyVersion) -> Result<u64, Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let references: u64 = tx.query_row(
            "SELECT count(*) FROM file_keys WHERE tenant = ?1 AND tik_version = ?2",
            params![tenant.as_bytes(), u32::from(tik)],
            |row| row.get(0),
        )?;
        if references == 0 {
            let _ = tx.execute(
                "INSERT OR IGNORE INTO retired_tiks (tenant, version) VALUES (?1, ?2)",
                params![tenant.as_bytes(), u32::from(tik)],
            )?;
        }
        tx.commit()?;
        Ok(references)
    }

    /// The blocking form of [`WrappedKeyIndex::replace`].
    ///
    /// # Errors
    /// As for [`WrappedKeyIndex::replace`].
    pub fn replace(&self, batch: &[Rewrapped]) -> Result<u64, Error> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut replaced = 0;
        {
            let mut update = tx.prepare_cached(
                // Never under a version claimed for retirement meanwhile.
                "UPDATE file_keys SET wrapped = ?5, tik_version = ?6
                 WHERE tenant = ?1 AND file = ?2 AND version = ?3 AND wrapped = ?4
                 AND NOT EXISTS (SELECT 1 FROM retired_tiks WHERE tenant = ?1 AND version = ?6)",
            )?;
            for entry in batch {
                let context = &entry.context;
                replaced += update.execute(params![
                    context.tenant.as_bytes(),
                    context.file.as_bytes(),
                    u64::from(context.version),
                    entry.old.as_ref(),
                    entry.new.as_ref(),
                    u32::from(entry.new.kek_version())
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(replaced)
    }
}

#[async_trait::async_trait]
impl WrappedKeyIndex for SqliteStore {
    async fn older_than(
        &self,
        tenant: TenantId,
        tik: KeyVersion,
        limit: usize,
    ) -> Result<Vec<(FileContext, WrappedFileKey)>, Error> {
        SqliteStore::older_than(self, tenant, tik, limit)
    }

    async fn count_older_than(&self, tenant: TenantId, tik: KeyVersion) -> Result<u64, Error> {
        SqliteStore::count_older_than(self, tenant, tik)
    }

    async fn claim_retirement(&self, tenant: TenantId, tik: KeyVersion) -> Result<u64, Error> {
        SqliteStore::claim_retirement(self, tenant, tik)
    }

    async fn replace(&self, batch: &[Rewrapped]) -> Result<u64, Error> {
        SqliteStore::replace(self, batch)
    }
}
