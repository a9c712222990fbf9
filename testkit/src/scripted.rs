//! An HTTP/1.1 server whose answers a test scripts: a stand-in for a
//! service the code under test only reads (Prometheus's query API), or a
//! server that accepts and never answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200 OK` with this content type and body, then close.
    Ok { content_type: &'static str, body: String },
    /// Read the request and never answer (the connection stays open for a
    /// minute).
    Never,
}

impl Answer {
    /// A JSON body.
    pub fn json(body: impl Into<String>) -> Self {
        Self::Ok {
            content_type: "application/json",
            body: body.into(),
        }
    }
}

/// A running scripted server; stops accepting when dropped.
#[derive(Debug)]
pub struct Scripted {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    /// Starts on a free loopback port; `answer` gets each request's target
    /// (path and query, as sent).
    pub async fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(AtomicUsize::new(0));
        let (answer, counter) = (Arc::new(answer), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (answer, counter) = (answer.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("");
                    counter.fetch_add(1, Ordering::SeqCst);
                    match answer(target) {
                        Answer::Ok { content_type, body } => {
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
                                 connection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = sock.write_all(response.as_bytes()).await;
                        }
                        Answer::Never => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        Self { addr, requests, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests arrived so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The decoded value of query parameter `name` in a request target.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` escapes and `+` (a space, in a query).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of a Prometheus instant-query answer: one sample of `value`,
/// or an empty vector for `None`.
pub fn prometheus_vector(value: Option<f64>) -> String {
    let result = match value {
        Some(v) => format!(r#"[{{"metric":{{}},"value":[1700000000,"{v}"]}}]"#),
        None => "[]".into(),
    };
    format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_parameters() {
        assert_eq!(
            query_param("/api/v1/query?query=sum%28rate%28x%5B1m%5D%29%29&time=1", "query").as_deref(),
            Some("sum(rate(x[1m]))")
        );
        assert_eq!(query_param("/q?a=1", "query"), None);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
