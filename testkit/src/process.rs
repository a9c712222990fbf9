//! Child processes that cannot outlive their test, and the binaries they run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A child process, killed and reaped when dropped; its stdout and stderr
/// go to a log file that failures print.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and both outputs into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("creating a log file");
        let err = out.try_clone().expect("cloning the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with the log unless the process still runs.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited with {status}; its log:\n{}", self.name, self.log_tail(40));
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGTERM, then waits up to `grace` for the process to exit; its exit
    /// status, or `None` if it still runs (the guard's drop kills it).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's root (this crate lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit crate lives in the repository")
        .to_path_buf()
}

/// A binary of the workspace that cargo built next to the running test
/// binary (`target/<profile>/deps/TEST-HASH` -> `target/<profile>/NAME`).
/// Panics with the command that builds it when it is missing or older than
/// any file under `sources` (paths from the repository root).
pub fn workspace_binary(name: &str, package: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if let Err(why) = is_current(&binary, sources) {
        let release = if dir.file_name().is_some_and(|n| n == "release") {
            " --release"
        } else {
            ""
        };
        panic!("{why}: run `cargo build -p {package}{release}` first, or `cargo test --workspace`");
    }
    binary
}

/// The `slicecache-agent` binary. `cargo test --workspace` (the project's
/// test command) builds it, because the agent's own integration tests need
/// it; a test run of another package alone may not.
pub fn agent_binary() -> PathBuf {
    workspace_binary("slicecache-agent", "slicecache-agent", &["node-agent/src", "crds/src"])
}

/// Why `binary` is not current: it is missing, or older than a file under
/// `sources` (paths from the repository root, files or directories).
pub fn is_current(binary: &Path, sources: &[&str]) -> Result<(), String> {
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .map_err(|_| format!("{} is missing", binary.display()))?;
    for source in sources {
        if let Some((newest, path)) = newest_file(&repo_root().join(source)) {
            if newest > built {
                return Err(format!("{} is older than {}", binary.display(), path.display()));
            }
        }
    }
    Ok(())
}

fn newest_file(path: &Path) -> Option<(SystemTime, PathBuf)> {
    if path.is_file() {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        return Some((modified, path.to_path_buf()));
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|entry| newest_file(&entry.path()))
        .max_by_key(|(t, _)| *t)
}

/// Finds `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
