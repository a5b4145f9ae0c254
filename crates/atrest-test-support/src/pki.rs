//! A private certificate authority made with OpenSSL's command (`openssl`
//! on the `PATH`), for the tests and reports that serve TLS.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl` with `args` in `dir`.
///
/// # Panics
/// If it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// A private CA in `dir`: `ca.pem`, `ca.key`.
pub fn make_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=atrest test CA",
        ],
    );
}

/// A certificate for `localhost` and 127.0.0.1 named `cn`, issued by the
/// CA in `dir`: `NAME.pem` (leaf, then the CA) and `NAME.key`.
pub fn issue(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (key, csr, leaf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.leaf"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &leaf,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let mut chain = std::fs::read(dir.join(&leaf)).unwrap();
    chain.extend(std::fs::read(dir.join("ca.pem")).unwrap());
    std::fs::write(dir.join(format!("{name}.pem")), chain).unwrap();
    (dir.join(format!("{name}.pem")), dir.join(key))
}
