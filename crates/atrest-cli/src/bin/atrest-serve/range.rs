//! HTTP byte ranges (RFC 9110 §14): the one `Range: bytes=…` form this
//! service serves, a single range.

use std::ops::Range;

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Requested {
    /// No range, or one this service ignores as the RFC allows (another
    /// unit, several ranges, bad syntax): the whole representation.
    Whole,
    /// The bytes in this range (never empty, within the representation).
    Part(Range<u64>),
    /// A well-formed range that selects no byte: 416.
    Unsatisfiable,
}

/// Parses `header` for a representation of `len` bytes.
pub(crate) fn requested(header: Option<&str>, len: u64) -> Requested {
    let Some(header) = header else {
        return Requested::Whole;
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Requested::Whole;
    };
    if spec.contains(',') {
        // Several ranges: served whole (a multipart answer is not offered).
        return Requested::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Requested::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too many digits for u64 means "past any end".
        Some(text.parse().unwrap_or(u64::MAX))
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => Requested::Whole,
            Some(0) => Requested::Unsatisfiable,
            Some(_) if len == 0 => Requested::Unsatisfiable,
            Some(n) => Requested::Part(len.saturating_sub(n)..len),
        },
        (first, last) => {
            let Some(start) = number(first) else {
                return Requested::Whole;
            };
            let end = if last.is_empty() {
                len
            } else {
                match number(last) {
                    Some(last) if last >= start => last.saturating_add(1).min(len),
                    _ => return Requested::Whole,
                }
            };
            if start >= len {
                Requested::Unsatisfiable
            } else {
                Requested::Part(start..end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |h: &str| requested(Some(h), 100);
        assert_eq!(requested(None, 100), Requested::Whole);
        assert_eq!(r("bytes=0-9"), Requested::Part(0..10));
        assert_eq!(r("bytes=90-"), Requested::Part(90..100));
        assert_eq!(r("bytes=90-1000"), Requested::Part(90..100));
        assert_eq!(r("bytes=-10"), Requested::Part(90..100));
        assert_eq!(r("bytes=-1000"), Requested::Part(0..100));
        assert_eq!(r("bytes=100-"), Requested::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Requested::Unsatisfiable);
        assert_eq!(
            r("bytes=99999999999999999999999-"),
            Requested::Unsatisfiable
        );
        assert_eq!(r("bytes=5-4"), Requested::Whole);
        assert_eq!(r("bytes=0-1,5-6"), Requested::Whole);
        assert_eq!(r("items=0-1"), Requested::Whole);
        assert_eq!(r("bytes=a-b"), Requested::Whole);
        assert_eq!(r("bytes=-"), Requested::Whole);
        assert_eq!(requested(Some("bytes=0-"), 0), Requested::Unsatisfiable);
        assert_eq!(requested(Some("bytes=-5"), 0), Requested::Unsatisfiable);
    }
}
