//! Origin subrequests over Pingora's pooled HTTP/1.1 connector.
//!
//! One [`OriginClient`] per agent: it resolves the origin once, keeps idle
//! keep-alive connections in Pingora's pool, and applies the configured
//! connect, first-byte and idle timeouts to every subrequest.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::range::ByteRange;

/// Why the configured origin cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum OriginSetupError {
    #[error("origin url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("origin url {url:?} must start with http:// or https://")]
    Scheme { url: String },
    #[error("origin url {url:?} has no host")]
    NoHost { url: String },
    #[error("origin url {url:?} must not carry a query")]
    Query { url: String },
    #[error("resolving origin {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("origin {host} resolves to no address")]
    NoAddress { host: String },
}

/// Why an origin subrequest failed.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("connecting to the origin failed: {0}")]
    Connect(String),
    #[error("the origin did not answer in time: {0}")]
    Timeout(String),
    #[error("the origin broke the connection: {0}")]
    Io(String),
    #[error("the origin sent an invalid response: {0}")]
    Protocol(String),
}

impl OriginError {
    fn from_pingora(e: Box<pingora::Error>, connecting: bool) -> Self {
        use pingora::ErrorType as T;
        let msg = e.to_string();
        match e.etype() {
            T::ConnectTimedout | T::ReadTimedout | T::WriteTimedout => Self::Timeout(msg),
            _ if connecting => Self::Connect(msg),
            T::InvalidHTTPHeader | T::H1Error | T::InvalidH2 | T::H2Error => Self::Protocol(msg),
            _ => Self::Io(msg),
        }
    }

    /// Short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io",
            Self::Protocol(_) => "protocol",
        }
    }
}

/// Where the origin is and how to talk to it.
#[derive(Clone, Debug)]
pub struct OriginTarget {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix from the origin URL, without a trailing slash.
    pub base_path: String,
    /// Host header to send.
    pub host_header: String,
}

impl OriginTarget {
    /// Parses `http://host[:port][/base]` or `https://…`.
    pub fn parse(url: &str, host_header: Option<&str>) -> Result<Self, OriginSetupError> {
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| OriginSetupError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(OriginSetupError::Scheme { url: url.to_string() }),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| OriginSetupError::NoHost { url: url.to_string() })?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(OriginSetupError::Query { url: url.to_string() });
        }
        Ok(Self {
            tls,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
            host_header: host_header.map_or_else(|| authority.as_str().to_string(), str::to_string),
        })
    }
}

/// Timeouts applied to every subrequest.
#[derive(Clone, Copy, Debug)]
pub struct OriginTimeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

/// A conditional range subrequest.
#[derive(Clone, Debug, Default)]
pub struct OriginRequest {
    /// Client path and query, appended to the origin's base path.
    pub path: String,
    pub range: Option<ByteRange>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
    /// More headers for this request (a fleet peer's token and hop marker).
    pub extra_headers: Vec<(&'static str, String)>,
}

/// The origin client shared by all requests.
pub struct OriginClient {
    connector: Connector,
    peer: HttpPeer,
    target: OriginTarget,
    timeouts: OriginTimeouts,
}

impl std::fmt::Debug for OriginClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginClient").field("target", &self.target).finish()
    }
}

impl OriginClient {
    /// Resolves the origin and prepares the connection pool.
    pub fn new(target: OriginTarget, timeouts: OriginTimeouts, max_idle: usize) -> Result<Arc<Self>, OriginSetupError> {
        let addr: SocketAddr = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|source| OriginSetupError::Resolve {
                host: target.host.clone(),
                port: target.port,
                source,
            })?
            .next()
            .ok_or_else(|| OriginSetupError::NoAddress {
                host: target.host.clone(),
            })?;
        let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        let mut options = pingora::connectors::ConnectorOptions::new(max_idle.max(8));
        options.keepalive_pool_size = max_idle.max(8);
        Ok(Arc::new(Self {
            connector: Connector::new(Some(options)),
            peer,
            target,
            timeouts,
        }))
    }

    pub fn target(&self) -> &OriginTarget {
        &self.target
    }

    /// Sends `req` and reads the response header.
    pub async fn send(self: &Arc<Self>, req: &OriginRequest) -> Result<OriginResponse, OriginError> {
        let (mut session, _reused) = self
            .connector
            .get_http_session(&self.peer)
            .await
            .map_err(|e| OriginError::from_pingora(e, true))?;
        let header = self.request_header(req)?;
        session.set_read_timeout(Some(self.timeouts.first_byte));
        session.set_write_timeout(Some(self.timeouts.first_byte));
        session
            .write_request_header(Box::new(header))
            .await
            .map_err(|e| OriginError::from_pingora(e, false))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| OriginError::from_pingora(e, false))?;
        session
            .read_response_header()
            .await
            .map_err(|e| OriginError::from_pingora(e, false))?;
        let header = session
            .response_header()
            .cloned()
            .ok_or_else(|| OriginError::Protocol("no response header".into()))?;
        session.set_read_timeout(Some(self.timeouts.idle));
        Ok(OriginResponse {
            client: self.clone(),
            session: Some(session),
            header,
        })
    }

    fn request_header(&self, req: &OriginRequest) -> Result<RequestHeader, OriginError> {
        let path = format!("{}{}", self.target.base_path, req.path);
        let mut h = RequestHeader::build("GET", path.as_bytes(), None)
            .map_err(|e| OriginError::Protocol(format!("building request for {path:?}: {e}")))?;
        let mut set = |name: http::HeaderName, value: &str| {
            h.insert_header(name, value)
                .map_err(|e| OriginError::Protocol(format!("header value {value:?}: {e}")))
        };
        set(http::header::HOST, &self.target.host_header)?;
        set(
            http::header::USER_AGENT,
            concat!("slicecache/", env!("CARGO_PKG_VERSION")),
        )?;
        if let Some(range) = req.range {
            set(http::header::RANGE, &format!("bytes={range}"))?;
        }
        for (name, value) in &req.extra_headers {
            set(http::HeaderName::from_static(name), value)?;
        }
        for (name, value) in [
            (http::header::IF_MATCH, &req.if_match),
            (http::header::IF_NONE_MATCH, &req.if_none_match),
            (http::header::IF_MODIFIED_SINCE, &req.if_modified_since),
            (http::header::IF_UNMODIFIED_SINCE, &req.if_unmodified_since),
        ] {
            if let Some(value) = value {
                set(name, value)?;
            }
        }
        Ok(h)
    }
}

/// An origin response whose body is still to be read.
pub struct OriginResponse {
    client: Arc<OriginClient>,
    session: Option<HttpSession>,
    pub header: ResponseHeader,
}

impl std::fmt::Debug for OriginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginResponse")
            .field("status", &self.status())
            .finish()
    }
}

impl OriginResponse {
    pub fn status(&self) -> u16 {
        self.header.status.as_u16()
    }

    /// Reads the next body chunk; `None` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, OriginError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        session
            .read_response_body()
            .await
            .map_err(|e| OriginError::from_pingora(e, false))
    }

    /// Returns the connection to the pool if its response was read to the end;
    /// otherwise the connection is closed.
    pub async fn release(mut self) {
        if let Some(mut session) = self.session.take() {
            if session.response_done() {
                self.client
                    .connector
                    .release_http_session(session, &self.client.peer, Some(Duration::from_secs(60)))
                    .await;
            } else {
                session.shutdown().await;
            }
        }
    }
}

/// Parses `Content-Range: bytes first-last/total` (total may be `*`).
pub fn parse_content_range(value: &str) -> Option<(ByteRange, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    if first > last {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((ByteRange { first, last }, total))
}

/// The `Content-Length` of a response, if present and valid.
pub fn content_length(header: &ResponseHeader) -> Option<u64> {
    header
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origin_urls() {
        let t = OriginTarget::parse("http://example.test:8081/base/", None).expect("valid");
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.base_path.as_str()),
            (false, "example.test", 8081, "/base")
        );
        assert_eq!(t.host_header, "example.test:8081");
        let t = OriginTarget::parse("https://cdn.test", Some("media.test")).expect("valid");
        assert_eq!((t.tls, t.port, t.host_header.as_str()), (true, 443, "media.test"));
        assert!(OriginTarget::parse("ftp://x", None).is_err());
        assert!(OriginTarget::parse("not a url", None).is_err());
        assert!(OriginTarget::parse("http://x/?q=1", None).is_err());
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((ByteRange { first: 0, last: 9 }, Some(100)))
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some((ByteRange { first: 5, last: 9 }, None))
        );
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
