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

mod check;
mod journal;

use std::collections::{BTreeMap, HashMap};

use atrest::audit::{Entry, Event, Outcome, Record, Text, Value};
use serde::Serialize;
use sha2::Digest as _;

pub use self::check::{CheckReport, check};
pub use self::journal::{Journal, JournalError};

/// The actor of the journal's records.
pub const JOURNAL_ACTOR: &str = "mailbox-move";

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
