//! The upload service `atrest-serve` on the embedded defaults, driven over
//! HTTP as a client would: uploads sealed in the request, downloads and
//! byte ranges, tokens, statuses, request ids in the audit trail, and
//! uploads cut short.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use atrest_test_support::{TempDir, seeded as content};
use serde_json::Value;

use service_support::{Instance, Response, atrest, bearer, head, request, token};

fn audit(data: &Path, tenant: &str) -> Vec<Value> {
    let json = atrest(data, &["--json", "audit", "show", "--tenant", tenant]);
    serde_json::from_str::<Value>(&json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The events of the request the client sent as `request` (its own id,
/// which the trail keeps beside the service's), or whose service id it is.
fn events_of(records: &[Value], request: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["client_request"] == request || r["request"] == request)
        .map(|r| {
            format!(
                "{}:{}",
                r["event"]["type"].as_str().unwrap(),
                r["outcome"]["result"].as_str().unwrap()
            )
        })
        .collect()
}

struct Client<'a> {
    addr: &'a str,
    token: String,
}

impl Client<'_> {
    fn send(&self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
        let auth = bearer(&self.token);
        let mut headers = vec![(auth.0, auth.1.as_str())];
        headers.extend_from_slice(extra);
        request(self.addr, method, path, &headers, body)
    }

    fn get(&self, path: &str, extra: &[(&str, &str)]) -> Response {
        self.send("GET", path, extra, b"")
    }
}

/// Whether `needle` appears in any file under `dir`.
fn stored_anywhere(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            stored_anywhere(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}

#[test]
fn the_service_seals_uploads_and_serves_files_ranges_and_listings() {
    let dir = TempDir::new("service");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    atrest(&data, &["tenant", "create", "globex"]);
    let alice_token = token(&data, "alice@acme");
    let bob_token = token(&data, "bob@globex");
    // A token stands for a member of a tenant that exists.
    let stranger = Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["token", "add", "eve@nowhere"])
        .output()
        .unwrap();
    assert_eq!(stranger.status.code(), Some(3), "{stranger:?}");
    let instance = Instance::start(&data, "service-a", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: alice_token.clone(),
    };
    let path = "/v1/tenants/acme/files/reports/q3.pdf";

    // Two versions, the first with the client's request id.
    let first = content(1_000_000, 1);
    let put = alice.send("PUT", path, &[("X-Request-Id", "upload-1")], &first);
    assert_eq!(put.status, 201, "{}", put.text());
    // The service makes the request's id; the client's is kept beside it.
    let upload_1 = put.header("x-request-id").unwrap().to_owned();
    assert_eq!(upload_1.len(), 32, "{upload_1}");
    let answer: Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["bytes"], 1_000_000);
    let second = content(200_000, 2);
    let put = alice.send("PUT", path, &[], &second);
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.header("x-request-id").map(str::len), Some(32));
    // An empty file is a file.
    let empty = alice.send("PUT", "/v1/tenants/acme/files/empty", &[], b"");
    assert_eq!(empty.status, 201, "{}", empty.text());

    // Whole files, by version.
    let latest = alice.get(path, &[("X-Request-Id", "download-1")]);
    assert_eq!(latest.status, 200);
    assert!(latest.body == second);
    assert_eq!(latest.header("content-length"), Some("200000"));
    assert_eq!(latest.header("accept-ranges"), Some("bytes"));
    assert_eq!(latest.header("x-atrest-version"), Some("2"));
    let older = alice.get(&format!("{path}?version=1"), &[]);
    assert_eq!(older.status, 200);
    assert!(older.body == first);
    let nothing = alice.get("/v1/tenants/acme/files/empty", &[]);
    assert_eq!((nothing.status, nothing.body.len()), (200, 0));

    // Byte ranges, as RFC 9110 has them.
    let v1 = format!("{path}?version=1");
    for (range, expected) in [
        ("bytes=1000-1999", 1000..2000),
        ("bytes=999500-", 999_500..1_000_000),
        ("bytes=-300", 999_700..1_000_000),
        ("bytes=65530-131080", 65_530..131_081),
        ("bytes=999999-5000000", 999_999..1_000_000),
    ] {
        let part = alice.get(&v1, &[("Range", range)]);
        assert_eq!(part.status, 206, "{range}: {}", part.text());
        assert!(part.body == first[expected.clone()], "{range}");
        let content_range = format!("bytes {}-{}/1000000", expected.start, expected.end - 1);
        assert_eq!(part.header("content-range"), Some(content_range.as_str()));
    }
    for range in ["bytes=1000000-", "bytes=-0"] {
        let refused = alice.get(&v1, &[("Range", range)]);
        assert_eq!(refused.status, 416, "{range}");
        assert_eq!(refused.header("content-range"), Some("bytes */1000000"));
    }
    let ignored = alice.get(&v1, &[("Range", "bytes=0-1,5-6")]);
    assert_eq!(ignored.status, 200);
    assert!(ignored.body == first);

    // HEAD: the headers of GET, no body.
    let head_only = alice.send("HEAD", path, &[], b"");
    assert_eq!(head_only.status, 200);
    assert_eq!(head_only.header("content-length"), Some("200000"));
    assert!(head_only.body.is_empty());

    // The listing, every version.
    let listing = alice.get("/v1/tenants/acme/files?versions=all", &[]);
    assert_eq!(listing.status, 200);
    let listing: Value = serde_json::from_slice(&listing.body).unwrap();
    let versions: Vec<(String, u64)> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(versions.contains(&("reports/q3.pdf".into(), 1)));
    assert!(versions.contains(&("reports/q3.pdf".into(), 2)));

    // Statuses from the library's error kinds.
    let no_token = request(&instance.addr, "GET", path, &[], b"");
    assert_eq!(no_token.status, 401);
    assert!(no_token.header("www-authenticate").is_some());
    let forged = Client {
        addr: &instance.addr,
        token: format!("{alice_token}x"),
    };
    assert_eq!(forged.get(path, &[]).status, 401);
    let lower_case = format!("bearer {alice_token}");
    let scheme = request(
        &instance.addr,
        "GET",
        path,
        &[("Authorization", &lower_case)],
        b"",
    );
    assert_eq!(scheme.status, 200, "the scheme's name is case-insensitive");
    let bob = Client {
        addr: &instance.addr,
        token: bob_token,
    };
    assert_eq!(bob.get(path, &[]).status, 403);
    assert_eq!(bob.send("PUT", path, &[], b"overwrite").status, 403);
    assert_eq!(bob.get("/v1/tenants/acme/files", &[]).status, 403);
    assert_eq!(alice.get("/v1/tenants/acme/files/missing", &[]).status, 404);
    assert_eq!(alice.get(&format!("{path}?version=9"), &[]).status, 404);
    // Version 0 is a malformed request, not damage (400, never 500).
    let zero = alice.get(&format!("{path}?version=0"), &[]);
    assert_eq!(zero.status, 400, "{}", String::from_utf8_lossy(&zero.body));
    assert_eq!(alice.get("/v1/tenants/nowhere/files/x", &[]).status, 403);
    let bad_name = alice.send("PUT", "/v1/tenants/acme/files/a/../b", &[], b"x");
    assert_eq!(bad_name.status, 400, "{}", bad_name.text());

    // Storage holds ciphertext only.
    assert!(!stored_anywhere(&data.join("blobs"), &first[5000..5064]));

    // Every audit record of a request carries its id, the service's, and
    // the client's own beside it.
    let records = audit(&data, "acme");
    let upload = events_of(&records, "upload-1");
    assert_eq!(
        upload,
        ["file_key_wrapped:success", "file_sealed:success"],
        "{upload:?}"
    );
    assert_eq!(events_of(&records, &upload_1), upload);
    assert!(
        records
            .iter()
            .filter(|r| r["client_request"] == "upload-1")
            .all(|r| r["request"] == upload_1.as_str()),
        "a client's id never stands in for the service's"
    );
    let download = events_of(&records, "download-1");
    assert_eq!(
        download,
        ["file_key_released:success", "file_opened:success"],
        "{download:?}"
    );

    // The trail the requests left verifies.
    atrest(&data, &["audit", "verify"]);

    // A revoked token stops working within the reload interval.
    let list = Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["token", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    let id = list
        .lines()
        .find(|line| line.ends_with("alice@acme"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        !std::fs::read_to_string(data.join("service-tokens.json"))
            .unwrap()
            .contains(&alice_token)
    );
    let revoked = Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["token", "revoke", &id])
        .status()
        .unwrap();
    assert!(revoked.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alice.get(path, &[]).status != 401 {
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_upload_cut_short_leaves_no_record_and_no_blob() {
    let dir = TempDir::new("service-cut");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    let alice = token(&data, "alice@acme");
    let instance = Instance::start(&data, "service-cut", &[], &[]);
    let auth = bearer(&alice);
    let headers = [(auth.0, auth.1.as_str())];

    // A body shorter than its Content-Length, then the client goes away.
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    let start = head(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/cut-length",
        &[(auth.0, auth.1.as_str()), ("X-Request-Id", "cut-1")],
        Some(1_000_000),
    );
    stream.write_all(start.as_bytes()).unwrap();
    stream.write_all(&content(300_000, 3)).unwrap();
    drop(stream);

    // A chunked body whose last chunk never comes.
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    let start = head(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/cut-chunked",
        &[
            (auth.0, auth.1.as_str()),
            ("X-Request-Id", "cut-2"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    stream.write_all(start.as_bytes()).unwrap();
    let chunk = content(100_000, 4);
    for _ in 0..3 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    drop(stream);

    // A small upload (sealed in a batch once whole) cut short: never begun.
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    let start = head(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/cut-small",
        &[(auth.0, auth.1.as_str()), ("X-Request-Id", "cut-3")],
        Some(4096),
    );
    stream.write_all(start.as_bytes()).unwrap();
    stream.write_all(&content(1000, 6)).unwrap();
    drop(stream);

    // Both streamed seals fail (audited as failed, under their request ids) ...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = audit(&data, "acme");
        let failed = ["cut-1", "cut-2"]
            .iter()
            .filter(|id| events_of(&records, id).contains(&"file_sealed:failed".to_owned()))
            .count();
        if failed == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut uploads were not abandoned: {records:?}\n{}",
            instance.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... leaving no file, no blob and no staging file.
    let listing = request(
        &instance.addr,
        "GET",
        "/v1/tenants/acme/files",
        &headers,
        b"",
    );
    let listing: Value = serde_json::from_slice(&listing.body).unwrap();
    assert_eq!(listing["files"], serde_json::json!([]));
    for name in ["cut-length", "cut-chunked", "cut-small"] {
        let path = format!("/v1/tenants/acme/files/{name}");
        assert_eq!(
            request(&instance.addr, "GET", &path, &headers, b"").status,
            404
        );
    }
    let blobs: Vec<_> = std::fs::read_dir(data.join("blobs"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "left behind: {blobs:?}");

    // The service goes on.
    let whole = content(50_000, 5);
    let put = request(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/whole",
        &headers,
        &whole,
    );
    assert_eq!(put.status, 201);
    let get = request(
        &instance.addr,
        "GET",
        "/v1/tenants/acme/files/whole",
        &headers,
        b"",
    );
    assert!(get.body == whole);
}

#[test]
fn small_uploads_at_once_are_sealed_together_each_under_its_request_id() {
    let dir = TempDir::new("service-batch");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    atrest(&data, &["tenant", "create", "globex"]);
    let alice = token(&data, "alice@acme");
    let bob = token(&data, "bob@globex");
    let instance = Instance::start(&data, "service-batch", &[], &[]);
    let addr = instance.addr.clone();

    // 48 small uploads at once, by two principals of two tenants, some to
    // one name (each its own version), one with a name the rules refuse.
    let threads: Vec<_> = (0..48_u64)
        .map(|i| {
            let (addr, token) = (addr.clone(), if i % 2 == 0 { &alice } else { &bob }.clone());
            std::thread::spawn(move || {
                let tenant = if i % 2 == 0 { "acme" } else { "globex" };
                let name = match i {
                    7 => "bad/../name".to_owned(),
                    _ if i % 3 == 0 => "shared".to_owned(),
                    _ => format!("item-{i}"),
                };
                let bytes = content(4096, i);
                let auth = bearer(&token);
                let id = format!("small-{i}");
                let put = request(
                    &addr,
                    "PUT",
                    &format!("/v1/tenants/{tenant}/files/{name}"),
                    &[(auth.0, auth.1.as_str()), ("X-Request-Id", id.as_str())],
                    &bytes,
                );
                (i, tenant, name, bytes, put)
            })
        })
        .collect();
    let mut shared_versions = std::collections::BTreeSet::new();
    let mut stored = Vec::new();
    for thread in threads {
        let (i, tenant, name, bytes, put) = thread.join().unwrap();
        if i == 7 {
            assert_eq!(put.status, 400, "{}", put.text());
            continue;
        }
        assert_eq!(put.status, 201, "{i}: {}", put.text());
        let answer: Value = serde_json::from_slice(&put.body).unwrap();
        let version = answer["version"].as_u64().unwrap();
        if name == "shared" {
            assert!(
                shared_versions.insert((tenant, version)),
                "one version each"
            );
        }
        stored.push((i, tenant, name, version, bytes));
    }
    // Every upload opens to its bytes, through its own version.
    for (i, tenant, name, version, bytes) in &stored {
        let token = if *tenant == "acme" { &alice } else { &bob };
        let got = Client {
            addr: &addr,
            token: token.clone(),
        }
        .get(
            &format!("/v1/tenants/{tenant}/files/{name}?version={version}"),
            &[],
        );
        assert_eq!(got.status, 200, "{i}");
        assert!(got.body == *bytes, "{i}");
    }
    // Each keeps its own request id in the audit trail, batched or not.
    for tenant in ["acme", "globex"] {
        let records = audit(&data, tenant);
        for (i, _, _, _, _) in stored.iter().filter(|s| s.1 == tenant) {
            assert_eq!(
                events_of(&records, &format!("small-{i}")),
                ["file_key_wrapped:success", "file_sealed:success"],
                "upload {i}"
            );
        }
    }
    atrest(&data, &["audit", "verify"]);
}

/// Conditional requests (RFC 9110 §13): a stale `If-Range` gets the whole
/// current version (never a range of another version grafted onto the
/// client's copy), `If-None-Match` gets `304`, every version says when it
/// was sealed; an HTTP/1.1 upload without framing is `411`, not an empty
/// version.
#[test]
fn conditional_requests_never_mix_versions() {
    let dir = TempDir::new("service-conditional");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    let alice_token = token(&data, "alice@acme");
    let instance = Instance::start(&data, "service-conditional", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: alice_token,
    };
    let path = "/v1/tenants/acme/files/report.bin";
    let (v1, v2) = (content(100_000, 1), content(100_000, 2));
    assert_eq!(alice.send("PUT", path, &[], &v1).status, 201);
    let first = alice.get(path, &[]);
    let etag1 = first.header("etag").unwrap().to_owned();
    assert!(first.header("last-modified").is_some());

    // The client's copy is current: 304, no body.
    let current = alice.get(path, &[("If-None-Match", &etag1)]);
    assert_eq!(current.status, 304);
    assert!(current.body.is_empty());
    assert_eq!(current.header("etag"), Some(etag1.as_str()));

    assert_eq!(alice.send("PUT", path, &[], &v2).status, 201);
    let second = alice.get(path, &[]);
    let etag2 = second.header("etag").unwrap().to_owned();
    let modified2 = second.header("last-modified").unwrap().to_owned();
    assert_ne!(etag1, etag2);
    assert_eq!(alice.get(path, &[("If-None-Match", &etag1)]).status, 200);

    // A resumed download of version 1 after version 2 was sealed: the
    // whole of version 2, not its bytes 50,000.. after version 1's first.
    let stale = alice.get(path, &[("Range", "bytes=50000-"), ("If-Range", &etag1)]);
    assert_eq!(stale.status, 200);
    assert!(stale.body == v2);
    let fresh = alice.get(path, &[("Range", "bytes=50000-"), ("If-Range", &etag2)]);
    assert_eq!(fresh.status, 206);
    assert!(fresh.body == v2[50_000..]);
    // A date is no validator of a version: another can be sealed in the
    // same second. The whole current version.
    let dated = alice.get(path, &[("Range", "bytes=0-9"), ("If-Range", &modified2)]);
    assert_eq!(dated.status, 200);
    assert!(dated.body == v2);
    let weak = format!("W/{etag2}");
    assert_eq!(
        alice
            .get(path, &[("Range", "bytes=0-9"), ("If-Range", &weak)])
            .status,
        200
    );
    assert_eq!(
        alice
            .send("HEAD", path, &[("If-None-Match", &etag2)], b"")
            .status,
        304
    );

    // A token made while the service runs works at once.
    let carol = Client {
        addr: &instance.addr,
        token: token(&data, "carol@acme"),
    };
    assert_eq!(carol.get(path, &[]).status, 200);

    // No framing on HTTP/1.1: 411, and no version.
    let auth = bearer(&alice.token);
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    let raw = head(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/unframed.bin",
        &[(auth.0, auth.1.as_str())],
        None,
    );
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert_eq!(
        alice.get("/v1/tenants/acme/files/unframed.bin", &[]).status,
        404
    );
}

/// Optimistic concurrency on uploads: `If-None-Match: *` creates only,
/// `If-Match` replaces only the version the client read (`412` otherwise,
/// with nothing stored), and of clients racing on one version exactly one
/// wins. The upload's `Content-Type` is kept (small uploads, sealed in
/// batches, and large ones) and served with `nosniff`; one that is not a
/// media type is `400`.
#[test]
fn uploads_keep_their_media_type_and_honour_their_preconditions() {
    let dir = TempDir::new("service-preconditions");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    let instance = Instance::start(&data, "service-preconditions", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: token(&data, "alice@acme"),
    };
    let path = "/v1/tenants/acme/files/notes.txt";

    // Create only: once.
    let created = alice.send(
        "PUT",
        path,
        &[
            ("If-None-Match", "*"),
            ("Content-Type", "text/plain; charset=utf-8"),
        ],
        b"first",
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let etag1 = created.header("etag").unwrap().to_owned();
    let again = alice.send("PUT", path, &[("If-None-Match", "*")], b"second");
    assert_eq!(again.status, 412, "{}", again.text());
    assert_eq!(
        again.header("content-type"),
        Some("application/problem+json")
    );
    let got = alice.get(path, &[]);
    assert_eq!(got.text(), "first");
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(got.header("etag"), Some(etag1.as_str()));
    let head = alice.send("HEAD", path, &[], b"");
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // Replace what was read: If-Match with its tag; a stale, weak or
    // foreign tag, or If-Match on a file that does not exist, is 412.
    let replaced = alice.send("PUT", path, &[("If-Match", &etag1)], b"second");
    assert_eq!(replaced.status, 201, "{}", replaced.text());
    let etag2 = replaced.header("etag").unwrap().to_owned();
    for (stale, target) in [
        (etag1.clone(), path),
        (format!("W/{etag2}"), path),
        (
            "\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.2\"".to_owned(),
            path,
        ),
        (etag2.clone(), "/v1/tenants/acme/files/absent.txt"),
        ("*".to_owned(), "/v1/tenants/acme/files/absent.txt"),
    ] {
        let refused = alice.send("PUT", target, &[("If-Match", &stale)], b"lost");
        assert_eq!(
            refused.status,
            412,
            "{stale} on {target}: {}",
            refused.text()
        );
    }
    assert_eq!(
        alice.get("/v1/tenants/acme/files/absent.txt", &[]).status,
        404
    );
    // Untyped uploads are served as bytes.
    let untyped = alice.get(path, &[]);
    assert_eq!(untyped.text(), "second");
    assert_eq!(
        untyped.header("content-type"),
        Some("application/octet-stream")
    );
    // Headers that cannot be honoured are 400, not ignored.
    for bad in [
        vec![("If-None-Match", etag2.as_str())],
        vec![("If-Match", "*"), ("If-None-Match", "*")],
        vec![("If-Match", "no tags")],
        vec![("Content-Type", "not a media type")],
    ] {
        assert_eq!(alice.send("PUT", path, &bad, b"x").status, 400, "{bad:?}");
    }

    // Eight clients read version 2 and each replace it at once: one wins.
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let (alice, etag2) = (&alice, &etag2);
                scope.spawn(move || {
                    let body = content(300_000 + i, 10 + i as u64);
                    alice
                        .send("PUT", path, &[("If-Match", etag2)], &body)
                        .status
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|s| **s == 201).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 412).count(),
        7,
        "{answers:?}"
    );
    let listing: Value =
        serde_json::from_slice(&alice.get("/v1/tenants/acme/files?versions=all", &[]).body)
            .unwrap();
    assert_eq!(listing["files"].as_array().unwrap().len(), 3, "{listing}");

    // A large upload keeps its type too; a small batched one as well.
    let large = content(1_000_000, 7);
    let put = alice.send(
        "PUT",
        "/v1/tenants/acme/files/photo.jpg",
        &[("Content-Type", "image/jpeg")],
        &large,
    );
    assert_eq!(put.status, 201);
    let got = alice.get("/v1/tenants/acme/files/photo.jpg", &[]);
    assert_eq!(got.header("content-type"), Some("image/jpeg"));
    assert!(got.body == large);
}

/// `/metrics` counts requests, body bytes, audited key releases, the TIK
/// cache, batches, audit commits and blob operations, with no tenant,
/// file or principal in any label; `--log-format json` logs one JSON
/// object per line, a failed request's with its id.
#[test]
fn metrics_and_json_logs_say_what_happened_and_nothing_private() {
    let dir = TempDir::new("service-metrics");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    let instance = Instance::start(&data, "service-metrics", &[], &["--log-format", "json"]);
    let alice = Client {
        addr: &instance.addr,
        token: token(&data, "alice@acme"),
    };
    let path = "/v1/tenants/acme/files/secret-plans.txt";
    let body = content(10_000, 3);
    assert_eq!(alice.send("PUT", path, &[], &body).status, 201);
    for _ in 0..3 {
        assert_eq!(alice.get(path, &[]).status, 200);
    }
    let missing = alice.get(
        "/v1/tenants/acme/files/none",
        &[("X-Request-Id", "find-me-in-the-log")],
    );
    assert_eq!(missing.status, 404);
    // A method of the client's making is counted, not kept as a label.
    let made_up = request(&instance.addr, "SECRETVERB", "/healthz", &[], b"");
    assert_eq!(made_up.status, 405);

    let scraped = request(&instance.addr, "GET", "/metrics", &[], b"");
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = scraped.text();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let files = "route=\"/v1/tenants/{tenant}/files/{name}\"";
    assert_eq!(
        value(&format!(
            "atrest_http_requests_total{{{files},method=\"PUT\",status=\"201\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "atrest_http_requests_total{{{files},method=\"GET\",status=\"200\"}}"
        )),
        3.0
    );
    assert!(value("atrest_http_received_bytes_total") >= 10_000.0);
    assert!(value("atrest_http_sent_bytes_total") >= 30_000.0);
    assert!(
        value("atrest_audit_events_total{event=\"file_key_released\",outcome=\"success\"}") >= 3.0
    );
    assert_eq!(
        value("atrest_audit_events_total{event=\"file_sealed\",outcome=\"success\"}"),
        1.0
    );
    assert!(value("atrest_tik_cache_lookups_total{result=\"hit\"}") >= 2.0);
    assert!(value("atrest_tik_cache_lookups_total{result=\"miss\"}") >= 1.0);
    assert_eq!(value("atrest_upload_batch_items_count"), 1.0);
    assert!(value("atrest_audit_commit_duration_seconds_count") >= 1.0);
    assert!(
        value("atrest_blob_operation_duration_seconds_count{operation=\"open\",result=\"ok\"}")
            >= 3.0
    );
    assert_eq!(
        value("atrest_http_requests_total{route=\"/healthz\",method=\"other\",status=\"405\"}"),
        1.0
    );
    for private in ["acme", "alice", "secret-plans", "SECRETVERB"] {
        assert!(!text.contains(private), "{private} in the metrics:\n{text}");
    }

    // The log: JSON lines; the failed request's carries its id.
    let log = instance.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let failed = lines
        .iter()
        .find(|line| line["client_request_id"] == "find-me-in-the-log")
        .unwrap_or_else(|| panic!("no line for the request in\n{log}"));
    assert_eq!(failed["status"], 404);
    assert_eq!(
        failed["request_id"].as_str(),
        missing.header("x-request-id"),
        "{failed}"
    );
    assert!(
        failed["message"].as_str().unwrap().contains("none"),
        "{failed}"
    );
    assert!(
        lines
            .iter()
            .all(|line| line["level"].is_string() && line["timestamp"].is_string())
    );
    assert!(!log.contains(&alice.token));
}

/// Pages over 20,000 versions (10,000 files, two versions each): every
/// version exactly once, in order, across pages of at most the limit,
/// each a small document; the newest of each file likewise; a prefix
/// narrows both.
#[test]
fn pagination_over_twenty_thousand_versions() {
    let dir = TempDir::new("service-pages");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    const FILES: usize = 10_000;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let deployment = atrest_deployment::Deployment::open(
            &data,
            atrest_deployment::Options::new("pages-test"),
        )
        .await
        .unwrap();
        let access = atrest::tenant::Access::User {
            principal: "alice@acme",
        };
        for round in 0..2_u8 {
            for chunk in (0..FILES).collect::<Vec<_>>().chunks(500) {
                let items = chunk
                    .iter()
                    .map(|i| atrest::BatchItem {
                        name: format!("box/{:02}/item-{i:05}", i % 7),
                        blob: atrest::BlobName::random().unwrap(),
                        plaintext: std::io::Cursor::new(vec![round; 16]),
                        request: None,
                        media_type: None,
                    })
                    .collect();
                let results = deployment
                    .put_batch(&access, "acme", items, 8)
                    .await
                    .unwrap();
                assert!(results.iter().all(Result::is_ok));
            }
        }
    });
    let instance = Instance::start(&data, "service-pages", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: token(&data, "alice@acme"),
    };
    let pages = |query: &str, limit: usize| {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut count = 0;
        loop {
            let mut url = format!("/v1/tenants/acme/files?limit={limit}{query}");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = alice.get(&url, &[]);
            assert_eq!(page.status, 200, "{}", page.text());
            assert!(page.body.len() < 200 * limit, "{} bytes", page.body.len());
            let page: Value = serde_json::from_slice(&page.body).unwrap();
            let files = page["files"].as_array().unwrap();
            assert!(files.len() <= limit);
            for file in files {
                seen.push((
                    file["name"].as_str().unwrap().to_owned(),
                    file["version"].as_u64().unwrap(),
                ));
            }
            count += 1;
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        (seen, count)
    };
    let mut expected: Vec<(String, u64)> = (0..FILES)
        .flat_map(|i| [1, 2].map(|v| (format!("box/{:02}/item-{i:05}", i % 7), v)))
        .collect();
    expected.sort();
    let (all, count) = pages("&versions=all", 1000);
    assert_eq!(count, 20);
    assert!(all == expected, "every version once, in order");
    let (newest, count) = pages("", 3000);
    assert_eq!(count, 4);
    let newest_expected: Vec<_> = expected.iter().filter(|(_, v)| *v == 2).cloned().collect();
    assert!(newest == newest_expected);
    let (boxed, _) = pages("&versions=all&prefix=box/03/", 500);
    let boxed_expected: Vec<_> = expected
        .iter()
        .filter(|(name, _)| name.starts_with("box/03/"))
        .cloned()
        .collect();
    assert!(!boxed.is_empty() && boxed == boxed_expected);
}

/// `DELETE` removes a version (or every version) for the tenant's own
/// users only; listings and reads no longer see it; the service erases the
/// keys by itself shortly after (the tenant left with one TIK version, the
/// older ones destroyed with their keys), and the other files still open.
#[test]
fn delete_removes_versions_and_the_service_erases_their_keys() {
    let dir = TempDir::new("service-delete");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    atrest(&data, &["tenant", "create", "globex"]);
    let instance = Instance::start(&data, "service-delete", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: token(&data, "alice@acme"),
    };
    let bob = Client {
        addr: &instance.addr,
        token: token(&data, "bob@globex"),
    };
    let path = "/v1/tenants/acme/files/plans.txt";
    for body in [&b"first"[..], b"second"] {
        assert_eq!(alice.send("PUT", path, &[], body).status, 201);
    }
    assert_eq!(
        alice
            .send("PUT", "/v1/tenants/acme/files/kept.txt", &[], b"kept")
            .status,
        201
    );
    let etag = alice.get(path, &[]).header("etag").unwrap().to_owned();

    assert_eq!(
        bob.send("DELETE", &format!("{path}?version=1"), &[], b"")
            .status,
        403
    );
    let deleted = alice.send("DELETE", &format!("{path}?version=1"), &[], b"");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let answer: Value = serde_json::from_slice(&deleted.body).unwrap();
    assert_eq!(answer["deleted_versions"], serde_json::json!([1]));
    assert_eq!(alice.get(&format!("{path}?version=1"), &[]).status, 404);
    assert_eq!(alice.get(path, &[]).text(), "second");
    assert_eq!(
        alice
            .send("DELETE", &format!("{path}?version=1"), &[], b"")
            .status,
        404
    );

    // The keys erased by the service: one TIK version left, a newer one.
    let started = Instant::now();
    loop {
        let shown: Value =
            serde_json::from_str(&atrest(&data, &["--json", "tenant", "show", "acme"])).unwrap();
        let versions = shown["tik_versions"].as_array().unwrap().clone();
        if versions.len() == 1 && versions[0]["version"].as_u64() > Some(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{shown}\n{}",
            instance.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(alice.get(path, &[]).text(), "second");
    assert_eq!(
        alice.get("/v1/tenants/acme/files/kept.txt", &[]).text(),
        "kept"
    );

    // Every version: the file is gone; made again, it is another file.
    let deleted = alice.send("DELETE", path, &[], b"");
    assert_eq!(deleted.status, 200);
    assert_eq!(alice.get(path, &[]).status, 404);
    let listing: Value =
        serde_json::from_slice(&alice.get("/v1/tenants/acme/files?versions=all", &[]).body)
            .unwrap();
    assert_eq!(listing["files"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(alice.send("PUT", path, &[], b"anew").status, 201);
    assert_ne!(alice.get(path, &[]).header("etag"), Some(etag.as_str()));
    let audit = atrest(&data, &["--json", "audit", "show", "--tenant", "acme"]);
    assert_eq!(audit.matches("\"file_deleted\"").count(), 2, "{audit}");
}

/// Listings come in pages: the newest version of each file by default,
/// every version on request, a prefix, a limit and an opaque cursor; each
/// file once across the pages, none missing.
#[test]
fn listings_come_in_pages() {
    let dir = TempDir::new("service-pages");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    // 2,500 items, through mailbox-move (quicker than 2,500 PUTs).
    let source = dir.join("box");
    for i in 0..2500 {
        let folder = source.join(format!("f{}", i / 500));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{i:05}.eml")), format!("item {i}")).unwrap();
    }
    let moved = Command::new(env!("CARGO_BIN_EXE_mailbox-move"))
        .arg("--data")
        .arg(&data)
        .arg("acme")
        .arg(&source)
        .output()
        .unwrap();
    assert!(moved.status.success(), "{moved:?}");
    let alice_token = token(&data, "alice@acme");
    let instance = Instance::start(&data, "service-pages", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: alice_token,
    };
    let path = "/v1/tenants/acme/files/mailbox/box/f0/00000.eml";
    assert_eq!(alice.send("PUT", path, &[], b"second").status, 201);

    let page = |query: &str| -> Value {
        let answer = alice.get(&format!("/v1/tenants/acme/files?{query}"), &[]);
        assert_eq!(answer.status, 200, "{query}: {}", answer.text());
        serde_json::from_slice(&answer.body).unwrap()
    };
    let mut names = Vec::new();
    let mut query = "limit=1000".to_owned();
    loop {
        let listing = page(&query);
        for file in listing["files"].as_array().unwrap() {
            names.push(file["name"].as_str().unwrap().to_owned());
        }
        match listing["next"].as_str() {
            Some(next) => query = format!("limit=1000&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(names.len(), 2500);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "in order, each once");
    // Every version on request; a prefix.
    let all = page("versions=all&limit=10000");
    assert_eq!(all["files"].as_array().unwrap().len(), 2501);
    assert!(all["next"].is_null());
    let folder = page("prefix=mailbox/box/f3/&limit=10000");
    assert_eq!(folder["files"].as_array().unwrap().len(), 500);
    // Mistakes are said.
    for bad in [
        "limit=0",
        "limit=100000",
        "cursor=zz",
        "versions=some",
        "unknown=1",
    ] {
        let answer = alice.get(&format!("/v1/tenants/acme/files?{bad}"), &[]);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
    }
}

/// Every error answer is one problem document (RFC 9457) with the request
/// id, whoever made it: a handler, the router or an extractor.
#[test]
fn every_error_is_a_problem_document() {
    let dir = TempDir::new("service-problems");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "acme"]);
    let alice_token = token(&data, "alice@acme");
    let instance = Instance::start(&data, "service-problems", &[], &[]);
    let alice = Client {
        addr: &instance.addr,
        token: alice_token,
    };
    let path = "/v1/tenants/acme/files/a.txt";
    assert_eq!(alice.send("PUT", path, &[], b"hello").status, 201);
    let cases = [
        (
            alice.get("/v1/tenants/acme/files/missing", &[]),
            404,
            "not_found",
        ),
        (alice.get(&format!("{path}?version=x"), &[]), 400, "usage"),
        (alice.get(&format!("{path}?colour=red"), &[]), 400, "usage"),
        (alice.send("POST", path, &[], b""), 405, "usage"),
        (alice.get(path, &[("Range", "bytes=100-")]), 416, "range"),
        (
            request(&instance.addr, "GET", path, &[], b""),
            401,
            "unauthorized",
        ),
        (alice.get("/v1/tenants/globex/files", &[]), 403, "refused"),
    ];
    for (answer, status, kind) in cases {
        assert_eq!(answer.status, status, "{}", answer.text());
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json"),
            "{status}"
        );
        let problem: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(problem["kind"], kind, "{problem}");
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
        assert_eq!(
            problem["request_id"].as_str(),
            answer.header("x-request-id"),
            "{problem}"
        );
    }
    // A refusal from the keys says its kind, not the words of the key
    // service or store behind it (those are in the service's log).
    // (An instance started after the purge: one running keeps its cached
    // keys for its cache lifetime.)
    atrest(&data, &["purge", "acme", "--yes"]);
    let after = Instance::start(&data, "service-problems-after", &[], &[]);
    let alice = Client {
        addr: &after.addr,
        token: alice.token.clone(),
    };
    let refused = alice.get(path, &[]);
    assert_eq!(refused.status, 403);
    let problem: Value = serde_json::from_slice(&refused.body).unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("refused: see the service log"),
        "{detail}"
    );
}
