//! Free loopback ports.

use std::net::{SocketAddr, TcpListener};

/// A free loopback address (bound, then released for a child to take).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral loopback port")
}

/// Two distinct free loopback addresses (bound together, so they differ).
pub fn free_addrs() -> (SocketAddr, SocketAddr) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    let (a, b) = (bind(), bind());
    (
        a.local_addr().expect("local address"),
        b.local_addr().expect("local address"),
    )
}
