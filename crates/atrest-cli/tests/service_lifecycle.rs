//! The service's life as an operator and its clients see it: it stops
//! cleanly (exit 0) at SIGTERM and SIGINT, letting requests in flight
//! finish and cutting those still running at the deadline; an address in
//! use is a clear error; and clients that stall — a thousand uploads that
//! stop sending, hundreds of downloads nobody reads — hold tasks, not
//! threads, so another principal is served at once.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atrest_test_support::{TempDir, seeded as content};
use rustix::process::{Resource, Signal};

use service_support::{Instance, atrest, bearer, head, request, token};

/// A deployment with tenants `acme` and `globex`, and a token for a user
/// of each.
fn deployment(dir: &TempDir) -> (std::path::PathBuf, String, String) {
    let data = dir.path().join("data");
    let _ = atrest(&data, &["init"]);
    let _ = atrest(&data, &["tenant", "create", "acme"]);
    let _ = atrest(&data, &["tenant", "create", "globex"]);
    let alice = token(&data, "alice@acme");
    let bob = token(&data, "bob@globex");
    (data, alice, bob)
}

/// Starts an upload of `len` bytes to `path` and sends `sent` of them.
fn start_upload(addr: &str, token: &str, path: &str, len: usize, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = bearer(token);
    let head = head(addr, "PUT", path, &[(auth.0, auth.1.as_str())], Some(len));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(sent).unwrap();
    stream
}

/// Reads the response on `stream` to its end: the status and the body.
fn finish_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[..end])
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, raw[end + 4..].to_vec())
}

/// Sends `signal` to the instance and waits for it to exit; returns the
/// exit code and how long it took.
fn stop(instance: &mut Instance, signal: Signal) -> (Option<i32>, Duration) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(instance.id()).unwrap()).unwrap();
    let started = Instant::now();
    rustix::process::kill_process(pid, signal).unwrap();
    let status = instance.wait();
    (status.code(), started.elapsed())
}

#[test]
fn sigterm_and_sigint_stop_the_service_with_exit_0_after_requests_in_flight() {
    let dir = TempDir::new("service-stop");
    let (data, alice, _) = deployment(&dir);
    let body = content(2_000_000, 7);
    for signal in [Signal::TERM, Signal::INT] {
        let mut instance = Instance::start(&data, "stopping", &[], &["--shutdown-timeout", "20s"]);
        // An upload in flight when the signal comes: half its body sent.
        let mut upload = start_upload(
            &instance.addr,
            &alice,
            "/v1/tenants/acme/files/in-flight",
            body.len(),
            &body[..1_000_000],
        );
        std::thread::sleep(Duration::from_millis(300));
        let pid = rustix::process::Pid::from_raw(i32::try_from(instance.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // New connections are refused once it stops accepting.
        assert!(
            TcpStream::connect(&instance.addr).is_err(),
            "{signal:?}: still accepting"
        );
        // The request in flight finishes, and is answered.
        upload.write_all(&body[1_000_000..]).unwrap();
        let (status, answer) = finish_response(&mut upload);
        assert_eq!(
            status,
            201,
            "{signal:?}: {}",
            String::from_utf8_lossy(&answer)
        );
        let status = instance.wait();
        assert_eq!(status.code(), Some(0), "{signal:?}: {}", instance.log());
        let log = instance.log();
        assert!(
            log.contains("stopping once requests in flight finish") && log.contains("stopped"),
            "{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
    // Both uploads were committed, whole.
    let instance = Instance::start(&data, "after", &[], &[]);
    let auth = bearer(&alice);
    let got = request(
        &instance.addr,
        "GET",
        "/v1/tenants/acme/files/in-flight?version=2",
        &[(auth.0, auth.1.as_str())],
        b"",
    );
    assert_eq!(got.status, 200);
    assert!(got.body == body);
}

#[test]
fn requests_still_running_at_the_deadline_are_cut_and_it_still_exits_0() {
    let dir = TempDir::new("service-deadline");
    let (data, alice, _) = deployment(&dir);
    let mut instance = Instance::start(&data, "deadline", &[], &["--shutdown-timeout", "1s"]);
    // An upload that never finishes.
    let _stalled = start_upload(
        &instance.addr,
        &alice,
        "/v1/tenants/acme/files/never",
        10_000_000,
        &content(500_000, 1),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (code, took) = stop(&mut instance, Signal::TERM);
    assert_eq!(code, Some(0), "{}", instance.log());
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let log = instance.log();
    assert!(log.contains("still in flight after 1s: cut"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn an_address_in_use_is_a_clear_error_before_anything_is_opened() {
    let dir = TempDir::new("service-in-use");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // Not even a deployment: the address is checked first.
    let data = dir.path().join("none");
    let output = Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--plain-http", "--listen", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(!data.exists());
}

/// Counts the seals in progress that have their file key: uploads that got
/// as far as reading their body.
fn uploads_reading(data: &Path) -> i64 {
    let db = atrest_test_support::sqlite::Connection::open(data.join("catalog.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.query_row(
        "SELECT count(*) FROM catalog_versions WHERE state = 'sealing' AND wrapped IS NOT NULL",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

#[test]
fn stalled_uploads_and_unread_downloads_hold_nothing_another_principal_needs() {
    const STALLED_UPLOADS: usize = 1000;
    const UNREAD_DOWNLOADS: usize = 300;
    // Two sockets per connection (ours and the service's), and files.
    let hard = rustix::process::getrlimit(Resource::Nofile).maximum;
    let wanted = u64::try_from(4 * (STALLED_UPLOADS + UNREAD_DOWNLOADS) + 1024).unwrap();
    assert!(
        hard.is_none_or(|hard| hard >= wanted),
        "the open files limit ({hard:?}) is below {wanted}"
    );
    rustix::process::setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(wanted),
            maximum: hard,
        },
    )
    .unwrap();

    let dir = TempDir::new("service-stalled");
    let (data, alice, bob) = deployment(&dir);
    // One principal's many requests, from one address: here what is
    // measured is that each holds a task, not a thread, so its in-flight
    // limit and its address's connection limit are raised.
    let instance = Instance::start(
        &data,
        "stalled",
        &[],
        &[
            "--max-requests-per-principal",
            "2000",
            "--max-connections-per-address",
            "2000",
        ],
    );
    let auth = bearer(&alice);
    let alice_auth = [(auth.0, auth.1.as_str())];
    let big = content(16 << 20, 3);
    let put = request(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/big.bin",
        &alice_auth,
        &big,
    );
    assert_eq!(put.status, 201, "{}", put.text());

    // Downloads nobody reads: each gets its status line, then its client
    // stops reading with the body far from sent.
    let mut downloads = Vec::with_capacity(UNREAD_DOWNLOADS);
    for _ in 0..UNREAD_DOWNLOADS {
        let mut stream = TcpStream::connect(&instance.addr).unwrap();
        let head = head(
            &instance.addr,
            "GET",
            "/v1/tenants/acme/files/big.bin",
            &alice_auth,
            None,
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut reader = BufReader::with_capacity(64, stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        downloads.push(reader);
    }
    // Uploads that send part of their body and stop.
    let part = content(64 << 10, 4);
    let uploads: Vec<TcpStream> = (0..STALLED_UPLOADS)
        .map(|i| {
            start_upload(
                &instance.addr,
                &alice,
                &format!("/v1/tenants/acme/files/stalled-{i}"),
                8 << 20,
                &part,
            )
        })
        .collect();
    // Wait until every upload is in the service, keyed and waiting for
    // the rest of its body.
    let waiting = Instant::now();
    while uploads_reading(&data) < i64::try_from(STALLED_UPLOADS).unwrap() {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "only {} uploads reached their body; log: {}",
            uploads_reading(&data),
            instance.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another principal is served at once, uploads and downloads alike.
    let auth = bearer(&bob);
    let bob_auth = [(auth.0, auth.1.as_str())];
    for (i, len) in [(0, 4096), (1, 3 << 20)] {
        let body = content(len, 10 + i);
        let path = format!("/v1/tenants/globex/files/while-stalled-{i}");
        let started = Instant::now();
        let put = request(&instance.addr, "PUT", &path, &bob_auth, &body);
        let put_took = started.elapsed();
        assert_eq!(put.status, 201, "{}", put.text());
        let started = Instant::now();
        let got = request(&instance.addr, "GET", &path, &bob_auth, b"");
        let get_took = started.elapsed();
        assert_eq!(got.status, 200);
        assert!(got.body == body);
        assert!(
            put_took < Duration::from_secs(1) && get_took < Duration::from_secs(1),
            "{len} bytes: PUT took {put_took:?}, GET {get_took:?}"
        );
    }
    // The stalled clients are all still connected: nothing was cut to
    // make room.
    for stream in &uploads {
        assert!(stream.peer_addr().is_ok());
    }
    let mut first = [0u8; 1];
    downloads[0].read_exact(&mut first).unwrap();
    drop(uploads);
    drop(downloads);
}

/// One principal cannot take what the others need: past its in-flight
/// limit its requests get `429` with `Retry-After`, while another
/// principal's are served; once its requests end, it is served again.
#[test]
fn one_principal_past_its_limit_waits_and_the_others_are_served() {
    let dir = TempDir::new("service-per-principal");
    let (data, alice, bob) = deployment(&dir);
    let instance = Instance::start(
        &data,
        "per-principal",
        &[],
        &["--max-requests-per-principal", "2"],
    );
    let stall = |i: usize| {
        start_upload(
            &instance.addr,
            &alice,
            &format!("/v1/tenants/acme/files/s{i}"),
            1000,
            b"x",
        )
    };
    let mut stalled: Vec<TcpStream> = (0..2).map(stall).collect();
    let auth = bearer(&alice);
    let started = Instant::now();
    let refused = loop {
        // A stalled upload answered already (it found a place taken by one
        // of these GETs) is started again.
        for (i, stream) in stalled.iter_mut().enumerate() {
            stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut byte = [0u8; 1];
            if matches!(stream.peek(&mut byte), Ok(n) if n > 0) {
                *stream = stall(i);
            }
        }
        let answer = request(
            &instance.addr,
            "GET",
            "/v1/tenants/acme/files",
            &[(auth.0, auth.1.as_str())],
            b"",
        );
        // The stalled uploads are counted once their headers are read.
        if answer.status == 429 || started.elapsed() > Duration::from_secs(20) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    let bob_auth = bearer(&bob);
    let other = request(
        &instance.addr,
        "PUT",
        "/v1/tenants/globex/files/b.txt",
        &[(bob_auth.0, bob_auth.1.as_str())],
        b"bob's",
    );
    assert_eq!(other.status, 201, "{}", other.text());
    drop(stalled);
    let started = Instant::now();
    loop {
        let answer = request(
            &instance.addr,
            "GET",
            "/v1/tenants/acme/files",
            &[(auth.0, auth.1.as_str())],
            b"",
        );
        if answer.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            answer.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A meeting item's ciphertext read slowly holds its reader's place among
/// the principal's requests in flight until its body is sent or given up,
/// as a download does: a principal cannot get past its limit by opening
/// many such reads and leaving them unread.
#[test]
fn a_slow_read_of_a_meeting_item_holds_its_place() {
    let dir = TempDir::new("service-meeting-slot");
    let (data, alice, _) = deployment(&dir);
    let instance = Instance::start(
        &data,
        "meeting-slot",
        &[],
        &["--max-requests-per-principal", "1"],
    );
    let auth = bearer(&alice);
    let with_token = [(auth.0, auth.1.as_str())];
    let made = request(
        &instance.addr,
        "POST",
        "/v1/tenants/acme/meetings",
        &[
            (auth.0, auth.1.as_str()),
            ("Content-Type", "application/json"),
        ],
        br#"{"participants":[]}"#,
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let made: serde_json::Value = serde_json::from_slice(&made.body).unwrap();
    let item = format!(
        "/v1/tenants/acme/meetings/{}/items/big.bin",
        made["id"].as_str().unwrap()
    );
    // More than the socket buffers on both sides hold.
    let big = vec![7u8; 48 << 20];
    let put = request(&instance.addr, "PUT", &item, &with_token, &big);
    assert_eq!(put.status, 201, "{}", put.text());

    let mut slow = TcpStream::connect(&instance.addr).unwrap();
    let asked = head(&instance.addr, "GET", &item, &with_token, None);
    slow.write_all(asked.as_bytes()).unwrap();
    let mut first = [0u8; 1];
    slow.read_exact(&mut first).unwrap();
    let list = || {
        request(
            &instance.addr,
            "GET",
            "/v1/tenants/acme/files",
            &with_token,
            b"",
        )
    };
    let held = list();
    assert_eq!(held.status, 429, "{}", held.text());
    drop(slow);
    let started = Instant::now();
    loop {
        let answer = list();
        if answer.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            answer.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/readyz` says when the service cannot work — here a full disk (a small
/// tmpfs the test mounts, as root; elsewhere the test says it is skipped)
/// — and the service works again by itself once there is room: no
/// restart. `/healthz` answers throughout.
#[test]
fn ready_only_with_room_and_working_again_once_there_is_some() {
    let dir = TempDir::new("service-full-disk");
    let disk = dir.path().join("disk");
    let Some(_mounted) = atrest_test_support::tmpfs::Tmpfs::mount(&disk, 64) else {
        return;
    };
    let data = disk.join("data");
    let _ = atrest(&data, &["init"]);
    let _ = atrest(&data, &["tenant", "create", "acme"]);
    let alice = token(&data, "alice@acme");
    let instance = Instance::start(&data, "full-disk", &[], &[]);
    let auth = bearer(&alice);
    let with_token = [(auth.0, auth.1.as_str())];
    let ready = || request(&instance.addr, "GET", "/readyz", &[], b"");
    assert_eq!(ready().status, 200, "{}", ready().text());
    let put = |name: &str, body: &[u8]| {
        request(
            &instance.addr,
            "PUT",
            &format!("/v1/tenants/acme/files/{name}"),
            &with_token,
            body,
        )
    };
    assert_eq!(put("before.txt", b"before").status, 201);

    let filler = disk.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    drop(file);
    let refused = put("during.bin", &content(300_000, 1));
    assert!(
        refused.status >= 500,
        "{}: {}",
        refused.status,
        refused.text()
    );
    // Within a second (a check answers `/readyz` for a second).
    let started = Instant::now();
    let not_ready = loop {
        let answer = ready();
        if answer.status != 200 || started.elapsed() > Duration::from_secs(5) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert!(not_ready.text().contains("disk"), "{}", not_ready.text());
    let healthy = request(&instance.addr, "GET", "/healthz", &[], b"");
    assert_eq!(healthy.status, 200);

    // Room again: ready, and uploads and downloads work, unrestarted.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    while ready().status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            ready().text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(put("after.bin", &content(300_000, 2)).status, 201);
    assert_eq!(put("small.txt", b"small").status, 201);
    let got = request(
        &instance.addr,
        "GET",
        "/v1/tenants/acme/files/after.bin",
        &with_token,
        b"",
    );
    assert!(got.status == 200 && got.body == content(300_000, 2));
    drop(instance);
    let verified = atrest(&data, &["audit", "verify"]);
    assert!(verified.contains("verified"), "{verified}");
}

/// Sends `request` on a kept-alive `stream` and reads the answer (its head
/// and its `Content-Length` of body): its status, or `None` once the
/// server has closed the connection.
fn exchange(stream: &mut TcpStream, request: &str) -> Option<u16> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(status)
}

/// A kept-alive HTTP/1.1 request listing acme's files with `auth`'s token.
fn listing_request(addr: &str, auth: &(&str, String)) -> String {
    format!(
        "GET /v1/tenants/acme/files HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\n\r\n",
        auth.0, auth.1
    )
}

/// Reads from `stream` until the server closes it (at most 20 s): what it
/// sent, and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (got, started.elapsed())
}

/// Connections with no request in flight are closed after `--idle-timeout`,
/// an HTTP/1.1 keep-alive and an HTTP/2 connection alike (the HTTP/2 one
/// with a `GOAWAY`, though it would answer pings), while a download that
/// takes longer than the idle timeout is not cut.
#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let dir = TempDir::new("service-idle");
    let (data, alice, _) = deployment(&dir);
    let instance = Instance::start(&data, "idle", &[], &["--idle-timeout", "1s"]);
    let auth = bearer(&alice);

    // HTTP/1.1: one request kept alive, then nothing.
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    let keep = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", instance.addr);
    stream.write_all(keep.as_bytes()).unwrap();
    let (got, took) = read_until_closed(&mut stream);
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(took < Duration::from_secs(5), "{took:?}");

    // HTTP/2 with prior knowledge: the preface and empty settings, then
    // nothing; the server says GOAWAY (frame type 7) and closes.
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let (got, took) = read_until_closed(&mut stream);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // This client does not acknowledge the GOAWAY's ping: dropped after
    // a grace of 2 s.
    assert!(took < Duration::from_secs(8), "{took:?}");
    let mut frames = Vec::new();
    let mut rest = got.as_slice();
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(frames.contains(&7), "frame types {frames:?}");

    // Requests now and then, none signed in (health checks): closed once
    // the connection is as old as the idle timeout, busy or not. Signed
    // in: kept for as long as requests come.
    let health = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", instance.addr);
    let listing = listing_request(&instance.addr, &auth);
    for (request, signed_in) in [(&health, false), (&listing, true)] {
        let mut stream = TcpStream::connect(&instance.addr).unwrap();
        let started = Instant::now();
        let mut answered = 0;
        while started.elapsed() < Duration::from_secs(4) {
            match exchange(&mut stream, request) {
                Some(status) => {
                    assert_eq!(status, 200);
                    answered += 1;
                }
                None => break,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let lasted = started.elapsed();
        if signed_in {
            assert!(lasted >= Duration::from_secs(4), "closed after {lasted:?}");
        } else {
            assert!(
                lasted >= Duration::from_millis(900) && lasted < Duration::from_secs(4),
                "closed after {lasted:?}, {answered} answers"
            );
        }
    }

    // A download read slowly, over more than the idle timeout: whole.
    let body = content(8 << 20, 5);
    let put = request(
        &instance.addr,
        "PUT",
        "/v1/tenants/acme/files/big",
        &[(auth.0, auth.1.as_str())],
        &body,
    );
    assert_eq!(put.status, 201);
    let mut stream = TcpStream::connect(&instance.addr).unwrap();
    let get = head(
        &instance.addr,
        "GET",
        "/v1/tenants/acme/files/big",
        &[(auth.0, auth.1.as_str())],
        None,
    );
    stream.write_all(get.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256 << 10];
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if started.elapsed() < Duration::from_millis(2_500) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        got.ends_with(&body[body.len() - 1000..]),
        "cut at {} bytes",
        got.len()
    );
}

/// One client address holds at most `--max-connections-per-address`
/// connections: the next is closed before it is read, and the address gets
/// a place again as soon as it gives one back.
#[test]
fn one_address_holds_at_most_its_share_of_connections() {
    let dir = TempDir::new("service-per-address");
    let (data, alice, _) = deployment(&dir);
    let instance = Instance::start(
        &data,
        "per-address",
        &[],
        &["--max-connections-per-address", "2"],
    );
    let auth = bearer(&alice);
    let listing = listing_request(&instance.addr, &auth);
    // Two connections kept (answered, so accepted and counted), however
    // long the start's own checks take to let go of theirs.
    let mut held = Vec::new();
    let started = Instant::now();
    while held.len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        let mut stream = TcpStream::connect(&instance.addr).unwrap();
        if exchange(&mut stream, &listing) == Some(200) {
            held.push(stream);
        }
    }

    // A third, with credentials or not, is closed without an answer.
    let mut third = TcpStream::connect(&instance.addr).unwrap();
    let _ = third.write_all(listing.as_bytes());
    let (got, took) = read_until_closed(&mut third);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The two held are served still.
    for stream in &mut held {
        assert_eq!(exchange(stream, &listing), Some(200));
    }

    // One given back: a new connection is served.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let mut stream = TcpStream::connect(&instance.addr).unwrap();
        if exchange(&mut stream, &listing) == Some(200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the place given back never came free"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
