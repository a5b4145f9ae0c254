//! Running `atrest-serve` instances and talking HTTP/1.1 to them, for the
//! service's end-to-end tests.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running instance, killed when dropped.
pub struct Instance {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl Instance {
    /// Starts `atrest-serve serve` on deployment `data` on a free port,
    /// with `env` and `args` (plain HTTP unless they give a certificate),
    /// once it listens.
    pub fn start(data: &Path, name: &str, env: &[(String, String)], args: &[&str]) -> Self {
        let log = data.with_file_name(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_atrest-serve"));
        command
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0", "--actor", name])
            .args(args);
        if !args.contains(&"--tls-cert") {
            command.arg("--plain-http");
        }
        command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("atrest-serve: listening on http://")
            .or_else(|| {
                line.trim()
                    .strip_prefix("atrest-serve: listening on https://")
            })
            .unwrap_or_else(|| {
                panic!(
                    "{name} did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Self { child, addr, log }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// SIGKILL, and wait for it to go.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it wrote on standard error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The head of a request: `METHOD PATH`, headers, and `Content-Length`
/// when `body_len` is given.
pub fn head(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = body_len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends one request and reads the whole response.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let with_body = method == "PUT" || method == "POST";
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = head(addr, method, path, headers, with_body.then_some(body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse(&raw, method == "HEAD")
}

fn parse(raw: &[u8], head_only: bool) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if head_only {
        body.clear();
    }
    Response {
        status,
        headers,
        body,
    }
}

/// `Authorization: Bearer TOKEN`.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// `method path` with `token` as the bearer, and `body`.
pub fn send(addr: &str, token: &str, method: &str, path: &str, body: &[u8]) -> Response {
    let auth = bearer(token);
    request(addr, method, path, &[(auth.0, auth.1.as_str())], body)
}

/// Runs the operator program on deployment `data`; returns its standard
/// output.
pub fn atrest(data: &Path, args: &[&str]) -> String {
    atrest_in(data, &[], args)
}

/// [`atrest`] with `env` (what opening the deployment's servers needs).
pub fn atrest_in(data: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .arg("--data")
        .arg(data)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(output.status.success(), "atrest {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Makes a token for `principal` with `atrest-serve token add`.
pub fn token(data: &Path, principal: &str) -> String {
    token_in(data, &[], principal)
}

/// [`token`] with `env` (what opening the deployment's catalog needs).
pub fn token_in(data: &Path, env: &[(String, String)], principal: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atrest-serve"));
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command
        .arg("--data")
        .arg(data)
        .args(["token", "add", principal])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Adds the key service `bao` at `address` (transit mount `mount`, its token
/// in `ATREST_TEST_BAO_TOKEN`, with `extra` arguments) to the deployment in
/// `data`, makes keys `contoso-a` and `contoso-b` there, and tenant
/// `contoso` with them as its customer keys.
pub fn contoso_in_bao(
    data: &Path,
    env: &[(String, String)],
    address: &str,
    mount: &str,
    extra: &[&str],
) {
    let mut add = vec![
        "kms",
        "add",
        "bao",
        "--address",
        address,
        "--mount",
        mount,
        "--token-env",
        "ATREST_TEST_BAO_TOKEN",
    ];
    add.extend_from_slice(extra);
    atrest_in(data, env, &add);
    for key in ["contoso-a", "contoso-b"] {
        atrest_in(data, env, &["kms", "create-key", "bao", key]);
    }
    atrest_in(
        data,
        env,
        &[
            "tenant",
            "create",
            "contoso",
            "--customer-keys",
            "bao:contoso-a@1,bao:contoso-b@1",
        ],
    );
}
