//! The `ferry sim` command.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ferry_sched_core::policies::PolicyKind;

use crate::curves::{aggregate, summary_markdown};
use crate::experiment::{Info, PolicySetting, PreparedTrace, check_tune};
use crate::{bench, output, runner, trace};

/// Arguments of `ferry sim`.
#[derive(Debug, Args)]
#[command(
    about = "Replay the Alibaba GPU trace under placement policies (the FGD experiment)",
    long_about = "Replay the Alibaba GPU trace (openb, 2023) under placement policies, as in the FGD \
paper (USENIX ATC'23): shuffle the pods by seed, tune the workload to 1.3x the GPU capacity, place \
pods one at a time with no departures, and report unallocated GPU and fragmentation against the \
arrived workload."
)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Run experiments and write snapshots, curves, a summary and plots.
    Run(RunArgs),
    /// Print speed and scale benchmark figures.
    Bench(BenchArgs),
    /// List the traces of the trace folder.
    Traces(TraceDirArg),
}

#[derive(Debug, Args)]
struct TraceDirArg {
    /// Folder holding the openb_*.csv files [default: $FERRY_TRACE_DIR, else
    /// ../shared/traces/alibaba-gpu-2023 or shared/traces/alibaba-gpu-2023]
    #[arg(long, value_name = "DIR")]
    trace_dir: Option<PathBuf>,
}

/// What workload knowledge FGD and Ferry get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InfoArg {
    /// The histogram of the whole trace, given up front (as in the FGD paper).
    Trace,
    /// Learned online from the pods seen so far.
    Online,
    /// Both, as separate policy settings.
    Both,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    dir: TraceDirArg,
    /// Trace(s): a name of the folder (default, cpu050, gpushare40, gpuspec10, multigpu20, ...),
    /// a path to a pod CSV, `paper` (the 17 traces of the paper) or `all` (every pod file).
    /// Repeat or separate with commas.
    #[arg(long, short, value_delimiter = ',', default_value = "default")]
    trace: Vec<String>,
    /// Node list CSV of the cluster [default: openb_node_list_gpu_node.csv of the folder]
    #[arg(long, value_name = "FILE")]
    nodes: Option<PathBuf>,
    /// Policies: random, dotprod, clustering, packing, bestfit, fgd, ferry, `baselines`
    /// (the six of the paper) or `all` (baselines and ferry). Repeat or separate with commas.
    #[arg(long, short, value_delimiter = ',', default_value = "all")]
    policy: Vec<String>,
    /// Seeds: a range `42..51` (inclusive), a list `42,43,50`, or one seed.
    #[arg(long, short, default_value = "42..51")]
    seeds: String,
    /// Workload knowledge of the workload-aware policies (fgd, ferry).
    #[arg(long, value_enum, default_value = "trace")]
    info: InfoArg,
    /// Tune the workload to this multiple of the cluster's GPU capacity.
    #[arg(long, default_value_t = 1.3)]
    tune: f64,
    /// Output folder (one subfolder per trace).
    #[arg(long, short, default_value = "sim-out")]
    out: PathBuf,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Do not write the per-pod snapshot CSVs (one per run, about 0.5 MB each).
    #[arg(long)]
    no_snapshots: bool,
    /// No per-run progress lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    dir: TraceDirArg,
    /// Nodes of the synthetic scale cluster (8 GPUs each).
    #[arg(long, default_value_t = 10_000)]
    scale_nodes: usize,
    /// Fill the scale cluster up to this percentage of its GPU capacity.
    #[arg(long, default_value_t = 90.0)]
    scale_fill: f64,
    /// Repetitions of the single-run timing (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Parses a seed set: `42..51` (inclusive), `42,43`, or `42`.
pub fn parse_seeds(text: &str) -> anyhow::Result<Vec<u64>> {
    let text = text.trim();
    if let Some((a, b)) = text.split_once("..") {
        let a: u64 = a
            .trim()
            .parse()
            .with_context(|| format!("bad seed range start in {text:?}"))?;
        let b: u64 = b
            .trim()
            .trim_start_matches('=')
            .parse()
            .with_context(|| format!("bad seed range end in {text:?}"))?;
        if b < a {
            bail!("empty seed range {text:?}");
        }
        return Ok((a..=b).collect());
    }
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("bad seed {s:?} in {text:?}"))
        })
        .collect()
}

/// Parses policy names (with `all` and `baselines`).
pub fn parse_policies(names: &[String]) -> anyhow::Result<Vec<PolicyKind>> {
    let mut out = Vec::new();
    for name in names {
        match name.trim().to_ascii_lowercase().as_str() {
            "all" => out.extend(PolicyKind::ALL),
            "baselines" => out.extend(PolicyKind::BASELINES),
            other => out.push(other.parse::<PolicyKind>()?),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn settings(policies: &[PolicyKind], info: InfoArg) -> Vec<PolicySetting> {
    let infos: &[Info] = match info {
        InfoArg::Trace => &[Info::TraceWide],
        InfoArg::Online => &[Info::Online],
        InfoArg::Both => &[Info::TraceWide, Info::Online],
    };
    let mut out = Vec::new();
    for &policy in policies {
        if policy.uses_workload() {
            out.extend(infos.iter().map(|&info| PolicySetting { policy, info }));
        } else {
            out.push(PolicySetting {
                policy,
                info: Info::TraceWide,
            });
        }
    }
    out
}

/// Runs `ferry sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Run(a) => run_experiments(a),
        SimCommand::Bench(a) => {
            let dir = trace::find_trace_dir(a.dir.trace_dir.as_deref())?;
            bench::run_benchmarks(
                &dir,
                a.scale_nodes,
                a.scale_fill,
                a.repeat,
                &mut std::io::stdout(),
            )
        }
        SimCommand::Traces(a) => {
            let dir = trace::find_trace_dir(a.trace_dir.as_deref())?;
            println!("traces in {}:", dir.display());
            for name in trace::list_traces(&dir)? {
                let paper = if trace::PAPER_TRACES.contains(&name.as_str()) {
                    " (paper)"
                } else {
                    ""
                };
                println!("  {name}{paper}");
            }
            Ok(())
        }
    }
}

fn run_experiments(a: RunArgs) -> anyhow::Result<()> {
    let dir = trace::find_trace_dir(a.dir.trace_dir.as_deref())?;
    let seeds = parse_seeds(&a.seeds)?;
    let policies = parse_policies(&a.policy)?;
    check_tune(a.tune)?;
    let mut traces = Vec::new();
    for t in &a.trace {
        match t.as_str() {
            "paper" => traces.extend(trace::PAPER_TRACES.iter().map(|s| s.to_string())),
            "all" => traces.extend(trace::list_traces(&dir)?),
            other => traces.push(other.to_string()),
        }
    }
    let settings = settings(&policies, a.info);
    let jobs = runner::jobs(&settings, &seeds);
    let stderr: Mutex<std::io::Stderr> = Mutex::new(std::io::stderr());
    for name in &traces {
        let loaded = trace::load_trace(&dir, name, a.nodes.as_deref())?;
        let prepared = PreparedTrace::new(&loaded)?;
        eprintln!(
            "trace {}: {} pods on {} nodes ({} GPUs); {} runs",
            prepared.name,
            prepared.requests.len(),
            prepared.node_names.len(),
            prepared.capacity_milli() / 1000,
            jobs.len()
        );
        let unplaceable = prepared.unplaceable_report();
        for line in &unplaceable {
            eprintln!("trace {}: {line}", prepared.name);
        }
        let progress = if a.quiet {
            None
        } else {
            Some(&stderr as &Mutex<dyn Write + Send>)
        };
        let results = runner::run_all(&prepared, &jobs, a.tune, a.threads, progress);
        let out = a.out.join(&prepared.name);
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        if !a.no_snapshots {
            let snaps = out.join("snapshots");
            std::fs::create_dir_all(&snaps)?;
            for r in &results {
                let file = snaps.join(format!("{}-seed{}.csv", r.setting.label(), r.seed));
                output::write_snapshots(&file, &prepared, r)
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
        }
        let aggregates = aggregate(&results);
        let points = [100, 110, 120, 130];
        output::write_curves(&out.join("curves.csv"), &prepared.name, &aggregates)?;
        output::write_summary_csv(
            &out.join("summary.csv"),
            &prepared.name,
            &aggregates,
            &points,
        )?;
        let mut summary = summary_markdown(&prepared.name, &aggregates, &points);
        if !unplaceable.is_empty() {
            summary
                .push_str("\nPods that no node can take (counted as failures in every run):\n\n");
            for line in &unplaceable {
                summary.push_str(&format!("- {line}\n"));
            }
        }
        std::fs::write(out.join("summary.md"), &summary)?;
        output::write_plots(&out, &prepared.name, &aggregates)?;
        println!("{summary}");
        println!("wrote {}", out.display());
    }
    Ok(())
}
