//! Client `Range` and `If-Range` handling (RFC 9110 §14).
//!
//! Parsing is separate from resolution: a `Range` header is first parsed into
//! range specs without knowing the object, then resolved against the object's
//! length once the first slice (or the cache) has told us what it is.
//! A header we cannot parse is ignored, as RFC 9110 allows, and the client
//! gets the whole object: a 200 is always a correct answer, wrong bytes never.

use std::fmt;

/// Most ranges one request may ask for before the header is ignored and the
/// whole object is served instead (a guard against range amplification).
pub const MAX_RANGES: usize = 32;

/// One `range-spec` as written by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`
    Bounded { first: u64, last: u64 },
    /// `first-`
    From { first: u64 },
    /// `-suffix`: the last `suffix` bytes.
    Suffix { len: u64 },
}

/// A satisfiable byte range, inclusive on both ends as in `Content-Range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// `bytes first-last/total`
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.first, self.last, total)
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Parses a `Range` header value.
///
/// Returns `None` when the header must be ignored: another unit, bad syntax,
/// an int-range whose last is before its first, or more than [`MAX_RANGES`].
pub fn parse_range_header(value: &[u8]) -> Option<Vec<RangeSpec>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            // RFC 9110 list syntax tolerates empty elements.
            continue;
        }
        specs.push(parse_spec(part)?);
        if specs.len() > MAX_RANGES {
            return None;
        }
    }
    (!specs.is_empty()).then_some(specs)
}

fn parse_spec(spec: &str) -> Option<RangeSpec> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(RangeSpec::Suffix {
            len: parse_digits(last)?,
        }),
        (false, true) => Some(RangeSpec::From {
            first: parse_digits(first)?,
        }),
        (false, false) => {
            let (first, last) = (parse_digits(first)?, parse_digits(last)?);
            (first <= last).then_some(RangeSpec::Bounded { first, last })
        }
        (true, true) => None,
    }
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Positions beyond u64 cannot be satisfied by any object; saturate so the
    // spec stays syntactically valid and resolves as unsatisfiable.
    Some(s.parse().unwrap_or(u64::MAX))
}

/// What the response to a range request should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Serve the whole object with 200.
    Full,
    /// Serve one range with 206.
    Single(ByteRange),
    /// Serve several ranges as `multipart/byteranges`, in ascending order.
    Multi(Vec<ByteRange>),
    /// Answer 416 with `Content-Range: bytes */len`.
    NotSatisfiable,
}

/// Resolves parsed specs against an object of `len` bytes.
///
/// Overlapping or adjacent ranges are coalesced (RFC 9110 §14.6 allows it),
/// so a multipart response never repeats bytes.
pub fn resolve(specs: &[RangeSpec], len: u64) -> RangeOutcome {
    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|spec| resolve_one(*spec, len)).collect();
    if ranges.is_empty() {
        return RangeOutcome::NotSatisfiable;
    }
    ranges.sort();
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if r.first <= prev.last.saturating_add(1) => prev.last = prev.last.max(r.last),
            _ => merged.push(r),
        }
    }
    match merged.as_slice() {
        [one] => RangeOutcome::Single(*one),
        _ => RangeOutcome::Multi(merged),
    }
}

fn resolve_one(spec: RangeSpec, len: u64) -> Option<ByteRange> {
    match spec {
        RangeSpec::Bounded { first, last } if first < len => Some(ByteRange {
            first,
            last: last.min(len - 1),
        }),
        RangeSpec::From { first } if first < len => Some(ByteRange { first, last: len - 1 }),
        RangeSpec::Suffix { len: n } if n > 0 && len > 0 => Some(ByteRange {
            first: len - n.min(len),
            last: len - 1,
        }),
        _ => None,
    }
}

/// The object validators an `If-Range` is compared against.
#[derive(Clone, Copy, Debug, Default)]
pub struct Validators<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
}

/// Evaluates `If-Range` (RFC 9110 §13.1.5): true when the Range header
/// should be honoured. An entity-tag must match strongly; a date must equal
/// the object's `Last-Modified` exactly.
pub fn if_range_holds(if_range: &[u8], current: Validators<'_>) -> bool {
    let Ok(value) = std::str::from_utf8(if_range) else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return match current.etag {
            Some(etag) => is_strong(value) && value == etag,
            None => false,
        };
    }
    match (current.last_modified, httpdate::parse_http_date(value)) {
        (Some(lm), Ok(date)) => httpdate::parse_http_date(lm).is_ok_and(|lm| lm == date),
        _ => false,
    }
}

/// True for a strong entity-tag (`"abc"`, not `W/"abc"`).
pub fn is_strong(etag: &str) -> bool {
    etag.starts_with('"') && etag.len() >= 2 && etag.ends_with('"')
}

/// Weak comparison for `If-None-Match` (RFC 9110 §8.8.3.2): opaque tags equal,
/// weakness ignored. `*` matches any current representation.
pub fn if_none_match_matches(header: &[u8], etag: Option<&str>) -> bool {
    let Ok(value) = std::str::from_utf8(header) else {
        return false;
    };
    let Some(etag) = etag else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let current = opaque(etag);
    value
        .split(',')
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn br(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            parse_range_header(b"bytes=0-9, 20- ,-5"),
            Some(vec![
                RangeSpec::Bounded { first: 0, last: 9 },
                RangeSpec::From { first: 20 },
                RangeSpec::Suffix { len: 5 },
            ])
        );
        assert_eq!(
            parse_range_header(b"BYTES=1-1"),
            Some(vec![RangeSpec::Bounded { first: 1, last: 1 }])
        );
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            &b"bytes"[..],
            b"bytes=",
            b"items=0-1",
            b"bytes=5-2",
            b"bytes=-",
            b"bytes=a-b",
            b"bytes=1-2-3",
            b"bytes=+1-2",
            b"bytes=0x10-",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_range_header(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse_range_header(many.as_bytes()), None);
    }

    #[test]
    fn resolves_against_length() {
        let parse = |s: &str| parse_range_header(s.as_bytes()).expect("valid");
        assert_eq!(resolve(&parse("bytes=0-99"), 50), RangeOutcome::Single(br(0, 49)));
        assert_eq!(resolve(&parse("bytes=-10"), 50), RangeOutcome::Single(br(40, 49)));
        assert_eq!(resolve(&parse("bytes=-100"), 50), RangeOutcome::Single(br(0, 49)));
        assert_eq!(resolve(&parse("bytes=49-"), 50), RangeOutcome::Single(br(49, 49)));
        assert_eq!(resolve(&parse("bytes=50-"), 50), RangeOutcome::NotSatisfiable);
        assert_eq!(resolve(&parse("bytes=-0"), 50), RangeOutcome::NotSatisfiable);
        assert_eq!(resolve(&parse("bytes=0-0"), 0), RangeOutcome::NotSatisfiable);
        assert_eq!(
            resolve(&parse("bytes=99999999999999999999999-"), 50),
            RangeOutcome::NotSatisfiable
        );
        assert_eq!(
            resolve(&parse("bytes=60-70,0-1"), 50),
            RangeOutcome::Single(br(0, 1)),
            "unsatisfiable members are dropped"
        );
    }

    #[test]
    fn multiple_ranges_are_sorted_and_coalesced() {
        let specs = parse_range_header(b"bytes=30-39,0-9,5-14,15-15").expect("valid");
        assert_eq!(resolve(&specs, 100), RangeOutcome::Multi(vec![br(0, 15), br(30, 39)]));
        let specs = parse_range_header(b"bytes=0-9,10-19").expect("valid");
        assert_eq!(resolve(&specs, 100), RangeOutcome::Single(br(0, 19)));
    }

    #[test]
    fn if_range_compares_strongly() {
        let v = Validators {
            etag: Some("\"v1\""),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT"),
        };
        assert!(if_range_holds(b"\"v1\"", v));
        assert!(!if_range_holds(b"\"v2\"", v));
        assert!(!if_range_holds(b"W/\"v1\"", v));
        assert!(if_range_holds(b"Sun, 06 Nov 1994 08:49:37 GMT", v));
        assert!(!if_range_holds(b"Sun, 06 Nov 1994 08:49:38 GMT", v));
        assert!(!if_range_holds(b"garbage", v));
        let weak = Validators {
            etag: Some("W/\"v1\""),
            last_modified: None,
        };
        assert!(!if_range_holds(b"W/\"v1\"", weak));
    }

    #[test]
    fn if_none_match_is_weak() {
        assert!(if_none_match_matches(b"W/\"a\", \"b\"", Some("\"a\"")));
        assert!(if_none_match_matches(b"*", Some("\"a\"")));
        assert!(!if_none_match_matches(b"\"c\"", Some("\"a\"")));
        assert!(!if_none_match_matches(b"\"c\"", None));
    }
}
