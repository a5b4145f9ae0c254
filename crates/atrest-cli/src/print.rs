//! Lines for the programs' standard output and standard error that never
//! panic (`println!` does when the stream is gone). A failure to write
//! standard output is remembered ([`stdout_failed`]) so that the program
//! exits with a failure; a reader that went away (`atrest tenant list |
//! head -1`) ends the output quietly, any other failure is reported on
//! standard error.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether a line could not be written to standard output.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// Writes one line to standard output.
pub fn stdout_line(line: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    let Err(error) = written else {
        return;
    };
    STDOUT_FAILED.store(true, Ordering::Relaxed);
    if error.kind() != io::ErrorKind::BrokenPipe {
        let program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_default();
        stderr_line(format_args!(
            "{program}: cannot write to standard output: {error}"
        ));
    }
}

/// Writes one line to standard error; nothing if that fails too.
pub fn stderr_line(line: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// As `println!`, through [`stdout_line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::print::stdout_line(::std::format_args!($($arg)*))
    };
}

/// As `eprintln!`, through [`stderr_line`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::print::stderr_line(::std::format_args!($($arg)*))
    };
}
