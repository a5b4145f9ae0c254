//! Record types: no key material, text validation,
//! serde round trips, and the sink policy.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::marker::PhantomData;
use std::sync::Arc;

use atrest_audit::{
    Audit, AuditLog, Auditor, Error, Event, FileRef, KeyRef, LogConfig, MemorySink, Receipt,
    Record, SCHEMA_VERSION, Sink, SinkError, SinkPolicy, Text,
};
use atrest_core::ErrorKind;
use atrest_test_support::TempDir;
use common::{record, text};

/// Whether `T` implements a trait, decided at compile time: the inherent
/// method (which exists only when the bound holds) wins over the fallback
/// trait method.
macro_rules! implements {
    ($t:ty: $($bound:tt)+) => {{
        struct Probe<T: ?Sized>(PhantomData<T>);
        #[allow(dead_code)]
        trait Fallback { fn check(&self) -> bool { false } }
        impl<T: ?Sized> Fallback for Probe<T> {}
        impl<T: ?Sized + $($bound)+> Probe<T> { #[allow(dead_code)] fn check(&self) -> bool { true } }
        Probe::<$t>(PhantomData).check()
    }};
}

#[test]
fn key_types_cannot_become_record_fields() {
    use atrest_filekey::{FileKey, Kek};
    // The probe itself works: ids and strings can be written into records.
    assert!(implements!(atrest_filekey::TenantId: std::fmt::Display));
    assert!(implements!(String: Into<String>));
    // Keys implement none of what a record field needs.
    assert!(!implements!(FileKey: std::fmt::Display));
    assert!(!implements!(FileKey: serde::Serialize));
    assert!(!implements!(FileKey: atrest_audit::IdLike));
    assert!(!implements!(FileKey: Into<String>));
    assert!(!implements!(FileKey: AsRef<str>));
    assert!(!implements!(FileKey: Into<Text>));
    assert!(!implements!(Kek: std::fmt::Display));
    assert!(!implements!(Kek: serde::Serialize));
    assert!(!implements!(Kek: atrest_audit::IdLike));
}

#[test]
fn texts_are_validated() {
    assert!(Text::new("ok: tenant 1").is_ok());
    assert!(matches!(
        Text::new("line\nbreak"),
        Err(Error::InvalidText(_))
    ));
    assert!(matches!(
        Text::new("x".repeat(1025)),
        Err(Error::InvalidText(_))
    ));
    assert!(serde_json::from_str::<Text>(&format!("\"{}\"", "x".repeat(1025))).is_err());
    assert!(serde_json::from_str::<Text>("\"a\\u0000b\"").is_err());
}

#[test]
fn records_round_trip_through_json() {
    for i in 0..10 {
        let r = record(i);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
    let custom = Record::new(
        text("svc:billing"),
        Event::Custom {
            kind: text("quota_exceeded"),
            fields: [
                (text("limit"), atrest_audit::Value::Count(10)),
                (text("hard"), atrest_audit::Value::Bool(true)),
            ]
            .into_iter()
            .collect(),
        },
    );
    let json = serde_json::to_string(&custom).unwrap();
    assert!(
        json.contains(r#""fields":{"hard":true,"limit":10}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), custom);
    // Unknown fields are refused, so the encoding stays canonical.
    let extra = json.replacen('{', r#"{"extra":1,"#, 1);
    assert!(serde_json::from_str::<Record>(&extra).is_err());
}

/// The events the libraries record about themselves are typed: each has
/// its own `type`, round-trips, is written under schema version 3, and is
/// refused in a line that claims an older version.
#[test]
fn the_libraries_events_are_typed_and_versioned() {
    let events = [
        (
            Event::MetadataRejected {},
            r#"{"type":"metadata_rejected"}"#,
        ),
        (
            Event::TikRetired {
                tik: KeyRef {
                    key: text("tik:1"),
                    version: Some(2),
                },
            },
            r#"{"type":"tik_retired","tik":{"key":"tik:1","version":2}}"#,
        ),
        (
            Event::BlobCopyPassedOver {
                file: FileRef {
                    file: text("f"),
                    version: 3,
                },
                blob: text("b"),
                location: 1,
                error: text("missing"),
            },
            r#"{"type":"blob_copy_passed_over","file":{"file":"f","version":3},"blob":"b","location":1,"error":"missing"}"#,
        ),
        (
            Event::GarbageCollected {
                orphan_blobs: 1,
                orphan_bytes: 2,
                partial_uploads: 3,
                partial_bytes: 4,
                abandoned_uploads: 5,
            },
            r#"{"type":"garbage_collected","orphan_blobs":1,"orphan_bytes":2,"partial_uploads":3,"partial_bytes":4,"abandoned_uploads":5}"#,
        ),
        (
            Event::BlobsScrubbed {
                records: 1,
                bad_copies: 2,
                repaired_copies: 3,
            },
            r#"{"type":"blobs_scrubbed","records":1,"bad_copies":2,"repaired_copies":3}"#,
        ),
    ];
    let dir = TempDir::new("typed-events");
    let log = AuditLog::create(dir.path(), common::signer(), LogConfig::default()).unwrap();
    for (event, json) in &events {
        assert_eq!(serde_json::to_string(event).unwrap(), *json);
        // The name metrics count it by is its `type`.
        assert!(json.starts_with(&format!(r#"{{"type":"{}""#, event.type_name())));
        assert_eq!(&serde_json::from_str::<Event>(json).unwrap(), event);
        assert_eq!(event.schema_version(), 3);
        let _ = log
            .append(&Record::new(text("svc"), event.clone()))
            .unwrap();
    }
    drop(log);
    let entries = atrest_audit::read_entries(dir.path()).unwrap();
    let typed: Vec<_> = entries
        .iter()
        .filter(|entry| events.iter().any(|(event, _)| *event == entry.event))
        .collect();
    assert_eq!(typed.len(), events.len());
    // Version 3 defined them (4 the log's restart line, 5 file deletions,
    // 6 fallback policies, 7 the client's request id, 8 keys delivered to a
    // client, 9, the newest, tenant records accepted after a restore).
    assert_eq!(SCHEMA_VERSION, 9);
    assert!(typed.iter().all(|entry| entry.v == 3));
    // The other lines keep the version that defined their events.
    assert!(
        entries
            .iter()
            .filter(|entry| !typed.contains(entry))
            .all(|entry| entry.v == 2)
    );
    let key = common::signer().verifying_key();
    assert!(atrest_audit::verify(dir.path(), &[], &key).unwrap().is_ok());

    // A line whose version is not its event's is refused when read.
    let segment = dir.path().join("00000001.log");
    let bytes = std::fs::read_to_string(&segment).unwrap();
    let downgraded = bytes.replacen(r#"{"v":3,"seq":1,"#, r#"{"v":2,"seq":1,"#, 1);
    assert_ne!(bytes, downgraded);
    std::fs::write(&segment, downgraded).unwrap();
    assert!(matches!(
        atrest_audit::read_entries(dir.path()),
        Err(Error::Corrupt { line: 2, .. })
    ));
}

struct Failing;

impl Sink for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn deliver(&self, _: &Receipt, _: &Record) -> Result<(), SinkError> {
        Err(SinkError::new(ErrorKind::Unavailable, "unreachable SIEM"))
    }
}

#[test]
fn only_the_log_writes_checkpoint_and_recovery_lines() {
    let dir = TempDir::new("reserved");
    let log = AuditLog::create(dir.path(), common::signer(), LogConfig::default()).unwrap();
    for event in [
        Event::Checkpoint {
            key: text("test-signer"),
            signature: text("AAAA"),
        },
        Event::LogRecovered {
            cut_bytes: 0,
            cut_lines: 0,
            saved_as: None,
            newline_restored: false,
        },
    ] {
        let forged = Record::new(text("svc"), event);
        assert!(matches!(log.append(&forged), Err(Error::Reserved)));
        assert!(matches!(
            log.append_all(&[record(1), forged]),
            Err(Error::Reserved)
        ));
    }
    assert_eq!(log.head().0, 1, "nothing was written");
}

#[tokio::test]
async fn sink_policy_fails_closed_on_the_log_and_on_required_sinks_only() {
    let dir = TempDir::new("sinks");
    let log =
        Arc::new(AuditLog::create(dir.path(), common::signer(), LogConfig::default()).unwrap());
    let memory = Arc::new(MemorySink::default());
    let best_effort = Auditor::new(log.clone())
        .with_sink(Box::new(memory.clone()), SinkPolicy::Required)
        .with_sink(Box::new(Failing), SinkPolicy::BestEffort);
    let sent = record(0);
    let receipt = best_effort.record(sent.clone()).await.unwrap();
    assert_eq!(best_effort.sink_failures(), 1);
    assert_eq!(memory.records(), vec![(receipt, sent)]);

    let required = Auditor::new(log.clone()).with_sink(Box::new(Failing), SinkPolicy::Required);
    let error = required.record(record(1)).await.unwrap_err();
    assert!(matches!(error, Error::Sink { ref sink, .. } if sink == "failing"));
    assert_eq!(error.kind(), ErrorKind::Unavailable, "the sink's kind");
    // The record is durable in the log regardless.
    // create: 1 checkpoint line; each append: the record and a checkpoint.
    assert_eq!(log.head().0, 5);
}

#[tokio::test]
async fn an_auditor_commits_a_batch_in_one_sync_and_gives_each_sink_its_own_receipt() {
    let dir = TempDir::new("auditor-batch");
    let log =
        Arc::new(AuditLog::create(dir.path(), common::signer(), LogConfig::default()).unwrap());
    let memory = Arc::new(MemorySink::default());
    let auditor =
        Auditor::new(log.clone()).with_sink(Box::new(memory.clone()), SinkPolicy::Required);
    let sent: Vec<Record> = (0..5).map(record).collect();
    let last = auditor.record_all(sent.clone()).await.unwrap().unwrap();
    // create: 1 checkpoint line; the batch: 5 records and one checkpoint.
    assert_eq!(log.head().0, 7, "one commit for the whole batch");
    let delivered = memory.records();
    assert_eq!(delivered.len(), 5);
    // Each line names the hash of the line before it.
    let entries = atrest_audit::read_entries(dir.path()).unwrap();
    for (i, (receipt, record)) in delivered.iter().enumerate() {
        assert_eq!(record, &sent[i]);
        assert_eq!(receipt.seq, 1 + i as u64);
        let next = &entries[usize::try_from(receipt.seq).unwrap() + 1];
        let hash: String = receipt.hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(next.prev, hash, "each record's own chain hash");
    }
    assert_eq!(delivered.last().map(|(r, _)| *r), Some(last));
    assert_eq!(auditor.record_all(Vec::new()).await.unwrap(), None);
}

#[test]
fn lossy_texts_are_always_valid() {
    assert_eq!(Text::lossy("plain").as_str(), "plain");
    assert_eq!(Text::lossy("a\nb\u{7}").as_str(), "a b ");
    let long = "é".repeat(1000);
    let cut = Text::lossy(long);
    assert!(
        cut.as_str().len() <= atrest_audit::MAX_TEXT_LEN && cut.as_str().chars().all(|c| c == 'é')
    );
    let json = serde_json::to_string(&Text::lossy("x\ty")).unwrap();
    assert_eq!(serde_json::from_str::<Text>(&json).unwrap().as_str(), "x y");
}

#[tokio::test]
async fn records_made_in_a_request_carry_its_id_and_the_log_still_verifies() {
    // A record made in the scope (`record` sets an id of its own).
    let plain = |i| Record::new(text("svc"), record(i).event);
    let dir = TempDir::new("request-scope");
    let signer = common::signer();
    let key = signer.verifying_key();
    let log = AuditLog::create(dir.path(), signer, LogConfig::default()).unwrap();
    atrest_audit::in_request(text("req-7"), async {
        // The log's own checkpoint for this commit is made in the scope
        // too, and must not carry the id.
        log.append(&plain(1)).unwrap();
        atrest_audit::in_request(text("req-8"), async { log.append(&plain(2)).unwrap() }).await;
        log.append(&plain(3)).unwrap();
    })
    .await;
    log.append(&plain(4)).unwrap();
    let requests: Vec<Option<String>> = common::caller_entries(dir.path())
        .iter()
        .map(|entry| entry.request.as_ref().map(|r| r.as_str().to_owned()))
        .collect();
    assert_eq!(
        requests,
        [Some("req-7"), Some("req-8"), Some("req-7"), None].map(|r| r.map(str::to_owned))
    );
    let report = atrest_audit::verify(dir.path(), &[], &key).unwrap();
    assert!(report.problem.is_none(), "{report:?}");
}

/// A client's own request id is kept beside the service's (schema version
/// 7 for a line whose event is older); a line that claims an older version
/// while holding one is refused, and lines without it are as before.
#[tokio::test]
async fn a_clients_request_id_is_kept_beside_the_services() {
    let plain = |i| Record::new(text("svc"), record(i).event);
    let dir = TempDir::new("client-request");
    let signer = common::signer();
    let key = signer.verifying_key();
    let log = AuditLog::create(dir.path(), signer, LogConfig::default()).unwrap();
    let ids = atrest_audit::RequestId {
        id: text("d41d8cd98f00b204e9800998ecf8427e"),
        client: Some(text("my-own-id")),
    };
    atrest_audit::in_request(ids, async { log.append(&plain(1)).unwrap() }).await;
    atrest_audit::in_request(text("service-only"), async {
        log.append(&plain(2)).unwrap()
    })
    .await;
    let entries = common::caller_entries(dir.path());
    assert_eq!(
        entries[0].client_request.as_ref().map(Text::as_str),
        Some("my-own-id")
    );
    assert_eq!(
        entries[0].request.as_ref().map(Text::as_str),
        Some("d41d8cd98f00b204e9800998ecf8427e")
    );
    assert_eq!(entries[0].v, 7);
    assert!(entries[1].client_request.is_none());
    assert_eq!(entries[1].v, entries[1].event.schema_version());
    let report = atrest_audit::verify(dir.path(), &[], &key).unwrap();
    assert!(report.problem.is_none(), "{report:?}");

    // The same line, claiming its event's older version: refused.
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let content = std::fs::read_to_string(&segment).unwrap();
    let forged = content.replacen(
        "{\"v\":7,",
        &format!("{{\"v\":{},", entries[0].event.schema_version()),
        1,
    );
    assert_ne!(forged, content);
    std::fs::write(&segment, forged).unwrap();
    let refused = match atrest_audit::verify(dir.path(), &[], &key) {
        Err(_) => true,
        Ok(report) => report.problem.is_some(),
    };
    assert!(
        refused,
        "a line with a client's id under an older version verified"
    );
}

/// A key handed to a client is its own event, of version 8: it names the
/// file version and the recipient, never the key.
#[test]
fn a_key_delivered_to_a_client_is_a_version_8_line() {
    let event = Event::FileKeyDelivered {
        file: FileRef {
            file: text("f-1"),
            version: 3,
        },
        recipient: text("bob@contoso"),
    };
    assert_eq!(
        serde_json::to_string(&event).unwrap(),
        r#"{"type":"file_key_delivered","file":{"file":"f-1","version":3},"recipient":"bob@contoso"}"#
    );
    assert_eq!(event.schema_version(), 8);
    assert_eq!(event.file().map(|f| f.version), Some(3));
    let dir = TempDir::new("delivered");
    let log = AuditLog::create(dir.path(), common::signer(), LogConfig::default()).unwrap();
    let _ = log
        .append(&Record::new(text("svc"), event.clone()))
        .unwrap();
    drop(log);
    let entries = atrest_audit::read_entries(dir.path()).unwrap();
    let line = entries.iter().find(|e| e.event == event).unwrap();
    assert_eq!(line.v, 8);
}
