//! Meeting content through `atrest-serve` over TLS: an organiser and three
//! participants, items uploaded by participants, each item's key delivered
//! to each participant and the item decrypted on their side by `atrest
//! meeting fetch`; a user of the tenant outside the meeting, a user of
//! another tenant and a removed participant refused; the meeting ended and
//! its items unreadable for everyone who did not keep a key and a copy.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use atrest_test_support::pki::{issue, make_ca};
use atrest_test_support::{TempDir, seeded as content};
use service_support::{Instance, atrest, token};

/// A request through `curl` over TLS, trusting the CA at `ca`: the status
/// and the body.
fn curl(ca: &Path, token: &str, method: &str, url: &str, body: Option<&Path>) -> (u16, Vec<u8>) {
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--cacert"])
        .arg(ca);
    if method == "HEAD" {
        command.arg("--head");
    } else {
        command.args(["--request", method]);
    }
    command
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--output", "-", "--write-out", "\n%{http_code}"]);
    if let Some(body) = body {
        command
            .args([
                "--header",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", body.display()));
    }
    let output = command.arg(url).output().unwrap();
    assert!(output.status.success(), "curl {method} {url}: {output:?}");
    let mut all = output.stdout;
    let at = all.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&all[at + 1..]).parse().unwrap();
    all.truncate(at);
    (status, all)
}

/// A participant's token in a private file.
fn token_file(dir: &Path, principal: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("{principal}.token"));
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `atrest meeting fetch` of `item` into `out`, as the holder of `token`.
fn fetch(service: &str, ca: &Path, token: &Path, meeting: &str, item: &str, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args(["meeting", "fetch", "--service", service, "--ca-file"])
        .arg(ca)
        .arg("--token-file")
        .arg(token)
        .args(["contoso", meeting, item, "-o"])
        .arg(out)
        .output()
        .unwrap()
}

fn audit_events(data: &Path, kind: &str) -> Vec<serde_json::Value> {
    let shown = atrest(data, &["--json", "audit", "show", "--tenant", "contoso"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    shown
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["event"]["type"] == kind)
        .cloned()
        .collect()
}

#[test]
fn meeting_content_is_decrypted_by_its_participants_alone() {
    let dir = TempDir::new("service-meetings");
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_ca(&pki);
    let (chain, key) = issue(&pki, "server", "meetings");
    let ca = pki.join("ca.pem");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "contoso"]);
    atrest(&data, &["tenant", "create", "fabrikam"]);
    let instance = Instance::start(
        &data,
        "meetings",
        &[],
        &[
            "--tls-cert",
            chain.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = instance.addr.rsplit(':').next().unwrap().to_owned();
    let service = format!("https://localhost:{port}");
    let people = [
        "alice@contoso",
        "bob@contoso",
        "carol@contoso",
        "dave@contoso",
        "eve@contoso",
        "mallory@fabrikam",
    ];
    let tokens: Vec<String> = people.iter().map(|p| token(&data, p)).collect();
    let files: Vec<PathBuf> = people
        .iter()
        .zip(&tokens)
        .map(|(p, t)| token_file(dir.path(), p, t))
        .collect();
    let (alice, bob, carol, dave, eve, mallory) = (0, 1, 2, 3, 4, 5);
    let meetings = format!("{service}/v1/tenants/contoso/meetings");

    // Alice organises; Bob, Carol and Dave take part.
    let asked = dir.path().join("new-meeting.json");
    std::fs::write(
        &asked,
        r#"{"participants":["bob@contoso","carol@contoso","dave@contoso"]}"#,
    )
    .unwrap();
    let (status, made) = curl(&ca, &tokens[alice], "POST", &meetings, Some(&asked));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&made));
    let made: serde_json::Value = serde_json::from_slice(&made).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["organiser"], "alice@contoso");
    let meeting = format!("{meetings}/{id}");

    // Bob shares a deck, Carol notes (a small upload, sealed in a batch).
    let deck = content(700_000, 3);
    let notes = b"minutes: ship it".to_vec();
    for (who, name, body) in [(bob, "deck.pdf", &deck), (carol, "notes/day-1.txt", &notes)] {
        let path = dir.path().join("upload");
        std::fs::write(&path, body).unwrap();
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--fail-with-body", "--cacert"])
            .arg(&ca)
            .args(["--header"])
            .arg(format!("Authorization: Bearer {}", tokens[who]))
            .args(["--upload-file"])
            .arg(&path)
            .arg(format!("{meeting}/items/{name}"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let (status, shown) = curl(&ca, &tokens[dave], "GET", &meeting, None);
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
    assert_eq!(shown["items"].as_array().unwrap().len(), 2, "{shown}");

    // Every member decrypts every item on their side.
    let out = dir.path().join("out");
    for who in [alice, bob, carol, dave] {
        for (item, body) in [("deck.pdf", &deck), ("notes/day-1.txt", &notes)] {
            let fetched = fetch(&service, &ca, &files[who], &id, item, &out);
            assert!(fetched.status.success(), "{}: {fetched:?}", people[who]);
            assert_eq!(&std::fs::read(&out).unwrap(), body);
        }
    }
    assert_eq!(audit_events(&data, "file_key_delivered").len(), 8);

    // Eve (of the tenant, not in the meeting) and Mallory (of another
    // tenant) get no key: exit 4, nothing written; Eve cannot reach the
    // items through the file routes either, nor see them listed.
    std::fs::remove_file(&out).unwrap();
    for who in [eve, mallory] {
        let refused = fetch(&service, &ca, &files[who], &id, "deck.pdf", &out);
        assert_eq!(
            refused.status.code(),
            Some(4),
            "{}: {refused:?}",
            people[who]
        );
        assert!(!out.exists());
    }
    let hidden = format!("{service}/v1/tenants/contoso/files/.atrest-meetings/{id}/items/deck.pdf");
    for method in ["GET", "HEAD", "DELETE"] {
        let (status, _) = curl(&ca, &tokens[eve], method, &hidden, None);
        assert_eq!(status, 400, "{method}");
    }
    let (_, listed) = curl(
        &ca,
        &tokens[eve],
        "GET",
        &format!("{service}/v1/tenants/contoso/files"),
        None,
    );
    assert!(!String::from_utf8_lossy(&listed).contains("atrest-meetings"));
    // Only the organiser manages the meeting.
    let (status, _) = curl(
        &ca,
        &tokens[bob],
        "DELETE",
        &format!("{meeting}/participants/carol@contoso"),
        None,
    );
    assert_eq!(status, 403);

    // Bob keeps a delivered key and a copy of the ciphertext: the key is
    // in no log, and what he kept decrypts after the meeting ends (what a
    // participant who received a key can still do).
    let (status, kept_key) = curl(
        &ca,
        &tokens[bob],
        "GET",
        &format!("{meeting}/keys/deck.pdf"),
        None,
    );
    assert_eq!(status, 200);
    let kept_key = String::from_utf8(kept_key).unwrap();
    let key_hex = serde_json::from_str::<serde_json::Value>(&kept_key).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let version = serde_json::from_str::<serde_json::Value>(&kept_key).unwrap()["version"]
        .as_u64()
        .unwrap();
    let (status, kept_copy) = curl(
        &ca,
        &tokens[bob],
        "GET",
        &format!("{meeting}/items/deck.pdf?version={version}"),
        None,
    );
    assert_eq!(status, 200);

    // Dave is removed: no key for him from then on, and the refusal is
    // audited.
    let (status, _) = curl(
        &ca,
        &tokens[alice],
        "DELETE",
        &format!("{meeting}/participants/dave@contoso"),
        None,
    );
    assert_eq!(status, 200);
    let refused = fetch(&service, &ca, &files[dave], &id, "deck.pdf", &out);
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let denied = audit_events(&data, "release_denied");
    assert!(
        denied
            .iter()
            .any(|e| e["event"]["principal"] == "dave@contoso"),
        "{denied:?}"
    );
    assert!(
        fetch(&service, &ca, &files[carol], &id, "deck.pdf", &out)
            .status
            .success()
    );

    // Alice ends the meeting: nobody gets a key or the ciphertext any
    // more, and the deletions are made final (the tenant's TIK rolled and
    // the old version retired with the deleted keys).
    let (status, ended) = curl(&ca, &tokens[alice], "DELETE", &meeting, None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ended));
    // Ended once: no item can be added to it, and ending it again finds
    // no meeting.
    // (An empty body: a refusal answered before a body is read resets
    // the stream under HTTP/2, which curl reports instead of the status.)
    let late = dir.path().join("late");
    std::fs::write(&late, b"").unwrap();
    let (status, _) = curl(
        &ca,
        &tokens[bob],
        "PUT",
        &format!("{meeting}/items/late.txt"),
        Some(&late),
    );
    assert_eq!(status, 404);
    let (status, _) = curl(&ca, &tokens[alice], "DELETE", &meeting, None);
    assert_eq!(status, 404);
    for who in [alice, bob, carol] {
        let gone = fetch(&service, &ca, &files[who], &id, "deck.pdf", &out);
        assert_eq!(gone.status.code(), Some(3), "{}: {gone:?}", people[who]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while audit_events(&data, "tik_retired").is_empty() {
        assert!(Instant::now() < deadline, "the deletions were not erased");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The operator finds nothing of the meeting either.
    let listed = atrest(&data, &["--json", "ls", "contoso"]);
    assert!(!listed.contains(&id), "{listed}");

    // What Bob kept still decrypts (the documented limit of delivery).
    let delivered = atrest::DeliveredKey::from_wire(&kept_key).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut plain = atrest::WriterSink(Vec::new());
    runtime
        .block_on(delivered.open(kept_copy.as_slice(), &mut plain))
        .unwrap();
    assert_eq!(plain.0, deck);

    // No key in the service's log or the audit trail.
    assert!(!instance.log().contains(&key_hex));
    let audit = atrest(&data, &["--json", "audit", "show"]);
    assert!(!audit.contains(&key_hex));
}
