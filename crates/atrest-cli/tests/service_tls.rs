//! `atrest-serve` over TLS, as clients see it: `curl` with HTTP/2 and
//! HTTP/1.1 against a certificate from a private CA made here (OpenSSL's
//! command), TLS 1.1 and an unknown CA refused, the certificate reloaded
//! on SIGHUP without dropping a connection, plain HTTP only when asked
//! for, and clients that do not send their headers disconnected.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_test_support::pki::{issue, make_ca};
use atrest_test_support::{TempDir, seeded as content};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use service_support::{Instance, atrest, token};

/// A rustls client that trusts the CA in `dir`.
fn client(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection a full handshake, with the server's certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// An HTTP/1.1 connection over TLS, kept alive across requests.
struct Connection {
    tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl Connection {
    fn open(addr: &str, config: &Arc<rustls::ClientConfig>) -> Self {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        tls.flush().unwrap();
        Self { tls }
    }

    /// The leaf certificate the server presented.
    fn leaf(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// `GET /healthz`; the status line.
    fn health(&mut self) -> String {
        self.tls
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        // Headers, then the body of "ok" (Content-Length given).
        while !seen.ends_with(b"\r\n\r\n") {
            self.tls.read_exact(&mut byte).unwrap();
            seen.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&seen).into_owned();
        let length: usize = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.tls.read_exact(&mut body).unwrap();
        text.lines().next().unwrap_or_default().to_owned()
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tls_with_http2_reloads_its_certificate_and_plain_http_is_asked_for() {
    let dir = TempDir::new("service-tls");
    let pki = dir.join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_ca(&pki);
    let (chain, key) = issue(&pki, "server", "first");
    let data = dir.join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "contoso"]);
    let bearer = format!("Authorization: Bearer {}", token(&data, "alice@contoso"));

    // Plain HTTP only when asked for; a certificate file that is not one
    // is refused before anything is served.
    let serve = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap()
    };
    let neither = serve(&[]);
    assert_eq!(neither.status.code(), Some(2), "{neither:?}");
    assert!(String::from_utf8_lossy(&neither.stderr).contains("--plain-http"));
    let garbage = pki.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let bad = serve(&[
        "--tls-cert",
        garbage.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");

    let instance = Instance::start(
        &data,
        "service-tls",
        &[],
        &[
            "--tls-cert",
            chain.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--write-timeout",
            "1s",
            "--max-upload",
            "40M",
        ],
    );
    let port = instance.addr.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/v1/tenants/contoso/files/report.bin");
    let ca = pki.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // HTTP/2 and HTTP/1.1, an upload and a download, over TLS.
    let body = dir.join("report.bin");
    let bytes = content(300_000, 7);
    std::fs::write(&body, &bytes).unwrap();
    let put = curl(&[
        "--cacert",
        ca,
        "--http2",
        "-H",
        &bearer,
        "-T",
        body.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201 2", "{put:?}");
    let out = dir.join("copy.bin");
    let get = curl(&[
        "--cacert",
        ca,
        "--http1.1",
        "-H",
        &bearer,
        "-o",
        out.to_str().unwrap(),
        "-w",
        "%{http_code} %{http_version}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "200 1.1", "{get:?}");
    assert!(std::fs::read(&out).unwrap() == bytes);
    // A client that does not trust the CA, and TLS 1.1, get nothing.
    let untrusted = curl(&["-o", "/dev/null", &url]);
    assert!(!untrusted.status.success(), "{untrusted:?}");
    let old = curl(&[
        "--cacert",
        ca,
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert!(!old.status.success(), "{old:?}");

    // A new certificate on SIGHUP: new connections get it, one kept open
    // across the reload goes on working.
    let config = client(&pki);
    let mut kept = Connection::open(&instance.addr, &config);
    assert!(kept.health().contains("200"));
    let first = kept.leaf();
    let (second_chain, second_key) = issue(&pki, "second", "second");
    std::fs::copy(&second_chain, &chain).unwrap();
    std::fs::copy(&second_key, &key).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &instance.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(&instance.log)
        .unwrap_or_default()
        .contains("certificates reloaded")
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut fresh = Connection::open(&instance.addr, &config);
    assert!(fresh.health().contains("200"));
    assert_ne!(fresh.leaf(), first);
    assert_eq!(
        fresh.leaf(),
        CertificateDer::from_pem_file(&second_chain)
            .unwrap()
            .to_vec()
    );
    assert!(
        kept.health().contains("200"),
        "the kept connection survives"
    );

    // A client that connects and says nothing, or trickles its headers,
    // is disconnected after the header timeout (1 s here).
    let mut silent = std::net::TcpStream::connect(&instance.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = silent.read(&mut buffer);
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut slow = Connection::open(&instance.addr, &config);
    let started = Instant::now();
    let mut cut = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: l" {
        if slow
            .tls
            .write_all(&[*byte])
            .and_then(|()| slow.tls.flush())
            .is_err()
        {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    if !cut {
        let mut rest = Vec::new();
        let ended = slow.tls.read_to_end(&mut rest);
        assert!(
            ended.is_err() || !String::from_utf8_lossy(&rest).contains("200"),
            "{rest:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // Others are served all along.
    assert!(
        Connection::open(&instance.addr, &config)
            .health()
            .contains("200")
    );

    // Uploads larger than --max-upload are refused, said or not.
    let big_url = format!("{url}.big");
    let too_large = curl(&[
        "--http1.1",
        "--cacert",
        ca,
        "-H",
        &bearer,
        "-H",
        "Content-Length: 50000000",
        "-X",
        "PUT",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &big_url,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&too_large.stdout),
        "413",
        "{too_large:?}"
    );
    let big = dir.join("big.bin");
    std::fs::write(&big, content(41 << 20, 8)).unwrap();
    let chunked = curl(&[
        "--http1.1",
        "--cacert",
        ca,
        "-H",
        &bearer,
        "-H",
        "Transfer-Encoding: chunked",
        "-T",
        big.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &big_url,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&chunked.stdout),
        "413",
        "{chunked:?}"
    );

    // An upload whose body stops is refused after --body-timeout (408),
    // and nothing of it is kept.
    let mut stalled = Connection::open(&instance.addr, &config);
    let started = Instant::now();
    let head = format!(
        "PUT /v1/tenants/contoso/files/stalled.bin HTTP/1.1\r\nHost: localhost\r\n{bearer}\r\nContent-Length: 2000000\r\n\r\n"
    );
    stalled.tls.write_all(head.as_bytes()).unwrap();
    stalled.tls.write_all(&[7u8; 1000]).unwrap();
    stalled.tls.flush().unwrap();
    let mut answer = Vec::new();
    let _ = stalled.tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let listing_url = format!("https://localhost:{port}/v1/tenants/contoso/files");
    let listing = curl(&["--cacert", ca, "-H", &bearer, &listing_url]);
    assert!(!String::from_utf8_lossy(&listing.stdout).contains("stalled.bin"));

    // A download nobody reads is dropped after --write-timeout: the rest
    // of the file never comes.
    let large = dir.join("large.bin");
    let large_bytes = content(32 << 20, 9);
    std::fs::write(&large, &large_bytes).unwrap();
    let large_url = format!("{url}.large");
    let put = curl(&[
        "--cacert",
        ca,
        "-H",
        &bearer,
        "-T",
        large.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &large_url,
    ]);
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201", "{put:?}");
    let mut unread = Connection::open(&instance.addr, &config);
    let request = format!(
        "GET /v1/tenants/contoso/files/report.bin.large HTTP/1.1\r\nHost: localhost\r\n{bearer}\r\n\r\n"
    );
    unread.tls.write_all(request.as_bytes()).unwrap();
    unread.tls.flush().unwrap();
    let mut first = [0u8; 16];
    unread.tls.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(4));
    let mut rest = Vec::new();
    let _ = unread.tls.read_to_end(&mut rest);
    assert!(rest.len() < large_bytes.len(), "{} bytes came", rest.len());
}
