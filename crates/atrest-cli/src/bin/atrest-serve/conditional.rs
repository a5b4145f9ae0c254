//! Conditional requests (RFC 9110 §13) on a file version: `If-None-Match`
//! (a client's copy is current: `304`) and `If-Range` (a range of the
//! version the client holds, or else the whole current version).
//!
//! A version never changes once sealed, so its entity tag (file id and
//! version) is strong, and so is its `Last-Modified` (the second it was
//! sealed).

use std::time::SystemTime;

/// Whether an `If-None-Match` header lists `etag` (or is `*`), by the weak
/// comparison the RFC asks for here (`W/` ignored).
pub(crate) fn none_match(header: &str, etag: &str) -> bool {
    let header = header.trim();
    if header == "*" {
        return true;
    }
    tags(header).any(|tag| tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// Whether an `If-Range` header still names the version whose tag is
/// `etag` and that was sealed at `sealed`: then the range applies;
/// otherwise the client's copy is of another version and gets the whole
/// current one. A weak tag never matches (the RFC asks for a strong
/// comparison); a date matches only the version's exact `Last-Modified`.
pub(crate) fn range_applies(header: &str, etag: &str, sealed: SystemTime) -> bool {
    let header = header.trim();
    if header.starts_with('"') {
        return header == etag;
    }
    if header.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(header).is_ok_and(|date| date == whole_seconds(sealed))
}

/// `time` as an HTTP date (`Last-Modified`).
pub(crate) fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(since.as_secs())
}

/// The entity tags of a comma-separated list (quoted strings may hold
/// commas).
fn tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let start = rest;
        let quote = rest.find('"')?;
        let close = rest.get(quote + 1..)?.find('"')? + quote + 1;
        let (tag, after) = start.split_at(close + 1);
        rest = after;
        Some(tag.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"01a2.3\"";

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match(TAG, TAG));
        assert!(none_match("*", TAG));
        assert!(none_match("\"x\", W/\"01a2.3\"", TAG));
        assert!(!none_match("\"01a2.2\"", TAG));
        assert!(!none_match("\"a,b\"", "\"a\""));
        assert!(none_match("\"a,b\", \"01a2.3\"", TAG));
        assert!(!none_match("", TAG));
        assert!(!none_match("garbage", TAG));
    }

    #[test]
    fn if_range_needs_the_same_version() {
        let sealed = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert!(range_applies(TAG, TAG, sealed));
        assert!(!range_applies("\"01a2.2\"", TAG, sealed));
        assert!(!range_applies("W/\"01a2.3\"", TAG, sealed));
        assert!(range_applies(&http_date(sealed), TAG, sealed));
        let later = sealed + std::time::Duration::from_secs(1);
        assert!(!range_applies(&http_date(later), TAG, sealed));
        assert!(!range_applies("yesterday", TAG, sealed));
    }
}
