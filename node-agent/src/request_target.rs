//! Client request targets made safe to key the cache and to send upstream.
//!
//! The agent appends the client's path to the origin's base path, so a dot
//! segment the origin resolves (`/base/../secret`) would reach files outside
//! the base, and two spellings of one object would be cached twice. Every
//! target is therefore normalised per RFC 3986 before anything else sees it:
//! percent-encoded unreserved characters are decoded (`%2e` is `.`), the
//! remaining encodings are upper-cased, and dot segments are removed (§5.2.4).
//! What cannot be made safe is refused, so the caller answers 400 (or 414):
//! a `..` that would climb above the root, a dot segment hidden behind an
//! encoded slash or backslash (`..%2f`, `%5c..`, also double-encoded), a
//! control byte raw or encoded (`%00`), a malformed `%` escape in the path,
//! and targets longer than [`MAX_TARGET_BYTES`]. The query is passed through
//! as it came, minus the same control-byte check.

/// The longest request target served (nginx's default header buffer is 8 KiB
/// too); longer targets get 414.
pub const MAX_TARGET_BYTES: usize = 8 << 10;

/// Why a request target was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must start with '/'")]
    NotOriginForm,
    #[error("the request target holds a control character (raw or percent-encoded)")]
    ControlByte,
    #[error("the request path holds a '%' that is not followed by two hex digits")]
    BadPercentEncoding,
    #[error("the request path climbs above the root with a '..' segment")]
    EscapesRoot,
    #[error("a path segment hides a dot segment behind an encoded slash or a backslash")]
    HiddenDotSegment,
    #[error("the request target is longer than {MAX_TARGET_BYTES} bytes")]
    TooLong,
}

impl TargetError {
    /// The HTTP status that answers this error.
    pub fn status(self) -> u16 {
        match self {
            TargetError::TooLong => 414,
            _ => 400,
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            TargetError::NotOriginForm => "not_origin_form",
            TargetError::ControlByte => "control_byte",
            TargetError::BadPercentEncoding => "bad_percent_encoding",
            TargetError::EscapesRoot => "escapes_root",
            TargetError::HiddenDotSegment => "hidden_dot_segment",
            TargetError::TooLong => "too_long",
        }
    }
}

/// Normalises a request target (`/path?query`); the result always starts
/// with `/` and never contains a dot segment.
pub fn normalise(target: &str) -> Result<String, TargetError> {
    if target.len() > MAX_TARGET_BYTES {
        return Err(TargetError::TooLong);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    let decoded = decode_unreserved(path)?;
    let mut out = remove_dot_segments(&decoded)?;
    if let Some(q) = query {
        check_query(q)?;
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Decodes percent-encoded unreserved characters and upper-cases the other
/// escapes (RFC 3986 §6.2.2.1-2); refuses control characters and malformed
/// escapes.
fn decode_unreserved(path: &str) -> Result<String, TargetError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy up to the next escape in one go (keeps UTF-8 intact).
            let next = path[i..].find('%').map_or(bytes.len(), |n| i + n);
            if bytes[i..next].iter().any(|&c| is_control(c)) {
                return Err(TargetError::ControlByte);
            }
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let value = escape_at(bytes, i).ok_or(TargetError::BadPercentEncoding)?;
        if is_control(value) {
            return Err(TargetError::ControlByte);
        }
        if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            out.push_str(&format!("%{value:02X}"));
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 over a path whose unreserved escapes are decoded.
/// A `..` at the root is refused instead of being dropped: the client asked
/// for something outside the tree, and silently serving the root's neighbour
/// would hide that.
fn remove_dot_segments(path: &str) -> Result<String, TargetError> {
    let mut kept: Vec<&str> = Vec::new();
    // The path starts with '/', so the first piece is empty.
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                if kept.pop().is_none() {
                    return Err(TargetError::EscapesRoot);
                }
                trailing_slash = i == last;
            }
            _ => {
                if hides_dot_segment(seg) {
                    return Err(TargetError::HiddenDotSegment);
                }
                kept.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether a segment turns into a dot segment once an origin decodes it
/// (once or twice) and treats `\` or an encoded slash as a separator.
fn hides_dot_segment(segment: &str) -> bool {
    let mut view = segment.to_string();
    for _ in 0..3 {
        if view.split(['/', '\\']).any(|piece| piece == "." || piece == "..") {
            return true;
        }
        let next = decode_all(&view);
        if next == view {
            return false;
        }
        view = next;
    }
    true
}

/// Decodes every well-formed escape (for the hidden-segment check only).
fn decode_all(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], escape_at(bytes, i)) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_query(query: &str) -> Result<(), TargetError> {
    let bytes = query.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if is_control(b) || (b == b'%' && escape_at(bytes, i).is_some_and(is_control)) {
            return Err(TargetError::ControlByte);
        }
    }
    Ok(())
}

/// The byte a `%XX` escape at `i` stands for.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let hex = bytes.get(i + 1..i + 3)?;
    let text = std::str::from_utf8(hex).ok()?;
    u8::from_str_radix(text, 16).ok()
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ordinary_targets() {
        for t in [
            "/",
            "/a",
            "/a/b.bin",
            "/a/b/",
            "/a//b",
            "/a%20b?x=1&y=%2e",
            "/caf%C3%A9",
            "/v1/x?",
        ] {
            assert_eq!(normalise(t).as_deref(), Ok(t), "{t}");
        }
    }

    #[test]
    fn removes_dot_segments_inside_the_tree() {
        for (t, want) in [
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/%2e%2E/c", "/c"),
            ("/a/%2E/b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/%7euser/%41", "/~user/A"),
            ("/a%2fb", "/a%2Fb"),
        ] {
            assert_eq!(normalise(t).as_deref(), Ok(want), "{t}");
        }
    }

    #[test]
    fn refuses_what_would_leave_the_base_path() {
        for t in [
            "/../secret/passwd",
            "/%2e%2e/secret/passwd",
            "/%2E%2E/%2E%2E/etc/passwd",
            "/a/../../etc/passwd",
            "/..",
            "/.%2e/x",
        ] {
            assert_eq!(normalise(t), Err(TargetError::EscapesRoot), "{t}");
        }
        for t in [
            "/a/..%2f..%2fetc/passwd",
            "/a/%2e%2e%2Fetc",
            "/a/..\\..\\etc",
            "/a/%5c..%5cx",
            "/a/%252e%252e/x",
            "/a/%25252e%25252e%25252fx",
        ] {
            assert_eq!(normalise(t), Err(TargetError::HiddenDotSegment), "{t}");
        }
    }

    #[test]
    fn refuses_control_bytes_and_bad_escapes() {
        for t in ["/a%00b", "/a\0b", "/a%0d%0aX: y", "/a?x=%00", "/a?x=\x7f", "/a%7F"] {
            assert_eq!(normalise(t), Err(TargetError::ControlByte), "{t:?}");
        }
        for t in ["/a%", "/a%2", "/a%zz"] {
            assert_eq!(normalise(t), Err(TargetError::BadPercentEncoding), "{t}");
        }
        assert_eq!(normalise("*"), Err(TargetError::NotOriginForm));
        assert_eq!(normalise(""), Err(TargetError::NotOriginForm));
        let long = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(normalise(&long), Err(TargetError::TooLong));
        assert_eq!(TargetError::TooLong.status(), 414);
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for t in ["/a/./b/../c%2e%7e", "/x/%41%2f/y?q=%2e%2e", "/a/b/.."] {
            let once = normalise(t).expect("valid");
            assert_eq!(normalise(&once).as_deref(), Ok(once.as_str()), "{t}");
        }
    }
}
