//! Pod status from container observations: phase, conditions and container statuses, computed
//! as the kubelet computes them (`getPhase`, `generateAPIPodStatus`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::ExitRecord;

/// The state a container is shown in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerView {
    /// Not running: not created yet, or waiting to be restarted.
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`, `CreateContainerConfigError`...
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Running since the given time.
    Running {
        /// When the current attempt started.
        started_at: Timestamp,
    },
    /// Ended, and will not be restarted.
    Terminated(ExitRecord),
}

/// What is known about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerObs {
    /// Container name.
    pub name: String,
    /// Its `image` field, reported as is.
    pub image: String,
    /// Restarts so far (the current attempt's number).
    pub restart_count: u32,
    /// Its current state.
    pub state: ContainerView,
    /// How the previous attempt ended (shown as `lastState`).
    pub last: Option<ExitRecord>,
    /// Identifier of the current attempt, once one was started.
    pub container_id: Option<String>,
    /// Its startup probe passed, or it has none (meaningful while running).
    pub started: bool,
    /// Its readiness probe passes, or it has none (meaningful while running).
    pub ready: bool,
}

/// A pod-level failure decided before any container ran (the kubelet's admission errors).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodFailure {
    /// Short CamelCase reason, such as `NoCommand`.
    pub reason: String,
    /// A sentence for humans.
    pub message: String,
}

/// The pod phase for the given container states (the kubelet's `getPhase`).
pub fn phase(
    init: &[ContainerObs],
    main: &[ContainerObs],
    restart_policy: &str,
    failure: Option<&PodFailure>,
) -> &'static str {
    if failure.is_some() {
        return "Failed";
    }
    let mut pending_init = false;
    for c in init {
        match &c.state {
            ContainerView::Terminated(e) if e.exit_code == 0 => {}
            ContainerView::Terminated(_) if restart_policy == "Never" => return "Failed",
            _ => pending_init = true,
        }
    }
    if pending_init {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in main {
        match &c.state {
            ContainerView::Running { .. } => running += 1,
            ContainerView::Terminated(e) => {
                stopped += 1;
                if e.exit_code == 0 {
                    succeeded += 1;
                }
            }
            ContainerView::Waiting { .. } if c.last.is_some() => stopped += 1,
            ContainerView::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(e: &ExitRecord, container_id: Option<&str>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: container_id.map(Into::into),
        exit_code: e.exit_code,
        finished_at: Some(time(e.finished_at)),
        message: e.message.clone(),
        reason: Some(e.reason.clone()),
        signal: e.signal,
        started_at: e.started_at.map(time),
    }
}

fn container_status(c: &ContainerObs, init: bool) -> ContainerStatus {
    let state = match &c.state {
        ContainerView::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ContainerView::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        ContainerView::Terminated(e) => ContainerState {
            terminated: Some(terminated(e, c.container_id.as_deref())),
            ..Default::default()
        },
    };
    let running = matches!(c.state, ContainerView::Running { .. });
    let (ready, started) = if init {
        (
            matches!(&c.state, ContainerView::Terminated(e) if e.exit_code == 0),
            running,
        )
    } else {
        (running && c.started && c.ready, running && c.started)
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: c.container_id.clone(),
        ready,
        started: Some(started),
        restart_count: c.restart_count.min(i32::MAX as u32) as i32,
        state: Some(state),
        last_state: Some(match &c.last {
            Some(e) => ContainerState {
                terminated: Some(terminated(e, None)),
                ..Default::default()
            },
            None => ContainerState::default(),
        }),
        ..Default::default()
    }
}

/// Everything [`build`] needs.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// Init containers, in spec order.
    pub init: &'a [ContainerObs],
    /// Containers, in spec order.
    pub main: &'a [ContainerObs],
    /// `spec.restartPolicy` (`Never` while the pod is being deleted: nothing restarts then).
    pub restart_policy: &'a str,
    /// A pod-level failure.
    pub failure: Option<&'a PodFailure>,
    /// The node's IP, also the pod's.
    pub node_ip: &'a str,
    /// The pod's own addresses (its sandbox's); empty: the node's (host network).
    pub pod_ips: &'a [String],
    /// When the agent first accepted the pod.
    pub start_time: Timestamp,
    /// The status currently stored (for conditions owned by others and transition times).
    pub previous: Option<&'a PodStatus>,
    /// `spec.readinessGates`: condition types that must also be `True` for the pod to be Ready.
    pub readiness_gates: &'a [String],
    /// The time to stamp changed conditions with.
    pub now: Timestamp,
}

/// The pod status the agent publishes.
pub fn build(input: &StatusInput<'_>) -> PodStatus {
    let phase = phase(input.init, input.main, input.restart_policy, input.failure);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let names = |cs: &[ContainerObs], ok: &dyn Fn(&ContainerObs) -> bool| -> Vec<String> {
        cs.iter()
            .filter(|c| !ok(c))
            .map(|c| c.name.clone())
            .collect()
    };
    let not_initialized = names(
        input.init,
        &|c| matches!(&c.state, ContainerView::Terminated(e) if e.exit_code == 0),
    );
    let unready = names(input.main, &|c| {
        matches!(c.state, ContainerView::Running { .. }) && c.started && c.ready
    });
    let previous_conditions = input.previous.and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = previous_conditions
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| time(input.now));
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(since),
            reason: (!ok).then(|| reason.to_string()),
            message: (!ok).then_some(message),
            ..Default::default()
        }
    };
    let list = |names: &[String]| format!("[{}]", names.join(" "));
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    // Readiness gates (the kubelet's `generatePodReadyCondition`): conditions others set.
    let gate_problems: Vec<String> = input
        .readiness_gates
        .iter()
        .filter_map(|gate| {
            match previous_conditions.and_then(|cs| cs.iter().find(|c| &c.type_ == gate)) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{gate}\" does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate \"{gate}\" is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    let containers_ready = unready.is_empty() && !terminal;
    let (pod_ready_reason, pod_ready_message) = if !containers_ready || terminal {
        (
            ready_reason,
            format!("containers with unready status: {}", list(&unready)),
        )
    } else {
        ("ReadinessGatesNotReady", gate_problems.join(", "))
    };
    let ours = [
        condition("PodReadyToStartContainers", true, "", String::new()),
        condition(
            "Initialized",
            not_initialized.is_empty(),
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: {}",
                list(&not_initialized)
            ),
        ),
        condition(
            "Ready",
            containers_ready && gate_problems.is_empty(),
            pod_ready_reason,
            pod_ready_message,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            ready_reason,
            format!("containers with unready status: {}", list(&unready)),
        ),
    ];
    // Keep conditions other components own (PodScheduled, readiness gates...).
    let mut conditions: Vec<PodCondition> = previous_conditions
        .into_iter()
        .flatten()
        .filter(|c| !ours.iter().any(|o| o.type_ == c.type_))
        .cloned()
        .collect();
    conditions.extend(ours);
    let start_time = input
        .previous
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| time(input.start_time));
    PodStatus {
        phase: Some(phase.into()),
        reason: input.failure.map(|f| f.reason.clone()),
        message: input.failure.map(|f| f.message.clone()),
        conditions: Some(conditions),
        host_ip: Some(input.node_ip.into()),
        host_ips: Some(vec![HostIP {
            ip: input.node_ip.into(),
        }]),
        pod_ip: Some(
            input
                .pod_ips
                .first()
                .map_or_else(|| input.node_ip.to_string(), Clone::clone),
        ),
        pod_ips: Some(if input.pod_ips.is_empty() {
            vec![PodIP {
                ip: input.node_ip.into(),
            }]
        } else {
            input
                .pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect()
        }),
        start_time: Some(start_time),
        init_container_statuses: (!input.init.is_empty()).then(|| {
            input
                .init
                .iter()
                .map(|c| container_status(c, true))
                .collect()
        }),
        container_statuses: Some(
            input
                .main
                .iter()
                .map(|c| container_status(c, false))
                .collect(),
        ),
        qos_class: input.previous.and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}

/// The status as a JSON merge patch body: fields the agent owns but left empty are nulled so a
/// stale value (an old `reason`) does not survive.
pub fn merge_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        for key in ["reason", "message"] {
            obj.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitRecord {
        ExitRecord {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(Timestamp::UNIX_EPOCH),
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn obs(name: &str, state: ContainerView, last: Option<ExitRecord>) -> ContainerObs {
        ContainerObs {
            name: name.into(),
            image: "busybox".into(),
            restart_count: u32::from(last.is_some()),
            state,
            last,
            container_id: None,
            started: true,
            ready: true,
        }
    }

    fn running() -> ContainerView {
        ContainerView::Running {
            started_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn waiting(reason: &str) -> ContainerView {
        ContainerView::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let t = |code| ContainerView::Terminated(exit(code));
        let done = [obs("i", t(0), None)];
        // Init containers gate everything.
        assert_eq!(
            phase(
                &[obs("i", running(), None)],
                &[obs("c", waiting("PodInitializing"), None)],
                "Always",
                None
            ),
            "Pending"
        );
        assert_eq!(phase(&[obs("i", t(1), None)], &[], "Never", None), "Failed");
        assert_eq!(
            phase(
                &[obs("i", waiting("CrashLoopBackOff"), Some(exit(1)))],
                &[],
                "OnFailure",
                None
            ),
            "Pending"
        );
        // Main containers.
        assert_eq!(
            phase(
                &done,
                &[obs("c", waiting("ContainerCreating"), None)],
                "Always",
                None
            ),
            "Pending"
        );
        assert_eq!(
            phase(&done, &[obs("c", running(), None)], "Never", None),
            "Running"
        );
        assert_eq!(
            phase(
                &done,
                &[obs("c", t(0), None), obs("d", t(0), None)],
                "Never",
                None
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &done,
                &[obs("c", t(0), None), obs("d", t(2), None)],
                "Never",
                None
            ),
            "Failed"
        );
        assert_eq!(
            phase(&done, &[obs("c", t(0), None)], "OnFailure", None),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &done,
                &[
                    obs("c", t(0), None),
                    obs("d", waiting("CrashLoopBackOff"), Some(exit(1)))
                ],
                "OnFailure",
                None
            ),
            "Running"
        );
        assert_eq!(
            phase(
                &done,
                &[obs("c", waiting("CrashLoopBackOff"), Some(exit(1)))],
                "Always",
                None
            ),
            "Running"
        );
        assert_eq!(
            phase(
                &done,
                &[obs("c", t(0), None), obs("d", running(), None)],
                "Never",
                None
            ),
            "Running"
        );
        let failure = PodFailure {
            reason: "NoCommand".into(),
            message: "x".into(),
        };
        assert_eq!(
            phase(
                &done,
                &[obs("c", running(), None)],
                "Always",
                Some(&failure)
            ),
            "Failed"
        );
    }

    #[test]
    fn builds_statuses_and_conditions() {
        let init = [obs("init", ContainerView::Terminated(exit(0)), None)];
        let main = [
            obs("a", running(), Some(exit(1))),
            obs("b", waiting("CrashLoopBackOff"), Some(exit(2))),
        ];
        let previous = PodStatus {
            conditions: Some(vec![
                PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    ..Default::default()
                },
                PodCondition {
                    type_: "Initialized".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::UNIX_EPOCH)),
                    ..Default::default()
                },
            ]),
            qos_class: Some("BestEffort".into()),
            ..Default::default()
        };
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let s = build(&StatusInput {
            init: &init,
            main: &main,
            restart_policy: "Always",
            failure: None,
            node_ip: "127.0.0.1",
            pod_ips: &[],
            start_time: now,
            previous: Some(&previous),
            readiness_gates: &[],
            now,
        });
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        let cond = |t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .clone()
        };
        assert_eq!(
            cond("PodScheduled").status,
            "True",
            "the scheduler's condition is kept"
        );
        assert_eq!(cond("Initialized").status, "True");
        assert_eq!(
            cond("Initialized").last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH)),
            "an unchanged condition keeps its transition time"
        );
        assert_eq!(cond("Ready").status, "False");
        assert_eq!(
            cond("Ready").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        let statuses = s.container_statuses.unwrap();
        assert!(statuses[0].ready && statuses[0].state.as_ref().unwrap().running.is_some());
        assert_eq!(
            statuses[0]
                .last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        let b = &statuses[1];
        assert_eq!(
            b.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(b.restart_count, 1);
        let init_status = &s.init_container_statuses.unwrap()[0];
        assert!(init_status.ready);
        let patch = merge_patch(&PodStatus::default());
        assert!(patch["status"]["reason"].is_null() && patch["status"].get("reason").is_some());
    }
    #[test]
    fn probes_drive_ready_started_and_the_ready_conditions() {
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let later: Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let mut starting = obs("a", running(), None);
        starting.started = false;
        starting.ready = false;
        let mut unready = obs("b", running(), None);
        unready.ready = false;
        let ready = obs("c", running(), None);
        let input = |main: &[ContainerObs], previous, gates: &[String], now| {
            build(&StatusInput {
                init: &[],
                main,
                restart_policy: "Always",
                failure: None,
                node_ip: "127.0.0.1",
                pod_ips: &[],
                start_time: now,
                previous,
                readiness_gates: gates,
                now,
            })
        };
        let main = [starting.clone(), unready.clone(), ready.clone()];
        let s = input(&main, None, &[], now);
        let statuses = s.container_statuses.clone().unwrap();
        let flags: Vec<(bool, Option<bool>)> =
            statuses.iter().map(|c| (c.ready, c.started)).collect();
        assert_eq!(
            flags,
            [
                (false, Some(false)),
                (false, Some(true)),
                (true, Some(true))
            ]
        );
        let cond = |s: &PodStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .clone()
        };
        assert_eq!(cond(&s, "ContainersReady").status, "False");
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("containers with unready status: [a b]")
        );
        // All ready: True, stamped now; unchanged later: the transition time stays.
        let all = [ready.clone()];
        let s = input(&all, None, &[], now);
        assert_eq!(cond(&s, "Ready").status, "True");
        let again = input(&all, Some(&s), &[], later);
        assert_eq!(
            cond(&again, "Ready").last_transition_time,
            Some(Time(now)),
            "no transition, no new time"
        );
        let flipped = input(&[unready.clone()], Some(&again), &[], later);
        assert_eq!(cond(&flipped, "Ready").status, "False");
        assert_eq!(
            cond(&flipped, "Ready").last_transition_time,
            Some(Time(later))
        );
        // Readiness gates: a missing or False gate condition holds Ready (not ContainersReady).
        let gates = ["example.com/lb".to_string()];
        let s = input(&all, None, &gates, now);
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        let r = cond(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("False", Some("ReadinessGatesNotReady"))
        );
        assert_eq!(
            r.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
        let mut gated = s.clone();
        gated.conditions.as_mut().unwrap().push(PodCondition {
            type_: "example.com/lb".into(),
            status: "True".into(),
            ..Default::default()
        });
        let s = input(&all, Some(&gated), &gates, later);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(
            cond(&s, "example.com/lb").status,
            "True",
            "the gate's condition is kept"
        );
    }
}
