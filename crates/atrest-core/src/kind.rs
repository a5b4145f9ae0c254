//! The kinds of failure.

use core::fmt;

/// What kind of failure an error is: the one classification a program maps
/// to its exit codes and a service to its HTTP statuses.
///
/// Every error type of the `atrest` crates has a `kind()` method returning
/// one, decided where the error arises (the backend that talks to a
/// database knows a connection failure from a constraint violation; the
/// layers above only pass the kind on).
///
/// The enum is exhaustive on purpose: a program matches it without a
/// fallback arm, so a kind added in a later version (a breaking change)
/// does not silently become some other status or exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Something named does not exist: a tenant, a file, a version, a
    /// blob (HTTP 404).
    NotFound,
    /// Refused: the release or write policy said no, the customer revoked
    /// or destroyed their keys, the tenant was purged (HTTP 403).
    Refused,
    /// Data or metadata failed to authenticate or is not well-formed: a
    /// tampered, truncated or swapped blob, a damaged record, an audit log
    /// that does not verify. Never retried blindly (HTTP 500, alert).
    Integrity,
    /// A concurrent change won, or the thing already exists; running the
    /// operation again sees the new state (HTTP 409).
    Conflict,
    /// A service the operation needs (a key service, a database, a blob
    /// store) could not be reached or timed out; a retry may succeed
    /// (HTTP 503).
    Unavailable,
    /// Reading or writing local data failed (a full disk, a broken pipe,
    /// a directory where a file was expected) (HTTP 500).
    Io,
    /// The API or the program was used wrongly: an invalid name, range or
    /// configuration (HTTP 400).
    Usage,
}

impl ErrorKind {
    /// The kind's name in lower case, as a service reports it in an error
    /// body (`not_found`, `refused`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Refused => "refused",
            Self::Integrity => "integrity",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Io => "io",
            Self::Usage => "usage",
        }
    }

    /// The kind of an operating-system I/O error: a missing file is
    /// [`ErrorKind::NotFound`], one that exists already
    /// [`ErrorKind::Conflict`], a timeout or a dropped connection
    /// [`ErrorKind::Unavailable`], anything else [`ErrorKind::Io`].
    pub fn of_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        match error.kind() {
            Io::NotFound => Self::NotFound,
            Io::AlreadyExists => Self::Conflict,
            Io::TimedOut
            | Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::HostUnreachable
            | Io::NetworkUnreachable
            | Io::NetworkDown => Self::Unavailable,
            _ => Self::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn io_errors_are_classified_by_their_kind() {
        let of = |kind| ErrorKind::of_io(&std::io::Error::from(kind));
        assert_eq!(of(std::io::ErrorKind::NotFound), ErrorKind::NotFound);
        assert_eq!(of(std::io::ErrorKind::AlreadyExists), ErrorKind::Conflict);
        assert_eq!(of(std::io::ErrorKind::TimedOut), ErrorKind::Unavailable);
        assert_eq!(of(std::io::ErrorKind::StorageFull), ErrorKind::Io);
        assert_eq!(ErrorKind::NotFound.to_string(), "not_found");
    }
}
