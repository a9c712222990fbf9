//! What a client request must be before the agent serves it.
//!
//! The checks RFC 9112 asks of a server that Pingora's parser leaves to the
//! application, plus the agent's own bounds: one `Host` on HTTP/1.1, a
//! header block of bounded size, and a request target that normalises
//! safely ([`crate::request_target`]). A refusal carries the status to
//! answer and a label for `slicecache_client_requests_rejected_total`.
//! Also here: parse failures from Pingora mapped to a status, and
//! [`for_log`], which bounds what a log line echoes of client input.

use pingora::http::RequestHeader;

use crate::request_target::{self, TargetError};

/// The largest header block served (names, values and separators); larger
/// ones get 431.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Why a request is answered with a 4xx before any cache work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("an HTTP/1.1 request must carry exactly one Host header")]
    Host,
    #[error("the request header block is larger than {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
    #[error("the request could not be parsed as HTTP/1")]
    Malformed,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Target(e) => e.status(),
            Rejection::Host | Rejection::Malformed => 400,
            Rejection::HeadersTooLarge => 431,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Target(e) => e.reason(),
            Rejection::Host => "host",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::Malformed => "malformed",
        }
    }
}

/// A request fit to serve: its normalised target, and the one `Range`
/// header to honour (none when the client sent several: RFC 9110 §14.2 lets
/// a server ignore Range, and picking one would be a guess).
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub target: String,
    pub range: Option<Vec<u8>>,
}

/// Checks a parsed request header.
pub fn admit(req: &RequestHeader) -> Result<Admitted, Rejection> {
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Rejection::HeadersTooLarge);
    }
    if req.version == http::Version::HTTP_11 && req.headers.get_all(http::header::HOST).iter().count() != 1 {
        return Err(Rejection::Host);
    }
    let raw = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = request_target::normalise(raw)?;
    let mut ranges = req.headers.get_all(http::header::RANGE).iter();
    let range = match (ranges.next(), ranges.next()) {
        (Some(one), None) => Some(one.as_bytes().to_vec()),
        _ => None,
    };
    Ok(Admitted { target, range })
}

/// The status for a request Pingora could not read: 414 for a target it
/// could not parse because of its length, 431 for too many header fields or
/// a header block over Pingora's limit, else 400. Pingora reports these only
/// in its error text (`invalid uri <target>`, httparse's `too many
/// headers`, `Request header larger than`).
pub fn parse_failure_status(error: &pingora::Error) -> u16 {
    let text = error.to_string();
    if text.contains("too many headers") || text.contains("larger than") {
        431
    } else if text
        .split_once("invalid uri ")
        .is_some_and(|(_, uri)| uri.split_whitespace().next().unwrap_or("").len() > request_target::MAX_TARGET_BYTES)
    {
        414
    } else {
        400
    }
}

/// Client input as a log field: at most [`LOG_ECHO_CHARS`] characters, with
/// the full length noted when cut.
pub fn for_log(input: &str) -> String {
    match input.char_indices().nth(LOG_ECHO_CHARS) {
        None => input.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &input[..cut], input.len()),
    }
}

/// How much of a client's input one log line repeats.
pub const LOG_ECHO_CHARS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, version: http::Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        req.set_version(version);
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let v11 = http::Version::HTTP_11;
        assert_eq!(admit(&request("/a", v11, &[])), Err(Rejection::Host));
        assert_eq!(
            admit(&request("/a", v11, &[("host", "a"), ("host", "b")])),
            Err(Rejection::Host)
        );
        assert!(admit(&request("/a", v11, &[("host", "a")])).is_ok());
        assert!(admit(&request("/a", http::Version::HTTP_10, &[])).is_ok());
        assert_eq!(Rejection::Host.status(), 400);
    }

    #[test]
    fn several_range_headers_are_all_ignored() {
        let v11 = http::Version::HTTP_11;
        let two = admit(&request(
            "/a",
            v11,
            &[("host", "a"), ("range", "bytes=0-1"), ("range", "bytes=5-9")],
        ))
        .expect("served");
        assert_eq!(two.range, None);
        let one = admit(&request("/a", v11, &[("host", "a"), ("range", "bytes=0-1")])).expect("served");
        assert_eq!(one.range.as_deref(), Some(&b"bytes=0-1"[..]));
    }

    #[test]
    fn oversized_headers_and_bad_targets_are_refused() {
        let big = "x".repeat(MAX_HEADER_BYTES);
        let err = admit(&request(
            "/a",
            http::Version::HTTP_11,
            &[("host", "a"), ("x-big", &big)],
        ));
        assert_eq!(err, Err(Rejection::HeadersTooLarge));
        assert_eq!(Rejection::HeadersTooLarge.status(), 431);
        let err = admit(&request("/%2e%2e/etc/passwd", http::Version::HTTP_11, &[("host", "a")]));
        assert_eq!(err, Err(Rejection::Target(TargetError::EscapesRoot)));
        let ok = admit(&request("/a/./b", http::Version::HTTP_11, &[("host", "a")])).expect("served");
        assert_eq!(ok.target, "/a/b");
    }

    #[test]
    fn log_echo_is_bounded() {
        assert_eq!(for_log("short"), "short");
        let long = "é".repeat(10_000);
        let echoed = for_log(&long);
        assert!(echoed.chars().count() < LOG_ECHO_CHARS + 40, "{}", echoed.len());
        assert!(echoed.ends_with("(20000 bytes)"), "{echoed}");
    }
}
