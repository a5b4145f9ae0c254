//! Conditional requests (RFC 9110 §13) on a file version: `If-None-Match`
//! (a client's copy is current: `304`), `If-Range` (a range of the
//! version the client holds, or else the whole current version), and an
//! upload's `If-Match` and `If-None-Match: *` (replace only what the
//! client read, or create only: else `412`).
//!
//! A version never changes once sealed, so its entity tag (file id and
//! version) is strong. Its `Last-Modified` (the second it was sealed) is
//! not: two versions can be sealed within one second, so a date never
//! makes a range apply.

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
/// `etag`: then the range applies; otherwise the client's copy may be of
/// another version and gets the whole current one. Only the strong tag
/// itself matches: a weak tag never does (the RFC asks for a strong
/// comparison), nor does a date, which a version sealed in the same second
/// as the one the client holds would share.
pub(crate) fn range_applies(header: &str, etag: &str) -> bool {
    let header = header.trim();
    header.starts_with('"') && header == etag
}

/// The preconditions of an upload (`PUT`): `If-None-Match: *` (create
/// only) or `If-Match` (`*`, or the entity tags of the versions it may
/// replace). `Err` says why the headers cannot be honoured.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteCondition<'a> {
    /// Neither header.
    None,
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: *`.
    Present,
    /// `If-Match` with these strong entity tags (weak ones never match).
    Tags(Vec<&'a str>),
}

/// Reads an upload's `If-Match` and `If-None-Match` headers.
pub(crate) fn write_condition<'a>(
    if_match: Option<&'a str>,
    if_none_match: Option<&'a str>,
) -> Result<WriteCondition<'a>, &'static str> {
    match (if_match.map(str::trim), if_none_match.map(str::trim)) {
        (None, None) => Ok(WriteCondition::None),
        (Some(_), Some(_)) => Err("give If-Match or If-None-Match, not both"),
        (None, Some("*")) => Ok(WriteCondition::Absent),
        (None, Some(_)) => Err("on an upload, If-None-Match may only be *"),
        (Some("*"), None) => Ok(WriteCondition::Present),
        (Some(list), None) => {
            let all: Vec<&str> = tags(list).collect();
            if all.is_empty() {
                return Err("If-Match is not * or a list of entity tags");
            }
            Ok(WriteCondition::Tags(
                all.into_iter()
                    .filter(|tag| !tag.starts_with("W/"))
                    .collect(),
            ))
        }
    }
}

/// `time` as an HTTP date (`Last-Modified`): the time of a record read
/// from a catalog, never later than the year 9999 (see
/// `FileRecord::sealed_time`).
pub(crate) fn http_date(time: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(time)
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
    fn uploads_take_one_condition() {
        assert_eq!(write_condition(None, None), Ok(WriteCondition::None));
        assert_eq!(
            write_condition(None, Some(" * ")),
            Ok(WriteCondition::Absent)
        );
        assert_eq!(
            write_condition(Some("*"), None),
            Ok(WriteCondition::Present)
        );
        assert_eq!(
            write_condition(Some("\"a.1\", W/\"a.2\", \"a.3\""), None),
            Ok(WriteCondition::Tags(vec!["\"a.1\"", "\"a.3\""]))
        );
        assert!(write_condition(None, Some(TAG)).is_err());
        assert!(write_condition(Some("*"), Some("*")).is_err());
        assert!(write_condition(Some("garbage"), None).is_err());
    }

    #[test]
    fn if_range_needs_the_same_version() {
        let sealed =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert!(range_applies(TAG, TAG));
        assert!(range_applies(" \"01a2.3\" ", TAG));
        assert!(!range_applies("\"01a2.2\"", TAG));
        assert!(!range_applies("W/\"01a2.3\"", TAG));
        // The version's own Last-Modified included: another version can
        // have been sealed in the same second.
        assert!(!range_applies(&http_date(sealed), TAG));
        assert!(!range_applies("yesterday", TAG));
        assert!(!range_applies("", TAG));
    }
}
