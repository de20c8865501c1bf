//! `ferry top node` (GPUs allocated per node and per card, from the pods' GPU assignment
//! annotations) and `ferry top job` (each instance's node and devices).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use serde::Serialize;

use super::view::{CONTRACT_VERSION, list_jobs, pod_devices, pod_holds_resources, print_table};
use super::{ClusterArgs, JobType, Output, print_document};
use ferry_api::RESOURCE_NVIDIA_GPU;
use ferry_api::gpu::{GpuDevice, NODE_DEVICES_ANNOTATION};

/// `ferry top ...`.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// GPUs of each node: total, allocated, and which pod holds each card.
    Node(TopNodeArgs),
    /// GPUs of each running job: its instances, their nodes and device indices.
    Job(TopJobArgs),
}

/// Arguments of `ferry top node`.
#[derive(Debug, Args)]
pub struct TopNodeArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Arguments of `ferry top job`.
#[derive(Debug, Args)]
pub struct TopJobArgs {
    /// Only this job.
    pub name: Option<String>,
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

/// `top node -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGpus {
    /// [`CONTRACT_VERSION`].
    pub api_version: &'static str,
    /// Always `NodeGpus`.
    pub kind: &'static str,
    /// GPUs of every node.
    pub total_gpus: u32,
    /// GPUs held by bound, unfinished pods.
    pub allocated_gpus: u32,
    /// Each node.
    pub nodes: Vec<NodeInfo>,
}

/// One node's GPUs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The node.
    pub name: String,
    /// Its InternalIP.
    pub ip: Option<String>,
    /// `Ready`, `NotReady` or `Unknown`.
    pub status: String,
    /// Allocatable `nvidia.com/gpu`.
    pub total_gpus: u32,
    /// GPUs requested by the pods bound to it (not finished).
    pub allocated_gpus: u32,
    /// Each card, by index.
    pub gpus: Vec<CardInfo>,
}

/// One card.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CardInfo {
    /// Device index on the node.
    pub index: u32,
    /// Model.
    pub model: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Whether the agent reports it healthy.
    pub healthy: bool,
    /// `namespace/pod` of the pods assigned this card.
    pub allocated_to: Vec<String>,
}

/// Reads every node's GPUs.
pub async fn node_gpus(client: &kube::Client) -> anyhow::Result<ClusterGpus> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let nodes = nodes
        .list(&Default::default())
        .await
        .context("cannot list nodes")?
        .items;
    let pods: kube::Api<Pod> = kube::Api::all(client.clone());
    let pods = pods
        .list(&Default::default())
        .await
        .context("cannot list pods")?
        .items;
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods.iter().filter(|p| pod_holds_resources(p)) {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    for n in &nodes {
        let name = n.name_any();
        let status = n.status.as_ref();
        let total_gpus = status
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(RESOURCE_NVIDIA_GPU))
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(0);
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| match c.status.as_str() {
                "True" => "Ready",
                "False" => "NotReady",
                _ => "Unknown",
            })
            .unwrap_or("Unknown");
        let devices: Vec<GpuDevice> = n
            .annotations()
            .get(NODE_DEVICES_ANNOTATION)
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let mine = by_node.get(&name).cloned().unwrap_or_default();
        let allocated_gpus = mine
            .iter()
            .map(|p| {
                p.spec.as_ref().map_or(0, |s| {
                    s.containers
                        .iter()
                        .filter_map(|c| {
                            c.resources
                                .as_ref()?
                                .limits
                                .as_ref()?
                                .get(RESOURCE_NVIDIA_GPU)?
                                .0
                                .parse::<u32>()
                                .ok()
                        })
                        .sum::<u32>()
                })
            })
            .sum();
        let gpus = devices
            .iter()
            .map(|d| CardInfo {
                index: d.index,
                model: d.model.clone(),
                memory_mib: d.memory_mib,
                healthy: d.healthy,
                allocated_to: mine
                    .iter()
                    .filter(|p| pod_devices(p).contains(&d.index))
                    .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                    .collect(),
            })
            .collect();
        let ip = status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        out.push(NodeInfo {
            name,
            ip,
            status: ready.into(),
            total_gpus,
            allocated_gpus,
            gpus,
        });
    }
    Ok(ClusterGpus {
        api_version: CONTRACT_VERSION,
        kind: "NodeGpus",
        total_gpus: out.iter().map(|n| n.total_gpus).sum(),
        allocated_gpus: out.iter().map(|n| n.allocated_gpus).sum(),
        nodes: out,
    })
}

/// `ferry top ...`.
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    match args.command {
        TopCommand::Node(a) => top_node(a).await,
        TopCommand::Job(a) => top_job(a).await,
    }
}

async fn top_node(args: TopNodeArgs) -> anyhow::Result<()> {
    let (client, _) = args.cluster.connect().await?;
    let cluster = node_gpus(&client).await?;
    if args.output != Output::Wide {
        return print_document(args.output, &cluster);
    }
    let mut rows = vec![
        [
            "NAME",
            "IPADDRESS",
            "STATUS",
            "GPU(Total)",
            "GPU(Allocated)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &cluster.nodes {
        rows.push(vec![
            n.name.clone(),
            n.ip.clone().unwrap_or_else(|| "N/A".into()),
            n.status.clone(),
            n.total_gpus.to_string(),
            n.allocated_gpus.to_string(),
        ]);
    }
    print_table(&rows);
    let pct = if cluster.total_gpus == 0 {
        0.0
    } else {
        100.0 * f64::from(cluster.allocated_gpus) / f64::from(cluster.total_gpus)
    };
    println!("---------------------------------------------------------------");
    println!(
        "Allocated/Total GPUs In Cluster: {}/{} ({pct:.1}%)",
        cluster.allocated_gpus, cluster.total_gpus
    );
    let cards: Vec<_> = cluster
        .nodes
        .iter()
        .flat_map(|n| n.gpus.iter().map(move |g| (n, g)))
        .collect();
    if !cards.is_empty() {
        println!();
        let mut rows = vec![
            [
                "NODE",
                "INDEX",
                "MODEL",
                "MEMORY",
                "HEALTHY",
                "ALLOCATED_TO",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for (n, g) in cards {
            rows.push(vec![
                n.name.clone(),
                g.index.to_string(),
                g.model.clone(),
                format!("{}MiB", g.memory_mib),
                g.healthy.to_string(),
                if g.allocated_to.is_empty() {
                    "-".into()
                } else {
                    g.allocated_to.join(",")
                },
            ]);
        }
        print_table(&rows);
    }
    Ok(())
}

async fn top_job(args: TopJobArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let ns = (!args.all_namespaces).then_some(namespace.as_str());
    let mut jobs = list_jobs(&client, ns, args.job_type).await?;
    match &args.name {
        Some(name) => {
            jobs.retain(|j| &j.name == name);
            if jobs.is_empty() {
                anyhow::bail!(
                    "no training job {name:?} (404 NotFound); `ferry list` shows the jobs"
                );
            }
        }
        None => jobs.retain(|j| matches!(j.status, "RUNNING" | "PENDING" | "RESTARTING")),
    }
    if args.output != Output::Wide {
        return print_document(args.output, &jobs);
    }
    let mut rows = vec![
        [
            "JOB",
            "INSTANCE",
            "STATUS",
            "NODE",
            "GPU(Requested)",
            "GPU(DeviceIndex)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for j in &jobs {
        for i in &j.instances {
            rows.push(vec![
                j.name.clone(),
                i.name.clone(),
                i.status.clone(),
                i.node.clone().unwrap_or_else(|| "N/A".into()),
                i.request_gpus.to_string(),
                if i.gpu_devices.is_empty() {
                    "-".into()
                } else {
                    ferry_api::gpu::format_assigned(&i.gpu_devices)
                },
            ]);
        }
    }
    print_table(&rows);
    let req: u32 = jobs.iter().map(|j| j.requested_gpus).sum();
    let alloc: u32 = jobs.iter().map(|j| j.allocated_gpus).sum();
    println!("Total Allocated/Requested GPUs of the jobs: {alloc}/{req}");
    Ok(())
}
