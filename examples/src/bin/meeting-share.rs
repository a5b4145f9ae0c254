//! `meeting-share`: content shared in a meeting, each item under its own
//! random 256-bit key; a participant authenticates before an item's key is
//! released to them, and every release and refusal is audited.
//!
//! ```text
//! meeting-share [--dir DIR] [--json] FILE...
//! ```
//!
//! Runs one meeting end to end in a new deployment directory `DIR` (kept;
//! default: a temporary directory, removed with its keys when the run ends)
//! on the embedded defaults, with the meeting's
//! own release policy: the organizer shares the files
//! (each sealed with its own file key under the tenant's key hierarchy);
//! participants are issued access tokens (stored only as SHA-256 hashes);
//! each participant, a participant with a wrong token, and someone not in
//! the meeting then ask for each item. Prints who got what, and verifies
//! the audit trail. Exit status: 0 as expected, 1 otherwise, 2 could not
//! run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use atrest::filekey::{FileId, TenantId};
use atrest::tenant::{Access, Decision, ReleasePolicy};
use atrest::{FileRecord, FileSelector, WriterSink};
use atrest_deployment::{Deployment, Options, TenantKeys, TrustedAudit};
use clap::Parser;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;

/// Share meeting content, one key per item, released only to
/// authenticated participants.
#[derive(Parser)]
#[command(name = "meeting-share", version)]
struct Args {
    /// Working directory (default: a new temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Files to share (default: three generated items).
    files: Vec<PathBuf>,
}

/// Participants of the meeting and the sessions they opened by
/// authenticating. The release policy asks it.
#[derive(Default)]
struct Meeting {
    token_hashes: BTreeMap<String, [u8; 32]>,
    authenticated: Mutex<Vec<String>>,
}

impl Meeting {
    fn invite(&mut self, participant: &str) -> Result<String, String> {
        let mut token = [0u8; 16];
        SystemRandom::new()
            .fill(&mut token)
            .map_err(|_| "random generator failed")?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        let _ = self.token_hashes.insert(participant.to_owned(), hash);
        Ok(token)
    }

    /// Checks a participant's token (constant time) and opens a session.
    fn authenticate(&self, participant: &str, token: &str) -> bool {
        let presented = digest(&SHA256, token.as_bytes());
        let ok = self
            .token_hashes
            .get(participant)
            .is_some_and(|hash| bool::from(hash.as_slice().ct_eq(presented.as_ref())));
        let mut sessions = self
            .authenticated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|p| p != participant);
        if ok {
            sessions.push(participant.to_owned());
        }
        ok
    }

    fn decide(&self, access: &Access<'_>) -> Decision {
        match access {
            Access::User { principal } => {
                let sessions = self
                    .authenticated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if sessions.iter().any(|p| p == principal) {
                    Decision::Allow
                } else if self.token_hashes.contains_key(*principal) {
                    Decision::Deny(format!("{principal} has not authenticated"))
                } else {
                    Decision::Deny(format!("{principal} is not a participant"))
                }
            }
            Access::System { .. } => {
                Decision::Deny("meeting content is for participants only".into())
            }
        }
    }
}

/// The meeting's policy: participants who authenticated read; only the
/// organizer shares (writes).
struct MeetingPolicy(Arc<Meeting>);

#[async_trait::async_trait]
impl ReleasePolicy for MeetingPolicy {
    async fn decide(&self, access: &Access<'_>, _: TenantId, _: FileId) -> Decision {
        self.0.decide(access)
    }

    async fn decide_write(&self, access: &Access<'_>, _: TenantId, _: FileId) -> Decision {
        match access {
            Access::User {
                principal: ORGANIZER,
            } => Decision::Allow,
            _ => Decision::Deny("only the organizer shares content".into()),
        }
    }
}

/// Who shares the meeting's content.
const ORGANIZER: &str = "organizer";

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("meeting-share: {error}");
            ExitCode::from(2)
        }
    }
}

/// A temporary deployment directory (with a master key in it): removed
/// when the run ends, however it ends.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let (dir, _temporary) = match &args.dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "atrest-meeting-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ));
            (dir.clone(), Some(RemovedOnDrop(dir)))
        }
    };
    let items: Vec<(String, Vec<u8>)> = if args.files.is_empty() {
        vec![
            ("slides.pdf".into(), vec![0x25; 200_000]),
            ("whiteboard.png".into(), vec![0x89; 50_000]),
            ("chat.txt".into(), b"see you next week".to_vec()),
        ]
    } else {
        args.files
            .iter()
            .map(|path| {
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                std::fs::read(path)
                    .map(|bytes| (name, bytes))
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .collect::<Result<_, _>>()?
    };

    let mut meeting = Meeting::default();
    let tokens: BTreeMap<&str, String> = ["alice", "bob"]
        .into_iter()
        .map(|p| meeting.invite(p).map(|t| (p, t)))
        .collect::<Result<_, _>>()?;
    let meeting = Arc::new(meeting);

    // The service: a deployment directory, opened with the meeting's
    // release policy; the meeting is a service-managed tenant.
    let policy = MeetingPolicy(Arc::clone(&meeting));
    let options = Options::new("meeting-share").policy(Arc::new(policy));
    let mut deployment = Deployment::init(&dir, None, None, options).await?;
    let _ = deployment
        .create_tenant("meeting", &TenantKeys::ServiceManaged)
        .await?;
    let tenant = deployment.tenant_id("meeting").await?;
    let files = deployment.files();

    // The organizer shares: every item sealed with its own file key.
    let organizer = Access::User {
        principal: ORGANIZER,
    };
    let mut shared: Vec<(String, FileRecord)> = Vec::new();
    for (name, bytes) in &items {
        let record = files
            .seal(&organizer, tenant, name, bytes.as_slice())
            .await?;
        shared.push((name.clone(), record));
    }

    // Who asks, with what token, and whether they should get the items.
    let attempts = [
        (
            "alice",
            tokens.get("alice").cloned().unwrap_or_default(),
            true,
        ),
        ("bob", "0000".to_owned(), false),
        ("bob", tokens.get("bob").cloned().unwrap_or_default(), true),
        (
            "mallory",
            tokens.get("alice").cloned().unwrap_or_default(),
            false,
        ),
    ];
    let mut as_expected = true;
    let mut report = Vec::new();
    for (participant, token, should_get) in attempts {
        let authenticated = meeting.authenticate(participant, &token);
        let access = Access::User {
            principal: participant,
        };
        for ((name, record), (_, original)) in shared.iter().zip(&items) {
            let item = FileSelector::version(tenant, name, record.version);
            let mut plain = WriterSink(Vec::new());
            let result = files.open(&access, &item, None, &mut plain).await;
            let got = result.is_ok() && &plain.0 == original;
            as_expected &= got == should_get;
            let outcome = match &result {
                Ok(_) => "released".to_owned(),
                Err(error) => format!("refused: {error}"),
            };
            report.push(serde_json::json!({
                "participant": participant,
                "authenticated": authenticated,
                "item": name,
                "outcome": outcome,
            }));
            if !args.json {
                println!("{participant:<8} authenticated={authenticated:<5} {name:<16} {outcome}");
            }
        }
    }

    let audit = Deployment::verify_audit(deployment.dir(), &TrustedAudit::default())
        .await?
        .report;
    let distinct_keys = shared
        .iter()
        .map(|(_, record)| record.wrapped_key.as_bytes().to_vec())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if args.json {
        let summary = serde_json::json!({
            "items": shared.len(),
            "distinct_item_keys": distinct_keys,
            "attempts": report,
            "audit_records": audit.records,
            "audit_verified": audit.is_ok(),
            "as_expected": as_expected,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} items, {distinct_keys} distinct item keys; audit trail: {} records, {}",
            shared.len(),
            audit.records,
            if audit.is_ok() {
                "verified"
            } else {
                "DOES NOT VERIFY"
            }
        );
    }
    Ok(as_expected && audit.is_ok() && distinct_keys == shared.len())
}
