//! SoftHSM2 tokens for tests, in a private directory.
//!
//! SoftHSM2 reads its configuration file from the `SOFTHSM2_CONF`
//! environment variable once, when the PKCS#11 module is initialized, and
//! keeps its tokens in the directory that file names. A test therefore
//! initializes tokens in a [`TempDir`] with [`SoftHsm::init`] and runs the
//! code that loads the module in a child process whose environment points at
//! them ([`SoftHsm::command`]; [`with_tokens`] does both for one test).
//!
//! SoftHSM2 is the Debian package `softhsm2` (`scripts/test` installs it).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::TempDir;

/// The environment variable that overrides the PKCS#11 module path.
pub const MODULE_VAR: &str = "ATREST_PKCS11_MODULE";
/// The module path when [`MODULE_VAR`] is not set (Debian's `softhsm2`).
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The environment variable SoftHSM2 reads its configuration file from.
pub const CONF_VAR: &str = "SOFTHSM2_CONF";
/// The user PIN of every token [`SoftHsm::init`] creates.
pub const USER_PIN: &str = "5678";
/// The security officer PIN of every token [`SoftHsm::init`] creates.
pub const SO_PIN: &str = "1234";
/// Set by [`with_tokens`] in the child process: the token set's directory.
pub const CHILD_VAR: &str = "ATREST_SOFTHSM_DIR";

const HINT: &str = "run scripts/test, which installs the Debian package softhsm2";

/// The PKCS#11 module to load: [`MODULE_VAR`] if set, else [`DEFAULT_MODULE`].
#[must_use]
pub fn module() -> PathBuf {
    std::env::var_os(MODULE_VAR).map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from)
}

/// Freshly initialized SoftHSM2 tokens: a configuration file and a token
/// directory inside a [`TempDir`], removed when this is dropped.
#[derive(Debug)]
pub struct SoftHsm {
    dir: TempDir,
    module: PathBuf,
    conf: PathBuf,
    labels: Vec<String>,
}

impl SoftHsm {
    /// Initializes one token per label (`softhsm2-util --init-token`), each
    /// with [`USER_PIN`] and [`SO_PIN`], in a new temporary directory named
    /// after `name`.
    ///
    /// # Errors
    /// `NotFound` if the module ([`module`]) or `softhsm2-util` is not
    /// installed; any other error if the directory cannot be written or a
    /// token cannot be initialized. Each message says what to do.
    pub fn init(name: &str, labels: &[&str]) -> io::Result<Self> {
        let module = module();
        if !module.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "SoftHSM2 is not installed ({} is missing): {HINT}",
                    module.display()
                ),
            ));
        }
        let dir = TempDir::new(&format!("softhsm-{name}"));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )?;
        for label in labels {
            let output = Command::new("softhsm2-util")
                .env(CONF_VAR, &conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| io::Error::new(e.kind(), format!("softhsm2-util: {e}: {HINT}")))?;
            if !output.status.success() {
                return Err(io::Error::other(format!(
                    "softhsm2-util --init-token --label {label}: {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        Ok(Self {
            dir,
            module,
            conf,
            labels: labels.iter().map(|&label| label.to_owned()).collect(),
        })
    }

    /// The PKCS#11 module to load.
    #[must_use]
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The temporary directory holding the configuration and the tokens;
    /// tests may keep their other files there too.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file, for [`CONF_VAR`].
    #[must_use]
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The labels of the tokens, in the order given to [`SoftHsm::init`].
    #[must_use]
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The user PIN of every token ([`USER_PIN`]).
    #[must_use]
    pub fn user_pin(&self) -> &'static str {
        USER_PIN
    }

    /// The security officer PIN of every token ([`SO_PIN`]).
    #[must_use]
    pub fn so_pin(&self) -> &'static str {
        SO_PIN
    }

    /// A command for `program` whose environment points SoftHSM2 at these
    /// tokens ([`CONF_VAR`] set to [`SoftHsm::conf`]).
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        let _ = command.env(CONF_VAR, &self.conf);
        command
    }
}

/// Runs `body` against fresh tokens labelled `labels`, in a child process.
///
/// `test` is the name of the calling `#[test]` function. In the test process
/// this initializes the tokens ([`SoftHsm::init`]) and runs that one test
/// again, in a child process with [`CONF_VAR`] pointing at them and
/// [`CHILD_VAR`] set to [`SoftHsm::dir`]; in the child it calls `body` with
/// that directory. The tokens' PINs are [`USER_PIN`] and [`SO_PIN`].
///
/// # Panics
/// If SoftHSM2 is not installed, the tokens cannot be initialized, or the
/// test fails in the child (the panic shows the child's output).
#[allow(clippy::panic, clippy::expect_used)]
pub fn with_tokens(test: &str, labels: &[&str], body: impl FnOnce(&Path)) {
    if let Some(dir) = std::env::var_os(CHILD_VAR) {
        body(Path::new(&dir));
        return;
    }
    let hsm = SoftHsm::init(test, labels).unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = hsm
        .command(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, hsm.dir())
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child test {test} failed:\n{stdout}\n{stderr}"
    );
}
