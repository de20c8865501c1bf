//! `ferry list` and `ferry get`: a job as its owner sees it (status, instances, nodes, GPUs,
//! and why it waits), from the job, its pods, its PodGroup and their events.
//!
//! [`JobInfo`] is the `-o json` contract documented in `docs/cli.md`: fields are only ever
//! added, never renamed or removed, within [`CONTRACT_VERSION`].

use std::collections::BTreeSet;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use serde::Serialize;
use serde_json::Value;

use super::{ClusterArgs, JobType, Output, find_job, print_document};
use ferry_api::RESOURCE_NVIDIA_GPU;
use ferry_api::gpu::{POD_ASSIGNED_ANNOTATION, parse_assigned};
use ferry_api::scheduling::PodGroup;

/// The version of the JSON documents, in their `apiVersion`.
pub const CONTRACT_VERSION: &str = "ferry.dev/cli/v1";

/// One training job (`get -o json`, an item of `list -o json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// [`CONTRACT_VERSION`].
    pub api_version: &'static str,
    /// Always `TrainingJob`.
    pub kind: &'static str,
    /// The job's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `pytorchjob`, `tfjob` or `mpijob`.
    #[serde(rename = "type")]
    pub job_type: &'static str,
    /// The same, upper case, as arena's TRAINER column.
    pub trainer: String,
    /// PENDING, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED or FAILED.
    pub status: &'static str,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// When it finished, RFC 3339, or null.
    pub finished_at: Option<String>,
    /// Seconds from creation to the end (or now).
    pub duration_seconds: i64,
    /// The same as `1h2m3s`.
    pub duration: String,
    /// The scheduling queue (`schedulingPolicy.queue`), or null for the namespace's.
    pub queue: Option<String>,
    /// The PriorityClass (`schedulingPolicy.priorityClass`), or null.
    pub priority: Option<String>,
    /// Whether it is elastic (`elasticPolicy`), with its bounds.
    pub elastic: Option<ElasticInfo>,
    /// GPUs its instances request in all.
    pub requested_gpus: u32,
    /// GPUs assigned to its running or bound instances.
    pub allocated_gpus: u32,
    /// The instance `logs` shows by default (rank 0: master, chief or launcher).
    pub chief_name: Option<String>,
    /// Why it is not running (the scheduler's reason, a pod's waiting reason), else null.
    pub waiting_reason: Option<String>,
    /// The message of its last condition (why it failed, say), else null.
    pub message: Option<String>,
    /// Its pods.
    pub instances: Vec<InstanceInfo>,
    /// Events of the job, its PodGroup and pods (only with `-e`; else empty).
    pub events: Vec<EventInfo>,
}

/// The elastic bounds of a job.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ElasticInfo {
    /// `elasticPolicy.minReplicas`.
    pub min_workers: i64,
    /// `elasticPolicy.maxReplicas`.
    pub max_workers: i64,
}

/// One pod of a job.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    /// The pod's name, `<job>-<type>-<index>`.
    pub name: String,
    /// The pod's phase (Pending, Running, Succeeded, Failed), or Terminating.
    pub status: String,
    /// Replica type, lower case (`master`, `worker`, `ps`, `launcher`...).
    pub role: String,
    /// Replica index.
    pub index: Option<i64>,
    /// Whether it is the chief ([`JobInfo::chief_name`]).
    pub chief: bool,
    /// Its node, or null while unscheduled.
    pub node: Option<String>,
    /// Its IP, or null.
    pub ip: Option<String>,
    /// Seconds since it was created.
    pub age_seconds: i64,
    /// Container restarts in all.
    pub restarts: i32,
    /// GPUs it requests.
    pub request_gpus: u32,
    /// Device indices the scheduler assigned on its node.
    pub gpu_devices: Vec<u32>,
    /// Why it waits (unschedulable message, a container's waiting reason), else null.
    pub waiting_reason: Option<String>,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventInfo {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `Kind/name` of what it is about.
    pub object: String,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
    /// How many times it happened.
    pub count: i32,
    /// Last time, RFC 3339.
    pub last_seen: Option<String>,
}

/// Arguments of `ferry list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Jobs of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only jobs of this kind.
    #[arg(short = 'T', long = "type", value_enum)]
    pub job_type: Option<JobType>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Cluster and namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Arguments of `ferry get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The job.
    pub name: String,
    /// The kind, when two kinds have a job of that name.
    #[arg(short = 'T', long = "type", value_enum)]
    pub job_type: Option<JobType>,
    /// Show the events of the job and its pods (why it waits or restarted).
    #[arg(short = 'e', long)]
    pub events: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Cluster and namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn ts(t: &Timestamp) -> String {
    t.to_string()
}

/// `1h2m3s`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The status arena would print, from the job's conditions (Kubeflow's types).
pub fn job_status(status: &Value) -> &'static str {
    let is_true = |t: &str| {
        status["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    if is_true("Succeeded") {
        "SUCCEEDED"
    } else if is_true("Failed") {
        "FAILED"
    } else if is_true("Suspended") {
        "SUSPENDED"
    } else if is_true("Restarting") {
        "RESTARTING"
    } else if is_true("Running") {
        "RUNNING"
    } else {
        "PENDING"
    }
}

fn pod_gpus(pod: &Pod) -> u32 {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| {
                    let r = c.resources.as_ref()?;
                    r.limits
                        .as_ref()
                        .and_then(|l| l.get(RESOURCE_NVIDIA_GPU))
                        .or_else(|| r.requests.as_ref()?.get(RESOURCE_NVIDIA_GPU))
                        .and_then(|q| q.0.parse::<u32>().ok())
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Whether a pod holds its node's resources (bound and not finished).
pub fn pod_holds_resources(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The device indices assigned to a pod.
pub fn pod_devices(pod: &Pod) -> Vec<u32> {
    pod.annotations()
        .get(POD_ASSIGNED_ANNOTATION)
        .and_then(|v| parse_assigned(v).ok())
        .unwrap_or_default()
}

fn pod_waiting(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some(format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or("")
        ));
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find_map(|w| {
            let reason = w.reason.clone()?;
            (reason != "ContainerCreating").then(|| match &w.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            })
        })
}

/// Reads a job, its pods and PodGroup (and events when `events`) into a [`JobInfo`].
pub async fn job_info(
    client: &kube::Client,
    job_type: JobType,
    job: &DynamicObject,
    events: bool,
) -> anyhow::Result<JobInfo> {
    let name = job.name_any();
    let namespace = job.namespace().unwrap_or_default();
    let pods_api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &namespace);
    let selector = format!("training.kubeflow.org/job-name={name}");
    let uid = job.uid();
    let mut pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .context("cannot list the job's pods")?
        .items
        .into_iter()
        .filter(|p| {
            uid.is_none()
                || p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    let role_of = |p: &Pod| {
        p.labels()
            .get("training.kubeflow.org/replica-type")
            .cloned()
            .unwrap_or_default()
    };
    let index_of = |p: &Pod| {
        p.labels()
            .get("training.kubeflow.org/replica-index")
            .and_then(|i| i.parse::<i64>().ok())
    };
    pods.sort_by_key(|p| {
        let role = role_of(p);
        let rank = job_type
            .chief_types()
            .iter()
            .position(|t| *t == role)
            .unwrap_or(99);
        (rank, role, index_of(p))
    });
    let chief_name = pods
        .iter()
        .find(|p| job_type.chief_types().contains(&role_of(p).as_str()))
        .map(|p| p.name_any());
    let now = Timestamp::now();
    let instances: Vec<InstanceInfo> = pods
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let phase = if p.metadata.deletion_timestamp.is_some() {
                "Terminating".to_string()
            } else {
                status
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Pending".into())
            };
            let created = p.creation_timestamp().map(|t| t.0).unwrap_or(now);
            InstanceInfo {
                name: p.name_any(),
                status: phase,
                role: role_of(p),
                index: index_of(p),
                chief: Some(p.name_any()) == chief_name,
                node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                ip: status.and_then(|s| s.pod_ip.clone()),
                age_seconds: (now.as_second() - created.as_second()).max(0),
                restarts: status
                    .and_then(|s| s.container_statuses.as_ref())
                    .map(|cs| cs.iter().map(|c| c.restart_count).sum())
                    .unwrap_or(0),
                request_gpus: pod_gpus(p),
                gpu_devices: pod_devices(p),
                waiting_reason: pod_waiting(p),
            }
        })
        .collect();
    let data = &job.data;
    let spec_status = &data["status"];
    let status = job_status(spec_status);
    let created = job.creation_timestamp().map(|t| t.0).unwrap_or(now);
    let finished = spec_status["completionTime"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok());
    let end = finished.unwrap_or(now);
    let duration_seconds = (end.as_second() - created.as_second()).max(0);
    // Requested: from the spec (pods may not exist yet).
    let mut requested_gpus = 0;
    if let Some(specs) = data["spec"][job_type.replica_specs_field()].as_object() {
        for s in specs.values() {
            let replicas = s["replicas"].as_u64().unwrap_or(1) as u32;
            let per: u32 = s["template"]["spec"]["containers"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| {
                            let r = &c["resources"];
                            let q = if r["limits"][RESOURCE_NVIDIA_GPU].is_null() {
                                &r["requests"][RESOURCE_NVIDIA_GPU]
                            } else {
                                &r["limits"][RESOURCE_NVIDIA_GPU]
                            };
                            q.as_str()
                                .and_then(|s| s.parse().ok())
                                .or_else(|| q.as_u64().map(|n| n as u32))
                        })
                        .sum()
                })
                .unwrap_or(0);
            requested_gpus += replicas * per;
        }
    }
    let allocated_gpus = pods
        .iter()
        .filter(|p| pod_holds_resources(p))
        .map(pod_gpus)
        .sum();
    let sched = &data["spec"]["runPolicy"]["schedulingPolicy"];
    let elastic = &data["spec"]["elasticPolicy"];
    let elastic = (!elastic.is_null()).then(|| ElasticInfo {
        min_workers: elastic["minReplicas"].as_i64().unwrap_or(1),
        max_workers: elastic["maxReplicas"].as_i64().unwrap_or(1),
    });
    let message = spec_status["conditions"]
        .as_array()
        .and_then(|cs| cs.last())
        .and_then(|c| c["message"].as_str())
        .map(str::to_string);
    let terminal = matches!(status, "SUCCEEDED" | "FAILED");
    let mut waiting_reason = None;
    if !terminal && (status == "PENDING" || instances.iter().any(|i| i.waiting_reason.is_some())) {
        let groups: kube::Api<PodGroup> = kube::Api::namespaced(client.clone(), &namespace);
        if let Ok(Some(pg)) = groups.get_opt(&name).await {
            waiting_reason = pg
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|s| {
                    s["conditions"].as_array()?.iter().find_map(|c| {
                        (c["status"] == "True"
                            && c["message"].as_str().is_some_and(|m| !m.is_empty()))
                        .then(|| {
                            format!(
                                "{}: {}",
                                c["reason"].as_str().unwrap_or(""),
                                c["message"].as_str().unwrap_or("")
                            )
                        })
                    })
                });
        }
        if waiting_reason.is_none() {
            waiting_reason = instances.iter().find_map(|i| {
                i.waiting_reason
                    .as_ref()
                    .map(|w| format!("{}: {w}", i.name))
            });
        }
        if waiting_reason.is_none() && instances.is_empty() {
            waiting_reason =
                Some("no pods yet: the training controller has not created them".into());
        }
    }
    let events = if events {
        let mut objects: BTreeSet<String> = instances.iter().map(|i| i.name.clone()).collect();
        objects.insert(name.clone());
        let ev: kube::Api<Event> = kube::Api::namespaced(client.clone(), &namespace);
        let mut list: Vec<Event> = ev
            .list(&Default::default())
            .await
            .context("cannot list events")?
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| objects.contains(n))
            })
            .collect();
        let when = |e: &Event| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
        };
        list.sort_by_key(when);
        list.iter()
            .map(|e| EventInfo {
                event_type: e.type_.clone().unwrap_or_else(|| "Normal".into()),
                object: format!(
                    "{}/{}",
                    e.involved_object.kind.as_deref().unwrap_or(""),
                    e.involved_object.name.as_deref().unwrap_or("")
                ),
                reason: e.reason.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
                count: e.count.unwrap_or(1),
                last_seen: when(e).map(|t| ts(&t)),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(JobInfo {
        api_version: CONTRACT_VERSION,
        kind: "TrainingJob",
        name,
        namespace,
        job_type: job_type.name(),
        trainer: job_type.name().to_uppercase(),
        status,
        created_at: ts(&created),
        finished_at: finished.as_ref().map(ts),
        duration_seconds,
        duration: human_duration(duration_seconds),
        queue: sched["queue"].as_str().map(str::to_string),
        priority: sched["priorityClass"].as_str().map(str::to_string),
        elastic,
        requested_gpus,
        allocated_gpus,
        chief_name,
        waiting_reason,
        message,
        instances,
        events,
    })
}

/// The jobs `list` shows.
pub async fn list_jobs(
    client: &kube::Client,
    namespace: Option<&str>,
    only: Option<JobType>,
) -> anyhow::Result<Vec<JobInfo>> {
    let mut out = Vec::new();
    for t in JobType::ALL {
        if only.is_some_and(|o| o != t) {
            continue;
        }
        let api: kube::Api<DynamicObject> = match namespace {
            Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &t.api_resource()),
            None => kube::Api::all_with(client.clone(), &t.api_resource()),
        };
        let jobs = match api.list(&Default::default()).await {
            Ok(l) => l.items,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}s", t.name())),
        };
        for j in &jobs {
            out.push(job_info(client, t, j, false).await?);
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Prints rows as aligned columns.
pub fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// `ferry list`.
pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let ns = (!args.all_namespaces).then_some(namespace.as_str());
    let jobs = list_jobs(&client, ns, args.job_type).await?;
    if args.output != Output::Wide {
        return print_document(args.output, &jobs);
    }
    if jobs.is_empty() {
        match ns {
            Some(ns) => println!("No training jobs in namespace {ns:?} (-A: every namespace)."),
            None => println!("No training jobs."),
        }
        return Ok(());
    }
    let mut rows = vec![vec![]];
    if args.all_namespaces {
        rows[0].push("NAMESPACE".to_string());
    }
    rows[0].extend(
        [
            "NAME",
            "STATUS",
            "TRAINER",
            "DURATION",
            "GPU(Requested)",
            "GPU(Allocated)",
            "NODE",
        ]
        .map(String::from),
    );
    for j in &jobs {
        let mut row = Vec::new();
        if args.all_namespaces {
            row.push(j.namespace.clone());
        }
        let nodes: BTreeSet<&str> = j
            .instances
            .iter()
            .filter_map(|i| i.node.as_deref())
            .collect();
        row.extend([
            j.name.clone(),
            j.status.to_string(),
            j.trainer.clone(),
            j.duration.clone(),
            j.requested_gpus.to_string(),
            j.allocated_gpus.to_string(),
            if nodes.is_empty() {
                "N/A".into()
            } else {
                nodes.into_iter().collect::<Vec<_>>().join(",")
            },
        ]);
        rows.push(row);
    }
    print_table(&rows);
    Ok(())
}

/// `ferry get`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let (t, job) = find_job(&client, &namespace, &args.name, args.job_type).await?;
    let info = job_info(&client, t, &job, args.events).await?;
    if args.output != Output::Wide {
        return print_document(args.output, &info);
    }
    let na = |o: &Option<String>| o.clone().unwrap_or_else(|| "N/A".into());
    println!("Name:        {}", info.name);
    println!("Status:      {}", info.status);
    println!("Namespace:   {}", info.namespace);
    println!("Trainer:     {}", info.trainer);
    println!("Queue:       {}", na(&info.queue));
    println!("Priority:    {}", na(&info.priority));
    if let Some(e) = &info.elastic {
        println!("Elastic:     {}..{} workers", e.min_workers, e.max_workers);
    }
    println!("Duration:    {}", info.duration);
    println!(
        "GPUs:        {} requested, {} allocated",
        info.requested_gpus, info.allocated_gpus
    );
    if let Some(w) = &info.waiting_reason {
        println!("Waiting:     {w}");
    }
    if let Some(m) = &info.message {
        println!("Message:     {m}");
    }
    println!();
    println!("Instances:");
    let mut rows = vec![
        [
            "NAME",
            "STATUS",
            "AGE",
            "IS_CHIEF",
            "GPU(Requested)",
            "GPU(Devices)",
            "NODE",
            "RESTARTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for i in &info.instances {
        rows.push(vec![
            i.name.clone(),
            i.status.clone(),
            human_duration(i.age_seconds),
            i.chief.to_string(),
            i.request_gpus.to_string(),
            if i.gpu_devices.is_empty() {
                "-".into()
            } else {
                ferry_api::gpu::format_assigned(&i.gpu_devices)
            },
            i.node.clone().unwrap_or_else(|| "N/A".into()),
            i.restarts.to_string(),
        ]);
    }
    print_table(&rows);
    if args.events {
        println!();
        println!("Events:");
        if info.events.is_empty() {
            println!("  (none)");
        } else {
            let mut rows = vec![
                ["TYPE", "OBJECT", "REASON", "COUNT", "MESSAGE"]
                    .map(String::from)
                    .to_vec(),
            ];
            for e in &info.events {
                rows.push(vec![
                    e.event_type.clone(),
                    e.object.clone(),
                    e.reason.clone(),
                    e.count.to_string(),
                    e.message.clone(),
                ]);
            }
            print_table(&rows);
        }
    } else {
        println!();
        println!(
            "`ferry get {} -e` adds the events; `ferry logs {}` shows rank 0's output.",
            info.name, info.name
        );
    }
    Ok(())
}
