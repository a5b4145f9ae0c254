//! Comparing a move's two trails: the source's journal and the service's
//! audit log.

use std::collections::HashMap;

use atrest::audit::{Entry, Event, Outcome};
use serde::Serialize;

use super::{JournalMove, MoveStats, move_record};

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
