//! Zero-copy body writes: `sendfile` from L1's arena to a client socket.
//!
//! Pingora owns the connection and offers no `sendfile`. The writer calls
//! `sendfile` on the connection's own (non-blocking) descriptor, borrowed
//! for as long as the writer lives; most calls find room in the socket
//! buffer and cost that one system call. Only when the socket is full does
//! the writer need the runtime to wake it: it then duplicates the
//! descriptor and registers the duplicate for writability (the connection's
//! own descriptor is already registered by Pingora's runtime, and a
//! descriptor can be registered once), and waits on that. The two
//! descriptors share one socket; the duplicate is closed when the writer
//! is dropped. Registering up front cost four system calls per response
//! (`dup`, two `epoll_ctl`, `close`) that a hit rarely needed. Callers make
//! sure nothing is left in Pingora's write buffer before the first call
//! (the header is flushed first), so bytes reach the socket in order.
//!
//! The module's `unsafe` is two calls: borrowing the session's raw
//! descriptor (valid because the session that owns it is borrowed for the
//! writer's lifetime), and registering the duplicate, which the
//! registration owns.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use pingora::protocols::Stream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Writes file ranges to one client socket without copying them through
/// user space.
#[derive(Debug)]
pub struct SocketWriter<'a> {
    socket: BorrowedFd<'a>,
    /// The duplicate registered for writability, made the first time the
    /// socket is full.
    waker: OnceLock<AsyncFd<OwnedFd>>,
}

impl<'a> SocketWriter<'a> {
    /// A writer for the socket under `stream` (a plain TCP stream: TLS
    /// streams must never be written around).
    pub fn for_stream(stream: &'a Stream) -> Self {
        // SAFETY: `raw` is the descriptor of `stream`, which is borrowed for
        // the writer's lifetime `'a` and so stays open that long.
        let socket = unsafe { BorrowedFd::borrow_raw(stream.id()) };
        Self {
            socket,
            waker: OnceLock::new(),
        }
    }

    /// Sends `len` bytes of `file` from `offset`, waiting while the socket
    /// buffer is full.
    pub async fn send(&self, file: &File, mut offset: u64, mut len: usize) -> io::Result<()> {
        while len > 0 {
            match rustix::fs::sendfile(self.socket, file, Some(&mut offset), len) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    len -= n;
                    // A call that found room never waits, so count it
                    // against the runtime's cooperative budget: a sender on
                    // a socket that never fills still yields regularly.
                    tokio::task::consume_budget().await;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => return self.send_when_writable(file, offset, len).await,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether the socket was ever full during this writer's sends.
    pub fn waited(&self) -> bool {
        self.waker.get().is_some()
    }

    /// The rest of [`Self::send`] once the socket was found full: each call
    /// waits for the runtime to report room, through the registered
    /// duplicate, whose readiness `try_io` clears when a call finds the
    /// socket full again.
    async fn send_when_writable(&self, file: &File, mut offset: u64, mut len: usize) -> io::Result<()> {
        let waker = match self.waker.get() {
            Some(waker) => waker,
            None => {
                let owned = rustix::io::dup(self.socket)?;
                // SAFETY: an `OwnedFd` is open until dropped and always returns
                // the same descriptor, and the `AsyncFd` owns it.
                let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::WRITABLE) }?;
                self.waker.get_or_init(|| registered)
            }
        };
        while len > 0 {
            let mut ready = waker.writable().await?;
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
