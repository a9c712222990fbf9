//! What makes a text an http(s) URL the agents may fetch from or the tuner
//! may query: parsed, with a host, no credentials and no query string.

use http::Uri;

/// Why a text is not an http(s) URL the agents or the tuner may use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("empty")]
    Empty,
    #[error("contains whitespace")]
    Whitespace,
    #[error("{0}")]
    Unparsable(String),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("needs a scheme, http:// or https://")]
    NoScheme,
    #[error("needs a host")]
    NoHost,
    #[error("must not carry credentials; use a Secret")]
    Credentials,
    #[error("must not have a query string")]
    Query,
}

/// `value` as an http(s) URL, or why it is not one.
pub(super) fn check_http_url(value: &str) -> Result<Uri, UrlProblem> {
    if value.is_empty() {
        return Err(UrlProblem::Empty);
    }
    if value.chars().any(char::is_whitespace) {
        return Err(UrlProblem::Whitespace);
    }
    let uri: Uri = value
        .parse()
        .map_err(|e: http::uri::InvalidUri| UrlProblem::Unparsable(e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(UrlProblem::Scheme(other.to_string())),
        None => return Err(UrlProblem::NoScheme),
    }
    let authority = uri.authority().ok_or(UrlProblem::NoHost)?;
    if authority.as_str().contains('@') {
        return Err(UrlProblem::Credentials);
    }
    if authority.host().is_empty() {
        return Err(UrlProblem::NoHost);
    }
    if uri.query().is_some() {
        return Err(UrlProblem::Query);
    }
    Ok(uri)
}
