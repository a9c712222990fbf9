//! `scripts/local-cluster.sh up` brings up a Ready SliceCache on the local
//! control plane, and `down` leaves no process behind.

use std::{path::Path, process::Command, time::Duration};

use slicecache_e2e::{
    agent_binary,
    control_plane::cluster_binary,
    install::{helm_binary, kubectl, operator_binary, repo_root},
};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn script(state: &Path, action: &str) -> std::process::Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/local-cluster.sh"))
        .arg(action)
        .env("SLICECACHE_LOCAL_CLUSTER_DIR", state)
        .env("SLICECACHE_LOCAL_CLUSTER_NO_BUILD", "1")
        .output()
        .expect("running scripts/local-cluster.sh")
}

/// Runs `down` when dropped, so a failed check leaves nothing running.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = script(self.0, "down");
        }
    }
}

#[test]
fn local_cluster_up_serves_a_ready_slicecache_and_down_stops_everything() {
    if let Err(why) = cluster_binary() {
        panic!("{why}");
    }
    helm_binary();
    // The script runs the binaries of this cargo profile; the test's cargo
    // built the e2e crate's bins, these two are checked or built here.
    let agent = agent_binary();
    let operator = operator_binary();
    let bins = agent.parent().expect("target/<profile>");
    assert_eq!(Some(bins), operator.parent());
    for bin in ["slicecache-node-shim", "slicecache-demo-origin"] {
        assert!(bins.join(bin).is_file(), "{} is missing", bins.join(bin).display());
    }
    assert!(
        bins.ends_with("debug"),
        "the script runs target/debug (SLICECACHE_LOCAL_CLUSTER_PROFILE for others)"
    );

    let tmp = tempfile::tempdir().expect("a temp dir");
    let state = tmp.path().join("local-cluster");
    let guard = Down(&state);
    let up = script(&state, "up");
    let stdout = String::from_utf8_lossy(&up.stdout);
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(up.status.success(), "up failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("export KUBECONFIG="), "{stdout}");
    assert!(stdout.contains("the origin's bytes"), "{stdout}");

    let kubeconfig = state.join("admin.kubeconfig");
    let slc = kubectl(&kubeconfig, &["get", "slc", "-o", "wide"]).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{slc}");
    let ready = kubectl(
        &kubeconfig,
        &[
            "get",
            "slc",
            "media",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready, "True", "{slc}");

    // Every process it started, and their children (the agents).
    let pids_text = std::fs::read_to_string(state.join("pids")).expect("the pid file");
    let mut pids: Vec<u32> = pids_text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 4, "cluster, operator, shim, origin: {pids_text}");
    let mut i = 0;
    while i < pids.len() {
        let children = Command::new("pgrep")
            .args(["-P", &pids[i].to_string()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        pids.extend(children.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        i += 1;
    }
    assert!(pids.len() >= 4 + 3 + 3, "at least etcd etc. and 3 agents: {pids:?}");
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");

    let down = script(&state, "down");
    assert!(
        down.status.success(),
        "down failed:\n{}\n{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    assert!(!state.exists(), "down removes the state dir");
    drop(guard);
}
