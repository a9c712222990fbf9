//! Zero-copy body writes: `sendfile` from L1's arena to a client socket.
//!
//! Pingora owns the connection and offers no `sendfile`, so the writer
//! duplicates the socket's descriptor and registers the duplicate with the
//! runtime for writability; the two descriptors share one socket, and the
//! duplicate is closed when the writer is dropped. Callers make sure nothing
//! is left in Pingora's write buffer before the first call (the header is
//! flushed first), so bytes reach the socket in order.
//!
//! The module's `unsafe` is two calls: borrowing the session's raw
//! descriptor for the `dup` (valid because the session that owns it is
//! borrowed for the same call), and registering the duplicate, which the
//! registration owns.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use pingora::protocols::Stream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Writes file ranges to one client socket without copying them through
/// user space.
#[derive(Debug)]
pub struct SocketWriter {
    socket: AsyncFd<OwnedFd>,
}

impl SocketWriter {
    /// A writer for the socket under `stream` (a plain TCP stream: TLS
    /// streams must never be written around).
    pub fn for_stream(stream: &Stream) -> io::Result<Self> {
        let raw = stream.id();
        // SAFETY: `raw` is the descriptor of `stream`, which is borrowed for
        // this whole call and so stays open; `dup` gives us our own.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let owned = rustix::io::dup(borrowed)?;
        // SAFETY: an `OwnedFd` is open until dropped and always returns the
        // same descriptor, and the `AsyncFd` owns it.
        let socket = unsafe { AsyncFd::register_with_interest(owned, Interest::WRITABLE) }.map_err(io::Error::from)?;
        Ok(Self { socket })
    }

    /// Sends `len` bytes of `file` from `offset`, waiting while the socket
    /// buffer is full.
    pub async fn send(&self, file: &File, mut offset: u64, mut len: usize) -> io::Result<()> {
        while len > 0 {
            let mut ready = self.socket.writable().await?;
            let sent = ready.try_io(|socket| {
                rustix::fs::sendfile(socket.get_ref(), file, Some(&mut offset), len).map_err(io::Error::from)
            });
            match sent {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => len -= n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}
