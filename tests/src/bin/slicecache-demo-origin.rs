//! `slicecache-demo-origin`: the demo origin as a program, for scripts
//! (`scripts/local-cluster.sh`). Serves generated objects over HTTP on
//! 127.0.0.1 (ranges and ETags, as an object store does), prints
//! `ready: url=http://127.0.0.1:PORT` and runs until SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser;
use slicecache_testkit::origin::{pattern, OriginObject, TestOrigin};

#[derive(Parser, Debug)]
#[command(name = "slicecache-demo-origin", about = "Serves generated objects on 127.0.0.1")]
struct Cli {
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Objects to serve: /obj-1 .. /obj-N (and /obj, the same as /obj-1).
    #[arg(long, default_value_t = 4)]
    objects: usize,
    /// Size of each object in MiB.
    #[arg(long, default_value_t = 8)]
    size_mib: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let origin = TestOrigin::bind(&format!("127.0.0.1:{}", cli.port))
        .await
        .context("binding the origin")?;
    for i in 1..=cli.objects.max(1) {
        let body = pattern(cli.size_mib << 20, i as u64);
        if i == 1 {
            origin.state.put("/obj", OriginObject::new(body.clone(), "v1"));
        }
        origin.state.put(&format!("/obj-{i}"), OriginObject::new(body, "v1"));
    }
    println!("ready: url={}", origin.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(())
}
