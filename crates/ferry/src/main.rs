//! The `ferry` command: one binary for every Ferry component.

use clap::{Parser, Subcommand};

use ferry::commands;

/// Ferry: run training and inference on shared GPUs, on Kubernetes or on one machine.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the agent's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Start Ferry on this machine: API server, scheduler, controllers and a node agent in one
    /// process (the embedded control plane).
    Up(commands::UpArgs),
    /// Run only the node agent: register this machine as a Node and run its pods.
    Agent(ferry_agent::cli::AgentArgs),
    /// Run only the scheduler, against any Kubernetes API server (binds pods whose
    /// schedulerName is Ferry's).
    Scheduler(commands::SchedulerArgs),
    /// Run only the built-in controllers (workloads, storage, disruption budgets, garbage
    /// collection, namespaces, quotas...), against any Kubernetes API server.
    #[command(name = "controller-manager", visible_alias = "controllers")]
    Controllers(commands::ControllersArgs),
    /// Run only the Service proxy: this node's Service rules in one nftables table.
    Proxy(commands::ProxyArgs),
    /// The per-container supervisor the node agent starts (internal).
    #[command(name = "agent-shim", hide = true)]
    AgentShim(ferry_agent::shim::ShimArgs),
    /// Run only Ferry's Kubernetes-compatible API server (its controllers run apart: `ferry
    /// controllers`).
    Apiserver(commands::ApiserverArgs),
    /// Check or recover the store of a data directory (while no Ferry runs on it).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Measure Ferry's own speed (each figure beside a baseline from the same run).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run only the cluster DNS (Kubernetes' Service and pod names), against any Kubernetes
    /// API server.
    Dns(commands::DnsArgs),
    /// Add, list or remove tenants: a namespace with a GPU quota, a queue, a Pod Security
    /// level and admin rights for a user (with a kubeconfig) or group.
    Tenant(ferry::tenant::TenantArgs),
    /// Replay a GPU-cluster trace under a placement policy (the FGD experiment).
    Sim(ferry_sim::cli::SimArgs),
    /// Submit a distributed training job (PyTorch, TensorFlow or MPI) in one command line.
    #[command(after_help = ferry::cli::SUBMIT_HELP)]
    Submit(ferry::cli::submit::SubmitArgs),
    /// List training jobs: status, duration, GPUs requested and allocated, nodes.
    #[command(visible_alias = "ls")]
    List(ferry::cli::view::ListArgs),
    /// Show one training job: its instances, nodes, GPUs, and why it waits (`-e`: events).
    Get(ferry::cli::view::GetArgs),
    /// Print the output of a job's instance (rank 0 by default; `-f` follows it).
    Logs(ferry::cli::logs::LogsArgs),
    /// Delete training jobs (with their pods, Services and PodGroup).
    Delete(ferry::cli::DeleteArgs),
    /// GPUs in use: per node and card (`top node`), per job and instance (`top job`).
    Top(ferry::cli::top::TopArgs),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Verify every revision (checksums, SQLite's structure, no acknowledged write missing)
    /// and print the last good one; exits non-zero on damage. Changes nothing.
    Check(commands::StoreArgs),
    /// Keep every revision up to the last good one, move the damaged files aside as a backup,
    /// and report how many revisions were dropped.
    Recover(commands::StoreArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The embedded control plane: durable create throughput, watch latency, submit-to-running.
    Api(ferry::bench::ApiBenchArgs),
    /// The live scheduler: end-to-end binding throughput of gangs through the API server, and
    /// its memory.
    Scheduler(ferry::bench_scheduler::SchedulerBenchArgs),
    /// Pod start latency with the pod sandbox beside bare host processes.
    Sandbox(ferry::bench_sandbox::SandboxBenchArgs),
    /// Service request latency through a ClusterIP beside straight to the pod IP.
    Service(ferry::bench_service::ServiceBenchArgs),
    /// The cluster DNS: Service-name lookup latency, beside a UDP echo.
    Dns(ferry::bench_dns::DnsBenchArgs),
    /// The workload controllers: Deployments reconciled to ready and an Indexed Job run to
    /// completion, beside the same pods created directly, and the controllers' memory.
    Controllers(ferry::bench_controllers::ControllersBenchArgs),
    /// The training controllers: submit-to-all-ranks-running of a PyTorchJob beside bare pods,
    /// and a crashed rank's in-place recovery beside a whole-gang restart.
    Training(ferry::bench_training::TrainingBenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The shim must start before any runtime thread exists.
        Command::AgentShim(args) => std::process::exit(ferry_agent::shim::run(args)),
        Command::Up(args) => commands::run_async(commands::up(args)),
        Command::Agent(args) => commands::run_async(commands::agent(args)),
        Command::Scheduler(args) => commands::run_async(commands::scheduler(args)),
        Command::Controllers(args) => commands::run_async(commands::controllers(args)),
        Command::Proxy(args) => commands::run_async(commands::proxy(args)),
        Command::Apiserver(args) => commands::run_async(commands::apiserver(args)),
        Command::Store(StoreCommand::Check(args)) => commands::store_check(args),
        Command::Store(StoreCommand::Recover(args)) => commands::store_recover(args),
        Command::Bench(BenchCommand::Api(args)) => commands::run_async(ferry::bench::run(args)),
        Command::Bench(BenchCommand::Service(args)) => {
            commands::run_async(ferry::bench_service::run(args))
        }
        Command::Bench(BenchCommand::Scheduler(args)) => {
            commands::run_async(ferry::bench_scheduler::run(args))
        }
        Command::Bench(BenchCommand::Sandbox(args)) => {
            commands::run_async(ferry::bench_sandbox::run(args))
        }
        Command::Bench(BenchCommand::Dns(args)) => commands::run_async(ferry::bench_dns::run(args)),
        Command::Bench(BenchCommand::Controllers(args)) => {
            commands::run_async(ferry::bench_controllers::run(args))
        }
        Command::Bench(BenchCommand::Training(args)) => {
            commands::run_async(ferry::bench_training::run(args))
        }
        Command::Dns(args) => commands::run_async(commands::dns(args)),
        Command::Tenant(args) => commands::run_async(ferry::tenant::run(args)),
        Command::Sim(args) => ferry_sim::cli::run(args),
        Command::Submit(args) => ferry::cli::run_client(ferry::cli::submit::run(args)),
        Command::List(args) => ferry::cli::run_client(ferry::cli::view::list(args)),
        Command::Get(args) => ferry::cli::run_client(ferry::cli::view::get(args)),
        Command::Logs(args) => ferry::cli::run_client(ferry::cli::logs::run(args)),
        Command::Delete(args) => ferry::cli::run_client(ferry::cli::delete(args)),
        Command::Top(args) => ferry::cli::run_client(ferry::cli::top::run(args)),
    }
}
