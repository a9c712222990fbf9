//! Pod addresses the API server accepts in EndpointSlices.
//!
//! kube-apiserver refuses loopback addresses as endpoints ("may not be in
//! the loopback range"), so with the node shim's default 127.0.0.x Pod
//! addresses every Service gets slices without endpoints, and nothing that
//! reads EndpointSlices (the fleet's membership) can be tested. A range
//! assigned to the loopback interface is local to the machine as a whole,
//! like 127.0.0.0/8, but is no loopback range to the API server. The range
//! used is 198.18.0.0/16, which RFC 2544 sets aside for benchmarking
//! network devices: no real host has it. Adding it needs CAP_NET_ADMIN (CI
//! runs as root); it is left in place, as every test run adds the same.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;

/// The range: 198.18.0.0/16.
pub const POD_NETWORK: &str = "198.18.0.0/16";
const FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const LAST: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 254);

/// The first and last Pod address of a local non-loopback range, adding
/// [`POD_NETWORK`] to the loopback interface when it is not there yet.
pub fn local_pod_range() -> Result<(Ipv4Addr, Ipv4Addr), String> {
    if TcpListener::bind((FIRST, 0)).is_ok() {
        return Ok((FIRST, LAST));
    }
    let out = Command::new("ip")
        .args(["addr", "add", POD_NETWORK, "dev", "lo"])
        .output()
        .map_err(|e| format!("running `ip addr add {POD_NETWORK} dev lo` (package iproute2): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("File exists") {
        return Err(format!(
            "`ip addr add {POD_NETWORK} dev lo` failed ({}); Pod addresses in EndpointSlices need it: run the tests as root or with CAP_NET_ADMIN",
            stderr.trim()
        ));
    }
    TcpListener::bind((FIRST, 0))
        .map(|_| (FIRST, LAST))
        .map_err(|e| format!("{POD_NETWORK} is on lo but {FIRST} cannot be bound: {e}"))
}
