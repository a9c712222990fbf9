//! The `delay-proxy` binary: it delays each direction by the one-way delay,
//! passes bytes and half-closes through unchanged, and closes a client
//! whose upstream cannot be reached.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use slicecache_testkit::net::free_addr;
use slicecache_testkit::origin::pattern;
use slicecache_testkit::process::Proc;

const DELAY: Duration = Duration::from_millis(50);

/// The proxy from a free port to `upstream`, once it accepts connections.
fn start_proxy(upstream: SocketAddr, dir: &std::path::Path) -> (Proc, SocketAddr) {
    let listen = free_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_delay-proxy"));
    cmd.args(["--listen", &listen.to_string(), "--upstream", &upstream.to_string()])
        .args(["--delay-ms", &DELAY.as_millis().to_string()]);
    let mut proc = Proc::spawn("delay-proxy", cmd, dir.join("delay-proxy.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        proc.assert_alive();
        assert!(Instant::now() < deadline, "delay-proxy never listened on {listen}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, listen)
}

/// An upstream that echoes every connection's bytes back until EOF, then
/// half-closes its side.
fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the echo upstream");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut back = conn.try_clone().expect("cloning the echo socket");
                if std::io::copy(&mut conn, &mut back).is_ok() {
                    let _ = back.shutdown(std::net::Shutdown::Write);
                }
            });
        }
    });
    addr
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("delay-proxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

#[test]
fn a_round_trip_takes_at_least_twice_the_delay() {
    let dir = temp_dir("rtt");
    let (mut proc, proxy) = start_proxy(echo_upstream(), &dir);
    let mut conn = TcpStream::connect(proxy).expect("connecting to the proxy");
    conn.set_nodelay(true).expect("TCP_NODELAY");
    let mut byte = [0u8; 1];
    let mut round_trip = |conn: &mut TcpStream, b: u8| {
        let start = Instant::now();
        conn.write_all(&[b]).expect("writing through the proxy");
        conn.read_exact(&mut byte).expect("reading the echo");
        assert_eq!(byte[0], b);
        start.elapsed()
    };
    // The first also waits for the emulated handshake: one more round trip.
    let first = round_trip(&mut conn, 1);
    assert!(first >= 4 * DELAY, "first round trip took {first:?}");
    for b in 2..5 {
        let rtt = round_trip(&mut conn, b);
        assert!(rtt >= 2 * DELAY, "round trip took {rtt:?}, less than 2 x {DELAY:?}");
        assert!(rtt < 2 * DELAY + Duration::from_secs(1), "round trip took {rtt:?}");
    }
    proc.assert_alive();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bytes_and_half_closes_pass_through_unchanged() {
    let dir = temp_dir("bytes");
    let (mut proc, proxy) = start_proxy(echo_upstream(), &dir);
    let sent = pattern(6 << 20, 7);
    let mut conn = TcpStream::connect(proxy).expect("connecting to the proxy");
    let mut reader = conn.try_clone().expect("cloning the client socket");
    // Read the echo while writing, or both sides' buffers fill up.
    let echo = std::thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("reading the echo to its EOF");
        got
    });
    let start = Instant::now();
    for chunk in sent.chunks(100_000) {
        conn.write_all(chunk).expect("writing through the proxy");
    }
    // Our half-close reaches the upstream, whose half-close comes back as
    // the EOF that ends read_to_end.
    conn.shutdown(std::net::Shutdown::Write).expect("half-closing");
    let got = echo.join().expect("the reader thread");
    let took = start.elapsed();
    assert_eq!(got.len(), sent.len(), "echoed byte count");
    let first_difference = got.iter().zip(sent.iter()).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "echoed bytes differ");
    assert!(took >= 2 * DELAY, "6 MiB echoed in {took:?}");
    proc.assert_alive();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreachable_upstream_closes_the_client_and_the_proxy_keeps_serving() {
    let dir = temp_dir("refused");
    // A port nothing listens on.
    let (mut proc, proxy) = start_proxy(free_addr(), &dir);
    for _ in 0..3 {
        let mut conn = TcpStream::connect(proxy).expect("connecting to the proxy");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut buf = [0u8; 16];
        // Closed (0 bytes) or reset, but not left hanging.
        match conn.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "read {n} bytes from nowhere"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ),
                "{e}"
            ),
        }
    }
    proc.assert_alive();
    assert!(proc.log().contains("connection from"), "log:\n{}", proc.log());
    let _ = std::fs::remove_dir_all(dir);
}
