//! `delay-proxy`: a TCP proxy on loopback that puts a far-away network path
//! between a client and its upstream, for benchmarks on a kernel without
//! `sch_netem`.
//!
//! ```text
//! delay-proxy --listen 127.0.0.1:P --upstream 127.0.0.1:Q --delay-ms 10
//! ```
//!
//! Every accepted connection gets one connection to the upstream, and each
//! direction is forwarded the way netem's `delay` would: a reader stamps
//! every chunk it reads, and a writer sends it once the one-way delay has
//! passed since that stamp. Chunks keep their order and nothing waits for an
//! acknowledgement, so the delay does not limit throughput (up to
//! `IN_FLIGHT` reads per direction may be on their way, far more than
//! loopback's bandwidth times any delay used here). A new connection also
//! waits one round trip (twice the delay) before its first byte is
//! forwarded, as its TCP handshake would across such a path. A round trip
//! through the proxy hence takes at least twice `--delay-ms`.
//!
//! End of stream travels like data: the writer half-closes its side when
//! the reader's EOF is due, so half-closed connections work. An error on
//! either side (a reset, a failed connect) closes both connections; the
//! proxy itself keeps serving, logging one line per failed connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// Bytes asked for per read.
const CHUNK: usize = 64 << 10;
/// Reads per direction that may be waiting for their time to be sent.
const IN_FLIGHT: usize = 4096;

const USAGE: &str = "usage: delay-proxy --listen ADDR --upstream ADDR --delay-ms MS";

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    delay: Duration,
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut delay) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| bad(&e))?),
            "--upstream" => upstream = Some(value.parse().map_err(|e| bad(&e))?),
            "--delay-ms" => delay = Some(Duration::from_millis(value.parse().map_err(|e| bad(&e))?)),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    match (listen, upstream, delay) {
        (Some(listen), Some(upstream), Some(delay)) => Ok(Args {
            listen,
            upstream,
            delay,
        }),
        _ => Err("--listen, --upstream and --delay-ms are all required".to_owned()),
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("delay-proxy: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("delay-proxy: binding {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!(
        "delay-proxy: {} -> {}, {} ms each way",
        args.listen,
        args.upstream,
        args.delay.as_millis()
    );
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, for instance: try again shortly.
                eprintln!("delay-proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (upstream, delay) = (args.upstream, args.delay);
        tokio::spawn(async move {
            if let Err(e) = proxy(client, upstream, delay).await {
                eprintln!("delay-proxy: connection from {peer}: {e}");
            }
        });
    }
}

/// Forwards one connection both ways until both directions have ended or
/// either failed; returning drops (closes) both sockets.
async fn proxy(client: TcpStream, upstream: SocketAddr, delay: Duration) -> std::io::Result<()> {
    let handshake_done = Instant::now() + 2 * delay;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    sleep_until(handshake_done).await;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pipe(client_read, server_write, delay),
        pipe(server_read, client_write, delay),
    )?;
    Ok(())
}

/// One direction: every chunk read from `from` is written to `to` once
/// `delay` has passed since it was read; EOF half-closes `to` likewise.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> std::io::Result<()> {
    // An empty chunk is the EOF.
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(CHUNK);
            let n = from.read_buf(&mut buf).await?;
            let due = Instant::now() + delay;
            if tx.send((due, buf.split().freeze())).await.is_err() || n == 0 {
                // The writer has stopped (it failed), or this was the EOF.
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            if chunk.is_empty() {
                return to.shutdown().await;
            }
            to.write_all(&chunk).await?;
        }
        Ok(())
    };
    tokio::try_join!(reader, writer)?;
    Ok(())
}
