//! What a record says happened: the [`Event`]s, the file and key
//! references they carry, and the schema version that defined each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Text;

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
    /// A file version was deleted: its record (and with it its wrapped
    /// key) removed from the catalog, for a principal. Its key is erased
    /// for good once its TIK version is retired (`tik_retired`).
    FileDeleted {
        /// The file version.
        file: FileRef,
        /// Who deleted it.
        principal: Text,
    },
    /// The operator set a customer-key tenant's fallback policy (when user
    /// requests may use the availability key during an outage of the
    /// customer keys), or declared or ended an outage window under the
    /// `declared` policy. (Schema version 6.)
    FallbackPolicySet {
        /// `automatic`, `declared` or `never`.
        policy: Text,
        /// The declared window, if any: its start and end, in seconds since
        /// the Unix epoch.
        window: Option<[u64; 2]>,
        /// Why the window was declared.
        reason: Option<Text>,
    },
    /// A file version's key was handed out of the service to a principal,
    /// to decrypt the version on their side (a meeting participant's
    /// client): from then on they hold what decrypts that version, whatever
    /// is revoked later. (Schema version 8.)
    FileKeyDelivered {
        /// The file version.
        file: FileRef,
        /// Who received the key.
        recipient: Text,
    },
    /// A move of mailbox items through the upload service, complete, as one
    /// side records it: the source machine in its own journal, and the
    /// service in its trail. Both name the move; each names the other
    /// side. (Schema version 8.)
    MailboxMove {
        /// The move's id, the same on both sides.
        move_id: Text,
        /// Who wrote the record: `source` or `service`.
        side: Text,
        /// The other side: the service's address (on the source), the
        /// source as it named itself (on the service).
        peer: Text,
        /// Items stored.
        items: u64,
        /// Plaintext bytes stored.
        bytes: u64,
        /// Items that failed in the run that completed the move.
        failures: u64,
        /// Entries left alone (links, special files, other file systems).
        skipped: u64,
        /// From the move's start to its end, in milliseconds.
        duration_ms: u64,
        /// Plaintext bytes per second over that time.
        bytes_per_second: u64,
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
    /// The log was begun anew because the log before it was damaged (see
    /// [`crate::log::restart`]): that log was set aside whole, as evidence,
    /// and this line, the first record of the new log, says where and what
    /// was found. Written by the log; refused from callers like
    /// [`Event::Checkpoint`]. (Schema version 4.)
    LogRestarted {
        /// The id of the log set aside.
        previous_log: Text,
        /// Where it was set aside, relative to the parent of the log's
        /// directory.
        set_aside: Text,
        /// Its lines whose chain verified, from its start, before the
        /// damage.
        lines_verified: u64,
        /// The chain head after them (hex).
        verified_head: Text,
        /// The damage found.
        damage: Text,
        /// Its segment files, their bytes, and the SHA-256 (hex) of their
        /// contents in order, each preceded by its name and length: what
        /// shows it was set aside intact.
        segments: u64,
        /// Bytes in its segment files.
        bytes: u64,
        /// The digest.
        sha256: Text,
    },
    /// A tenant's key metadata failed its authentication (it was edited in
    /// the database by someone without the tenant key), or its tenant key
    /// is missing, and it was refused rather than obeyed. The outcome says
    /// why. (Schema version 3.)
    MetadataRejected {},
    /// An operator accepted a tenant's record as the database holds it,
    /// although it is not the newest the tenant had (a backup of the key
    /// metadata was restored): it is tagged anew and obeyed from then on.
    /// (Schema version 9.)
    TenantRecordAccepted {},
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

impl Event {
    /// The event's type as the log writes it (its `type` member):
    /// `file_key_released`, `availability_key_fallback`, ….
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::FileKeyGenerated { .. } => "file_key_generated",
            Self::FileKeyWrapped { .. } => "file_key_wrapped",
            Self::FileKeyReleased { .. } => "file_key_released",
            Self::ReleaseDenied { .. } => "release_denied",
            Self::WriteDenied { .. } => "write_denied",
            Self::TikRolled { .. } => "tik_rolled",
            Self::FileKeysRewrapped { .. } => "file_keys_rewrapped",
            Self::RootKeyRolled { .. } => "root_key_rolled",
            Self::AvailabilityKeyFallback { .. } => "availability_key_fallback",
            Self::CustomerKeyRevoked { .. } => "customer_key_revoked",
            Self::TenantPurged { .. } => "tenant_purged",
            Self::FileSealed { .. } => "file_sealed",
            Self::FileOpened { .. } => "file_opened",
            Self::FileKeyDelivered { .. } => "file_key_delivered",
            Self::MailboxMove { .. } => "mailbox_move",
            Self::FileDeleted { .. } => "file_deleted",
            Self::FallbackPolicySet { .. } => "fallback_policy_set",
            Self::DataMove { .. } => "data_move",
            Self::Checkpoint { .. } => "checkpoint",
            Self::LogRecovered { .. } => "log_recovered",
            Self::LogRestarted { .. } => "log_restarted",
            Self::MetadataRejected { .. } => "metadata_rejected",
            Self::TenantRecordAccepted { .. } => "tenant_record_accepted",
            Self::TikRetired { .. } => "tik_retired",
            Self::BlobCopyPassedOver { .. } => "blob_copy_passed_over",
            Self::GarbageCollected { .. } => "garbage_collected",
            Self::BlobsScrubbed { .. } => "blobs_scrubbed",
            Self::Custom { .. } => "custom",
        }
    }

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
            | Self::FileDeleted { file, .. }
            | Self::FileKeyDelivered { file, .. }
            | Self::BlobCopyPassedOver { file, .. } => Some(file),
            Self::TikRolled { .. }
            | Self::FileKeysRewrapped { .. }
            | Self::RootKeyRolled { .. }
            | Self::AvailabilityKeyFallback { .. }
            | Self::CustomerKeyRevoked { .. }
            | Self::FallbackPolicySet { .. }
            | Self::TenantPurged { .. }
            | Self::DataMove { .. }
            | Self::MailboxMove { .. }
            | Self::Checkpoint { .. }
            | Self::LogRecovered { .. }
            | Self::LogRestarted { .. }
            | Self::MetadataRejected {}
            | Self::TenantRecordAccepted {}
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
            Self::TenantRecordAccepted {} => 9,
            Self::FileKeyDelivered { .. } | Self::MailboxMove { .. } => 8,
            Self::FallbackPolicySet { .. } => 6,
            Self::FileDeleted { .. } => 5,
            Self::LogRestarted { .. } => 4,
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
