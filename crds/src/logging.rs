//! Log setup for the two binaries, so that the operator and the agent read
//! `RUST_LOG` (default `info`) and `--log-json` the same way. Behind the
//! `logging` feature: the API crate's other users need no subscriber.

use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

/// Installs the global subscriber: text or JSON lines to `writer`, filtered
/// by `RUST_LOG`, `info` when unset or unreadable.
pub fn init_tracing<W>(json: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
