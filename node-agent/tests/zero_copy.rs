//! Memory hits sent with `sendfile` from the L1 arena: exact bytes, the
//! connection kept alive for the next request, pipelined requests never lost
//! or hung, a client that stops reading for a while (the agent waits for
//! room in the socket), and a client that vanishes mid-body leaving the
//! agent serving.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{assert_bytes, wait_for, AgentBuilder, AgentProc};

const PATH: &str = "/big/object.bin";
const LEN: usize = 3 * (1 << 20) + 17;
const SENDFILE: &str = "slicecache_client_sendfile_bytes_total";
const WAITS: &str = "slicecache_client_sendfile_waits_total";

async fn warm_agent() -> (TestOrigin, AgentProc, Bytes) {
    let origin = TestOrigin::start().await.unwrap();
    let body = pattern(LEN, 11);
    origin.state.put(PATH, OriginObject::new(body.clone(), "big-v1"));
    let agent = AgentBuilder::new(&origin.url()).start().await;
    let cold = agent.client().get(PATH, &[]).await.unwrap();
    assert_eq!(cold.status, 200);
    assert_bytes(&cold.body, &body, "cold fill");
    // The client has every byte before the fill has cached its last slices
    // (they go into the arena on a blocking thread): wait until they are.
    wait_for(
        "the whole object in the memory tier",
        Duration::from_secs(10),
        || async { agent.metric("slicecache_memory_used_bytes", &[]).await >= LEN as f64 },
    )
    .await;
    (origin, agent, body)
}

fn request(path: &str, range: Option<&str>) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: agent\r\n");
    if let Some(r) = range {
        req.push_str(&format!("Range: {r}\r\n"));
    }
    req + "\r\n"
}

/// Appends what `s` has next to `buf`; `None` at the end of the connection.
/// Twenty seconds without a byte fail the test: that is a hang.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Option<()> {
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(chunk))
        .await
        .expect("nothing from the agent within 20 s (a hang)")
        .ok()?;
    buf.extend_from_slice(&chunk[..n]);
    (n > 0).then_some(())
}

/// Reads one `Content-Length` response from `s`, keeping extra bytes in
/// `buf`. `None` when the connection closed before a whole response.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, String, Vec<u8>)> {
    let mut chunk = vec![0u8; 256 << 10];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        read_more(s, buf, &mut chunk).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    while buf.len() < head_end + len {
        read_more(s, buf, &mut chunk).await?;
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some((status, head, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hits_go_out_by_sendfile_on_a_kept_alive_connection() {
    let (_origin, agent, body) = warm_agent().await;
    let before = agent.metric(SENDFILE, &[]).await;

    // Several hits on one connection: whole object, unaligned ranges across
    // slice boundaries, and a short range that is written, not sent.
    let mut s = TcpStream::connect(agent.listen).await.unwrap();
    let mut buf = Vec::new();
    let cases: [(Option<&str>, usize, usize); 5] = [
        (None, 0, LEN - 1),
        (Some("bytes=65535-1200000"), 65535, 1_200_000),
        (Some("bytes=3000000-"), 3_000_000, LEN - 1),
        (Some("bytes=-200000"), LEN - 200_000, LEN - 1),
        (Some("bytes=10-1009"), 10, 1009),
    ];
    let mut sent_by_sendfile = 0.0;
    for (range, first, last) in cases {
        s.write_all(request(PATH, range).as_bytes()).await.unwrap();
        let (status, head, got) = read_response(&mut s, &mut buf)
            .await
            .unwrap_or_else(|| panic!("{range:?}: the connection closed instead of staying alive"));
        assert_eq!(status, if range.is_some() { 206 } else { 200 }, "{range:?}");
        if range.is_some() {
            let want = format!("content-range: bytes {first}-{last}/{LEN}");
            assert!(head.to_ascii_lowercase().contains(&want), "{range:?}: {head}");
        }
        assert_bytes(&got, &body[first..=last], &format!("{range:?}"));
        if last + 1 - first >= 64 << 10 {
            sent_by_sendfile += (last + 1 - first) as f64;
        }
    }
    let after = agent.metric(SENDFILE, &[]).await;
    assert_eq!(
        after - before,
        sent_by_sendfile,
        "exactly the long bodies went out by sendfile (none at all: is shmem THP on? see the agent log:\n{})",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_after_a_sendfile_hit_are_answered_or_the_connection_closes() {
    let (_origin, agent, body) = warm_agent().await;
    let mut s = TcpStream::connect(agent.listen).await.unwrap();
    let two = request(PATH, Some("bytes=0-999999")) + &request(PATH, Some("bytes=1000000-1999999"));
    s.write_all(two.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (status, _, got) = read_response(&mut s, &mut buf).await.expect("the first response");
    assert_eq!(status, 206);
    assert_bytes(&got, &body[..1_000_000], "first pipelined response");
    // The second request must never be silently dropped on a live
    // connection: either it is answered correctly or the agent closes.
    if let Some((status, _, got)) = read_response(&mut s, &mut buf).await {
        assert_eq!(status, 206);
        assert_bytes(&got, &body[1_000_000..2_000_000], "second pipelined response");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_vanishing_mid_sendfile_leaves_the_agent_serving() {
    let (_origin, mut agent, body) = warm_agent().await;
    for _ in 0..8 {
        let mut s = TcpStream::connect(agent.listen).await.unwrap();
        s.write_all(request(PATH, None).as_bytes()).await.unwrap();
        let mut some = vec![0u8; 4096];
        let n = s.read(&mut some).await.unwrap();
        assert!(n > 0, "the response started");
        drop(s); // with most of the body unsent
    }
    agent.assert_alive();
    let again = agent.client().get(PATH, &[]).await.unwrap();
    assert_eq!(again.status, 200);
    assert_bytes(&again.body, &body, "a full hit after the aborts");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pauses_reading_gets_every_byte_once_it_reads_again() {
    // Larger than any socket buffer the kernel grows to (4 MiB by
    // default), so the agent's socket must fill while the client pauses.
    const BIG: usize = 24 << 20;
    let origin = TestOrigin::start().await.unwrap();
    let body = pattern(BIG, 5);
    origin
        .state
        .put("/slow.bin", OriginObject::new(body.clone(), "slow-v1"));
    let agent = AgentBuilder::new(&origin.url())
        .flag("--memory-cache", "128Mi")
        .flag("--slice-size", "1Mi")
        .start()
        .await;
    let cold = agent.client().get("/slow.bin", &[]).await.unwrap();
    assert_bytes(&cold.body, &body, "cold fill");
    let before = (agent.metric(WAITS, &[]).await, agent.metric(SENDFILE, &[]).await);

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let mut s = socket.connect(agent.listen).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    // Two responses on one connection: each finds the socket full and
    // waits, and the connection stays usable after the wait.
    let cases = [(None, 0, BIG - 1), (Some("bytes=1000-20000999"), 1000, 20_000_999)];
    for (range, first, last) in cases {
        s.write_all(request("/slow.bin", range).as_bytes()).await.unwrap();
        read_more(&mut s, &mut buf, &mut chunk)
            .await
            .expect("the response started");
        // The client stops reading; the agent's sends fill its socket.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, _, got) = read_response(&mut s, &mut buf).await.expect("a whole response");
        assert_eq!(status, if range.is_some() { 206 } else { 200 }, "{range:?}");
        assert_bytes(&got, &body[first..=last], &format!("{range:?} after a pause"));
    }
    let waits = agent.metric(WAITS, &[]).await - before.0;
    let sent = agent.metric(SENDFILE, &[]).await - before.1;
    assert_eq!(
        waits, 2.0,
        "each response waited for the client once it filled the socket"
    );
    assert_eq!(sent, (BIG + 20_000_000) as f64, "both bodies went out by sendfile");
}
