//! Where tenant key metadata is kept ([`MetadataStore`]), what it holds
//! ([`TenantRecord`], [`TikWrap`]), the index of wrapped file keys that
//! rotation asks ([`WrappedKeyIndex`]), and the one decoding of a stored
//! tenant row ([`StoredTenant`]) every backend shares.
//!
//! The backends live in crates of their own: `atrest-sqlite` (the embedded
//! default) and `atrest-postgres`.

use atrest_filekey::{FileContext, KeyId, KeyVersion, TenantId, WrappedFileKey};

use crate::{Error, RootKeyRef, TenantTag};

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

/// When a user request of a customer-key tenant may be served through the
/// availability key while every customer key is unavailable (an outage,
/// never a refusal: a refusal is never served that way). Set by the
/// operator, kept in the tenant's record and covered by its tag, so a
/// writer of the database cannot change it. System operations (re-wraps,
/// root-key rolls) may use the availability key under every policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FallbackPolicy {
    /// On any outage of the customer keys (Microsoft 365's behaviour, and
    /// the default).
    #[default]
    Automatic,
    /// Only during an outage window the operator declared (and only while
    /// the customer keys are unavailable); none outside it.
    Declared(Option<OutageWindow>),
    /// Never: an outage of the customer keys is an outage of the tenant.
    Never,
}

impl FallbackPolicy {
    /// The policy's name: `automatic`, `declared` or `never`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Declared(_) => "declared",
            Self::Never => "never",
        }
    }

    /// Whether a user request may use the availability key at `now`.
    pub fn allows_users_at(&self, now: std::time::SystemTime) -> bool {
        match self {
            Self::Automatic => true,
            Self::Declared(window) => window.as_ref().is_some_and(|w| w.contains(now)),
            Self::Never => false,
        }
    }
}

/// An outage of a tenant's customer keys declared by the operator: from
/// `start` to `end` (seconds since the Unix epoch), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutageWindow {
    /// When it begins.
    pub start: u64,
    /// When it ends (after `start`).
    pub end: u64,
    /// Why (shown in the audit trail and to the operator).
    pub reason: String,
}

impl OutageWindow {
    /// The longest reason kept, in bytes.
    pub const MAX_REASON: usize = 500;

    /// Whether `now` is within the window (start included, end excluded).
    pub fn contains(&self, now: std::time::SystemTime) -> bool {
        now.duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|since| (self.start..self.end).contains(&since.as_secs()))
    }

    /// Checks the window: it ends after it begins, and its reason is
    /// given, not too long and free of control characters.
    ///
    /// # Errors
    /// [`Error::Misuse`] naming what is wrong.
    pub fn check(&self) -> Result<(), Error> {
        if self.end <= self.start {
            return Err(Error::Misuse("an outage window must end after it begins"));
        }
        if i64::try_from(self.end).is_err() {
            return Err(Error::Misuse("an outage window's end is out of range"));
        }
        let reason = self.reason.trim();
        if reason.is_empty() || self.reason.len() > Self::MAX_REASON {
            return Err(Error::Misuse(
                "an outage window needs a reason of at most 500 bytes",
            ));
        }
        if self.reason.chars().any(char::is_control) {
            return Err(Error::Misuse(
                "an outage window's reason must not hold control characters",
            ));
        }
        Ok(())
    }
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
    /// When user requests may use the availability key (customer-key
    /// tenants; [`FallbackPolicy::Automatic`] for the others, where it
    /// means nothing).
    pub fallback: FallbackPolicy,
    /// The record's authentication tag, under a record key of its own
    /// ([`TenantTag`]): what the key hierarchy checks before it obeys the
    /// record. `None` once the tenant is purged.
    pub tag: Option<TenantTag>,
}

/// A change of a tenant's record: the tag it must still have (so that of
/// two concurrent changes made from the same state, the second is refused
/// as a conflict rather than leaving a record that matches neither tag)
/// and the tag of the changed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagUpdate {
    /// The tag stored now.
    pub previous: TenantTag,
    /// The tag of the record after the change.
    pub next: TenantTag,
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

/// What changed in a key metadata store after a point in its change log
/// ([`MetadataStore::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChanges {
    /// The store's change counter now: pass it to the next
    /// [`MetadataStore::changes_since`].
    pub counter: u64,
    /// The tenants changed after the point asked about, or `None` when the
    /// store cannot tell (its log no longer reaches back that far, or the
    /// counter went backwards, as after a restore): treat every tenant as
    /// changed.
    pub tenants: Option<Vec<TenantId>>,
}

/// How many entries a store keeps in its change log: a reader that falls
/// further behind is told that every tenant changed.
pub const CHANGE_LOG_KEPT: u64 = 1024;

impl KeyChanges {
    /// The answer of a store whose log's entries after `after` name
    /// `changed` (in any order, repeats allowed) and whose counter and
    /// oldest kept entry are `counter` and `oldest`: the one reading every
    /// backend shares.
    #[must_use]
    pub fn from_log(
        after: u64,
        counter: u64,
        oldest: Option<u64>,
        mut changed: Vec<TenantId>,
    ) -> Self {
        let complete = counter >= after
            && (counter == after || oldest.is_some_and(|oldest| oldest <= after.saturating_add(1)));
        Self {
            counter,
            tenants: complete.then(|| {
                changed.sort_unstable();
                changed.dedup();
                changed
            }),
        }
    }
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
/// changing method atomic and durable: a crash in the middle of a rotation
/// or a purge leaves either the state before it or the state after it,
/// never a mixture. A purge must leave no copy of the destroyed wraps
/// where the store keeps its data (overwrite them, not only unlink them).
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

    /// Stores the tenant's fallback policy (with its declared outage
    /// window, if any), if the tag is still `tag.previous`; stores
    /// `tag.next`.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the record changed meanwhile;
    /// [`Error::Store`].
    async fn set_fallback(
        &self,
        tenant: TenantId,
        policy: &FallbackPolicy,
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

    /// The change counter and the tenants whose records, TIK versions or
    /// wraps changed after counter value `after` (0: since the store was
    /// made). Every changing method above adds its tenant to the store's
    /// change log, in its own transaction, with a counter that increases
    /// in the order the changes commit; the log keeps the last
    /// [`CHANGE_LOG_KEPT`] entries. This is how a key hierarchy learns that
    /// another process rotated, revoked or purged.
    ///
    /// # Errors
    /// [`Error::Store`].
    async fn changes_since(&self, after: u64) -> Result<KeyChanges, Error>;
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

/// A tenant's row as a [`MetadataStore`] keeps it, column by column, before
/// it is checked: what every backend reads, decoded once by
/// [`StoredTenant::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTenant {
    /// The tenant the row was read for.
    pub tenant: TenantId,
    /// [`TenantKind::as_stored`].
    pub kind: String,
    /// [`TenantState::as_stored`].
    pub state: String,
    /// The TIK id's 16 bytes.
    pub tik_id: Vec<u8>,
    /// The current TIK version.
    pub current_tik: i64,
    /// The record's tag, if any.
    pub tag: Option<Vec<u8>>,
    /// Its root-key slots, by slot number.
    pub slots: Vec<StoredSlot>,
    /// Its fallback policy, as [`StoredFallback::from_policy`] stores it.
    pub fallback: StoredFallback,
}

/// A [`FallbackPolicy`] as a [`MetadataStore`] keeps it: its name, and
/// the declared window's start, end and reason (all `None` without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFallback {
    /// [`FallbackPolicy::name`].
    pub policy: String,
    /// The window's start (seconds since the Unix epoch).
    pub start: Option<i64>,
    /// The window's end.
    pub end: Option<i64>,
    /// Why it was declared.
    pub reason: Option<String>,
}

impl StoredFallback {
    /// What a store keeps of `policy`.
    pub fn from_policy(policy: &FallbackPolicy) -> Self {
        let window = match policy {
            FallbackPolicy::Declared(Some(window)) => Some(window),
            _ => None,
        };
        let number = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        Self {
            policy: policy.name().to_owned(),
            start: window.map(|w| number(w.start)),
            end: window.map(|w| number(w.end)),
            reason: window.map(|w| w.reason.clone()),
        }
    }

    /// The policy stored.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown policy, a window beside a policy
    /// other than `declared`, or a window that is not valid.
    pub fn decode(self) -> Result<FallbackPolicy, Error> {
        let corrupt = || Error::Corrupt("tenant fallback policy");
        let window = match (self.start, self.end, self.reason) {
            (None, None, None) => None,
            (Some(start), Some(end), Some(reason)) => {
                let window = OutageWindow {
                    start: u64::try_from(start).map_err(|_| corrupt())?,
                    end: u64::try_from(end).map_err(|_| corrupt())?,
                    reason,
                };
                window.check().map_err(|_| corrupt())?;
                Some(window)
            }
            _ => return Err(corrupt()),
        };
        match (self.policy.as_str(), window) {
            ("automatic", None) => Ok(FallbackPolicy::Automatic),
            ("never", None) => Ok(FallbackPolicy::Never),
            ("declared", window) => Ok(FallbackPolicy::Declared(window)),
            _ => Err(corrupt()),
        }
    }
}

/// One root-key slot of a [`StoredTenant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSlot {
    /// [`SlotRole::as_stored`].
    pub role: String,
    /// The root key, as [`RootKeyRef`] displays it.
    pub key: String,
    /// Whether the customer revoked it.
    pub revoked: bool,
}

impl StoredTenant {
    /// The record the row holds. Its tag is not checked here: the key
    /// hierarchy authenticates the record before it obeys it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the first value that is not valid.
    pub fn decode(self) -> Result<TenantRecord, Error> {
        let slots = self
            .slots
            .into_iter()
            .map(|slot| {
                Ok(RootKeySlot {
                    role: SlotRole::from_stored(&slot.role)
                        .ok_or(Error::Corrupt("root key role"))?,
                    key: slot
                        .key
                        .parse()
                        .map_err(|_| Error::Corrupt("root key reference"))?,
                    revoked: slot.revoked,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(TenantRecord {
            tenant: self.tenant,
            kind: TenantKind::from_stored(&self.kind).ok_or(Error::Corrupt("tenant kind"))?,
            state: TenantState::from_stored(&self.state).ok_or(Error::Corrupt("tenant state"))?,
            tik_id: stored::key_id(&self.tik_id)?,
            current_tik: stored::tik_version(self.current_tik)?,
            slots,
            fallback: self.fallback.decode()?,
            tag: self
                .tag
                .map(|tag| TenantTag::from_slice(&tag).ok_or(Error::Corrupt("tenant record tag")))
                .transpose()?,
        })
    }
}

/// Decoders of single stored values, shared by every [`MetadataStore`]:
/// a value that is not valid is [`Error::Corrupt`].
pub mod stored {
    use atrest_filekey::{KeyId, KeyVersion, TenantId};

    use crate::Error;

    /// A tenant id from its 16 bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for any other value.
    pub fn tenant_id(bytes: &[u8]) -> Result<TenantId, Error> {
        <[u8; 16]>::try_from(bytes)
            .ok()
            .and_then(|bytes| TenantId::from_bytes(bytes).ok())
            .ok_or(Error::Corrupt("tenant id"))
    }

    /// A TIK id from its 16 bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for any other value.
    pub fn key_id(bytes: &[u8]) -> Result<KeyId, Error> {
        <[u8; 16]>::try_from(bytes)
            .ok()
            .and_then(|bytes| KeyId::from_bytes(bytes).ok())
            .ok_or(Error::Corrupt("TIK id"))
    }

    /// A TIK version.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for 0, a negative number or one past `u32`.
    pub fn tik_version(value: i64) -> Result<KeyVersion, Error> {
        u32::try_from(value)
            .ok()
            .and_then(|value| KeyVersion::try_from(value).ok())
            .ok_or(Error::Corrupt("TIK version"))
    }

    /// A root-key slot number.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a number outside `0..=255`.
    pub fn slot(value: i64) -> Result<u8, Error> {
        u8::try_from(value).map_err(|_| Error::Corrupt("root key slot"))
    }
}
