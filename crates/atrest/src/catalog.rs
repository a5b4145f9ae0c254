//! The catalog: the one home of file records.
//!
//! It maps (tenant, file name) to a file id and its versions, and holds
//! each version's [`FileRecord`] — the wrapped file key, the TIK version it
//! is under, sizes, format parameters and the blob's name. There is exactly
//! one stored copy of each wrapped key, here: the catalog *is* the
//! [`WrappedKeyIndex`] that re-wrapping updates in place and that retiring
//! a TIK version asks.
//!
//! # Seals in progress, and why no retire can orphan a key
//!
//! A seal is recorded before its key exists:
//!
//! 1. [`Catalog::begin_seal`] allocates the next version of the name (one
//!    transaction: two seals of one name at once get two versions) and
//!    records the seal as *in progress*, with its blob name and no key;
//! 2. the file key is made under the tenant's current TIK and
//!    [`Catalog::attach_key`] stores its wrap in the in-progress row;
//! 3. the blob is written completely and made durable;
//! 4. [`Catalog::commit_seal`] marks the version sealed. Only sealed
//!    versions are visible to [`Catalog::record`] and [`Catalog::records`],
//!    so a record never points at a missing blob.
//!
//! In-progress rows take part in the index: a re-wrap moves their wrapped
//! keys to the new TIK version like any other (the commit keeps the
//! re-wrapped key), and [`WrappedKeyIndex::claim_retirement`] counts them,
//! as well as every seal still choosing its key (between steps 1 and 2)
//! against every version. A version is claimed for retirement only when
//! nothing counts against it, and the claim is recorded in the same
//! transaction: from then on [`Catalog::attach_key`] refuses keys under it
//! (a process whose cached metadata still names it as current gets
//! [`CatalogError::TikRetired`], and [`crate::Files::seal`] makes the key
//! again under the current version). So a TIK version is destroyed only
//! when no sealed record and no seal in flight uses it, whatever another
//! process has cached. A seal whose process died stays in
//! progress until [`crate::Files::collect_abandoned_seals`] removes it (and
//! its blob), and until then keeps its TIK version from being retired.
//!
//! The backends live in crates of their own: `atrest-sqlite` (the embedded
//! default) and `atrest-postgres`. They read a record's columns into a
//! [`stored::StoredRecord`] and decode it the one way every backend shares.

use atrest_filekey::{FileContext, FileVersion, TenantId, WrappedFileKey};
use atrest_tenant::{RecordTag, WrappedKeyIndex};

use crate::blob::{BlobDigest, BlobName};
use crate::{CatalogError, Error, FileRecord};

pub mod stored;

/// Longest file or tenant name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Checks a file or tenant name against the naming rule: 1 to
/// [`MAX_NAME_CHARS`] characters (not bytes), no control or invisible
/// formatting characters (zero-width spaces and joiners, byte-order marks,
/// bidi controls), and no white space at either end — so two names that
/// look alike are the same name; and, since names may read as paths
/// (`reports/2026/q1.pdf`), no `/`-separated part that is empty, `.` or
/// `..`.
///
/// # Errors
/// [`CatalogError::InvalidName`] naming the rule broken.
pub fn check_name(what: &'static str, name: &str) -> Result<(), CatalogError> {
    let invalid = |rule| CatalogError::InvalidName {
        what,
        name: name.chars().take(MAX_NAME_CHARS + 1).collect(),
        rule,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("it is longer than 256 characters"));
    }
    if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(invalid(
            "it contains a control or invisible formatting character",
        ));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(invalid("it starts or ends with white space"));
    }
    // Two names that print alike are one name: only the composed form
    // (NFC) is kept; see [`normalize_name`].
    if !unicode_normalization::is_nfc(name) {
        return Err(invalid(
            "it is not in Unicode normalization form C (compose it first)",
        ));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("a '/'-separated part of it is empty, '.' or '..'"));
    }
    Ok(())
}

/// `name` in Unicode normalization form C (composed: "café" written with
/// an accent combined onto the "e" becomes the one character "é"), the
/// only form [`check_name`] accepts: names that print alike are the same
/// name. Borrowed when it is in that form already.
pub fn normalize_name(name: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization as _;
    if unicode_normalization::is_nfc_quick(name.chars()) == unicode_normalization::IsNormalized::Yes
    {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.nfc().collect())
    }
}

/// Format characters that render as nothing (Unicode general category Cf
/// in common use).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A seal in progress, as [`Catalog::begin_seal`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealTicket {
    /// The tenant, file id and the version allocated to this seal: the
    /// context bound to the file key and to every segment of the blob.
    pub context: FileContext,
    /// The file's name.
    pub name: String,
    /// The blob the ciphertext goes to.
    pub blob: BlobName,
}

/// The condition on a file's newest sealed version under which a new
/// version may be committed: optimistic concurrency, checked by
/// [`Catalog::commit_seal`] in the commit's own transaction (and by
/// [`crate::Files`] before the upload begins, to refuse early).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// Commit whatever the file holds.
    #[default]
    Any,
    /// Only if the file has no sealed version yet (HTTP's
    /// `If-None-Match: *`): a create that never replaces.
    Absent,
    /// Only if the file has a sealed version (HTTP's `If-Match: *`).
    Present,
    /// Only if the file's newest sealed version is one of these (HTTP's
    /// `If-Match` with entity tags): a replace of what the writer read.
    NewestAmong(Vec<FileVersion>),
}

impl Precondition {
    /// Whether it holds for a file whose newest sealed version is
    /// `newest` (`None`: no sealed version).
    pub fn holds(&self, newest: Option<FileVersion>) -> bool {
        match self {
            Self::Any => true,
            Self::Absent => newest.is_none(),
            Self::Present => newest.is_some(),
            Self::NewestAmong(versions) => newest.is_some_and(|newest| versions.contains(&newest)),
        }
    }
}

/// A media type (`type/subtype`, with parameters), as HTTP's
/// `Content-Type` gives it: what a file version is served with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaType(String);

/// The rule [`MediaType::new`] applies.
pub const MEDIA_TYPE_RULE: &str = "a media type is type/subtype (letters, digits and !#$&^_.+-), \
    optionally followed by ;-separated parameters, at most 255 printable ASCII characters";

impl MediaType {
    /// `text` if it is a media type by [`MEDIA_TYPE_RULE`] (leading and
    /// trailing blanks removed).
    ///
    /// # Errors
    /// [`CatalogError::InvalidName`] (what: `media type`).
    pub fn new(text: &str) -> Result<Self, CatalogError> {
        let text = text.trim_matches([' ', '\t']);
        if Self::valid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(CatalogError::InvalidName {
                what: "media type",
                name: text.to_owned(),
                rule: MEDIA_TYPE_RULE,
            })
        }
    }

    fn valid(text: &str) -> bool {
        let token = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        let (essence, parameters) = text.split_once(';').unwrap_or((text, ""));
        let essence_ok = essence
            .trim_end_matches([' ', '\t'])
            .split_once('/')
            .is_some_and(|(kind, subtype)| token(kind) && token(subtype));
        // Parameters: printable ASCII, blanks and tabs (quoted strings
        // included), nothing that could end a header line.
        let parameters_ok = parameters
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        text.len() <= 255 && essence_ok && parameters_ok
    }

    /// The media type's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a new version is sealed with besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewVersion {
    /// The media type it is served with (kept in its authenticated
    /// record); `None`: none given.
    pub media_type: Option<MediaType>,
    /// The condition on the file's newest version under which it is
    /// committed.
    pub precondition: Precondition,
}

/// What a completed seal wrote, and the condition of its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// Plaintext length in bytes.
    pub plaintext_len: u64,
    /// Blob length in bytes.
    pub blob_len: u64,
    /// The SHA-256 digest of the blob.
    pub blob_sha256: Option<BlobDigest>,
    /// The stream's segment size in bytes.
    pub segment_size: u32,
    /// The stream format version.
    pub format: u8,
    /// The version's media type, if one was given.
    pub media_type: Option<MediaType>,
    /// When the seal completed, in seconds since the Unix epoch (at most
    /// [`FileRecord::LATEST_SEAL_TIME`]): covered by the tag, and stored
    /// as given.
    pub sealed_at: u64,
    /// The tag of the record this seal commits, under the tenant's
    /// metadata key (see [`FileRecord::tag`]).
    pub tag: RecordTag,
    /// The condition on the file's newest sealed version under which the
    /// commit may happen; checked in the commit's transaction.
    pub precondition: Precondition,
}

/// A seal still in progress (or abandoned by a process that died).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealInProgress {
    /// What was allocated to it.
    pub ticket: SealTicket,
    /// When it began, in seconds since the Unix epoch.
    pub started_at: u64,
    /// Who began it, if the catalog handle that did was given an owner
    /// (the lease of the process, in a deployment): what tells a seal
    /// still running from one whose process died. Not authenticated: a
    /// writer of the catalog can change it, which can only make a seal
    /// collected early (its upload then fails at its commit) or late.
    pub owner: Option<String>,
}

/// A tenant's name as a [`Catalog`] keeps it: the name, the tenant, and the
/// tag that binds them under the tenant's metadata key (`None` for a name
/// given before names were tagged). Nothing may use the mapping before
/// [`crate::Files::authenticate_name`] has checked the tag: a writer of the
/// database can swap names between tenants, but not tags it cannot make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName {
    /// The name.
    pub name: String,
    /// The tenant it names.
    pub tenant: TenantId,
    /// Its tag.
    pub tag: Option<RecordTag>,
}

/// The home of file records; see the [module documentation](self).
///
/// Every method is atomic; implementations must behave correctly with
/// several processes on one database (allocate versions in one
/// transaction, update wrapped keys only if unchanged since read).
#[async_trait::async_trait]
pub trait Catalog: WrappedKeyIndex + Send + Sync {
    /// Gives tenant `tenant` the name `name`, with its tag
    /// ([`crate::Files::name_tag`]).
    ///
    /// # Errors
    /// [`CatalogError::TenantNameTaken`]; [`CatalogError::InvalidName`];
    /// [`CatalogError::Database`].
    async fn name_tenant(&self, name: &str, tenant: TenantId, tag: &RecordTag)
    -> Result<(), Error>;

    /// Gives the untagged name `name` of `tenant` its tag: for names made
    /// before names were tagged. A name that has a tag, or names another
    /// tenant, is left as it is; returns whether the tag was set.
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn tag_tenant_name(
        &self,
        name: &str,
        tenant: TenantId,
        tag: &RecordTag,
    ) -> Result<bool, Error>;

    /// Removes a tenant name (for example after its tenant could not be
    /// created).
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn unname_tenant(&self, name: &str) -> Result<(), Error>;

    /// The tenant named `name`, if any, as stored (authenticate it before
    /// use).
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn tenant_named(&self, name: &str) -> Result<Option<TenantName>, Error>;

    /// Every tenant name, by name, as stored.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn tenant_names(&self) -> Result<Vec<TenantName>, Error>;

    /// The name of tenant `tenant`, if it has one, as stored.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn tenant_name(&self, tenant: TenantId) -> Result<Option<TenantName>, Error>;

    /// Removes the sealed version `version` of file `name` of `tenant`, or
    /// every sealed version of it (`None`), in one transaction; returns
    /// the records removed (their blobs are no longer named). A name left
    /// with no version (sealed or in progress) is removed too: a file made
    /// again under it gets a new id. Seals in progress are left alone.
    ///
    /// # Errors
    /// [`CatalogError::UnknownFile`], [`CatalogError::UnknownVersion`];
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn remove_versions(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<Vec<FileRecord>, Error>;

    /// Forgets a tenant whose keys are gone (a purged tenant): removes
    /// every record and seal in progress of its files and its name, in one
    /// transaction, so that the name can be given to a new tenant and the
    /// blobs (which no record names any more) can be removed. Returns how
    /// many file versions were forgotten. Forgetting a tenant the catalog
    /// does not know is no error.
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn forget_tenant(&self, tenant: TenantId) -> Result<u64, Error>;

    /// Records a new seal of file `name` of `tenant` into blob `blob`:
    /// allocates the file id (for a new name) and the next version, one
    /// past the highest the file was ever given (removed versions
    /// included): a version number names one version of a file for good.
    ///
    /// This and [`Catalog::attach_key`] must be visible to every other
    /// user of the catalog once they return, but need not be durable on
    /// their own: an implementation may leave them to be flushed with the
    /// next durable commit (the seal's [`Catalog::commit_seal`]), as long
    /// as no later commit can be durable without them. A crash then loses
    /// only rows of seals never committed, whose blobs no row names.
    ///
    /// # Errors
    /// [`CatalogError::InvalidName`]; [`CatalogError::Database`].
    async fn begin_seal(
        &self,
        tenant: TenantId,
        name: &str,
        blob: &BlobName,
    ) -> Result<SealTicket, Error>;

    /// Stores the wrapped key of a seal in progress, unless its TIK version
    /// was claimed for retirement.
    ///
    /// # Errors
    /// [`CatalogError::TikRetired`]; [`CatalogError::SealNotInProgress`];
    /// [`CatalogError::Database`].
    async fn attach_key(&self, seal: &SealTicket, wrapped: &WrappedFileKey) -> Result<(), Error>;

    /// Marks a seal in progress sealed, once its blob is durable, if
    /// `sealed.precondition` holds for the file's newest sealed version
    /// (checked in the same transaction, so that of two commits that each
    /// expect the version the other replaces, one fails); returns its
    /// record (with the wrapped key as stored now).
    ///
    /// # Errors
    /// [`CatalogError::SealNotInProgress`] (it was collected as abandoned,
    /// or has no key); [`CatalogError::PreconditionFailed`] (the seal is
    /// left in progress: abandon it); [`CatalogError::Database`].
    async fn commit_seal(
        &self,
        seal: &SealTicket,
        sealed: &SealedBlob,
    ) -> Result<FileRecord, Error>;

    /// Forgets a seal in progress (it failed); a sealed version is left
    /// alone.
    ///
    /// # Errors
    /// [`CatalogError::Database`].
    async fn abandon_seal(&self, seal: &SealTicket) -> Result<(), Error>;

    /// Every seal in progress, oldest first.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn seals_in_progress(&self) -> Result<Vec<SealInProgress>, Error>;

    /// The record of a sealed version of file `name` (the newest if
    /// `version` is `None`).
    ///
    /// # Errors
    /// [`CatalogError::UnknownFile`], [`CatalogError::UnknownVersion`];
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn record(
        &self,
        tenant: TenantId,
        name: &str,
        version: Option<FileVersion>,
    ) -> Result<FileRecord, Error>;

    /// Every sealed version of every file of `tenant`, by name and
    /// version.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn records(&self, tenant: TenantId) -> Result<Vec<FileRecord>, Error>;

    /// The name of every blob the catalog refers to (sealed or in
    /// progress): what garbage collection must keep.
    ///
    /// # Errors
    /// [`CatalogError::Database`], [`CatalogError::Corrupt`].
    async fn blob_names(&self) -> Result<Vec<BlobName>, Error>;

    /// [`Catalog::begin_seal`] for several files of `tenant` at once, each
    /// `(name, blob)`; all or none are recorded. An implementation should
    /// do it in one transaction (this default calls `begin_seal` for each,
    /// abandoning those begun if one fails).
    ///
    /// # Errors
    /// As for [`Catalog::begin_seal`].
    async fn begin_seals(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        let mut tickets = Vec::with_capacity(seals.len());
        for (name, blob) in seals {
            match self.begin_seal(tenant, name, blob).await {
                Ok(ticket) => tickets.push(ticket),
                Err(error) => {
                    for ticket in &tickets {
                        let _ = self.abandon_seal(ticket).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(tickets)
    }

    /// [`Catalog::attach_key`] for several seals in progress at once; all or
    /// none are stored. An implementation should do it in one transaction
    /// (this default calls `attach_key` for each).
    ///
    /// # Errors
    /// As for [`Catalog::attach_key`].
    async fn attach_keys(&self, keys: &[(&SealTicket, &WrappedFileKey)]) -> Result<(), Error> {
        for (seal, wrapped) in keys {
            self.attach_key(seal, wrapped).await?;
        }
        Ok(())
    }

    /// [`Catalog::commit_seal`] for several seals at once, once all their
    /// blobs are durable: one durable commit for the lot. An
    /// implementation should do it in one transaction (this default calls
    /// `commit_seal` for each). Returns the records in order. Each seal's
    /// precondition is checked against the versions committed before it
    /// (earlier seals of the call included); one that fails fails the call
    /// (so `Files::seal_batch` gives its items none).
    ///
    /// # Errors
    /// As for [`Catalog::commit_seal`].
    async fn commit_seals(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let mut records = Vec::with_capacity(seals.len());
        for (seal, sealed) in seals {
            records.push(self.commit_seal(seal, sealed).await?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::{FileVersion, MediaType, Precondition};

    #[test]
    fn media_types_are_type_slash_subtype_with_printable_parameters() {
        for good in [
            "text/plain",
            "text/plain; charset=utf-8",
            " image/svg+xml ",
            "application/vnd.ms-excel",
            "multipart/form-data; boundary=\"a b\"",
        ] {
            let parsed = MediaType::new(good).unwrap();
            assert_eq!(parsed.as_str(), good.trim());
        }
        for bad in [
            "",
            "text",
            "/plain",
            "text/",
            "text/plain\r\nSet-Cookie: a=b",
            "text/pl ain",
            "tëxt/plain",
            "text/plain; x=\u{7f}",
            &format!("text/{}", "a".repeat(300)),
        ] {
            assert!(MediaType::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn preconditions_hold_by_the_newest_version() {
        let (v1, v2) = (FileVersion::FIRST, FileVersion::try_from(2).unwrap());
        assert!(Precondition::Any.holds(None));
        assert!(Precondition::Absent.holds(None));
        assert!(!Precondition::Absent.holds(Some(v1)));
        assert!(!Precondition::Present.holds(None));
        assert!(Precondition::Present.holds(Some(v2)));
        let among = Precondition::NewestAmong(vec![v1]);
        assert!(among.holds(Some(v1)));
        assert!(!among.holds(Some(v2)));
        assert!(!among.holds(None));
        assert!(!Precondition::NewestAmong(Vec::new()).holds(Some(v1)));
    }
}
