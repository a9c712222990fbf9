//! The Pod status the shim reports, built from what it knows about each
//! container's process, in the shape the kubelet writes: phase, podIP(s),
//! hostIP(s), conditions with transition times, and container statuses
//! with state, last state, readiness and restart count.
//!
//! Pure: the worker keeps a [`PodView`] and writes the built status only
//! when it differs from the last one written, so a steady Pod costs no API
//! calls.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        HostIP, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

/// Now, to the second (the API stores times to the second, so a status
/// built twice in one second compares equal).
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// A container's process as the shim sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Not started (yet): `ContainerCreating`, `CrashLoopBackOff`,
    /// `CreateContainerConfigError`, or the shim's refusal of an image.
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated(Exit),
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at: Option<Time>,
    pub finished_at: Time,
}

/// One container of the Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: RunState,
    pub last_exit: Option<Exit>,
    pub ready: bool,
    pub restart_count: i32,
    /// The process id, shown as the container id (`shim://PID`).
    pub pid: Option<u32>,
}

/// Condition types with their status and last transition time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditions(BTreeMap<&'static str, (bool, Time)>);

impl Conditions {
    /// Sets `type_` to `status`; the transition time moves only on change.
    pub fn set(&mut self, type_: &'static str, status: bool) {
        match self.0.get(type_) {
            Some((old, _)) if *old == status => {}
            _ => {
                self.0.insert(type_, (status, now()));
            }
        }
    }

    pub fn get(&self, type_: &str) -> Option<bool> {
        self.0.get(type_).map(|(s, _)| *s)
    }
}

/// Everything the status is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub pod_ip: Option<IpAddr>,
    pub host_ip: String,
    pub start_time: Time,
    pub containers: Vec<ContainerView>,
    pub conditions: Conditions,
    /// Set for Pods whose processes ran to completion (restartPolicy
    /// Never/OnFailure): `Succeeded` or `Failed`.
    pub finished: Option<&'static str>,
    /// A message for the `PodScheduled`-level picture, e.g. why the shim
    /// does not run this Pod.
    pub message: Option<String>,
    pub reason: Option<String>,
}

impl PodView {
    pub fn new(host_ip: &str, containers: Vec<ContainerView>) -> Self {
        let mut view = Self {
            pod_ip: None,
            host_ip: host_ip.to_string(),
            start_time: now(),
            containers,
            conditions: Conditions::default(),
            finished: None,
            message: None,
            reason: None,
        };
        view.refresh_conditions();
        view
    }

    /// Every container ready (and at least one).
    pub fn ready(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.ready)
    }

    /// Brings the conditions in line with the containers.
    pub fn refresh_conditions(&mut self) {
        let ready = self.ready();
        let started = self.pod_ip.is_some();
        self.conditions.set("PodScheduled", true);
        self.conditions.set("Initialized", true);
        self.conditions.set("PodReadyToStartContainers", started);
        self.conditions.set("ContainersReady", ready);
        self.conditions.set("Ready", ready);
    }

    /// `Pending` until every container has run, then `Running`, or the
    /// finished phase.
    pub fn phase(&self) -> &'static str {
        if let Some(finished) = self.finished {
            return finished;
        }
        let all_started = !self.containers.is_empty()
            && self
                .containers
                .iter()
                .all(|c| !matches!(c.state, RunState::Waiting { .. }) || c.restart_count > 0 || c.last_exit.is_some());
        if all_started {
            "Running"
        } else {
            "Pending"
        }
    }

    pub fn to_status(&self) -> PodStatus {
        let conditions = self
            .conditions
            .0
            .iter()
            .map(|(type_, (status, at))| PodCondition {
                type_: (*type_).to_string(),
                status: if *status { "True" } else { "False" }.to_string(),
                last_transition_time: Some(at.clone()),
                reason: (!*status && (*type_ == "Ready" || *type_ == "ContainersReady"))
                    .then(|| "ContainersNotReady".to_string()),
                ..PodCondition::default()
            })
            .collect();
        let pod_ip = self.pod_ip.map(|ip| ip.to_string());
        PodStatus {
            phase: Some(self.phase().to_string()),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            start_time: Some(self.start_time.clone()),
            conditions: Some(conditions),
            container_statuses: Some(self.containers.iter().map(container_status).collect()),
            message: self.message.clone(),
            reason: self.reason.clone(),
            ..PodStatus::default()
        }
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("shim://{}", c.image),
        container_id: c.pid.map(|pid| format!("shim://{pid}")),
        ready: c.ready,
        started: Some(matches!(c.state, RunState::Running { .. })),
        restart_count: c.restart_count,
        state: Some(state(&c.state)),
        last_state: c.last_exit.as_ref().map(|e| ContainerState {
            terminated: Some(terminated(e)),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn state(s: &RunState) -> ContainerState {
    match s {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated(exit) => ContainerState {
            terminated: Some(terminated(exit)),
            ..ContainerState::default()
        },
    }
}

fn terminated(e: &Exit) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: Some(e.reason.clone()),
        started_at: e.started_at.clone(),
        finished_at: Some(e.finished_at.clone()),
        ..ContainerStateTerminated::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: RunState, ready: bool) -> ContainerView {
        ContainerView {
            name: "agent".into(),
            image: "slicecache/slicecache-agent:0.1.0".into(),
            state,
            last_exit: None,
            ready,
            restart_count: 0,
            pid: Some(42),
        }
    }

    fn condition(status: &PodStatus, type_: &str) -> Option<String> {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
    }

    #[test]
    fn a_creating_pod_is_pending_and_unready() {
        let view = PodView::new(
            "127.0.0.1",
            vec![container(
                RunState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
                false,
            )],
        );
        let status = view.to_status();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(condition(&status, "Ready").as_deref(), Some("False"));
        assert_eq!(condition(&status, "PodScheduled").as_deref(), Some("True"));
        assert_eq!(status.pod_ip, None);
    }

    #[test]
    fn a_ready_pod_reports_ips_running_state_and_ready_conditions() {
        let mut view = PodView::new(
            "127.0.0.1",
            vec![container(RunState::Running { started_at: now() }, true)],
        );
        view.pod_ip = Some(IpAddr::from([127, 0, 0, 5]));
        view.refresh_conditions();
        let status = view.to_status();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.5"));
        assert_eq!(status.pod_ips.as_ref().map(|v| v[0].ip.as_str()), Some("127.0.0.5"));
        assert_eq!(condition(&status, "Ready").as_deref(), Some("True"));
        assert_eq!(condition(&status, "ContainersReady").as_deref(), Some("True"));
        let cs = &status.container_statuses.unwrap_or_default()[0];
        assert_eq!(cs.container_id.as_deref(), Some("shim://42"));
        assert!(cs.state.as_ref().is_some_and(|s| s.running.is_some()));
    }

    #[test]
    fn a_crash_looping_pod_stays_running_with_its_last_exit() {
        let mut c = container(
            RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            false,
        );
        c.restart_count = 1;
        c.last_exit = Some(Exit {
            exit_code: 137,
            signal: Some(9),
            reason: "Error".into(),
            started_at: None,
            finished_at: now(),
        });
        let view = PodView::new("127.0.0.1", vec![c]);
        let status = view.to_status();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let cs = &status.container_statuses.unwrap_or_default()[0];
        assert_eq!(cs.restart_count, 1);
        assert_eq!(
            cs.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(137)
        );
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let mut c = Conditions::default();
        c.set("Ready", false);
        let first = c.0.get("Ready").cloned();
        c.set("Ready", false);
        assert_eq!(c.0.get("Ready").cloned(), first);
        c.set("Ready", true);
        assert_eq!(c.get("Ready"), Some(true));
    }
}
