//! `ferry submit pytorchjob|tfjob|mpijob`: one command line to a Kubeflow `kubeflow.org/v1`
//! job, checked against the cluster before anything is created.
//!
//! Rendering follows arena's charts: `--workers` of a PyTorchJob counts every replica (1
//! Master, restartPolicy Never, and `workers - 1` Workers, OnFailure); an elastic PyTorchJob
//! (`--min-workers`/`--max-workers`) is Workers only with an `elasticPolicy` (c10d). A TFJob
//! has `--workers` Workers plus `--ps` parameter servers (and `--chief`); an MPIJob has one
//! Launcher running the command and `--workers` Workers holding the GPUs.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};

use super::{ClusterArgs, JobType};
use ferry_api::RESOURCE_NVIDIA_GPU;
use ferry_api::scheduling::Queue;

/// `ferry submit ...`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(subcommand)]
    command: SubmitCommand,
}

#[derive(Debug, Subcommand)]
enum SubmitCommand {
    /// Submit a distributed PyTorch job (PyTorchJob): MASTER_ADDR, MASTER_PORT, WORLD_SIZE,
    /// RANK and PET_* are set in every instance, so `torchrun` or plain
    /// `torch.distributed.init_process_group("env://")` needs no configuration.
    ///
    /// Example: ferry submit pytorch --name mnist --workers 4 --gpus 1 -- python3 train.py
    #[command(name = "pytorchjob", visible_alias = "pytorch")]
    PyTorch(Box<PyTorchArgs>),
    /// Submit a distributed TensorFlow job (TFJob): TF_CONFIG names every instance.
    ///
    /// Example: ferry submit tf --name dist --workers 2 --ps 1 -- python3 train.py
    #[command(name = "tfjob", visible_alias = "tf")]
    Tf(Box<TfArgs>),
    /// Submit an MPI job (MPIJob): one launcher runs the command (`mpirun ...`) over the
    /// workers, found in the hostfile /etc/mpi/hostfile.
    ///
    /// Example: ferry submit mpi --name allreduce --workers 2 -- mpirun -np 2 python3 ar.py
    #[command(name = "mpijob", visible_aliases = ["mpi", "mj"])]
    Mpi(Box<MpiArgs>),
}

/// Flags every kind takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The job's name (a DNS label: lower case letters, digits and '-').
    #[arg(long)]
    pub name: String,
    /// Container image [default: none: on `ferry up`'s host runtime the command runs as a
    /// host process in its own sandbox]. Checked in its registry before submitting.
    #[arg(long)]
    pub image: Option<String>,
    /// GPUs per worker (`nvidia.com/gpu`); the job starts when all of them fit at once.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// CPU per worker (requests and limits), such as `2` or `500m`.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory per worker (requests and limits), such as `4Gi`.
    #[arg(long)]
    pub memory: Option<String>,
    /// Environment variable NAME=VALUE of every instance (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Mount a PersistentVolumeClaim: `<pvc>:<path in the container>` (repeatable).
    #[arg(long, value_name = "PVC:PATH")]
    pub data: Vec<String>,
    /// Mount a host directory: `<host path>:<path in the container>` (repeatable).
    #[arg(long = "data-dir", value_name = "HOST:PATH")]
    pub data_dir: Vec<String>,
    /// Run only on nodes with this label, `key=value` (repeatable, or comma-separated).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub selector: Vec<String>,
    /// Tolerate a taint: `key=value:effect`, `key:effect`, `key`, or `all` (repeatable).
    #[arg(long, value_name = "TAINT")]
    pub toleration: Vec<String>,
    /// PriorityClass of the instances (must exist).
    #[arg(short = 'p', long)]
    pub priority: Option<String>,
    /// Scheduling queue of the job (`scheduling.ferry.dev` Queue; must exist) [default: the
    /// namespace's].
    #[arg(long)]
    pub queue: Option<String>,
    /// How many times the whole job may be restarted after a failure (runPolicy.backoffLimit).
    #[arg(long)]
    pub retry: Option<i32>,
    /// Fail the job when it runs longer than this (runPolicy.activeDeadlineSeconds): `90s`,
    /// `30m`, `2h`, `1d` or seconds.
    #[arg(long, value_parser = parse_duration_secs)]
    pub running_timeout: Option<i64>,
    /// Delete the finished job after this long (runPolicy.ttlSecondsAfterFinished).
    #[arg(long, value_parser = parse_duration_secs)]
    pub ttl_after_finished: Option<i64>,
    /// Which pods to delete when the job ends (runPolicy.cleanPodPolicy).
    #[arg(long, default_value = "Running", value_parser = ["None", "Running", "All"])]
    pub clean_task_policy: String,
    /// Working directory of the command.
    #[arg(long)]
    pub working_dir: Option<String>,
    /// Print the job that would be created, as JSON, and create nothing (the checks still run).
    #[arg(long)]
    pub dry_run: bool,
    /// Cluster and namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The command, after the flags (`--` first when it has flags of its own). One word with
    /// spaces runs through `sh -c`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Arguments of `ferry submit pytorchjob`.
#[derive(Debug, Args)]
pub struct PyTorchArgs {
    /// Instances in all, the master (rank 0) included, as arena counts them; elastic jobs:
    /// workers to start with [default: 1, or --max-workers].
    #[arg(long)]
    pub workers: Option<u32>,
    /// Elastic: the fewest workers the job runs with (elasticPolicy.minReplicas); torchrun
    /// re-forms the group as workers come and go. Run the command with `torchrun` (or
    /// `python3 -m torch.distributed.run`).
    #[arg(long, requires = "max_workers")]
    pub min_workers: Option<u32>,
    /// Elastic: the most workers (elasticPolicy.maxReplicas), grown into idle GPUs.
    #[arg(long, requires = "min_workers")]
    pub max_workers: Option<u32>,
    /// Elastic: restarts torchrun allows the group (elasticPolicy.maxRestarts).
    #[arg(long, requires = "min_workers")]
    pub max_restarts: Option<i32>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `ferry submit tfjob`.
#[derive(Debug, Args)]
pub struct TfArgs {
    /// Workers.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Parameter servers (no GPUs).
    #[arg(long, default_value_t = 0)]
    pub ps: u32,
    /// Add a Chief (the job succeeds when it does).
    #[arg(long)]
    pub chief: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `ferry submit mpijob`.
#[derive(Debug, Args)]
pub struct MpiArgs {
    /// Workers (each gets --gpus); the launcher runs the command.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ferry submit`: check, render, create, and say what to run next.
pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let (job_type, common, job) = match args.command {
        SubmitCommand::PyTorch(a) => {
            let job = render_pytorch(&a)?;
            (JobType::PyTorch, a.common, job)
        }
        SubmitCommand::Tf(a) => {
            let job = render_tf(&a)?;
            (JobType::Tf, a.common, job)
        }
        SubmitCommand::Mpi(a) => {
            let job = render_mpi(&a)?;
            (JobType::Mpi, a.common, job)
        }
    };
    let (client, namespace) = common.cluster.connect().await?;
    let mut job = job;
    job["metadata"]["namespace"] = json!(namespace);
    check_cluster(&client, &namespace, job_type, &common, &job).await?;
    if common.dry_run {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(());
    }
    let obj: DynamicObject = serde_json::from_value(job).context("rendered job")?;
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client, &namespace, &job_type.api_resource());
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "the cluster does not serve {}s (kubeflow.org/v1): `ferry up` installs the Kubeflow CRDs",
            job_type.name()
        ),
        Err(kube::Error::Api(e)) => bail!(
            "the API server refused the job: {} ({} {})",
            e.message,
            e.code,
            e.reason
        ),
        Err(e) => return Err(e).context("cannot create the job"),
    }
    println!("{}.kubeflow.org/{} created", job_type.name(), common.name);
    let ns = if namespace == "default" {
        String::new()
    } else {
        format!(" -n {namespace}")
    };
    println!(
        "Next: `ferry get {}{ns}` for its status, `ferry logs {}{ns} -f` for rank 0's output.",
        common.name, common.name
    );
    Ok(())
}

/// Parses `90`, `90s`, `30m`, `2h`, `1d` into seconds.
pub fn parse_duration_secs(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is no duration: write 90s, 30m, 2h, 1d or seconds"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{s:?} is no duration: write 90s, 30m, 2h, 1d or seconds"
            ));
        }
    };
    Ok(n * factor)
}

/// Whether `s` is a DNS-1035 label of at most `max` characters.
fn check_name(s: &str) -> anyhow::Result<()> {
    // `<name>-worker-<index>` must stay a DNS label (63) for the pods' host names.
    let max = 48;
    let ok = !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "invalid --name {s:?} (422 Invalid): a job name is a DNS label of at most {max} characters: lower case letters, digits and '-', starting with a letter"
        );
    }
    Ok(())
}

/// Whether `s` reads as a Kubernetes quantity (`2`, `500m`, `1.5`, `4Gi`, `1e3`).
fn check_quantity(flag: &str, s: &str) -> anyhow::Result<()> {
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let suffixes = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if number.is_empty() || number.parse::<f64>().is_err() || !suffixes.contains(&suffix) {
        bail!("invalid {flag} {s:?} (422 Invalid): write a quantity such as 2, 500m, 4Gi");
    }
    Ok(())
}

fn split_pair<'a>(
    flag: &str,
    s: &'a str,
    sep: char,
    what: &str,
) -> anyhow::Result<(&'a str, &'a str)> {
    match s.split_once(sep) {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => bail!("invalid {flag} {s:?}: write {what}"),
    }
}

/// The toleration `--toleration` describes.
fn toleration(s: &str) -> anyhow::Result<Value> {
    if s == "all" {
        return Ok(json!({"operator": "Exists"}));
    }
    let (taint, effect) = match s.rsplit_once(':') {
        Some((t, e)) => (t, Some(e)),
        None => (s, None),
    };
    if let Some(e) = effect
        && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e)
    {
        bail!(
            "invalid --toleration {s:?}: the effect is NoSchedule, PreferNoSchedule or NoExecute"
        );
    }
    let mut t = match taint.split_once('=') {
        Some((k, v)) => json!({"key": k, "operator": "Equal", "value": v}),
        None => json!({"key": taint, "operator": "Exists"}),
    };
    if t["key"].as_str().is_none_or(str::is_empty) {
        bail!("invalid --toleration {s:?}: write key=value:effect, key:effect, key or all");
    }
    if let Some(e) = effect {
        t["effect"] = json!(e);
    }
    Ok(t)
}

/// The pod template of one replica type (`gpus` per instance, `command` or none).
fn template(
    job_type: JobType,
    c: &CommonArgs,
    gpus: u32,
    command: Option<Vec<String>>,
) -> anyhow::Result<Value> {
    let mut container = json!({"name": job_type.container()});
    if let Some(image) = &c.image {
        container["image"] = json!(image);
    }
    if let Some(cmd) = command {
        container["command"] = json!(cmd);
    }
    if let Some(dir) = &c.working_dir {
        container["workingDir"] = json!(dir);
    }
    let mut env = Vec::new();
    for e in &c.env {
        let (k, v) = e
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("invalid --env {e:?}: write NAME=VALUE"))?;
        env.push(json!({"name": k, "value": v}));
    }
    if !env.is_empty() {
        container["env"] = json!(env);
    }
    let mut resources = serde_json::Map::new();
    if let Some(cpu) = &c.cpu {
        check_quantity("--cpu", cpu)?;
        resources.insert("cpu".into(), json!(cpu));
    }
    if let Some(mem) = &c.memory {
        check_quantity("--memory", mem)?;
        resources.insert("memory".into(), json!(mem));
    }
    if gpus > 0 {
        resources.insert(RESOURCE_NVIDIA_GPU.into(), json!(gpus.to_string()));
    }
    if !resources.is_empty() {
        container["resources"] = json!({"requests": resources, "limits": resources});
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, d) in c.data.iter().enumerate() {
        let (pvc, path) = split_pair("--data", d, ':', "<pvc>:<path in the container>")?;
        volumes.push(
            json!({"name": format!("data-{i}"), "persistentVolumeClaim": {"claimName": pvc}}),
        );
        mounts.push(json!({"name": format!("data-{i}"), "mountPath": path}));
    }
    for (i, d) in c.data_dir.iter().enumerate() {
        let (host, path) = split_pair("--data-dir", d, ':', "<host path>:<path in the container>")?;
        if !host.starts_with('/') {
            bail!("invalid --data-dir {d:?}: the host path must be absolute");
        }
        volumes.push(json!({"name": format!("data-dir-{i}"), "hostPath": {"path": host}}));
        mounts.push(json!({"name": format!("data-dir-{i}"), "mountPath": path}));
    }
    if !mounts.is_empty() {
        container["volumeMounts"] = json!(mounts);
    }
    let mut spec = json!({"containers": [container]});
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    let mut selector = BTreeMap::new();
    for s in &c.selector {
        let (k, v) = split_pair("--selector", s, '=', "key=value")?;
        selector.insert(k.to_string(), v.to_string());
    }
    if !selector.is_empty() {
        spec["nodeSelector"] = json!(selector);
    }
    let tolerations = c
        .toleration
        .iter()
        .map(|t| toleration(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !tolerations.is_empty() {
        spec["tolerations"] = json!(tolerations);
    }
    if let Some(p) = &c.priority {
        spec["priorityClassName"] = json!(p);
    }
    Ok(json!({"metadata": {"labels": {SUBMITTED_BY_LABEL: "ferry-cli"}}, "spec": spec}))
}

/// Label of the jobs (and their pod templates) `ferry submit` made.
pub const SUBMITTED_BY_LABEL: &str = "ferry.dev/submitted-by";

/// The user's command as a container command.
fn command(c: &CommonArgs) -> Vec<String> {
    match c.command.as_slice() {
        [one] if one.contains(char::is_whitespace) => {
            vec!["sh".into(), "-c".into(), one.clone()]
        }
        many => many.to_vec(),
    }
}

fn replica(replicas: u32, restart: &str, template: Value) -> Value {
    json!({"replicas": replicas, "restartPolicy": restart, "template": template})
}

fn run_policy(c: &CommonArgs) -> Value {
    let mut p = json!({"cleanPodPolicy": c.clean_task_policy});
    if let Some(r) = c.retry {
        p["backoffLimit"] = json!(r);
    }
    if let Some(t) = c.running_timeout {
        p["activeDeadlineSeconds"] = json!(t);
    }
    if let Some(t) = c.ttl_after_finished {
        p["ttlSecondsAfterFinished"] = json!(t);
    }
    let mut sp = serde_json::Map::new();
    if let Some(q) = &c.queue {
        sp.insert("queue".into(), json!(q));
    }
    if let Some(pc) = &c.priority {
        sp.insert("priorityClass".into(), json!(pc));
    }
    if !sp.is_empty() {
        p["schedulingPolicy"] = Value::Object(sp);
    }
    p
}

fn job(job_type: JobType, c: &CommonArgs, specs: Value) -> anyhow::Result<Value> {
    check_name(&c.name)?;
    if let Some(r) = c.retry
        && r < 0
    {
        bail!("invalid --retry {r} (422 Invalid): it counts restarts, 0 or more");
    }
    let mut spec = json!({"runPolicy": run_policy(c)});
    spec[job_type.replica_specs_field()] = specs;
    Ok(json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": job_type.kind(),
        "metadata": {"name": c.name, "labels": {SUBMITTED_BY_LABEL: "ferry-cli"}},
        "spec": spec,
    }))
}

/// The PyTorchJob of `ferry submit pytorchjob`.
pub fn render_pytorch(a: &PyTorchArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    let t = JobType::PyTorch;
    if let (Some(min), Some(max)) = (a.min_workers, a.max_workers) {
        if min == 0 || min > max {
            bail!(
                "invalid elastic range --min-workers {min} --max-workers {max} (422 Invalid): 1 <= min <= max"
            );
        }
        let workers = a.workers.unwrap_or(max);
        if workers < min || workers > max {
            bail!(
                "invalid --workers {workers} (422 Invalid): an elastic job starts with between --min-workers {min} and --max-workers {max}"
            );
        }
        let specs =
            json!({"Worker": replica(max, "OnFailure", template(t, c, c.gpus, Some(command(c)))?)});
        let mut job = job(t, c, specs)?;
        let mut elastic = json!({"minReplicas": min, "maxReplicas": max, "rdzvBackend": "c10d"});
        if let Some(r) = a.max_restarts {
            elastic["maxRestarts"] = json!(r);
        }
        job["spec"]["elasticPolicy"] = elastic;
        return Ok(job);
    }
    let workers = a.workers.unwrap_or(1);
    if workers == 0 {
        bail!("invalid --workers 0 (422 Invalid): a job has at least its master");
    }
    let mut specs =
        json!({"Master": replica(1, "Never", template(t, c, c.gpus, Some(command(c)))?)});
    if workers > 1 {
        specs["Worker"] = replica(
            workers - 1,
            "OnFailure",
            template(t, c, c.gpus, Some(command(c)))?,
        );
    }
    job(t, c, specs)
}

/// The TFJob of `ferry submit tfjob`.
pub fn render_tf(a: &TfArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    let t = JobType::Tf;
    if a.workers == 0 && !a.chief {
        bail!("invalid --workers 0 (422 Invalid): a TFJob needs a worker or --chief");
    }
    let mut specs = serde_json::Map::new();
    if a.chief {
        specs.insert(
            "Chief".into(),
            replica(1, "Never", template(t, c, c.gpus, Some(command(c)))?),
        );
    }
    if a.ps > 0 {
        specs.insert(
            "PS".into(),
            replica(a.ps, "Never", template(t, c, 0, Some(command(c)))?),
        );
    }
    if a.workers > 0 {
        specs.insert(
            "Worker".into(),
            replica(
                a.workers,
                "Never",
                template(t, c, c.gpus, Some(command(c)))?,
            ),
        );
    }
    job(t, c, Value::Object(specs))
}

/// The MPIJob of `ferry submit mpijob`.
pub fn render_mpi(a: &MpiArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    let t = JobType::Mpi;
    if a.workers == 0 {
        bail!("invalid --workers 0 (422 Invalid): mpirun needs a worker");
    }
    let worker_cmd = vec!["sleep".to_string(), "infinity".to_string()];
    let specs = json!({
        "Launcher": replica(1, "Never", template(t, c, 0, Some(command(c)))?),
        "Worker": replica(a.workers, "Never", template(t, c, c.gpus, Some(worker_cmd))?),
    });
    let mut job = job(t, c, specs)?;
    job["spec"]["slotsPerWorker"] = json!(c.gpus.max(1));
    Ok(job)
}

/// Instances of each GPU size: (GPUs per instance, instances).
fn gpu_demand(job: &Value, job_type: JobType) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    if let Some(specs) = job["spec"][job_type.replica_specs_field()].as_object() {
        for spec in specs.values() {
            let replicas = spec["replicas"].as_u64().unwrap_or(1) as u32;
            let gpus = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
                [RESOURCE_NVIDIA_GPU]
                .as_str()
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            out.push((gpus, replicas));
        }
    }
    out
}

/// Everything checked before creating: the job does not exist, the queue, priority class
/// and PVCs exist, some node can hold an instance's GPUs and the cluster the gang's, the image
/// is in its registry.
async fn check_cluster(
    client: &kube::Client,
    namespace: &str,
    job_type: JobType,
    c: &CommonArgs,
    job: &Value,
) -> anyhow::Result<()> {
    let jobs: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), namespace, &job_type.api_resource());
    match jobs.get_opt(&c.name).await {
        Ok(Some(_)) => bail!(
            "{} {:?} already exists in namespace {namespace:?} (409 AlreadyExists): pick another --name or `ferry delete {}` first",
            job_type.name(),
            c.name,
            c.name
        ),
        Ok(None) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "the cluster does not serve {}s (kubeflow.org/v1): `ferry up` installs the Kubeflow CRDs",
            job_type.name()
        ),
        Err(e) => return Err(e).context("cannot reach the cluster"),
    }
    if let Some(q) = &c.queue {
        let queues: kube::Api<Queue> = kube::Api::all(client.clone());
        if queues
            .get_opt(q)
            .await
            .context("cannot read queues")?
            .is_none()
        {
            let names: Vec<String> = queues
                .list(&Default::default())
                .await
                .map(|l| l.items.iter().map(kube::ResourceExt::name_any).collect())
                .unwrap_or_default();
            bail!(
                "queue {q:?} not found (404 NotFound); queues: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    if let Some(p) = &c.priority {
        let pcs: kube::Api<PriorityClass> = kube::Api::all(client.clone());
        if pcs
            .get_opt(p)
            .await
            .context("cannot read priority classes")?
            .is_none()
        {
            bail!(
                "priority class {p:?} not found (404 NotFound): `kubectl get priorityclasses` lists them"
            );
        }
    }
    for d in &c.data {
        let pvc = d.split_once(':').map(|(p, _)| p).unwrap_or(d);
        let pvcs: kube::Api<PersistentVolumeClaim> =
            kube::Api::namespaced(client.clone(), namespace);
        if pvcs
            .get_opt(pvc)
            .await
            .context("cannot read PVCs")?
            .is_none()
        {
            bail!(
                "--data: PersistentVolumeClaim {pvc:?} not found in namespace {namespace:?} (404 NotFound)"
            );
        }
    }
    let demand = gpu_demand(job, job_type);
    let wanted: u32 = demand.iter().map(|(g, n)| g * n).sum();
    if wanted > 0 {
        let nodes: kube::Api<Node> = kube::Api::all(client.clone());
        let nodes = nodes
            .list(&Default::default())
            .await
            .context("cannot list nodes")?;
        let gpus_of = |n: &Node| -> u32 {
            n.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(RESOURCE_NVIDIA_GPU))
                .and_then(|q| q.0.parse().ok())
                .unwrap_or(0)
        };
        let (biggest, biggest_node) = nodes
            .items
            .iter()
            .map(|n| (gpus_of(n), kube::ResourceExt::name_any(n)))
            .max()
            .unwrap_or((0, "none".into()));
        let per_instance = demand.iter().map(|(g, _)| *g).max().unwrap_or(0);
        if per_instance > biggest {
            bail!(
                "--gpus {per_instance}: no node has {per_instance} GPUs (the most on one node is {biggest}, on {biggest_node}); nothing was created"
            );
        }
        // Each node holds whole instances: count how many fit, biggest instances first.
        let mut free: Vec<u32> = nodes.items.iter().map(gpus_of).collect();
        let mut sizes: Vec<u32> = demand
            .iter()
            .flat_map(|(g, n)| std::iter::repeat_n(*g, *n as usize))
            .filter(|g| *g > 0)
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        for size in sizes {
            match free.iter_mut().filter(|f| **f >= size).min_by_key(|f| **f) {
                Some(f) => *f -= size,
                None => {
                    let total: u32 = nodes.items.iter().map(gpus_of).sum();
                    bail!(
                        "the job needs {wanted} GPUs at once ({per_instance} per instance) but the cluster's nodes can hold fewer of its instances (it has {total} GPUs on {} nodes); nothing was created",
                        nodes.items.len()
                    );
                }
            }
        }
    }
    if let Some(image) = &c.image {
        check_image(image).await?;
    }
    Ok(())
}

/// A parsed image reference: registry host, repository, tag or digest.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, `docker.io` when the reference names none.
    pub registry: String,
    /// `library/ubuntu`.
    pub repository: String,
    /// Tag or `sha256:...` digest.
    pub reference: String,
}

/// Parses an image reference as containerd does (`ubuntu`, `host:5000/a/b:tag`, `a@sha256:..`).
pub fn parse_image(image: &str) -> anyhow::Result<ImageRef> {
    let bad = || {
        anyhow::anyhow!(
            "invalid --image {image:?} (422 Invalid): write [registry/]repository[:tag|@digest]"
        )
    };
    let (rest, reference) = if let Some((r, d)) = image.split_once('@') {
        (r, d.to_string())
    } else {
        match image.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t.to_string()),
            _ => (image, "latest".to_string()),
        }
    };
    let (registry, repository) = match rest.split_once('/') {
        Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => {
            (h.to_string(), r.to_string())
        }
        _ if rest.contains('/') => ("docker.io".to_string(), rest.to_string()),
        _ => ("docker.io".to_string(), format!("library/{rest}")),
    };
    let repo_ok = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    if !repo_ok || reference.is_empty() || reference.contains('/') {
        return Err(bad());
    }
    Ok(ImageRef {
        registry,
        repository,
        reference,
    })
}

/// Asks the image's registry for its manifest when the registry speaks plain HTTP on this
/// network (a local registry or mirror); other registries are reported as not checked.
async fn check_image(image: &str) -> anyhow::Result<()> {
    let r = parse_image(image)?;
    let local = r.registry.starts_with("localhost")
        || r.registry.starts_with("127.")
        || r.registry.contains(':');
    if !local {
        eprintln!(
            "note: image {image} is not checked (its registry {} is not a plain-HTTP one)",
            r.registry
        );
        return Ok(());
    }
    let path = format!("/v2/{}/manifests/{}", r.repository, r.reference);
    let host = r.registry.clone();
    let status = tokio::task::spawn_blocking(move || http_head(&host, &path))
        .await
        .context("image check")?;
    match status {
        Ok(200) => Ok(()),
        Ok(404) => bail!(
            "image {image} not found in registry {} (404 NotFound: no manifest {}); nothing was created",
            r.registry,
            r.reference
        ),
        Ok(401) | Ok(403) => {
            eprintln!(
                "note: registry {} needs credentials; image {image} not checked",
                r.registry
            );
            Ok(())
        }
        Ok(code) => bail!(
            "registry {} answered {code} for image {image}; nothing was created",
            r.registry
        ),
        Err(e) => bail!(
            "cannot reach registry {} for image {image}: {e}; nothing was created",
            r.registry
        ),
    }
}

/// The status code of `HEAD path` on a plain-HTTP server.
fn http_head(host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "HEAD {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("30m"), Ok(1800));
        assert_eq!(parse_duration_secs("2h"), Ok(7200));
        assert_eq!(parse_duration_secs("1d"), Ok(86400));
        assert!(parse_duration_secs("1w").is_err());
        assert!(parse_duration_secs("m").is_err());
    }

    #[test]
    fn images() {
        let r = parse_image("ubuntu").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("docker.io", "library/ubuntu", "latest")
        );
        let r = parse_image("127.0.0.1:5000/kubeflow/pytorch-dist-mnist:v1").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "kubeflow/pytorch-dist-mnist", "v1")
        );
        let r = parse_image("kubeflow/x@sha256:abc").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.reference.as_str()),
            ("docker.io", "sha256:abc")
        );
        assert!(parse_image("Ubuntu:1").is_err());
        assert!(parse_image("a//b").is_err());
    }

    #[test]
    fn tolerations() {
        assert_eq!(toleration("all").unwrap(), json!({"operator": "Exists"}));
        assert_eq!(
            toleration("gpu=true:NoSchedule").unwrap(),
            json!({"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"})
        );
        assert_eq!(
            toleration("gpu:NoExecute").unwrap(),
            json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"})
        );
        assert!(toleration("gpu:Sometimes").is_err());
    }

    #[test]
    fn quantities() {
        for ok in ["2", "500m", "1.5", "4Gi", "512Mi"] {
            check_quantity("--cpu", ok).unwrap();
        }
        for bad in ["", "two", "4GB", "1.2.3x"] {
            assert!(check_quantity("--memory", bad).is_err(), "{bad}");
        }
    }
}
