//! `atrest demo`: the whole model on the embedded defaults, in a fresh
//! deployment directory, with a short report.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::tenant::fault::{Fault, FaultInjector};
use atrest::tenant::{Access, MasterKey, RootKeyRef, ServiceKeys};
use atrest::{Blobs as _, FileRecord, WriterSink};
use atrest_deployment::{
    self as deployment, Deployment, FileName, Options, TenantKeys, TrustedAudit,
};
use atrest_sqlite::SqliteSealedKeys;

use crate::ACTOR;
use crate::exit::Error;
use crate::output::{Output, rate};

/// A deterministic, incompressible-looking test file.
fn demo_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// How a request the demo expects to be refused ended.
fn outcome(result: &Result<FileRecord, deployment::Error>) -> String {
    match result {
        Ok(_) => "ALLOWED".into(),
        Err(error) => format!("refused ({error})"),
    }
}

fn user(principal: &str) -> Access<'_> {
    Access::User { principal }
}

/// Gets the newest version of `name` of `tenant` for `access`, whole or
/// bytes `range`, into memory.
async fn get(
    deployment: &Deployment,
    access: &Access<'_>,
    tenant: &str,
    name: &str,
    range: Option<std::ops::Range<u64>>,
) -> Result<(FileRecord, Vec<u8>), deployment::Error> {
    let mut out = WriterSink(Vec::new());
    let record = deployment
        .get(access, &FileName::newest(tenant, name), range, &mut out)
        .await?;
    Ok((record, out.0))
}

/// The outcome of getting a file the demo expects to be refused.
async fn attempt(deployment: &Deployment, access: &Access<'_>, tenant: &str, name: &str) -> String {
    outcome(
        &get(deployment, access, tenant, name, None)
            .await
            .map(|(record, _)| record),
    )
}

/// `atrest demo`.
pub(crate) async fn run(
    dir: Option<PathBuf>,
    keep: bool,
    size_mib: u64,
    out: Output,
) -> Result<(), Error> {
    let Some(dir) = dir else {
        // A directory of its own, removed once the demo succeeded unless
        // asked to keep it; kept (and named) if it failed, to look into.
        let dir = std::env::temp_dir().join(format!(
            "atrest-demo-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let result = run_in(&dir, size_mib, out).await;
        if result.is_err() || keep {
            atrest_cli::errln!("atrest: the demo's directory is kept: {}", dir.display());
        } else {
            fs::remove_dir_all(&dir).map_err(Error::at(&dir))?;
        }
        return result;
    };
    run_in(&dir, size_mib, out).await
}

/// The demo, in `dir` (which must be new or empty).
async fn run_in(dir: &Path, size_mib: u64, out: Output) -> Result<(), Error> {
    let json = out.json;
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut say = |what: &str, detail: String| {
        if !json {
            atrest_cli::outln!("  {what:<14} {detail}");
        }
        lines.push((what.to_owned(), detail));
    };
    if !json {
        atrest_cli::outln!("atrest demo in {}", dir.display());
    }

    let mut deployment = Deployment::init(dir, None, None, Options::new(ACTOR)).await?;
    say(
        "deployment",
        "master key file (mode 600), SQLite key store and catalog, audit log, local blob store"
            .into(),
    );
    let _ = deployment
        .create_tenant("contoso", &TenantKeys::ServiceManaged)
        .await?;
    let _ = deployment
        .create_tenant("fabrikam", &TenantKeys::ServiceManaged)
        .await?;
    say(
        "tenants",
        "contoso and fabrikam, service-managed: one TIK each under the service root key".into(),
    );

    let alice = user("alice@contoso");
    let bob = user("bob@fabrikam");
    let len =
        usize::try_from(size_mib << 20).map_err(|_| Error::usage("--size-mib is too large"))?;
    let data = demo_bytes(len);
    let started = Instant::now();
    let put = deployment
        .put(&alice, "contoso", "report.bin", data.as_slice())
        .await?;
    let put_time = started.elapsed();
    let _ = deployment
        .put(
            &alice,
            "contoso",
            "notes.txt",
            &b"meeting notes: nothing secret here"[..],
        )
        .await?;
    let _ = deployment
        .put(&bob, "fabrikam", "plans.txt", &b"fabrikam's plans"[..])
        .await?;
    say(
        "put",
        format!(
            "{size_mib} MiB sealed for contoso in {put_time:.2?} ({}); blob {} ({} bytes, {} segments)",
            rate(put.record.plaintext_len, put_time),
            put.blob,
            put.record.blob_len,
            put.record.segments()
        ),
    );

    // The storage layer cannot identify what it holds.
    let mut needles: Vec<Vec<u8>> = vec![
        b"contoso".to_vec(),
        b"report.bin".to_vec(),
        b"fabrikam".to_vec(),
    ];
    for tenant in deployment.tenants().await? {
        needles.push(tenant.id.into_bytes());
    }
    for listing in deployment.list(None).await? {
        let record = deployment
            .record(&FileName {
                tenant: &listing.tenant,
                name: &listing.name,
                version: Some(listing.version),
            })
            .await?;
        needles.push(record.file.as_bytes().to_vec());
        needles.push(record.file.to_string().into_bytes());
        needles.push(record.tenant.as_bytes().to_vec());
    }
    let blobs = deployment
        .blobs()
        .list()
        .await
        .map_err(deployment::Error::from)?;
    for (blob, len) in &blobs {
        let whole = usize::try_from(*len).unwrap_or(usize::MAX);
        let mut reader = deployment
            .blobs()
            .open(blob)
            .await
            .map_err(deployment::Error::from)?;
        let mut bytes = atrest::stream::RunBuffer::new();
        let _ = reader
            .read(&mut bytes, whole)
            .await
            .map_err(deployment::Error::from)?;
        if needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        {
            return Err(Error::Demo {
                what: "a blob holds an identifier",
            });
        }
    }
    say(
        "storage",
        format!(
            "{} blobs with random names; none holds a tenant id, file id or file name",
            blobs.len()
        ),
    );

    let started = Instant::now();
    let (_, back) = get(&deployment, &alice, "contoso", "report.bin", None).await?;
    let get_time = started.elapsed();
    if back != data {
        return Err(Error::Demo {
            what: "the file came back different",
        });
    }
    say(
        "get",
        format!(
            "{size_mib} MiB back, identical, in {get_time:.2?} ({})",
            rate(back.len() as u64, get_time)
        ),
    );

    let range = (len as u64 / 4)..(len as u64 / 2);
    let (_, part) = get(
        &deployment,
        &alice,
        "contoso",
        "report.bin",
        Some(range.clone()),
    )
    .await?;
    if part != data.get(len / 4..len / 2).unwrap_or_default() {
        return Err(Error::Demo {
            what: "the range came back different",
        });
    }
    say(
        "range",
        format!(
            "bytes {}..{}: identical ({} of {} segments decrypted)",
            range.start,
            range.end,
            put.record.segments() / 4 + 1,
            put.record.segments()
        ),
    );

    let refused = attempt(&deployment, &bob, "contoso", "report.bin").await;
    say(
        "cross-tenant",
        format!("bob@fabrikam reading contoso's file: {refused}"),
    );

    // One flipped bit in the stored blob.
    let blob_path = dir.join("blobs").join(&put.blob);
    let io_error = |source| Error::Io {
        what: blob_path.display().to_string(),
        source,
    };
    let mut stored = fs::read(&blob_path).map_err(io_error)?;
    let middle = stored.len() / 2;
    if let Some(byte) = stored.get_mut(middle) {
        *byte ^= 1;
    }
    fs::write(&blob_path, &stored).map_err(io_error)?;
    let tampered = attempt(&deployment, &alice, "contoso", "report.bin").await;
    say("tamper", format!("one flipped bit in the blob: {tampered}"));
    if let Some(byte) = stored.get_mut(middle) {
        *byte ^= 1;
    }
    fs::write(&blob_path, &stored).map_err(io_error)?;

    let (version, report, _) = deployment.rotate_tik("contoso", &mut |_| {}).await?;
    let (root, roll) = deployment.rotate_service_key("root").await?;
    let _ = get(&deployment, &alice, "contoso", "notes.txt", None).await?;
    say(
        "rotation",
        format!(
            "contoso TIK now version {version}, {} file keys re-wrapped, old TIK retired; service root key rolled to {root} ({} TIK versions re-wrapped); no data re-encrypted, files still open",
            report.rewrapped, roll.tik_versions
        ),
    );

    for (what, detail) in customer_key_demo(&dir.join("customer-key")).await? {
        say(what, detail);
    }

    let _ = deployment.purge("fabrikam").await?;
    let purged = attempt(&deployment, &bob, "fabrikam", "plans.txt").await;
    let _ = get(&deployment, &alice, "contoso", "notes.txt", None).await?;
    say(
        "purge",
        format!("fabrikam purged: its file {purged}; contoso unaffected"),
    );

    let audit = Deployment::verify_audit(deployment.dir(), &TrustedAudit::default())
        .await?
        .report;
    say(
        "audit",
        format!(
            "{} lines, every one under a signed checkpoint; matches the witness's newest ({} verified){}",
            audit.records,
            audit.checkpoints_verified,
            if audit.is_ok() { "" } else { " — PROBLEM" }
        ),
    );
    if json {
        let report: serde_json::Map<String, serde_json::Value> = lines
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        out.show(&report, String::new);
    }
    Ok(())
}

/// A stand-in for a customer's key store, whose availability can be
/// switched, holding one key `label`.
async fn stand_in_key_store(
    dir: &Path,
    name: &str,
    label: &str,
) -> Result<(Arc<FaultInjector>, RootKeyRef), deployment::Error> {
    let master = MasterKey::create_file(&dir.join(format!("{name}.key")))?;
    let store = SqliteSealedKeys::open(&dir.join(format!("{name}.sqlite"))).await?;
    let keys = ServiceKeys::new(name, Arc::new(store), master)?;
    let key = keys.create_key(label).await?;
    Ok((Arc::new(FaultInjector::new(Arc::new(keys))), key))
}

/// The customer-key rules, in a second deployment whose customer keys are
/// in two stand-in key stores (real tenants use PKCS#11 tokens:
/// `atrest tenant create --customer-key`).
async fn customer_key_demo(dir: &Path) -> Result<Vec<(&'static str, String)>, Error> {
    fs::create_dir_all(dir).map_err(Error::at(dir))?;
    let (hsm_a, key_a) = stand_in_key_store(dir, "hsm-a", "northwind-1").await?;
    let (hsm_b, key_b) = stand_in_key_store(dir, "hsm-b", "northwind-1").await?;
    let options = Options::new(ACTOR)
        .provider(hsm_a.clone())
        .provider(hsm_b.clone())
        .cache_ttl(Duration::from_millis(200));
    let mut deployment = Deployment::init(&dir.join("deployment"), None, None, options).await?;
    let _ = deployment
        .create_tenant(
            "northwind",
            &TenantKeys::CustomerKeyAt {
                keys: [key_a, key_b],
            },
        )
        .await?;
    let carol = user("carol@northwind");
    let scan = deployment.system_capability("malware scan")?;
    let system = Access::System(&scan);
    let _ = deployment
        .put(&carol, "northwind", "ledger.csv", &b"northwind's data"[..])
        .await?;
    let deployment = &deployment;
    let open = async |access: &Access<'_>| {
        get(deployment, access, "northwind", "ledger.csv", None)
            .await
            .map(|(record, _)| record)
    };
    let keys = deployment.files().keys();
    let mut lines = vec![(
        "customer key",
        "northwind: TIK wrapped under HSM A, HSM B and the availability key".to_owned(),
    )];
    keys.flush_cache();
    hsm_a.set(Fault::Unavailable);
    hsm_b.set(Fault::Unavailable);
    lines.push((
        "",
        format!(
            "both HSMs unavailable → availability key used, audited: {}",
            outcome(&open(&carol).await)
        ),
    ));
    keys.flush_cache();
    hsm_a.set(Fault::AccessDenied);
    lines.push((
        "",
        format!(
            "HSM A refuses, HSM B down → user request {}",
            outcome(&open(&carol).await)
        ),
    ));
    lines.push((
        "",
        format!(
            "  … a marked system operation: {} (audited)",
            outcome(&open(&system).await)
        ),
    ));
    hsm_a.set(Fault::None);
    hsm_b.set(Fault::None);
    let _ = open(&carol).await?;
    hsm_a.set(Fault::AccessDenied);
    hsm_b.set(Fault::AccessDenied);
    let cached = open(&carol).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let expired = open(&carol).await;
    lines.push((
        "revocation",
        format!(
            "customer removes access: within the cache TTL (200 ms here) {}; after it {}",
            if cached.is_ok() {
                "still readable"
            } else {
                "refused"
            },
            outcome(&expired)
        ),
    ));
    Ok(lines)
}
