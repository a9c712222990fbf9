//! One container's local process: started from a [`Launch`], stopped the
//! way the kubelet stops a container (SIGTERM, then SIGKILL after the grace
//! period), and killed when dropped, so no test leaves an agent behind.
//!
//! Each process gets a process group of its own, so a Ctrl-C on the
//! terminal reaches the shim, which stops its agents in order, and not the
//! agents directly. When util-linux's `setpriv` is there (it is on every
//! Debian system), the process starts through `setpriv --pdeathsig KILL`,
//! so the kernel kills it even when the shim itself is SIGKILLed (a test
//! binary killed by a timeout) and no drop runs.

use std::{
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use rustix::process::{kill_process, Pid, Signal};
use tokio::process::{Child, Command};

use super::status::{now, Exit};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What to run for one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment (the shim's own is not inherited).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
}

/// A running (or exited, not yet reaped) container process.
#[derive(Debug)]
pub struct ContainerProcess {
    child: Child,
    pid: u32,
    started_at: Time,
}

impl ContainerProcess {
    pub fn spawn(launch: &Launch) -> std::io::Result<Self> {
        if let Some(parent) = launch.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::create_dir_all(&launch.cwd)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)?;
        let err = out.try_clone()?;
        let mut cmd = match setpriv() {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                cmd.args(["--pdeathsig", "KILL", "--"]).arg(&launch.program);
                cmd
            }
            None => Command::new(&launch.program),
        };
        cmd.args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the process exited before its id was read"))?;
        Ok(Self {
            child,
            pid,
            started_at: now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn started_at(&self) -> &Time {
        &self.started_at
    }

    /// Waits for the process to exit (cancel-safe).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Sends SIGKILL now (a simulated crash, or the end of a grace period).
    pub fn kill(&mut self) {
        if let Err(e) = self.child.start_kill() {
            tracing::debug!(pid = self.pid, error = %e, "SIGKILL failed (already exited?)");
        }
    }

    /// SIGTERM, then SIGKILL when the process outlives `grace`; returns how
    /// it ended.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        if let Ok(Some(status)) = self.child.try_wait() {
            return self.exit(status);
        }
        match i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            Some(pid) => {
                if let Err(e) = kill_process(pid, Signal::TERM) {
                    tracing::debug!(pid = self.pid, error = %e, "SIGTERM failed");
                }
            }
            None => self.kill(),
        }
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::info!(pid = self.pid, ?grace, "process outlived its grace period, killing it");
                self.kill();
                self.child.wait().await
            }
        };
        match status {
            Ok(status) => self.exit(status),
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "waiting for the process failed");
                Exit {
                    exit_code: 137,
                    signal: None,
                    reason: "Unknown".into(),
                    started_at: Some(self.started_at.clone()),
                    finished_at: now(),
                }
            }
        }
    }

    /// How the process ended, as a terminated container state.
    pub fn exit(&self, status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
        Exit {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            started_at: Some(self.started_at.clone()),
            finished_at: now(),
        }
    }
}

/// util-linux's `setpriv`, when installed.
fn setpriv() -> Option<&'static std::path::Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &std::path::Path, script: &str) -> Launch {
        Launch {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![
                ("GREETING".into(), "hi".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ],
            cwd: dir.join("cwd"),
            log: dir.join("logs/c.log"),
        }
    }

    #[tokio::test]
    async fn exit_codes_and_environment_are_reported() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut p = ContainerProcess::spawn(&launch(dir.path(), "echo $GREETING $HOME; exit 3"))?;
        let status = p.wait().await?;
        let exit = p.exit(status);
        assert_eq!(exit.exit_code, 3);
        assert_eq!(exit.reason, "Error");
        // Only the given environment: HOME is not inherited.
        assert_eq!(std::fs::read_to_string(dir.path().join("logs/c.log"))?, "hi\n");
        Ok(())
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_the_grace_period() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut p = ContainerProcess::spawn(&launch(dir.path(), "trap '' TERM; sleep 30 & wait; sleep 30"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let exit = p.stop(Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(exit.signal, Some(9));
        assert_eq!(exit.exit_code, 137);
        Ok(())
    }

    #[tokio::test]
    async fn stop_with_sigterm_is_graceful() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut p = ContainerProcess::spawn(&launch(dir.path(), "trap 'exit 0' TERM; while :; do sleep 0.05; done"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = p.stop(Duration::from_secs(5)).await;
        assert_eq!(exit.exit_code, 0);
        Ok(())
    }
}
