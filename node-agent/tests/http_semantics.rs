//! Status codes and headers the agent answers with (RFC 9110): 200, 206,
//! 416, multipart/byteranges, malformed Range, If-Range, HEAD, conditional
//! requests, methods, and origin errors passed through.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use slicecache_testkit::client::{ClientResponse, HttpClient};
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

use common::{assert_bytes, assert_partial, parse_multipart, AgentBuilder, S};

const PATH: &str = "/media/clip.bin";
const LEN: usize = 3 * (64 << 10) + 33;
const ETAG: &str = "\"clip-v1\"";
const LAST_MODIFIED: &str = "Tue, 03 Mar 2026 10:00:00 GMT";

struct Fixture {
    _origin: TestOrigin,
    agent: common::AgentProc,
    body: Bytes,
}

async fn fixture() -> Fixture {
    let origin = TestOrigin::start().await.unwrap();
    let body = pattern(LEN, 5);
    let mut object = OriginObject::new(body.clone(), "clip-v1");
    object.last_modified = LAST_MODIFIED.into();
    origin.state.put(PATH, object);
    let agent = AgentBuilder::new(&origin.url()).start().await;
    Fixture {
        _origin: origin,
        agent,
        body,
    }
}

fn assert_entity_headers(resp: &ClientResponse, what: &str) {
    assert_eq!(resp.header("etag"), Some(ETAG), "{what}: ETag");
    assert_eq!(
        resp.header("last-modified"),
        Some(LAST_MODIFIED),
        "{what}: Last-Modified"
    );
    assert_eq!(resp.header("accept-ranges"), Some("bytes"), "{what}: Accept-Ranges");
}

async fn get(client: &mut HttpClient, headers: &[(&str, &str)]) -> ClientResponse {
    client.get(PATH, headers).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_and_single_range_responses() {
    let f = fixture().await;
    let mut c = f.agent.client();
    let len = LEN as u64;

    // 200 without Range, cold and warm.
    for pass in ["cold", "warm"] {
        let resp = get(&mut c, &[]).await;
        assert_eq!(resp.status, 200, "{pass}");
        assert_eq!(resp.header("content-length"), Some(LEN.to_string().as_str()), "{pass}");
        assert_eq!(resp.header("content-type"), Some("application/octet-stream"), "{pass}");
        assert_eq!(resp.header("content-range"), None, "{pass}");
        assert_entity_headers(&resp, pass);
        assert_bytes(&resp.body, &f.body, pass);
    }

    // 206 for a-b, a-, -n, and a-b clamped at the end.
    let cases: [(&str, u64, u64); 6] = [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=65000-140000", 65000, 140_000),
        ("bytes=150000-", 150_000, len - 1),
        ("bytes=-500", len - 500, len - 1),
        ("bytes=196000-99999999", 196_000, len - 1),
    ];
    for (spec, a, b) in cases {
        let resp = get(&mut c, &[("Range", spec)]).await;
        assert_partial(&resp, &f.body, a, b, spec);
        assert_entity_headers(&resp, spec);
    }

    // 416 with Content-Range: bytes */len.
    for spec in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 10, len + 20),
        "bytes=-0".into(),
    ] {
        let resp = get(&mut c, &[("Range", &spec)]).await;
        assert_eq!(resp.status, 416, "{spec}");
        assert_eq!(
            resp.header("content-range"),
            Some(format!("bytes */{len}").as_str()),
            "{spec}"
        );
        assert!(resp.body.is_empty(), "{spec}: 416 body");
    }

    // Malformed or foreign-unit Range headers are ignored: 200, whole body.
    for spec in ["bytes=5-2", "items=0-1", "garbage", "bytes=", "bytes=a-b", "bytes=-"] {
        let resp = get(&mut c, &[("Range", spec)]).await;
        assert_eq!(resp.status, 200, "{spec}");
        assert_eq!(resp.header("content-range"), None, "{spec}");
        assert_bytes(&resp.body, &f.body, spec);
    }
    // The connection stayed usable through all of it.
    let resp = get(&mut c, &[("Range", "bytes=1-2")]).await;
    assert_partial(&resp, &f.body, 1, 2, "after the rest");
}

#[tokio::test(flavor = "multi_thread")]
async fn multiple_ranges_are_multipart_byteranges() {
    let f = fixture().await;
    let mut c = f.agent.client();
    let len = LEN as u64;
    // Unsorted, one straddling a slice boundary, one suffix, one clamped,
    // plus two overlapping ones the agent may coalesce.
    let spec = format!(
        "bytes=0-9,{}-{},-5,180000-190000,100-150,140-160,{}-{}",
        S - 3,
        S + 2,
        len - 2000,
        len + 7
    );
    let resp = get(&mut c, &[("Range", &spec)]).await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("content-range"), None, "no top-level Content-Range");
    assert_entity_headers(&resp, "multipart");
    let ct = resp.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("Content-Type {ct:?}"));
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str()),
        "Content-Length matches the multipart body"
    );
    let parts = parse_multipart(&resp.body, boundary);
    // Whatever the coalescing, the parts must cover exactly the requested
    // bytes, each carrying its own correct bytes.
    let mut covered = vec![false; LEN];
    let mut prev_end = None;
    for part in &parts {
        assert_eq!(part.header("content-type"), Some("application/octet-stream"));
        let cr = part.header("content-range").unwrap();
        let (r, total) = cr.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
        assert_eq!(total, len.to_string(), "{cr}");
        let (a, b) = r.split_once('-').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        assert_bytes(&part.body, &f.body[a..=b], cr);
        if let Some(end) = prev_end {
            assert!(a > end, "parts overlap or are out of order at {cr}");
        }
        prev_end = Some(b);
        covered[a..=b].iter_mut().for_each(|c| *c = true);
    }
    let mut want = vec![false; LEN];
    for (a, b) in [
        (0, 9),
        (S as usize - 3, S as usize + 2),
        (LEN - 5, LEN - 1),
        (180_000, 190_000),
        (100, 150),
        (140, 160),
        (LEN - 2000, LEN - 1),
    ] {
        want[a..=b].iter_mut().for_each(|c| *c = true);
    }
    assert!(
        covered == want,
        "multipart parts do not cover exactly the requested ranges"
    );
    assert!(parts.len() >= 4, "expected several parts, got {}", parts.len());

    // Two ranges whose only satisfiable member is one range: a plain 206.
    let resp = get(&mut c, &[("Range", &format!("bytes=10-20,{}-{}", len + 1, len + 9))]).await;
    assert_partial(&resp, &f.body, 10, 20, "one satisfiable of two");
}

#[tokio::test(flavor = "multi_thread")]
async fn conditionals_head_and_methods() {
    let f = fixture().await;
    let mut c = f.agent.client();

    // If-Range with the current ETag: the range is served.
    let resp = get(&mut c, &[("Range", "bytes=10-19"), ("If-Range", ETAG)]).await;
    assert_partial(&resp, &f.body, 10, 19, "If-Range matching ETag");
    // With another ETag (or a weak one): the whole, current object.
    for ir in ["\"other\"", "W/\"clip-v1\""] {
        let resp = get(&mut c, &[("Range", "bytes=10-19"), ("If-Range", ir)]).await;
        assert_eq!(resp.status, 200, "If-Range {ir}");
        assert_eq!(resp.header("content-range"), None, "If-Range {ir}");
        assert_bytes(&resp.body, &f.body, ir);
    }
    // With the exact Last-Modified date: honoured; another date: 200.
    let resp = get(&mut c, &[("Range", "bytes=70000-70009"), ("If-Range", LAST_MODIFIED)]).await;
    assert_partial(&resp, &f.body, 70000, 70009, "If-Range matching date");
    let resp = get(
        &mut c,
        &[
            ("Range", "bytes=70000-70009"),
            ("If-Range", "Mon, 02 Mar 2026 10:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "If-Range older date");
    assert_bytes(&resp.body, &f.body, "If-Range older date");

    // If-None-Match: 304 when it matches (strong, weak or *), 200 otherwise.
    for inm in [ETAG, "W/\"clip-v1\"", "\"x\", \"clip-v1\"", "*"] {
        let resp = get(&mut c, &[("If-None-Match", inm)]).await;
        assert_eq!(resp.status, 304, "If-None-Match {inm}");
        assert_eq!(resp.header("etag"), Some(ETAG), "304 carries the ETag");
        assert!(resp.body.is_empty());
    }
    let resp = get(&mut c, &[("If-None-Match", "\"nope\"")]).await;
    assert_eq!(resp.status, 200);
    assert_bytes(&resp.body, &f.body, "If-None-Match other");
    // If-Modified-Since at Last-Modified: 304; before it: 200.
    let resp = get(&mut c, &[("If-Modified-Since", LAST_MODIFIED)]).await;
    assert_eq!(resp.status, 304, "If-Modified-Since = Last-Modified");
    let resp = get(&mut c, &[("If-Modified-Since", "Mon, 02 Mar 2026 10:00:00 GMT")]).await;
    assert_eq!(resp.status, 200, "If-Modified-Since earlier");

    // HEAD: the GET's headers, no body; the connection stays in sync, which
    // it would not if a body had been sent.
    let resp = c.request("HEAD", PATH, &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(LEN.to_string().as_str()));
    assert_entity_headers(&resp, "HEAD");
    let resp = c.request("HEAD", PATH, &[("Range", "bytes=5-9")]).await.unwrap();
    assert_eq!(resp.status, 206, "HEAD with Range");
    assert_eq!(resp.header("content-range"), Some(format!("bytes 5-9/{LEN}").as_str()));
    let resp = get(&mut c, &[("Range", "bytes=0-3")]).await;
    assert_partial(&resp, &f.body, 0, 3, "GET after HEAD on the same connection");

    // Other methods: 405 with Allow.
    for method in ["POST", "PUT", "DELETE"] {
        let resp = c.request(method, PATH, &[("Content-Length", "0")]).await.unwrap();
        assert_eq!(resp.status, 405, "{method}");
        let allow = resp.header("allow").unwrap_or_default();
        assert!(
            allow.contains("GET") && allow.contains("HEAD"),
            "{method}: Allow {allow:?}"
        );
    }

    // An unknown path: the origin's 404 is passed through (and not cached
    // as an object).
    let mut fresh = f.agent.client();
    for _ in 0..2 {
        let resp = fresh.get("/no/such/object", &[]).await.unwrap();
        assert_eq!(resp.status, 404);
        let resp = fresh.get("/no/such/object", &[("Range", "bytes=0-1")]).await.unwrap();
        assert_eq!(resp.status, 404);
    }
    let seen404 = common::settled(&f._origin)
        .await
        .iter()
        .filter(|r| r.path == "/no/such/object")
        .count();
    assert_eq!(seen404, 4, "every 404 was asked of the origin");
}
