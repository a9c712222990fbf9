//! Decoding the calls a `kube::Client` makes to a `tower-test` mock, for
//! the operator's tests that script the API server's answers one by one.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

/// The mock's end of the client: it receives requests and sends answers.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One API call as the mock saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Call {
    /// Decodes a request (its JSON body, if any).
    pub async fn read(request: Request<Body>) -> Self {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("reading the request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        Self {
            method,
            path,
            query,
            content_type,
            body,
        }
    }
}

/// The next call the client makes, and the handle that answers it; panics
/// after 5 s without one.
pub async fn next(handle: &mut Handle) -> (Call, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("timed out waiting for an API call")
        .expect("the client went away");
    (Call::read(request).await, send)
}
