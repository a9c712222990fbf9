//! The fleet's shared token, read from `fleet.peerTokenFile` and read again
//! while the agent runs, so the token can be rotated without a restart.
//!
//! The file holds one token per line. The first is the one this agent
//! presents to its peers; every line is accepted from them. A rotation
//! writes three files in turn, each once every member has read the one
//! before (the operator waits for a Secret volume to reach every node):
//! `old` + `new` (everyone accepts the new token), then `new` + `old`
//! (everyone presents it; the old one still works for members that are
//! late), then `new` alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::server::ShutdownWatch;
use tracing::{info, warn};

use super::Fleet;

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// How often the file is read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The tokens of a token file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTokens {
    /// Presented to peers.
    pub send: String,
    /// Accepted from peers, `send` included.
    pub accept: Vec<String>,
}

/// Why a token file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("fleet.peerTokenFile: reading {file}: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("fleet.peerTokenFile: {file} holds no token; write one of at least {MIN_TOKEN_LEN} characters")]
    Empty { file: PathBuf },
    #[error("fleet.peerTokenFile: line {line} of {file} has {len} characters; use at least {MIN_TOKEN_LEN}")]
    Short { file: PathBuf, line: usize, len: usize },
}

impl PeerTokens {
    /// Reads and checks `file`.
    pub fn read(file: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(file).map_err(|source| TokenError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file)
    }

    fn parse(text: &str, file: &Path) -> Result<Self, TokenError> {
        let mut accept = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() {
                continue;
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(TokenError::Short {
                    file: file.to_path_buf(),
                    line: i + 1,
                    len: token.len(),
                });
            }
            accept.push(token.to_string());
        }
        let send = accept.first().cloned().ok_or_else(|| TokenError::Empty {
            file: file.to_path_buf(),
        })?;
        Ok(Self { send, accept })
    }
}

/// Reads `file` every [`RELOAD_EVERY`] and hands a changed, valid token
/// list to `fleet`; an unreadable or invalid file keeps the tokens in use
/// and is logged once per change.
pub async fn watch(fleet: std::sync::Arc<Fleet>, file: PathBuf, mut shutdown: ShutdownWatch) {
    let mut last_error = None;
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match PeerTokens::read(&file) {
            Ok(tokens) => {
                last_error = None;
                if fleet.set_tokens(tokens.clone()) {
                    info!(file = %file.display(), accepted = tokens.accept.len(), "peer token file changed; presenting its first token");
                }
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    warn!(error = %message, "keeping the peer tokens in use");
                }
                last_error = Some(message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_sent_and_every_line_accepted() {
        let file = Path::new("peer-token");
        let t = PeerTokens::parse("new-token-0123456789\n\n  old-token-0123456789 \n", file).expect("two tokens");
        assert_eq!(t.send, "new-token-0123456789");
        assert_eq!(t.accept, ["new-token-0123456789", "old-token-0123456789"]);
        let err = PeerTokens::parse("short\n", file).expect_err("short").to_string();
        assert!(err.contains("line 1") && err.contains("at least 16"), "{err}");
        let err = PeerTokens::parse("\n \n", file).expect_err("empty").to_string();
        assert!(err.contains("holds no token"), "{err}");
    }
}
