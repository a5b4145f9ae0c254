//! Audit records: what happened, to what, by whom, with what outcome.
//!
//! # Schema (version 3)
//!
//! A record is stored as one line of JSON (see [`crate::log`]), whose fields
//! appear in this order:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `v` | `2` or `3` | the schema version that defined the line's event |
//! | `seq` | integer | position in the log, from 0, consecutive |
//! | `prev` | 64 hex digits | SHA-256 of the previous record's line (for `seq` 0: of the genesis string) |
//! | `time` | RFC 3339, UTC, nanoseconds | when the record was made |
//! | `actor` | [`Text`] | who performed the operation (service identity, user, job) |
//! | `tenant` | [`Text`] or `null` | the tenant concerned |
//! | `request` | [`Text`] or `null` | the request id, to correlate with service logs |
//! | `outcome` | [`Outcome`] | `{"result":"success"}`, `{"result":"denied","reason":…}` or `{"result":"failed","error":…}` |
//! | `event` | [`Event`] | `{"type":…, …}`: the operation and its object ids |
//!
//! New event types or fields are added under a new schema version; readers
//! reject versions they do not know and fields they do not expect. Version 2
//! added the two events the log writes itself, [`Event::Checkpoint`] (the
//! last line of every commit batch) and [`Event::LogRecovered`]. Version 3
//! added the events the atrest libraries used to write as
//! [`Event::Custom`]: [`Event::MetadataRejected`], [`Event::TikRetired`],
//! [`Event::BlobCopyPassedOver`], [`Event::GarbageCollected`] and
//! [`Event::BlobsScrubbed`].
//!
//! A line's `v` is the version that defined its event ([`Event::schema_version`]),
//! not the version of the build that wrote it: a line means the same to every
//! reader that knows its event, a log written before version 3 stays valid as
//! it is, and `v` is fixed by the rest of the line (a reader refuses a line
//! whose `v` is not its event's).
//!
//! # No key material
//!
//! Record fields are [`Text`], integers or the event enums below. None of the
//! key types of the atrest crates implement `Display`, `Serialize`,
//! `AsRef<str>` or `Into<Text>`, so a key cannot be put into a record without
//! explicitly exposing its bytes (`expose_secret`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The newest schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 3;

/// The oldest schema version this build reads (every version from it to
/// [`SCHEMA_VERSION`]).
pub const OLDEST_SCHEMA_VERSION: u32 = 2;

/// Longest [`Text`] value, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;

/// A short piece of text in a record: an identifier, a name, a reason.
///
/// At most 1 KiB, no control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(String);

impl Text {
    /// A text.
    ///
    /// # Errors
    /// [`Error::InvalidText`] if longer than 1 KiB or if it contains control
    /// characters.
    pub fn new(text: impl Into<String>) -> Result<Self, Error> {
        let text = text.into();
        Self::validate(&text)?;
        Ok(Self(text))
    }

    /// A text from any string, never failing: control characters become
    /// spaces and the text is cut to 1 KiB (on a character boundary). Taken
    /// as it is, without a copy, when already valid.
    pub fn lossy(text: impl Into<String>) -> Self {
        let mut text = text.into();
        if text.len() > MAX_TEXT_LEN || text.chars().any(char::is_control) {
            text = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            while text.len() > MAX_TEXT_LEN {
                let _ = text.pop();
            }
        }
        Self(text)
    }

    fn validate(text: &str) -> Result<(), Error> {
        if text.len() > MAX_TEXT_LEN {
            return Err(Error::InvalidText("longer than 1 KiB"));
        }
        if text.chars().any(char::is_control) {
            return Err(Error::InvalidText("contains control characters"));
        }
        Ok(())
    }

    /// The text as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds a text from anything that displays as an identifier (tenant
    /// ids, file ids, key ids, versions).
    ///
    /// # Errors
    /// As for [`Text::new`].
    pub fn id(id: &impl IdLike) -> Result<Self, Error> {
        Self::new(id.to_string())
    }
}

/// Identifier types that may be written into audit records as text.
///
/// Implemented for the standard integer types and `str`; crates implement it
/// for their own public identifier types. Key types never implement it.
pub trait IdLike: fmt::Display {}

impl IdLike for str {}
impl IdLike for String {}
impl IdLike for u32 {}
impl IdLike for u64 {}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::validate(&text).map_err(serde::de::Error::custom)?;
        Ok(Self(text))
    }
}

/// A point in time, stored as RFC 3339 in UTC with nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        // Whole nanoseconds since the epoch, so the text form round-trips.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(UNIX_EPOCH + Duration::new(since.as_secs(), since.subsec_nanos()))
    }

    /// The time as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Self(time)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_rfc3339_nanos(self.0), f)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// How the operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// It was carried out.
    Success,
    /// A policy refused it.
    Denied {
        /// Why.
        reason: Text,
    },
    /// It failed (a key service unavailable, a tampered file, …).
    Failed {
        /// What went wrong.
        error: Text,
    },
}

/// A file version a record is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// The file id.
    pub file: Text,
    /// The file version.
    pub version: u64,
}

/// A key (and version) a record is about, by id: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// The key's id (a key id, or a provider's key label or URI).
    pub key: Text,
    /// The key's version, where it has one.
    pub version: Option<u32>,
}

/// A value in a service-defined event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A non-negative integer.
    Count(u64),
    /// A text.
    Text(Text),
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Event {
    /// A file key was generated for a file version.
    FileKeyGenerated {
        /// The file version.
        file: FileRef,
    },
    /// A file key was wrapped under a key-encryption key.
    FileKeyWrapped {
        /// The file version.
        file: FileRef,
        /// The key-encryption key.
        kek: KeyRef,
    },
    /// A file key was unwrapped and released to a principal.
    FileKeyReleased {
        /// The file version.
        file: FileRef,
        /// The key-encryption key it was unwrapped with.
        kek: KeyRef,
        /// Who received it.
        principal: Text,
    },
    /// A key-release policy refused a principal a file key.
    ReleaseDenied {
        /// The file version.
        file: FileRef,
        /// Who was refused.
        principal: Text,
    },
    /// A write policy refused a principal a new version of a file.
    WriteDenied {
        /// The file version it would have been.
        file: FileRef,
        /// Who was refused.
        principal: Text,
    },
    /// A tenant intermediate key was rolled to a new version.
    TikRolled {
        /// The new version.
        tik: KeyRef,
        /// The version it replaces as current, if any.
        previous_version: Option<u32>,
    },
    /// Wrapped file keys were re-wrapped under a newer TIK version.
    FileKeysRewrapped {
        /// The TIK version they are now under.
        tik: KeyRef,
        /// How many were re-wrapped in this batch.
        count: u64,
    },
    /// A root key was rolled: TIK versions re-wrapped under its new version.
    RootKeyRolled {
        /// The root key, at its new version.
        root_key: KeyRef,
        /// How many TIK versions were re-wrapped.
        tik_versions: u64,
    },
    /// Customer keys were unavailable and the availability key was used.
    AvailabilityKeyFallback {
        /// The customer root keys that were unavailable.
        root_keys: Vec<KeyRef>,
        /// The operation that needed the TIK.
        operation: Text,
    },
    /// The service's access to a customer root key was revoked.
    CustomerKeyRevoked {
        /// The revoked root key.
        root_key: KeyRef,
    },
    /// All key material of a tenant was destroyed (crypto-shredding).
    TenantPurged {
        /// How many TIK versions were destroyed.
        tik_versions: u64,
    },
    /// A file version was encrypted and stored.
    FileSealed {
        /// The file version.
        file: FileRef,
        /// Plaintext bytes.
        bytes: u64,
        /// Segments written.
        segments: u64,
    },
    /// A file version (or a range of it) was decrypted for a principal.
    FileOpened {
        /// The file version.
        file: FileRef,
        /// Who read it.
        principal: Text,
        /// Plaintext bytes returned.
        bytes: u64,
        /// Segments decrypted.
        segments: u64,
        /// The byte range, if not the whole file.
        range: Option<[u64; 2]>,
    },
    /// Data moved from one store to another (for example a mailbox move).
    DataMove {
        /// Where it came from.
        source: Text,
        /// Where it went.
        destination: Text,
        /// Items moved.
        items: u64,
        /// Bytes moved.
        bytes: u64,
        /// Items that failed.
        failures: u64,
        /// Items left alone: already moved by an earlier run, or not
        /// regular files (records written before this field read as 0).
        #[serde(default)]
        skipped: u64,
        /// How long it took, in milliseconds.
        duration_ms: u64,
    },
    /// A signed checkpoint of every line before this one, written by the log
    /// as the last line of each commit batch (see [`crate::log`]). The line's
    /// `seq` is the checkpoint's size and its `prev` the checkpoint's head.
    /// Only the log writes it: [`AuditLog::append`](crate::AuditLog::append)
    /// refuses it.
    Checkpoint {
        /// The signing key's name.
        key: Text,
        /// The signature blob of the checkpoint's signature line, base64: the
        /// 4-byte key id, then the 64-byte Ed25519 signature.
        signature: Text,
    },
    /// The log cut off or repaired the end of its last segment after a crash
    /// (written by the log; refused from callers like [`Event::Checkpoint`]).
    LogRecovered {
        /// Bytes cut off: a batch that was never acknowledged.
        cut_bytes: u64,
        /// Complete lines among them (records of that batch).
        cut_lines: u64,
        /// The file the cut bytes were saved to, relative to the log's
        /// directory.
        saved_as: Option<Text>,
        /// Whether the final newline of a complete, signed batch was missing
        /// and was restored.
        newline_restored: bool,
    },
    /// A tenant's key metadata failed its authentication (it was edited in
    /// the database by someone without the tenant key), or its tenant key
    /// is missing, and it was refused rather than obeyed. The outcome says
    /// why. (Schema version 3.)
    MetadataRejected {},
    /// A TIK version nothing referred to any more was retired (destroyed).
    /// (Schema version 3.)
    TikRetired {
        /// The TIK, at the retired version.
        tik: KeyRef,
    },
    /// A read of a file version passed over a copy of its blob (missing,
    /// unreachable or damaged) and was served from another: the copy needs
    /// a scrub. (Schema version 3.)
    BlobCopyPassedOver {
        /// The file version.
        file: FileRef,
        /// The blob.
        blob: Text,
        /// The location of the copy passed over (0 is the primary).
        location: u64,
        /// What was wrong with it.
        error: Text,
    },
    /// Blobs and uploads nothing refers to were removed. (Schema version 3.)
    GarbageCollected {
        /// Blobs no record names.
        orphan_blobs: u64,
        /// Their bytes.
        orphan_bytes: u64,
        /// Partial uploads (staging files) left by uploads that stopped.
        partial_uploads: u64,
        /// Their bytes.
        partial_bytes: u64,
        /// Seals in progress abandoned by processes that stopped.
        abandoned_uploads: u64,
    },
    /// The copies of every blob were checked against their records (and
    /// repaired, if asked). (Schema version 3.)
    BlobsScrubbed {
        /// Records checked.
        records: u64,
        /// Copies found missing or damaged.
        bad_copies: u64,
        /// Copies repaired.
        repaired_copies: u64,
    },
    /// A service-defined event.
    Custom {
        /// The event's kind, named by the service.
        kind: Text,
        /// Its fields, in canonical (sorted) order.
        fields: BTreeMap<Text, Value>,
    },
}

/// An audit record, before the log gives it a sequence number and chains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When it happened.
    pub time: Timestamp,
    /// Who did it.
    pub actor: Text,
    /// The tenant concerned.
    pub tenant: Option<Text>,
    /// The request id, to correlate with other logs.
    pub request: Option<Text>,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened.
    pub event: Event,
}

tokio::task_local! {
    /// The request ids [`in_request`] and [`in_requests`] set for the
    /// task running them.
    static REQUEST: Scope;
}

/// The request ids in force in a task.
#[derive(Clone, Default)]
struct Scope {
    /// The id of every record made.
    request: Option<Text>,
    /// The id of each record about one of these file versions (by file
    /// id and version).
    by_file: Option<std::sync::Arc<BTreeMap<(String, u64), Text>>>,
}

impl Scope {
    fn request_of(&self, event: &Event) -> Option<Text> {
        let by_file = self
            .by_file
            .as_ref()
            .zip(event.file())
            .and_then(|(by_file, file)| {
                by_file.get(&(file.file.as_str().to_owned(), file.version))
            });
        by_file.or(self.request.as_ref()).cloned()
    }

    /// The scope of the running task, if it has one.
    fn current() -> Option<Self> {
        REQUEST.try_with(Self::clone).ok()
    }
}

/// Runs `work` with `request` as the request id of every [`Record`] made
/// in it ([`Record::new`] takes it), and returns its output.
///
/// This is how a service ties every audit record of one request to it —
/// the key release the key hierarchy records as much as the seal or open
/// the files API records — without handing the id to each layer: await the
/// request's work (`Files::seal`, `Files::open`, …) inside. The id belongs
/// to the future, wherever the runtime polls it; a task it spawns does not
/// inherit it (wrap that task's future too), and neither does a closure
/// run on the blocking pool. Scopes nest: the inner one wins inside it.
///
/// ```
/// use atrest_audit::{in_request, Event, Record, Text};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), atrest_audit::Error> {
/// let event = Event::Custom { kind: Text::new("ping")?, fields: Default::default() };
/// let actor = Text::new("service")?;
/// let record = in_request(Text::new("req-42")?, async { Record::new(actor, event) }).await;
/// assert_eq!(record.request.as_ref().map(Text::as_str), Some("req-42"));
/// # Ok(())
/// # }
/// ```
pub async fn in_request<F: Future>(request: Text, work: F) -> F::Output {
    let scope = Scope {
        request: Some(request),
        by_file: None,
    };
    REQUEST.scope(scope, work).await
}

/// As [`in_request`] for work done for several requests at once (a batch
/// of uploads sharing their durable steps): a record about a file version
/// (its [`Event::file`]) whose file id and version are a key of `by_file`
/// gets that request's id; any other record the id of the enclosing scope,
/// if any.
pub async fn in_requests<F: Future>(by_file: BTreeMap<(String, u64), Text>, work: F) -> F::Output {
    let scope = Scope {
        request: Scope::current().and_then(|scope| scope.request),
        by_file: Some(std::sync::Arc::new(by_file)),
    };
    REQUEST.scope(scope, work).await
}

impl Event {
    /// The file version the event is about, for the events about one.
    pub fn file(&self) -> Option<&FileRef> {
        match self {
            Self::FileKeyGenerated { file, .. }
            | Self::FileKeyWrapped { file, .. }
            | Self::FileKeyReleased { file, .. }
            | Self::ReleaseDenied { file, .. }
            | Self::WriteDenied { file, .. }
            | Self::FileSealed { file, .. }
            | Self::FileOpened { file, .. }
            | Self::BlobCopyPassedOver { file, .. } => Some(file),
            Self::TikRolled { .. }
            | Self::FileKeysRewrapped { .. }
            | Self::RootKeyRolled { .. }
            | Self::AvailabilityKeyFallback { .. }
            | Self::CustomerKeyRevoked { .. }
            | Self::TenantPurged { .. }
            | Self::DataMove { .. }
            | Self::Checkpoint { .. }
            | Self::LogRecovered { .. }
            | Self::MetadataRejected {}
            | Self::TikRetired { .. }
            | Self::GarbageCollected { .. }
            | Self::BlobsScrubbed { .. }
            | Self::Custom { .. } => None,
        }
    }

    /// The schema version that introduced this event: the `v` of every
    /// line that holds it.
    pub fn schema_version(&self) -> u32 {
        match self {
            Self::MetadataRejected {}
            | Self::TikRetired { .. }
            | Self::BlobCopyPassedOver { .. }
            | Self::GarbageCollected { .. }
            | Self::BlobsScrubbed { .. } => 3,
            Self::FileKeyGenerated { .. }
            | Self::FileKeyWrapped { .. }
            | Self::FileKeyReleased { .. }
            | Self::ReleaseDenied { .. }
            | Self::WriteDenied { .. }
            | Self::TikRolled { .. }
            | Self::FileKeysRewrapped { .. }
            | Self::RootKeyRolled { .. }
            | Self::AvailabilityKeyFallback { .. }
            | Self::CustomerKeyRevoked { .. }
            | Self::TenantPurged { .. }
            | Self::FileSealed { .. }
            | Self::FileOpened { .. }
            | Self::DataMove { .. }
            | Self::Checkpoint { .. }
            | Self::LogRecovered { .. }
            | Self::Custom { .. } => 2,
        }
    }
}

impl Record {
    /// A successful event by `actor`, now, with no tenant, and the request
    /// id of the enclosing [`in_request`] if the running task has one.
    pub fn new(actor: Text, event: Event) -> Self {
        Self {
            time: Timestamp::now(),
            actor,
            tenant: None,
            request: Scope::current().and_then(|scope| scope.request_of(&event)),
            outcome: Outcome::Success,
            event,
        }
    }

    /// A record the log writes on its own account (a checkpoint, a
    /// recovery): never a request's, whichever thread commits it.
    pub(crate) fn of_log(actor: Text, event: Event) -> Self {
        Self {
            request: None,
            ..Self::new(actor, event)
        }
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: Text) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Sets the request id.
    #[must_use]
    pub fn request(mut self, request: Text) -> Self {
        self.request = Some(request);
        self
    }

    /// Sets the outcome.
    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// A record as stored: with its schema version, sequence number and the
/// hash of the previous record, fields in schema order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Schema version (see [`SCHEMA_VERSION`]).
    pub v: u32,
    /// Position in the log, from 0.
    pub seq: u64,
    /// SHA-256 of the previous record's line, in hex.
    pub prev: String,
    /// When it happened.
    pub time: Timestamp,
    /// Who did it.
    pub actor: Text,
    /// The tenant concerned.
    pub tenant: Option<Text>,
    /// The request id.
    pub request: Option<Text>,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened.
    pub event: Event,
}

impl Entry {
    #[cfg(test)]
    pub(crate) fn new(seq: u64, prev: &[u8; 32], record: &Record) -> Self {
        Self {
            v: record.event.schema_version(),
            seq,
            prev: hex::encode(prev),
            time: record.time,
            actor: record.actor.clone(),
            tenant: record.tenant.clone(),
            request: record.request.clone(),
            outcome: record.outcome.clone(),
            event: record.event.clone(),
        }
    }

    /// The record without its log position.
    pub fn into_record(self) -> Record {
        Record {
            time: self.time,
            actor: self.actor,
            tenant: self.tenant,
            request: self.request,
            outcome: self.outcome,
            event: self.event,
        }
    }
}
