//! The servers `scripts/test` starts (PostgreSQL, Azurite, OpenBao), for
//! the tests that run on them.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const HINT: &str = "run scripts/test, which starts PostgreSQL, Azurite and OpenBao";

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HINT}"))
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}{nanos:x}", std::process::id())
}

/// One request to OpenBao with the root token; returns the status line.
pub fn openbao(method: &str, path: &str, body: &str) -> String {
    let address = var("ATREST_OPENBAO_ADDR");
    let host = address.strip_prefix("http://").unwrap().to_owned();
    let request = format!(
        "{method} /v1/{path} HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        token = var("ATREST_OPENBAO_TOKEN"),
        len = body.len(),
    );
    let mut stream = TcpStream::connect(&host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_owned();
    assert!(
        status.contains(" 200") || status.contains(" 204"),
        "{method} {path}: {response}"
    );
    status
}
