//! Installing slicecache the way a user does, against the local control
//! plane: `helm` (built by `scripts/build-go-tools.sh`), `kubectl`, and the
//! operator run as a local process with a token of the chart's
//! ServiceAccount, so the chart's RBAC is exactly what the operator has.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::node_shim::api_access::kubeconfig_with_token;
use crate::{control_plane::go_tool, free_addr, Proc};

/// The repository root.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The helm binary: `HELM_BIN`, else the one `target/go-tools/env` names.
/// Panics with the command that builds it.
pub fn helm_binary() -> PathBuf {
    go_tool("HELM_BIN", "helm").unwrap_or_else(|why| panic!("helm is not built: {why}"))
}

/// Runs `program args`, returning stdout, or the error with stderr.
pub fn run(program: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(repo_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {} failed ({}):\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `kubectl --kubeconfig KUBECONFIG args...`.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let kubeconfig = kubeconfig.to_string_lossy();
    let mut all = vec!["--kubeconfig", kubeconfig.as_ref()];
    all.extend_from_slice(args);
    run(Path::new("kubectl"), &all, &[])
}

/// `helm args...` with the given kubeconfig.
pub fn helm(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    run(&helm_binary(), args, &[("KUBECONFIG", kubeconfig)])
}

/// The `slicecache-operator` binary next to the test binary, built with
/// cargo first when it is missing or older than the operator's sources
/// (`cargo test -p slicecache-e2e` does not build other packages' bins).
pub fn operator_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = dir.join(format!("slicecache-operator{}", std::env::consts::EXE_SUFFIX));
    if let Err(why) = crate::is_current(&bin, &["operator/src", "crds/src", "operator/Cargo.toml"]) {
        eprintln!("{why}: building it");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The packages of `scripts/local-cluster.sh`: with the e2e crate
        // selected the dependencies' features unify as in this test build,
        // so cargo re-uses them (`-p slicecache-operator` alone would
        // rebuild most of the dependency graph with other features).
        cmd.args([
            "build",
            "-p",
            "slicecache-operator",
            "-p",
            "slicecache-agent",
            "-p",
            "slicecache-e2e",
            "--bins",
        ])
        .current_dir(repo_root());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build of slicecache-operator failed");
    }
    bin
}

/// Writes a kubeconfig for ServiceAccount `sa` in `namespace`: the admin
/// kubeconfig's cluster (server, CA) with a token from `kubectl create
/// token`.
pub fn service_account_kubeconfig(admin: &Path, namespace: &str, sa: &str, out: &Path) -> Result<(), String> {
    let token = kubectl(admin, &["create", "token", sa, "-n", namespace, "--duration=24h"])?;
    let text = kubeconfig_with_token(admin, namespace, sa, &token)?;
    std::fs::write(out, text).map_err(|e| format!("writing {}: {e}", out.display()))
}

/// The `slicecache-operator run` process, started with the arguments of the
/// chart's Deployment (so the agent image and Lease are the chart's), a
/// loopback metrics address and the given kubeconfig.
#[derive(Debug)]
pub struct LocalOperator {
    pub proc: Proc,
    pub metrics: std::net::SocketAddr,
}

impl LocalOperator {
    /// `admin` reads the Deployment `deployment` in `namespace`;
    /// `kubeconfig` is what the operator runs with.
    pub fn start(admin: &Path, namespace: &str, deployment: &str, kubeconfig: &Path, log: PathBuf) -> Self {
        Self::start_as("local-operator", admin, namespace, deployment, kubeconfig, log)
    }

    /// [`Self::start`] with `identity` as its Lease holder identity, so that
    /// several replicas can compete for the Lease.
    pub fn start_as(
        identity: &str,
        admin: &Path,
        namespace: &str,
        deployment: &str,
        kubeconfig: &Path,
        log: PathBuf,
    ) -> Self {
        // A field of the Deployment's agent container.
        let container = |path: &str| {
            let jsonpath = format!("jsonpath={{.spec.template.spec.containers[0].{path}}}");
            kubectl(
                admin,
                &["get", "deployment", deployment, "-n", namespace, "-o", &jsonpath],
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let args = container("args");
        let args: Vec<String> = serde_json::from_str(&args).expect("the container's args as JSON");
        let env = container("env[?(@.name==\"RUST_LOG\")].value");
        let metrics = free_addr();
        let mut cmd = Command::new(operator_binary());
        for arg in &args {
            if arg.starts_with("--metrics-addr") {
                cmd.arg(format!("--metrics-addr={metrics}"));
            } else {
                cmd.arg(arg);
            }
        }
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", identity)
            .env("RUST_LOG", if env.is_empty() { "info" } else { env.as_str() });
        Self {
            proc: Proc::spawn("slicecache-operator", cmd, log),
            metrics,
        }
    }

    /// Panics when the operator has exited or logged a "Forbidden" (an RBAC
    /// rule the chart lacks).
    pub fn assert_healthy(&mut self) {
        self.proc.assert_alive();
        let log = self.proc.log();
        if let Some(line) = log.lines().find(|l| l.contains("Forbidden") || l.contains("forbidden")) {
            panic!(
                "the operator was refused by RBAC:\n{line}\nits log:\n{}",
                self.proc.log_tail(40)
            );
        }
    }
}

impl Drop for LocalOperator {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }
}

/// Waits until `cond` (a blocking check) returns `Some`, for up to `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The chart installed on a fresh local control plane, with the operator
/// running as the chart's ServiceAccount: what a user has after
/// `helm install`.
#[derive(Debug)]
pub struct Installation {
    pub operator: LocalOperator,
    /// The admin kubeconfig.
    pub admin: PathBuf,
    pub control_plane: crate::control_plane::ControlPlane,
}

/// The Helm release the tests install.
pub const RELEASE: &str = "slicecache";
/// The namespace the chart goes into.
pub const SYSTEM_NS: &str = "slicecache-system";
/// The chart's full name for release `slicecache`: the operator's
/// Deployment and ServiceAccount.
pub const OPERATOR: &str = "slicecache-operator";
/// The CustomResourceDefinition.
pub const CRD: &str = "slicecaches.slicecache.io";

impl Installation {
    /// Starts a control plane in `dir`, `helm install`s the chart, waits for
    /// the CRD to be Established and starts the operator with a token of
    /// the chart's ServiceAccount.
    pub async fn start(dir: &Path) -> Self {
        crate::control_plane::cluster_binary().unwrap_or_else(|why| panic!("{why}"));
        helm_binary();
        // Built before the control plane starts, if stale.
        operator_binary();
        let control_plane = crate::control_plane::ControlPlane::start(dir).await;
        let admin = control_plane.kubeconfig.clone();
        let chart = repo_root().join("charts/slicecache-operator");
        helm(
            &admin,
            &[
                "install",
                RELEASE,
                &chart.to_string_lossy(),
                "-n",
                SYSTEM_NS,
                "--create-namespace",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        kubectl(
            &admin,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{CRD}"),
                "--timeout=60s",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let sa_kubeconfig = dir.join("operator.kubeconfig");
        service_account_kubeconfig(&admin, SYSTEM_NS, OPERATOR, &sa_kubeconfig).unwrap_or_else(|e| panic!("{e}"));
        let operator = LocalOperator::start(&admin, SYSTEM_NS, OPERATOR, &sa_kubeconfig, dir.join("operator.log"));
        Self {
            operator,
            admin,
            control_plane,
        }
    }

    /// `kubectl get ARGS -o json`, parsed; `None` when kubectl fails.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        get_json(&self.admin, args)
    }
}

/// An example manifest (`examples/`) with every object moved to
/// `namespace` and every SliceCache's origin set to `origin`; `adjust` may
/// change each object further (what the machine lacks, said by the test).
pub fn adapt_example(
    path: &Path,
    namespace: &str,
    origin: &str,
    mut adjust: impl FnMut(&mut serde_yaml_ng::Value),
) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut value: serde_yaml_ng::Value =
            serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if value.is_null() {
            continue;
        }
        value["metadata"]["namespace"] = namespace.into();
        if value["kind"].as_str() == Some("SliceCache") {
            value["spec"]["origin"]["url"] = origin.into();
        }
        adjust(&mut value);
        out.push(serde_yaml_ng::to_string(&value).expect("YAML"));
    }
    out.join("---\n")
}

/// `kubectl get ARGS -o json`, parsed; `None` when kubectl fails.
pub fn get_json(kubeconfig: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&kubectl(kubeconfig, &all).ok()?).ok()
}

/// The condition `type_` of an object's status, if present.
pub fn condition<'a>(object: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Ready=True computed from the current generation, and every desired
/// agent ready.
pub fn ready(cache: &serde_json::Value) -> bool {
    let generation = cache["metadata"]["generation"].as_i64();
    let ready_condition = condition(cache, "Ready")
        .is_some_and(|c| c["status"] == "True" && c["observedGeneration"].as_i64() == generation);
    let nodes = &cache["status"]["nodes"];
    ready_condition && nodes["desired"].as_i64().is_some_and(|d| d > 0) && nodes["ready"] == nodes["desired"]
}

/// The address of the container port named `name` of a Pod (as JSON).
pub fn pod_port(pod: &serde_json::Value, name: &str) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = pod["status"]["podIP"].as_str()?.parse().ok()?;
    let port = pod["spec"]["containers"][0]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["containerPort"]
        .as_u64()?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(port).ok()?))
}
