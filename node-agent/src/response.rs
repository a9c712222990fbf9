//! Response headers the agent builds itself (not copied from the origin).
//!
//! A leaf module: the client path (`server`) and the fill path (`fill`) both
//! need an empty header of a given status, and neither should import the
//! other for it.

use pingora::http::ResponseHeader;

/// A response header with `status` (an invalid code becomes 502).
pub fn response_header(status: u16) -> ResponseHeader {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    resp.into_parts().0.into()
}
