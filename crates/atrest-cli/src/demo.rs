//! `atrest demo`: the whole model on the embedded defaults, in a fresh
//! deployment directory, with a short report.

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest::tenant::blocking::block_on;
use atrest::tenant::fault::{Fault, FaultInjector};
use atrest::tenant::{Access, MasterKey, RootKeyRef, ServiceKeys};
use atrest_cli::deployment::{self, Deployment, Options, TenantKeys, TrustedAudit};
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
fn outcome(result: &Result<u64, deployment::Error>) -> String {
    match result {
        Ok(_) => "ALLOWED".into(),
        Err(error) => format!("refused ({error})"),
    }
}

fn user(principal: &str) -> Access<'_> {
    Access::User { principal }
}

/// `atrest demo`.
pub(crate) fn run(dir: Option<PathBuf>, size_mib: u64, out: Output) -> Result<(), Error> {
    let json = out.json;
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!(
            "atrest-demo-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )),
    };
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

    let mut deployment = Deployment::init(&dir, None, None, Options::new(ACTOR))?;
    say(
        "deployment",
        "master key file (mode 600), SQLite key store and catalog, audit log, local blob store"
            .into(),
    );
    let _ = deployment.create_tenant("contoso", &TenantKeys::ServiceManaged)?;
    let _ = deployment.create_tenant("fabrikam", &TenantKeys::ServiceManaged)?;
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
    let put = deployment.put("contoso", "report.bin", &alice, data.as_slice())?;
    let put_time = started.elapsed();
    let _ = deployment.put(
        "contoso",
        "notes.txt",
        &alice,
        &b"meeting notes: nothing secret here"[..],
    )?;
    let _ = deployment.put("fabrikam", "plans.txt", &bob, &b"fabrikam's plans"[..])?;
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
    for tenant in deployment.tenants()? {
        needles.push(tenant.id.into_bytes());
    }
    for listing in deployment.list(None)? {
        let record = deployment.record(&listing.tenant, &listing.name, Some(listing.version))?;
        needles.push(record.file.as_bytes().to_vec());
        needles.push(record.file.to_string().into_bytes());
        needles.push(record.tenant.as_bytes().to_vec());
    }
    let blobs = deployment.blobs().list().map_err(deployment::Error::from)?;
    for (blob, _) in &blobs {
        let mut bytes = Vec::new();
        let _ = deployment
            .blobs()
            .open(blob)
            .map_err(deployment::Error::from)?
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Io {
                what: format!("blob {blob}"),
                source,
            })?;
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
    let mut back = Vec::with_capacity(len);
    let _ = deployment.get("contoso", "report.bin", None, &alice, None, &mut back)?;
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
    let mut part = Vec::new();
    let _ = deployment.get(
        "contoso",
        "report.bin",
        None,
        &alice,
        Some(range.clone()),
        &mut part,
    )?;
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

    let refused = deployment.get("contoso", "report.bin", None, &bob, None, &mut io::sink());
    say(
        "cross-tenant",
        format!("bob@fabrikam reading contoso's file: {}", outcome(&refused)),
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
    let tampered = deployment.get("contoso", "report.bin", None, &alice, None, &mut io::sink());
    say(
        "tamper",
        format!("one flipped bit in the blob: {}", outcome(&tampered)),
    );
    if let Some(byte) = stored.get_mut(middle) {
        *byte ^= 1;
    }
    fs::write(&blob_path, &stored).map_err(io_error)?;

    let (version, report, _) = deployment.rotate_tik("contoso", &mut |_| {})?;
    let (root, roll) = deployment.rotate_service_key("root")?;
    let mut again = Vec::new();
    let _ = deployment.get("contoso", "notes.txt", None, &alice, None, &mut again)?;
    say(
        "rotation",
        format!(
            "contoso TIK now version {version}, {} file keys re-wrapped, old TIK retired; service root key rolled to {root} ({} TIK versions re-wrapped); no data re-encrypted, files still open",
            report.rewrapped, roll.tik_versions
        ),
    );

    for (what, detail) in customer_key_demo(&dir.join("customer-key"))? {
        say(what, detail);
    }

    let _ = deployment.purge("fabrikam")?;
    let purged = deployment.get("fabrikam", "plans.txt", None, &bob, None, &mut io::sink());
    let mut still = Vec::new();
    let _ = deployment.get("contoso", "notes.txt", None, &alice, None, &mut still)?;
    say(
        "purge",
        format!(
            "fabrikam purged: its file {}; contoso unaffected",
            outcome(&purged)
        ),
    );

    let audit = Deployment::verify_audit(deployment.dir(), &TrustedAudit::default())?.report;
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
fn stand_in_key_store(
    dir: &Path,
    name: &str,
    label: &str,
) -> Result<(Arc<FaultInjector>, RootKeyRef), deployment::Error> {
    let master = MasterKey::create_file(&dir.join(format!("{name}.key")))?;
    let store = block_on(SqliteSealedKeys::open(&dir.join(format!("{name}.sqlite"))))?;
    let keys = ServiceKeys::new(name, Arc::new(store), master)?;
    let key = block_on(keys.create_key(label))?;
    Ok((Arc::new(FaultInjector::new(Arc::new(keys))), key))
}

/// The customer-key rules, in a second deployment whose customer keys are
/// in two stand-in key stores (real tenants use PKCS#11 tokens:
/// `atrest tenant create --customer-key`).
fn customer_key_demo(dir: &Path) -> Result<Vec<(&'static str, String)>, Error> {
    fs::create_dir_all(dir).map_err(Error::at(dir))?;
    let (hsm_a, key_a) = stand_in_key_store(dir, "hsm-a", "northwind-1")?;
    let (hsm_b, key_b) = stand_in_key_store(dir, "hsm-b", "northwind-1")?;
    let options = Options::new(ACTOR)
        .provider(hsm_a.clone())
        .provider(hsm_b.clone())
        .cache_ttl(Duration::from_millis(200));
    let mut deployment = Deployment::init(&dir.join("deployment"), None, None, options)?;
    let _ = deployment.create_tenant(
        "northwind",
        &TenantKeys::CustomerKeyAt {
            keys: [key_a, key_b],
        },
    )?;
    let carol = user("carol@northwind");
    let scan = deployment.system_capability("malware scan");
    let system = Access::System(&scan);
    let _ = deployment.put("northwind", "ledger.csv", &carol, &b"northwind's data"[..])?;
    let open = |access: &Access<'_>| {
        deployment.get(
            "northwind",
            "ledger.csv",
            None,
            access,
            None,
            &mut io::sink(),
        )
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
            outcome(&open(&carol))
        ),
    ));
    keys.flush_cache();
    hsm_a.set(Fault::AccessDenied);
    lines.push((
        "",
        format!(
            "HSM A refuses, HSM B down → user request {}",
            outcome(&open(&carol))
        ),
    ));
    lines.push((
        "",
        format!(
            "  … a marked system operation: {} (audited)",
            outcome(&open(&system))
        ),
    ));
    hsm_a.set(Fault::None);
    hsm_b.set(Fault::None);
    let _ = open(&carol)?;
    hsm_a.set(Fault::AccessDenied);
    hsm_b.set(Fault::AccessDenied);
    let cached = open(&carol);
    std::thread::sleep(Duration::from_millis(250));
    let expired = open(&carol);
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
