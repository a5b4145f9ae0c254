//! Mailbox moves through the upload service, as both sides keep them.
//!
//! `mailbox-move --to URL` sends a directory's items to `atrest-serve` and
//! keeps, on the source machine, a **journal**: an audit log of its own
//! (hash-chained, its checkpoints signed with a key made for it) in the
//! journal directory. It records
//!
//! - `move_started` (a custom event): the move's id, the source directory,
//!   the service, the tenant and the names' prefix;
//! - `move_item` (a custom event), once per item answered: its item id, its
//!   path, size and modification time, the SHA-256 of the bytes sent, the
//!   outcome (`stored`, `already_stored`, `failed`), the HTTP status, and
//!   the file id and version the service stored;
//! - `mailbox_move` ([`Event::MailboxMove`], side `source`), once the move
//!   is complete, with its statistics.
//!
//! Every upload carries the request id `MOVE:ITEM` (`X-Request-Id`), which
//! the service's trail keeps beside each seal (`client_request`); the
//! service records the move's statistics as `mailbox_move` (side
//! `service`) when the source reports them. [`check`] compares the two
//! trails item by item (`atrest audit check-move` reads the service's
//! from its deployment's audit log).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use atrest::audit::{
    AuditLog, Entry, Event, LogConfig, Outcome, Record, SigningKey, Text, Value, VerifyingKey,
};
use serde::Serialize;
use sha2::Digest as _;
use zeroize::Zeroizing;

/// The actor of the journal's records.
pub const JOURNAL_ACTOR: &str = "mailbox-move";

/// The journal's signing key file (PKCS#8, mode 0600), in its directory.
const KEY_FILE: &str = "journal.key";
/// The journal's log, in its directory.
const LOG_DIR: &str = "log";

/// `move_started`.
pub const MOVE_STARTED: &str = "move_started";
/// `move_item`.
pub const MOVE_ITEM: &str = "move_item";

/// A new move id: 32 hex digits from the operating system's generator.
///
/// # Errors
/// If the generator fails.
pub fn new_move_id() -> std::io::Result<String> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Whether `id` is a move id.
pub fn is_move_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An item's id within its move: the first 16 hex digits of the SHA-256 of
/// its destination name. The same in every run of the move, so a seal made
/// by a run that was killed is recognised by the run that resumes it.
pub fn item_id(name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    hex::encode(digest.get(..8).unwrap_or_default())
}

/// The request id an item's upload carries: `MOVE:ITEM`.
pub fn request_id(move_id: &str, item: &str) -> String {
    format!("{move_id}:{item}")
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Its directory or key file.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its key file may be read by others.
    #[error("journal key {}: permissions {mode:03o} let others read it; chmod 600 it", path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permissions.
        mode: u32,
    },
    /// The log failed.
    #[error("journal: {0}")]
    Audit(#[from] atrest::audit::Error),
}

/// The source's journal of moves: an audit log of its own, signed with a
/// key kept beside it.
pub struct Journal {
    log: AuditLog,
    dir: PathBuf,
    verifying_key: VerifyingKey,
}

impl core::fmt::Debug for Journal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("verifying_key", &self.verifying_key.to_string())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal in `dir`, making it (and its key) if there is
    /// none; the second value says whether it was made now. Blocks.
    ///
    /// # Errors
    /// [`JournalError`].
    pub fn open(dir: &Path) -> Result<(Self, bool), JournalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key_path = dir.join(KEY_FILE);
        let log_dir = dir.join(LOG_DIR);
        let (signer, made) = match std::fs::metadata(&key_path) {
            Ok(meta) => {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                if mode & 0o077 != 0 {
                    return Err(JournalError::Exposed {
                        path: key_path,
                        mode,
                    });
                }
                let pkcs8 = Zeroizing::new(std::fs::read(&key_path).map_err(io(&key_path))?);
                (
                    SigningKey::from_pkcs8("mailbox-move-journal", &pkcs8)?,
                    false,
                )
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (signer, pkcs8) = SigningKey::generate("mailbox-move-journal")?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .map_err(io(&key_path))?;
                std::io::Write::write_all(&mut file, &pkcs8).map_err(io(&key_path))?;
                file.sync_all().map_err(io(&key_path))?;
                (signer, true)
            }
            Err(error) => return Err(io(&key_path)(error)),
        };
        let verifying_key = signer.verifying_key();
        let log = if log_dir.exists() {
            AuditLog::open(&log_dir, signer, LogConfig::default())?.0
        } else {
            AuditLog::create(&log_dir, signer, LogConfig::default())?
        };
        Ok((
            Self {
                log,
                dir: dir.to_path_buf(),
                verifying_key,
            },
            made,
        ))
    }

    /// The key that verifies the journal's checkpoints (text form).
    pub fn verifying_key(&self) -> String {
        self.verifying_key.to_string()
    }

    /// Appends `records` in one commit; returns once they are durable.
    /// Blocks.
    ///
    /// # Errors
    /// If the log cannot make them durable.
    pub fn append(&self, records: &[Record]) -> Result<(), JournalError> {
        let _ = self.log.append_all(records)?;
        Ok(())
    }

    /// Every record of the journal in `dir`, in order. Blocks.
    ///
    /// # Errors
    /// If the log cannot be read or does not parse.
    pub fn entries(dir: &Path) -> Result<Vec<Entry>, JournalError> {
        let log_dir = dir.join(LOG_DIR);
        if !log_dir.exists() {
            return Ok(Vec::new());
        }
        Ok(atrest::audit::read_entries(log_dir)?)
    }

    /// Verifies the journal in `dir` with `key`, or with the key kept
    /// beside it (the second value is `true` then: a key anyone who could
    /// rewrite the journal could have replaced). Blocks.
    ///
    /// # Errors
    /// If the key does not parse or cannot be read.
    pub fn verify(
        dir: &Path,
        key: Option<&str>,
    ) -> Result<(atrest::audit::Report, bool), JournalError> {
        let (key, from_journal) = match key {
            Some(text) => (VerifyingKey::parse(text)?, false),
            None => {
                let key_path = dir.join(KEY_FILE);
                let pkcs8 = Zeroizing::new(std::fs::read(&key_path).map_err(|source| {
                    JournalError::Io {
                        path: key_path.clone(),
                        source,
                    }
                })?);
                (
                    SigningKey::from_pkcs8("mailbox-move-journal", &pkcs8)?.verifying_key(),
                    true,
                )
            }
        };
        Ok((
            atrest::audit::verify(dir.join(LOG_DIR), &[], &key)?,
            from_journal,
        ))
    }
}

/// What an item's upload came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemOutcome {
    /// The service stored it, in this answer.
    Stored,
    /// The service had stored it already (an earlier run's upload, whose
    /// answer was lost): found there, not stored again.
    AlreadyStored,
    /// It failed; the reason is in the record's outcome.
    Failed,
}

impl ItemOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::AlreadyStored => "already_stored",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "stored" => Some(Self::Stored),
            "already_stored" => Some(Self::AlreadyStored),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether the service holds the item.
    pub fn is_stored(self) -> bool {
        matches!(self, Self::Stored | Self::AlreadyStored)
    }
}

/// One item as the journal records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemLine {
    /// Its id within the move.
    pub item: String,
    /// Its destination name.
    pub name: String,
    /// Its size when it was read.
    pub len: u64,
    /// Its modification time then, in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The SHA-256 of the bytes sent (hex; empty if none were).
    pub sha256: String,
    /// What came of it.
    pub outcome: ItemOutcome,
    /// The answer's HTTP status (0: no answer).
    pub http: u64,
    /// The file id the service stored it as (empty if none).
    pub file: String,
    /// The version stored (0 if none).
    pub version: u64,
    /// Plaintext bytes stored.
    pub bytes: u64,
}

fn text(value: impl AsRef<str>) -> Value {
    Value::Text(Text::lossy(value.as_ref()))
}

fn custom(kind: &str, fields: Vec<(&str, Value)>) -> Event {
    Event::Custom {
        kind: Text::lossy(kind),
        fields: fields
            .into_iter()
            .map(|(k, v)| (Text::lossy(k), v))
            .collect(),
    }
}

/// The description of a move, as `move_started` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MoveStart {
    /// The move's id.
    pub move_id: String,
    /// The source directory.
    pub source: String,
    /// The service's address.
    pub service: String,
    /// The destination tenant.
    pub tenant: String,
    /// What each item's name begins with.
    pub prefix: String,
}

impl MoveStart {
    /// Its journal record.
    pub fn record(&self) -> Record {
        Record::new(
            Text::lossy(JOURNAL_ACTOR),
            custom(
                MOVE_STARTED,
                vec![
                    ("move", text(&self.move_id)),
                    ("source", text(&self.source)),
                    ("service", text(&self.service)),
                    ("tenant", text(&self.tenant)),
                    ("prefix", text(&self.prefix)),
                ],
            ),
        )
    }
}

impl ItemLine {
    /// Its journal record in move `move_id`, `reason` the failure's, if it
    /// failed.
    pub fn record(&self, move_id: &str, reason: Option<&str>) -> Record {
        let outcome = match (self.outcome, reason) {
            (ItemOutcome::Failed, reason) => Outcome::Failed {
                error: Text::lossy(reason.unwrap_or("failed")),
            },
            _ => Outcome::Success,
        };
        Record::new(
            Text::lossy(JOURNAL_ACTOR),
            custom(
                MOVE_ITEM,
                vec![
                    ("move", text(move_id)),
                    ("item", text(&self.item)),
                    ("name", text(&self.name)),
                    ("len", Value::Count(self.len)),
                    ("mtime_ns", text(self.mtime_ns.to_string())),
                    ("sha256", text(&self.sha256)),
                    ("outcome", text(self.outcome.as_str())),
                    ("http", Value::Count(self.http)),
                    ("file", text(&self.file)),
                    ("version", Value::Count(self.version)),
                    ("bytes", Value::Count(self.bytes)),
                ],
            ),
        )
        .outcome(outcome)
    }
}

/// A move's statistics, as both sides record them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MoveStats {
    /// Items stored.
    pub items: u64,
    /// Plaintext bytes stored.
    pub bytes: u64,
    /// Items that failed in the run that completed the move.
    pub failures: u64,
    /// Entries left alone.
    pub skipped: u64,
    /// From the move's start to its end, in milliseconds.
    pub duration_ms: u64,
}

impl MoveStats {
    /// Plaintext bytes per second over the duration.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes.saturating_mul(1000) / self.duration_ms.max(1)
    }

    /// The `mailbox_move` event of `side`, naming the move and `peer`.
    pub fn event(&self, move_id: &str, side: &str, peer: &str) -> Event {
        Event::MailboxMove {
            move_id: Text::lossy(move_id),
            side: Text::lossy(side),
            peer: Text::lossy(peer),
            items: self.items,
            bytes: self.bytes,
            failures: self.failures,
            skipped: self.skipped,
            duration_ms: self.duration_ms,
            bytes_per_second: self.bytes_per_second(),
        }
    }
}

/// A move as the journal holds it.
#[derive(Clone, Debug, Default)]
pub struct JournalMove {
    /// How it began.
    pub start: Option<MoveStart>,
    /// When it began.
    pub started_at: Option<std::time::SystemTime>,
    /// Its items, the last line of each.
    pub items: BTreeMap<String, ItemLine>,
    /// Its final statistics, if it is complete.
    pub finished: Option<MoveStats>,
}

fn field<'a>(fields: &'a BTreeMap<Text, Value>, name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

fn field_text(fields: &BTreeMap<Text, Value>, name: &str) -> String {
    match field(fields, name) {
        Some(Value::Text(text)) => text.as_str().to_owned(),
        _ => String::new(),
    }
}

fn field_count(fields: &BTreeMap<Text, Value>, name: &str) -> u64 {
    match field(fields, name) {
        Some(Value::Count(n)) => *n,
        _ => 0,
    }
}

/// A `mailbox_move` record: the move, the side that wrote it, and its
/// statistics.
fn move_record(event: &Event) -> Option<(&str, &str, MoveStats)> {
    match event {
        Event::MailboxMove {
            move_id,
            side,
            items,
            bytes,
            failures,
            skipped,
            duration_ms,
            ..
        } => Some((
            move_id.as_str(),
            side.as_str(),
            MoveStats {
                items: *items,
                bytes: *bytes,
                failures: *failures,
                skipped: *skipped,
                duration_ms: *duration_ms,
            },
        )),
        _ => None,
    }
}

/// Every move of a journal, by id, in the order they began.
pub fn journal_moves(entries: &[Entry]) -> Vec<(String, JournalMove)> {
    let mut order: Vec<String> = Vec::new();
    let mut moves: HashMap<String, JournalMove> = HashMap::new();
    for entry in entries {
        match &entry.event {
            Event::Custom { kind, fields } if kind.as_str() == MOVE_STARTED => {
                let id = field_text(fields, "move");
                let start = MoveStart {
                    move_id: id.clone(),
                    source: field_text(fields, "source"),
                    service: field_text(fields, "service"),
                    tenant: field_text(fields, "tenant"),
                    prefix: field_text(fields, "prefix"),
                };
                if !moves.contains_key(&id) {
                    order.push(id.clone());
                }
                let found = moves.entry(id).or_default();
                found.start = Some(start);
                found.started_at = Some(entry.time.to_system_time());
            }
            Event::Custom { kind, fields } if kind.as_str() == MOVE_ITEM => {
                let id = field_text(fields, "move");
                let Some(outcome) = ItemOutcome::parse(&field_text(fields, "outcome")) else {
                    continue;
                };
                let line = ItemLine {
                    item: field_text(fields, "item"),
                    name: field_text(fields, "name"),
                    len: field_count(fields, "len"),
                    mtime_ns: field_text(fields, "mtime_ns").parse().unwrap_or(0),
                    sha256: field_text(fields, "sha256"),
                    outcome,
                    http: field_count(fields, "http"),
                    file: field_text(fields, "file"),
                    version: field_count(fields, "version"),
                    bytes: field_count(fields, "bytes"),
                };
                if let Some(found) = moves.get_mut(&id) {
                    found.items.insert(line.item.clone(), line);
                }
            }
            event => {
                if let Some((id, "source", stats)) = move_record(event)
                    && let Some(found) = moves.get_mut(id)
                {
                    found.finished = Some(stats);
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| moves.remove(&id).map(|m| (id, m)))
        .collect()
}

/// What [`check`] found comparing a move's two trails.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// The move.
    pub move_id: String,
    /// Items the journal says the service holds.
    pub journal_items: u64,
    /// Seals the service's trail holds for the move.
    pub service_seals: u64,
    /// Items found on both sides, the same file, version and size.
    pub matched: u64,
    /// Items whose seal record the service lost (it was killed between
    /// committing the version and committing the record): their key
    /// records name the move, and the catalog is asked for the version
    /// ([`CheckReport::confirm`]). Counted in `matched` once confirmed.
    pub seal_records_lost: u64,
    /// The items to confirm in the service's catalog: name, file id,
    /// version and size the journal gives.
    #[serde(skip)]
    pub to_confirm: Vec<(String, String, u64, u64)>,
    /// The statistics in the journal's move record.
    pub journal_stats: Option<MoveStats>,
    /// The statistics in the service's move record(s), if they agree.
    pub service_stats: Option<MoveStats>,
    /// Every disagreement, one sentence each.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether the two trails agree item by item and in their statistics.
    pub fn agrees(&self) -> bool {
        self.problems.is_empty()
    }
}

impl CheckReport {
    /// Settles an item of [`CheckReport::to_confirm`]: `found` is the file
    /// id and plaintext length the service's catalog has for that name and
    /// version, if any.
    pub fn confirm(
        &mut self,
        (name, file, version, bytes): &(String, String, u64, u64),
        found: Option<(String, u64)>,
    ) {
        match found {
            Some((found_file, found_bytes)) if found_file == *file && found_bytes == *bytes => {
                self.matched += 1;
                self.seal_records_lost += 1;
            }
            Some((found_file, found_bytes)) => self.problems.push(format!(
                "{name}: the journal says file {file} version {version} ({bytes} bytes), the service's catalog has file {found_file} ({found_bytes} bytes)"
            )),
            None => self.problems.push(format!(
                "{name}: the journal says it is stored (file {file} version {version}); the service has no seal record and no such version"
            )),
        }
    }
}

/// A seal in the service's trail.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seal {
    file: String,
    version: u64,
    bytes: u64,
}

/// Compares move `move_id` of the journal (`journal`) with the service's
/// trail (`service`, its entries about the tenant): each item the journal
/// says the service holds has exactly one seal there, of the same file,
/// version and size, made for the move (its `client_request` is the
/// item's); each seal made for the move is in the journal; and the move's
/// records on both sides agree with each other and with the items.
pub fn check(move_id: &str, journal: &JournalMove, service: &[Entry]) -> CheckReport {
    let mut report = CheckReport {
        move_id: move_id.to_owned(),
        journal_stats: journal.finished,
        ..CheckReport::default()
    };
    let prefix = format!("{move_id}:");
    let mut seals: HashMap<String, Vec<Seal>> = HashMap::new();
    let mut keyed: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    let mut service_stats: Vec<MoveStats> = Vec::new();
    for entry in service {
        match &entry.event {
            Event::FileSealed { file, bytes, .. } if entry.outcome == Outcome::Success => {
                let Some(item) = entry
                    .client_request
                    .as_ref()
                    .and_then(|id| id.as_str().strip_prefix(&prefix))
                else {
                    continue;
                };
                report.service_seals += 1;
                seals.entry(item.to_owned()).or_default().push(Seal {
                    file: file.file.as_str().to_owned(),
                    version: file.version,
                    bytes: *bytes,
                });
            }
            Event::FileKeyWrapped { file, .. } if entry.outcome == Outcome::Success => {
                if let Some(item) = entry
                    .client_request
                    .as_ref()
                    .and_then(|id| id.as_str().strip_prefix(&prefix))
                {
                    keyed
                        .entry(item.to_owned())
                        .or_default()
                        .push((file.file.as_str().to_owned(), file.version));
                }
            }
            event => {
                if let Some((id, "service", stats)) = move_record(event)
                    && id == move_id
                {
                    service_stats.push(stats);
                }
            }
        }
    }
    let mut stored_bytes = 0u64;
    for line in journal.items.values() {
        if !line.outcome.is_stored() {
            continue;
        }
        report.journal_items += 1;
        stored_bytes += line.bytes;
        let found = seals.remove(&line.item).unwrap_or_default();
        let expected = Seal {
            file: line.file.clone(),
            version: line.version,
            bytes: line.bytes,
        };
        match found.as_slice() {
            [seal] if *seal == expected => report.matched += 1,
            [] if keyed
                .get(&line.item)
                .is_some_and(|keys| keys.contains(&(line.file.clone(), line.version))) =>
            {
                report.to_confirm.push((
                    line.name.clone(),
                    line.file.clone(),
                    line.version,
                    line.bytes,
                ));
            }
            [] => report.problems.push(format!(
                "{}: the journal says it is stored (file {} version {}), the service's trail has no seal of it for this move",
                line.name, line.file, line.version
            )),
            [seal] => report.problems.push(format!(
                "{}: the journal says file {} version {} ({} bytes), the service sealed file {} version {} ({} bytes)",
                line.name, line.file, line.version, line.bytes, seal.file, seal.version, seal.bytes
            )),
            more => report.problems.push(format!(
                "{}: sealed {} times by the service for this move",
                line.name,
                more.len()
            )),
        }
    }
    let mut unknown: Vec<_> = seals.into_iter().collect();
    unknown.sort_by(|a, b| a.0.cmp(&b.0));
    for (item, seals) in unknown {
        for seal in seals {
            report.problems.push(format!(
                "item {item}: the service sealed file {} version {} for this move; the journal does not record it as stored",
                seal.file, seal.version
            ));
        }
    }
    match journal.finished {
        None => report
            .problems
            .push("the journal has no record of the move's end".into()),
        Some(stats) => {
            if stats.items != report.journal_items || stats.bytes != stored_bytes {
                report.problems.push(format!(
                    "the journal's move record says {} items, {} bytes; its items add up to {} items, {} bytes",
                    stats.items, stats.bytes, report.journal_items, stored_bytes
                ));
            }
        }
    }
    match service_stats.as_slice() {
        [] => report
            .problems
            .push("the service's trail has no record of the move's end".into()),
        [first, rest @ ..] => {
            // The source reports again after an interruption: the same
            // record twice is one.
            if rest.iter().any(|other| other != first) {
                report
                    .problems
                    .push("the service's trail has move records that disagree".into());
            }
            report.service_stats = Some(*first);
            if journal.finished.is_some_and(|stats| stats != *first) {
                report.problems.push(format!(
                    "the statistics differ: journal {:?}, service {:?}",
                    journal.finished, first
                ));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_well_formed() {
        let id = new_move_id().unwrap();
        assert!(is_move_id(&id), "{id}");
        assert!(!is_move_id("xyz") && !is_move_id(&"A".repeat(32)));
        assert_eq!(item_id("mailbox/a/1.eml"), item_id("mailbox/a/1.eml"));
        assert_ne!(item_id("mailbox/a/1.eml"), item_id("mailbox/a/2.eml"));
        assert_eq!(item_id("x").len(), 16);
        let request = request_id(&id, &item_id("x"));
        assert!(request.len() <= 128);
    }
}
