//! The Azure storage emulator (Azurite) that `scripts/test` starts: where
//! it listens, where it keeps its files, a container per test, and the
//! `object_store` options that reach it.
//!
//! `ATREST_AZURITE_BLOB_ENDPOINT` is the account's blob endpoint
//! (`http://127.0.0.1:PORT/devstoreaccount1`, path style) and
//! `ATREST_AZURITE_LOCATION` the directory Azurite stores its database and
//! blob extents in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;

/// Azurite's well-known development account (public, documented by
/// Microsoft; it protects nothing).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const API_VERSION: &str = "2021-08-06";
const HINT: &str = "run scripts/test, which installs Azurite (npm package azurite) and starts it";

/// The running emulator.
#[derive(Debug)]
pub struct Azurite {
    endpoint: String,
    host_port: String,
    location: PathBuf,
}

/// The running emulator, from the environment `scripts/test` sets.
///
/// # Panics
/// If the variables are not set: the test cannot run without Azurite.
#[must_use]
pub fn azurite() -> Azurite {
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HINT}"));
    let endpoint = var("ATREST_AZURITE_BLOB_ENDPOINT");
    let host_port = endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("ATREST_AZURITE_BLOB_ENDPOINT is not http://HOST:PORT/ACCOUNT"))
        .to_owned();
    Azurite {
        endpoint,
        host_port,
        location: PathBuf::from(var("ATREST_AZURITE_LOCATION")),
    }
}

impl Azurite {
    /// Creates container `name` (Azure's Create Container call, signed
    /// with the account key).
    ///
    /// # Panics
    /// If the emulator cannot be reached or refuses.
    pub fn create_container(&self, name: &str) {
        let date = http_date(SystemTime::now());
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = BASE64_STANDARD.decode(ACCOUNT_KEY).unwrap();
        let signature = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            string_to_sign.as_bytes(),
        );
        let request = format!(
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: {host}\r\nx-ms-date: {date}\r\nx-ms-version: {API_VERSION}\r\nAuthorization: SharedKey {ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            host = self.host_port,
            sig = BASE64_STANDARD.encode(signature.as_ref()),
        );
        let mut stream = TcpStream::connect(&self.host_port)
            .unwrap_or_else(|e| panic!("Azurite at {}: {e}; {HINT}", self.host_port));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(
            response.starts_with("HTTP/1.1 201"),
            "create container {name}: {response}"
        );
    }

    /// The `object_store` configuration that reaches the emulator through
    /// the Azure backend, explicitly (no emulator shortcut): the account,
    /// its key, the endpoint, plain HTTP on loopback. As environment
    /// variables, the same keys in upper case.
    #[must_use]
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("azure_storage_account_name", ACCOUNT.to_owned()),
            ("azure_storage_account_key", ACCOUNT_KEY.to_owned()),
            ("azure_storage_endpoint", self.endpoint.clone()),
            ("azure_allow_http", "true".to_owned()),
        ]
    }

    /// Every file Azurite keeps (its database and the blob extents), with
    /// its bytes.
    #[must_use]
    pub fn stored_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        walk(&self.location, &mut files);
        files
    }
}

fn walk(dir: &Path, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
}

/// RFC 1123 date, as the `x-ms-date` header wants it.
fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86_400;
    let (hour, minute, second) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm,
    // in unsigned arithmetic: the date is after 1970).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let name = |names: &[&'static str], i: u64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| names.get(i))
            .copied()
            .unwrap_or("?")
    };
    format!(
        "{}, {day:02} {} {year} {hour:02}:{minute:02}:{second:02} GMT",
        name(&DAYS, days % 7),
        name(&MONTHS, month - 1),
    )
}

#[cfg(test)]
#[test]
fn dates_are_rfc_1123() {
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(1_764_590_400)),
        "Mon, 01 Dec 2025 12:00:00 GMT"
    );
}
