//! The data scientist's CLI: `ferry submit`, `list`, `get`, `logs`, `delete` and `top`,
//! shaped after kubeflow/arena (same verbs, aliases and flags where they make sense).
//!
//! A pure API client: it talks to any Kubernetes API server through a kubeconfig (by default
//! `ferry up`'s `<ferry data dir>/kubeconfig`), renders Kubeflow `kubeflow.org/v1` jobs
//! ([`submit`]) and reads them back with their pods, PodGroup, events and GPU assignments
//! ([`view`]). `-o json` prints [`view::JobInfo`] / [`top::NodeInfo`]: a documented contract
//! (`docs/cli.md`) that scripts and SDKs may parse.

pub mod logs;
pub mod submit;
pub mod top;
pub mod view;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kube::api::{ApiResource, DynamicObject};

/// How to reach the cluster (every CLI verb takes these).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig to use [default: $KUBECONFIG, else <ferry data dir>/kubeconfig when `ferry up`
    /// made one, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The data directory of `ferry up` (for its kubeconfig).
    #[arg(long = "ferry-data-dir", value_name = "DIR", env = "FERRY_DATA_DIR", default_value_os_t = crate::commands::default_data_dir())]
    pub ferry_data_dir: PathBuf,
    /// Namespace of the jobs [default: the kubeconfig context's, else `default`].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl ClusterArgs {
    /// A client and the namespace to work in.
    pub async fn connect(&self) -> anyhow::Result<(kube::Client, String)> {
        let path = self
            .kubeconfig
            .clone()
            .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
            .or_else(|| {
                let p = self.ferry_data_dir.join("kubeconfig");
                p.exists().then_some(p)
            });
        let config = match path {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .with_context(|| format!("cannot use kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer().await.context(
                "no cluster to talk to: start one with `ferry up`, or pass --kubeconfig",
            )?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("cannot build an API client")?;
        Ok((client, namespace))
    }
}

/// A training job kind the CLI knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobType {
    /// `kubeflow.org/v1` PyTorchJob.
    #[value(name = "pytorchjob", alias = "pytorch")]
    PyTorch,
    /// `kubeflow.org/v1` TFJob.
    #[value(name = "tfjob", alias = "tf")]
    Tf,
    /// `kubeflow.org/v1` MPIJob.
    #[value(name = "mpijob", alias = "mpi", alias = "mj")]
    Mpi,
}

impl JobType {
    /// Every kind, in the order `list` shows them.
    pub const ALL: [JobType; 3] = [JobType::PyTorch, JobType::Tf, JobType::Mpi];

    /// The CLI's name of the kind (`pytorchjob`), also `type` and `trainer` in JSON.
    pub fn name(self) -> &'static str {
        match self {
            JobType::PyTorch => "pytorchjob",
            JobType::Tf => "tfjob",
            JobType::Mpi => "mpijob",
        }
    }

    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            JobType::PyTorch => "PyTorchJob",
            JobType::Tf => "TFJob",
            JobType::Mpi => "MPIJob",
        }
    }

    /// The resource, for the API.
    pub fn api_resource(self) -> ApiResource {
        ApiResource {
            group: "kubeflow.org".into(),
            version: "v1".into(),
            api_version: "kubeflow.org/v1".into(),
            kind: self.kind().into(),
            plural: format!("{}s", self.kind().to_lowercase()),
        }
    }

    /// The spec field of the replica specs.
    pub fn replica_specs_field(self) -> &'static str {
        match self {
            JobType::PyTorch => "pytorchReplicaSpecs",
            JobType::Tf => "tfReplicaSpecs",
            JobType::Mpi => "mpiReplicaSpecs",
        }
    }

    /// The container that gets the framework's environment.
    pub fn container(self) -> &'static str {
        match self {
            JobType::PyTorch => "pytorch",
            JobType::Tf => "tensorflow",
            JobType::Mpi => "mpi",
        }
    }

    /// The replica type whose first instance is the chief (rank 0, the default of `logs`).
    pub fn chief_types(self) -> &'static [&'static str] {
        match self {
            JobType::PyTorch => &["master", "worker"],
            JobType::Tf => &["chief", "master", "worker"],
            JobType::Mpi => &["launcher"],
        }
    }
}

/// Output formats of `list`, `get` and `top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// A table (arena's default).
    #[default]
    Wide,
    /// JSON, the documented contract (docs/cli.md).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// Prints `value` as JSON or YAML.
pub fn print_document<T: serde::Serialize>(output: Output, value: &T) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        Output::Wide => unreachable!("tables are printed by their command"),
    }
    Ok(())
}

/// Finds job `name` among the kinds (`only` when given): its kind and object.
pub async fn find_job(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    only: Option<JobType>,
) -> anyhow::Result<(JobType, DynamicObject)> {
    let mut found = Vec::new();
    for t in JobType::ALL {
        if only.is_some_and(|o| o != t) {
            continue;
        }
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(client.clone(), namespace, &t.api_resource());
        match api.get_opt(name).await {
            Ok(Some(obj)) => found.push((t, obj)),
            Ok(None) => {}
            // A cluster without that CRD has no job of that kind.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}s", t.name())),
        }
    }
    match found.len() {
        0 => bail!(
            "no training job {name:?} in namespace {namespace:?} (404 NotFound); `ferry list` shows the jobs there"
        ),
        1 => Ok(found.pop().expect("one")),
        _ => bail!(
            "{} jobs are named {name:?} in namespace {namespace:?} ({}): choose one with -T",
            found.len(),
            found
                .iter()
                .map(|(t, _)| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Arguments of `ferry delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The jobs to delete (their pods, Services and PodGroup go with them).
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The kind, when two kinds have a job of that name.
    #[arg(short = 'T', long = "type", value_enum)]
    pub job_type: Option<JobType>,
    /// Cluster and namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `ferry delete`: deletes each job; fails (after trying them all) when one is missing.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.cluster.connect().await?;
    let mut missing = Vec::new();
    for name in &args.names {
        match find_job(&client, &namespace, name, args.job_type).await {
            Ok((t, _)) => {
                let api: kube::Api<DynamicObject> =
                    kube::Api::namespaced_with(client.clone(), &namespace, &t.api_resource());
                api.delete(name, &kube::api::DeleteParams::background())
                    .await
                    .with_context(|| format!("cannot delete {} {name:?}", t.name()))?;
                println!("{}.kubeflow.org/{name} deleted", t.name());
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                missing.push(name.clone());
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} of the jobs were not deleted: {}",
            missing.len(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs a CLI verb: errors print as `error: ...` with exit status 1 (no backtrace noise);
/// logs only at warn unless RUST_LOG says otherwise.
pub fn run_client(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Err(e) = runtime.block_on(future) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The examples under `ferry submit --help`.
pub const SUBMIT_HELP: &str = "\
Examples:
  # 4 instances (1 master + 3 workers), 1 GPU each, the command after the flags:
  ferry submit pytorch --name mnist --workers 4 --gpus 1 -- python3 train.py --epochs 3

  # Elastic: 2 to 4 workers, grown into idle GPUs, shrunk when another team needs them:
  ferry submit pytorch --name big --min-workers 2 --max-workers 4 --gpus 1 \\
      -- python3 -m torch.distributed.run train.py

  # TensorFlow with a parameter server, MPI with two workers:
  ferry submit tf --name dist --workers 2 --ps 1 -- python3 train.py
  ferry submit mpi --name ar --workers 2 -- mpirun -np 2 python3 allreduce.py

Then: `ferry get NAME` (status, instances, why it waits), `ferry logs NAME -f`,
`ferry top node` (GPUs per node and card), `ferry delete NAME`.
Nothing is created when a check fails: a queue or priority class that does not exist, more
GPUs than any node has, an image missing from its registry.";
