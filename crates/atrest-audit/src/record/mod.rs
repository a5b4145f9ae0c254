//! Audit records: what happened, to what, by whom, with what outcome.
//!
//! # Schema (version 7)
//!
//! A record is stored as one line of JSON (see [`crate::log`]), whose fields
//! appear in this order:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `v` | `2` to `7` | the schema version that defined the line's event (7 for a line with `client_request` whose event is older) |
//! | `seq` | integer | position in the log, from 0, consecutive |
//! | `prev` | 64 hex digits | SHA-256 of the previous record's line (for `seq` 0: of the genesis string) |
//! | `time` | RFC 3339, UTC, nanoseconds | when the record was made |
//! | `actor` | [`Text`] | who performed the operation (service identity, user, job) |
//! | `tenant` | [`Text`] or `null` | the tenant concerned |
//! | `request` | [`Text`] or `null` | the request id the service made, to correlate with service logs |
//! | `client_request` | [`Text`], absent if none | the client's own id of the request (version 7) |
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
//! [`Event::BlobsScrubbed`]. Version 4 added [`Event::LogRestarted`], the
//! first line of a log begun after a damaged one was set aside; version 5
//! [`Event::FileDeleted`]; version 6 [`Event::FallbackPolicySet`]; version
//! 7 the record field `client_request`; version 8
//! [`Event::FileKeyDelivered`] and [`Event::MailboxMove`]; version 9
//! [`Event::TenantRecordAccepted`].
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

mod event;
mod scope;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::event::{Event, FileRef, KeyRef, Value};
use self::scope::Scope;
pub use self::scope::{RequestId, in_request, in_requests};
use crate::Error;

/// The newest schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 9;

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

impl Outcome {
    /// The outcome's name as the log writes it (its `result` member):
    /// `success`, `denied` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied { .. } => "denied",
            Self::Failed { .. } => "failed",
        }
    }
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
    /// The request id, to correlate with other logs: the service's.
    pub request: Option<Text>,
    /// The client's own id of the request, if it sent one (schema version
    /// 7; absent from the line otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request: Option<Text>,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened.
    pub event: Event,
}

/// The schema version that added [`Record::client_request`]: a line that
/// holds one is of at least this version.
const CLIENT_REQUEST_VERSION: u32 = 7;

/// The schema version of a line holding `event` and, or not, a client's
/// request id.
fn line_version(event: &Event, client_request: bool) -> u32 {
    let of_event = event.schema_version();
    if client_request {
        of_event.max(CLIENT_REQUEST_VERSION)
    } else {
        of_event
    }
}

impl Record {
    /// The schema version of the line that holds this record: its event's
    /// ([`Event::schema_version`]), or 7 if that is older and the record
    /// carries a client's request id.
    pub fn schema_version(&self) -> u32 {
        line_version(&self.event, self.client_request.is_some())
    }

    /// A successful event by `actor`, now, with no tenant, and the request
    /// id of the enclosing [`in_request`] if the running task has one.
    pub fn new(actor: Text, event: Event) -> Self {
        let request = Scope::current().and_then(|scope| scope.request_of(&event));
        let (request, client_request) = match request {
            Some(ids) => (Some(ids.id), ids.client),
            None => (None, None),
        };
        Self {
            time: Timestamp::now(),
            actor,
            tenant: None,
            request,
            client_request,
            outcome: Outcome::Success,
            event,
        }
    }

    /// A record the log writes on its own account (a checkpoint, a
    /// recovery): never a request's, whichever thread commits it.
    pub(crate) fn of_log(actor: Text, event: Event) -> Self {
        Self {
            request: None,
            client_request: None,
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
    /// The client's own id of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request: Option<Text>,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened.
    pub event: Event,
}

impl Entry {
    /// The schema version its fields call for (see
    /// [`Record::schema_version`]): a line whose `v` is another is refused.
    pub fn schema_version(&self) -> u32 {
        line_version(&self.event, self.client_request.is_some())
    }

    #[cfg(test)]
    pub(crate) fn new(seq: u64, prev: &[u8; 32], record: &Record) -> Self {
        Self {
            v: record.schema_version(),
            seq,
            prev: hex::encode(prev),
            time: record.time,
            actor: record.actor.clone(),
            tenant: record.tenant.clone(),
            request: record.request.clone(),
            client_request: record.client_request.clone(),
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
            client_request: self.client_request,
            outcome: self.outcome,
            event: self.event,
        }
    }
}
