//! A minimal client for the Prometheus HTTP API: instant queries only.
//!
//! The tuner needs one thing from Prometheus, `GET /api/v1/query`, and must
//! survive a Prometheus that is down, slow or empty: every failure becomes a
//! [`QueryError`] whose [`reason`](QueryError::reason) the tuner reports
//! while it holds its values. The client is hyper's, which kube already
//! brings into the build, with rustls for `https://` URLs.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::Deserialize;

/// Default time allowed for one query, connect to last byte.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read; the tuner's queries return a few series.
const MAX_BODY: usize = 4 << 20;

/// Why a query gave no answer. The variant name is the reason reported in
/// decisions, conditions and events.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The server could not be reached (refused, DNS, TLS, reset).
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the timeout.
    #[error("Prometheus query timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered with an HTTP error status.
    #[error("Prometheus answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// Prometheus rejected the query (`"status": "error"`).
    #[error("Prometheus rejected the query ({error_type}): {error}")]
    Rejected { error_type: String, error: String },
    /// The answer was not a Prometheus API response we understand.
    #[error("unexpected Prometheus response: {0}")]
    BadResponse(String),
}

impl QueryError {
    /// Stable CamelCase reason for status, conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "PrometheusUnreachable",
            Self::Timeout(_) => "QueryTimeout",
            Self::Http { .. } => "PrometheusError",
            Self::Rejected { .. } => "QueryRejected",
            Self::BadResponse(_) => "BadPrometheusResponse",
        }
    }
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus server's HTTP API.
#[derive(Clone)]
pub struct PrometheusClient {
    base: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A URL the client cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Prometheus URL {url:?}: {why}")]
pub struct InvalidUrl {
    pub url: String,
    pub why: String,
}

impl PrometheusClient {
    /// A client for the API under `base_url` (`http(s)://host:port[/prefix]`).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, InvalidUrl> {
        let invalid = |why: &str| InvalidUrl {
            url: base_url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = base_url.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid("scheme must be http or https")),
        }
        if uri.host().is_none() {
            return Err(invalid("no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("must not carry a query string"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            // No system trust store: http:// still works, https:// fails per query.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| invalid(&e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            base: base_url.trim_end_matches('/').to_string(),
            timeout,
            client,
        })
    }

    /// The base URL queries go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Runs an instant query. A scalar result comes back as one sample
    /// without labels; an empty vector as no samples.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, QueryError> {
        match tokio::time::timeout(self.timeout, self.query_inner(promql)).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Timeout(self.timeout)),
        }
    }

    /// Runs an instant query expected to yield at most one value: the first
    /// finite sample, or `None` when the result is empty or not a number
    /// (PromQL yields NaN and Inf for `0/0` and `x/0`).
    pub async fn query_value(&self, promql: &str) -> Result<Option<f64>, QueryError> {
        Ok(self
            .query(promql)
            .await?
            .into_iter()
            .map(|s| s.value)
            .find(|v| v.is_finite()))
    }

    async fn query_inner(&self, promql: &str) -> Result<Vec<Sample>, QueryError> {
        // Prometheus stops evaluating at its own timeout, too.
        let url = format!(
            "{}/api/v1/query?query={}&timeout={}ms",
            self.base,
            form_encode(promql),
            self.timeout.as_millis().max(1)
        );
        let req = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| QueryError::BadResponse(format!("building the request: {e}")))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| QueryError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| QueryError::Unreachable(format!("reading the response: {e}")))?
            .to_bytes();
        parse_response(status, &body)
    }
}

/// Parses an `/api/v1/query` answer. Prometheus reports query errors with
/// 400/422/503 and a JSON body, so the body is read before the status.
pub fn parse_response(status: StatusCode, body: &[u8]) -> Result<Vec<Sample>, QueryError> {
    let parsed: ApiResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) if status.is_success() => return Err(QueryError::BadResponse(e.to_string())),
        Err(_) => {
            return Err(QueryError::Http {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string(),
            })
        }
    };
    if parsed.status != "success" {
        return Err(QueryError::Rejected {
            error_type: parsed.error_type.unwrap_or_default(),
            error: parsed.error.unwrap_or_default(),
        });
    }
    let data = parsed
        .data
        .ok_or_else(|| QueryError::BadResponse("success without data".into()))?;
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<VectorSample> =
                serde_json::from_value(data.result).map_err(|e| QueryError::BadResponse(e.to_string()))?;
            series
                .into_iter()
                .map(|s| {
                    Ok(Sample {
                        labels: s.metric,
                        value: parse_value(&s.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, value): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| QueryError::BadResponse(e.to_string()))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&value)?,
            }])
        }
        other => Err(QueryError::BadResponse(format!(
            "result type {other:?}: the tuner's queries yield instant vectors"
        ))),
    }
}

fn parse_value(text: &str) -> Result<f64, QueryError> {
    // Rust parses "NaN", "+Inf" and "-Inf" as Prometheus writes them.
    text.parse()
        .map_err(|_| QueryError::BadResponse(format!("sample value {text:?} is not a number")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// `application/x-www-form-urlencoded` for a query parameter value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// hyper's errors say "client error (Connect)" and keep the cause in the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_vectors_scalars_and_errors() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000.1,"0.5"]},
            {"metric":{},"value":[1700000000.1,"NaN"]}]}}"#;
        let samples = parse_response(StatusCode::OK, body).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].value, 0.5);
        assert_eq!(samples[0].labels.get("pod").map(String::as_str), Some("a"));
        assert!(samples[1].value.is_nan());

        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#;
        assert_eq!(parse_response(StatusCode::OK, scalar).unwrap()[0].value, f64::INFINITY);

        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_response(StatusCode::OK, empty).unwrap().is_empty());

        let rejected = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let err = parse_response(StatusCode::BAD_REQUEST, rejected).unwrap_err();
        assert_eq!(err.reason(), "QueryRejected");

        let err = parse_response(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>").unwrap_err();
        assert_eq!(err.reason(), "PrometheusError");
        let err = parse_response(StatusCode::OK, b"not json").unwrap_err();
        assert_eq!(err.reason(), "BadPrometheusResponse");
    }

    #[test]
    fn encodes_promql_for_the_query_string() {
        assert_eq!(
            form_encode(r#"sum(rate(x{a="b"}[1m]))"#),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29"
        );
        assert_eq!(form_encode("a b+c"), "a%20b%2Bc");
    }

    #[test]
    fn rejects_unusable_urls() {
        assert!(PrometheusClient::new("ftp://x", DEFAULT_QUERY_TIMEOUT).is_err());
        assert!(PrometheusClient::new("not a url", DEFAULT_QUERY_TIMEOUT).is_err());
        assert!(PrometheusClient::new("http://x:9090/?a=b", DEFAULT_QUERY_TIMEOUT).is_err());
        let c = PrometheusClient::new("http://x:9090/prom/", DEFAULT_QUERY_TIMEOUT).unwrap();
        assert_eq!(c.base_url(), "http://x:9090/prom");
    }
}
