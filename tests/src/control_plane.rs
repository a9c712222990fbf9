//! A local Kubernetes control plane for one test: `slicecache-cluster all`
//! (etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, built
//! by `scripts/build-go-tools.sh` from the Go module in `tests/cluster`)
//! in a directory of the test's own, stopped when the guard drops.
//!
//! There is no kubelet and no scheduler in it; tests add the
//! [`crate::node_shim`]. The binary comes from `SLICECACHE_CLUSTER_BIN` or
//! from `target/go-tools/env`; without it the test fails with the command
//! that builds it, since a test that silently skips proves nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::Proc;

/// Where the control-plane binary is, or why there is none.
pub fn cluster_binary() -> Result<PathBuf, String> {
    go_tool("SLICECACHE_CLUSTER_BIN", "cluster")
}

/// A binary that `scripts/build-go-tools.sh SET` builds: `KEY` from the
/// environment, else the path `target/go-tools/env` gives it; or why there
/// is none, naming the command that builds it.
pub fn go_tool(key: &str, set: &str) -> Result<PathBuf, String> {
    let build = format!("run scripts/build-go-tools.sh {set}");
    if let Some(bin) = std::env::var_os(key).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{key}={} does not exist; unset it or {build}", bin.display()))
        };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env_file = root.parent().unwrap_or(root).join("target/go-tools/env");
    let text = std::fs::read_to_string(&env_file)
        .map_err(|_| format!("{key} is unset and {} does not exist; {build}", env_file.display()))?;
    let bin = env_value(&text, key).ok_or_else(|| format!("{} names no {key}; {build}", env_file.display()))?;
    let bin = PathBuf::from(bin);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} (the {key} of {}) does not exist; {build}",
            bin.display(),
            env_file.display()
        ))
    }
}

/// The value of `KEY=VALUE` (optionally quoted) in shell assignments.
pub fn env_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub apiserver: String,
    proc: Proc,
}

impl ControlPlane {
    /// Starts the control plane with its data in `dir`, waiting (up to
    /// 3 minutes) until it prints that it is ready. Panics with the reason
    /// when the binary is missing or the control plane fails.
    pub async fn start(dir: &Path) -> Self {
        let bin = cluster_binary().unwrap_or_else(|why| panic!("{why}"));
        let kubeconfig = dir.join("admin.kubeconfig");
        let log = dir.join("slicecache-cluster.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("all")
            .arg("--data-dir")
            .arg(dir.join("cluster"))
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .arg("--etcd-unsafe-no-fsync");
        let mut proc = Proc::spawn("slicecache-cluster", cmd, log);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            proc.assert_alive();
            if let Some(line) = proc.log().lines().find(|l| l.starts_with("ready: ")) {
                let apiserver = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("apiserver="))
                    .unwrap_or_default()
                    .to_string();
                return Self {
                    kubeconfig,
                    apiserver,
                    proc,
                };
            }
            assert!(
                Instant::now() < deadline,
                "the control plane was not ready within 180 s; its log:\n{}",
                proc.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An API client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        crate::node_shim::client_from_kubeconfig(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("a client for the local control plane: {e}"))
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// Stops one component and starts it again (the cluster program's
    /// signals), waiting until it is ready again.
    pub async fn restart(&mut self, component: Component) {
        let (signal, name) = match component {
            Component::Apiserver => (rustix::process::Signal::USR1, "apiserver"),
            Component::ControllerManager => (rustix::process::Signal::USR2, "controller-manager"),
            Component::Etcd => (rustix::process::Signal::HUP, "etcd"),
        };
        let line = format!("restarted: {name}");
        let count = |log: String| log.lines().filter(|l| *l == line).count();
        let before = count(self.proc.log());
        self.proc.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(self.proc.log()) == before {
            self.proc.assert_alive();
            assert!(
                Instant::now() < deadline,
                "{name} did not restart within 120 s; the cluster's log:\n{}",
                self.proc.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A component of the local control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Apiserver,
    ControllerManager,
    Etcd,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // SIGTERM lets it stop etcd last; the guard's SIGKILL follows if not.
        self.proc.terminate(Duration::from_secs(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_read_with_or_without_quotes() {
        let text = "HELM_BIN=/x/helm\nSLICECACHE_CLUSTER_BIN='/x/slicecache-cluster'\n";
        assert_eq!(
            env_value(text, "SLICECACHE_CLUSTER_BIN").as_deref(),
            Some("/x/slicecache-cluster")
        );
        assert_eq!(env_value(text, "HELM_BIN").as_deref(), Some("/x/helm"));
        assert_eq!(env_value(text, "HELM"), None);
    }
}
