//! One line of the log: how a record is written as a line (its chain
//! fields, then the record's own JSON), and how a checkpoint line is told
//! and read back.

use crate::checkpoint::Checkpoint;
use crate::log::LOG_ACTOR;
use crate::record::Event;

/// Writes the canonical line of record `seq` after `prev`: the chain fields
/// (`version` being the schema version of the record's event), then the
/// fields of the record's own JSON object `body` (same order as
/// [`Entry`](crate::record::Entry), so the line is exactly its JSON).
pub(crate) fn write_line(out: &mut Vec<u8>, version: u32, seq: u64, prev: &[u8; 32], body: &[u8]) {
    out.extend_from_slice(br#"{"v":"#);
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(br#","prev":""#);
    out.extend_from_slice(hex::encode(prev).as_bytes());
    out.extend_from_slice(br#"","#);
    out.extend_from_slice(body.strip_prefix(b"{").unwrap_or(body));
}

/// Whether a (complete, linked) line is a checkpoint line. Only the event
/// of a checkpoint line can contain these bytes: quotes inside text values
/// are escaped.
pub(crate) fn is_checkpoint_line(line: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| {
            memchr::memmem::FinderRev::new(br#","event":{"type":"checkpoint","#)
        });
    // The event is the last field; in a checkpoint line only the key name
    // (at most 128 bytes) and the signature (92) follow the marker.
    let tail = line.get(line.len().saturating_sub(320)..).unwrap_or(line);
    FINDER.rfind(tail).is_some()
}

/// The checkpoint a checkpoint line states, with its signature (not yet
/// verified). Every byte of the line is fixed by the checkpoint: its
/// signed fields (size, head, time) and signature are the line's `seq`,
/// `prev`, `time` and event, and the rest must be exactly what the log
/// writes.
pub(crate) fn checkpoint_of_line(origin: &str, line: &[u8]) -> Result<Checkpoint, String> {
    let entry: crate::record::Entry =
        serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    let Event::Checkpoint { key, signature } = &entry.event else {
        return Err("not a checkpoint line".into());
    };
    let fixed = entry.actor.as_str() == LOG_ACTOR
        && entry.v == entry.schema_version()
        && entry.tenant.is_none()
        && entry.request.is_none()
        && entry.outcome == crate::record::Outcome::Success;
    let canonical = serde_json::to_vec(&entry).is_ok_and(|again| again == line);
    if !fixed || !canonical {
        return Err("not a checkpoint line as the log writes it".into());
    }
    let mut head = [0u8; 32];
    hex::decode_to_slice(&entry.prev, &mut head).map_err(|e| e.to_string())?;
    Checkpoint::from_signature(
        origin,
        entry.seq,
        head,
        entry.time,
        key.as_str(),
        signature.as_str(),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Entry, Outcome, Record, Text};

    #[test]
    fn composed_lines_are_exactly_the_entry_encoding() {
        let record = Record::new(
            Text::new("svc").unwrap(),
            Event::TenantPurged { tik_versions: 3 },
        )
        .tenant(Text::new("t").unwrap())
        .outcome(Outcome::Denied {
            reason: Text::new("no \"quotes\" \\ here").unwrap(),
        });
        let prev = [0xab; 32];
        let mut line = Vec::new();
        write_line(
            &mut line,
            record.schema_version(),
            12_345,
            &prev,
            &serde_json::to_vec(&record).unwrap(),
        );
        let entry = Entry::new(12_345, &prev, &record);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            serde_json::to_string(&entry).unwrap()
        );
    }

    #[test]
    fn only_checkpoint_events_look_like_checkpoint_lines() {
        let custom = Record::new(
            Text::new("svc").unwrap(),
            Event::Custom {
                kind: Text::new(r#","event":{"type":"checkpoint","#).unwrap(),
                fields: Default::default(),
            },
        );
        let line = serde_json::to_vec(&Entry::new(1, &[0; 32], &custom)).unwrap();
        assert!(!is_checkpoint_line(&line));
        let checkpoint = Record::new(
            Text::new("svc").unwrap(),
            Event::Checkpoint {
                key: Text::new("k").unwrap(),
                signature: Text::new("AAAA").unwrap(),
            },
        );
        let line = serde_json::to_vec(&Entry::new(1, &[0; 32], &checkpoint)).unwrap();
        assert!(is_checkpoint_line(&line));
    }
}
