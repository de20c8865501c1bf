//! Loading the Alibaba GPU trace (`openb_*` CSV files) and turning it into a cluster and
//! pod requests (spec §1).

use std::fmt;
use std::path::{Path, PathBuf};

use ferry_sched_core::frag::{TargetWorkload, WorkloadKey};
use ferry_sched_core::model::{GPU_MILLI, GpuRequest, ModelError, NodeSpec, PodRequest};
use ferry_sched_core::state::{Cluster, StateError};

/// Environment variable naming the trace folder.
pub const TRACE_DIR_ENV: &str = "FERRY_TRACE_DIR";
/// File of the simulated cluster (the GPU nodes).
pub const GPU_NODE_FILE: &str = "openb_node_list_gpu_node.csv";

/// The traces evaluated in the FGD paper (spec §1.3).
pub const PAPER_TRACES: [&str; 17] = [
    "default",
    "cpu050",
    "cpu100",
    "cpu200",
    "cpu250",
    "gpushare40",
    "gpushare60",
    "gpushare80",
    "gpushare100",
    "gpuspec10",
    "gpuspec20",
    "gpuspec25",
    "gpuspec33",
    "multigpu20",
    "multigpu30",
    "multigpu40",
    "multigpu50",
];

/// Errors while reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The CSV layer failed.
    #[error("{path}: {source}")]
    Csv {
        /// File.
        path: PathBuf,
        /// Cause.
        source: csv::Error,
    },
    /// A required column is missing.
    #[error("{path}: missing column {column:?} in the header")]
    MissingColumn {
        /// File.
        path: PathBuf,
        /// Column name.
        column: &'static str,
    },
    /// A field could not be parsed.
    #[error("{path}:{line}: column {column:?}: {message}")]
    BadField {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A trace name resolves to no file.
    #[error(
        "trace {name:?} not found: {path} does not exist (give a trace name such as default, gpushare40, multigpu20, or a path to a pod CSV)"
    )]
    UnknownTrace {
        /// The name given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The folder of the trace could not be found.
    #[error(
        "trace folder not found (looked in: {looked}); pass --trace-dir or set {TRACE_DIR_ENV}"
    )]
    NoTraceDir {
        /// Places tried.
        looked: String,
    },
    /// A file has a header but no rows.
    #[error("{path}: no {what} in the file (only a header)")]
    Empty {
        /// File.
        path: PathBuf,
        /// What the rows would be (`pods`, `nodes`).
        what: &'static str,
    },
    /// The trace gives the experiment nothing to measure.
    #[error("trace {name}: {reason}")]
    NothingToMeasure {
        /// Trace name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The model rejected the data.
    #[error("{path}: {source}")]
    Model {
        /// File.
        path: PathBuf,
        /// Cause.
        source: ModelError,
    },
    /// Building the cluster failed.
    #[error("{path}: {source}")]
    State {
        /// File.
        path: PathBuf,
        /// Cause.
        source: StateError,
    },
}

/// One node row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceNode {
    /// Node name (`sn`).
    pub name: String,
    /// CPU capacity, milli-cores.
    pub cpu_milli: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Number of GPUs.
    pub gpus: u8,
    /// GPU model (empty for none).
    pub model: String,
}

/// One pod row, converted as in the reference's converter (spec §1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracePod {
    /// Pod name.
    pub name: String,
    /// CPU request, milli-cores.
    pub cpu_milli: u64,
    /// Memory request, MiB.
    pub memory_mib: u64,
    /// Number of GPUs (0 for CPU-only pods).
    pub num_gpu: u8,
    /// Compute per GPU, thousandths (0 for CPU-only pods).
    pub gpu_milli: u16,
    /// Allowed models, `|`-joined without empty items (empty = any).
    pub gpu_spec: String,
}

impl TracePod {
    /// Total GPU demand, thousandths.
    pub fn gpu_demand(&self) -> u64 {
        self.num_gpu as u64 * self.gpu_milli as u64
    }
}

/// A loaded trace: the cluster's nodes and the pods.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Short name (e.g. `default`) or the file stem.
    pub name: String,
    /// Nodes, in file order.
    pub nodes: Vec<TraceNode>,
    /// Pods, in file order.
    pub pods: Vec<TracePod>,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} pods on {} nodes)",
            self.name,
            self.pods.len(),
            self.nodes.len()
        )
    }
}

/// Finds the trace folder: `explicit`, else `$FERRY_TRACE_DIR`, else
/// `../shared/traces/alibaba-gpu-2023` or `shared/traces/alibaba-gpu-2023` from the current
/// directory, else the same folder relative to this crate's sources.
pub fn find_trace_dir(explicit: Option<&Path>) -> Result<PathBuf, TraceError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else {
        if let Some(env) = std::env::var_os(TRACE_DIR_ENV) {
            candidates.push(PathBuf::from(env));
        }
        candidates.push(PathBuf::from("../shared/traces/alibaba-gpu-2023"));
        candidates.push(PathBuf::from("shared/traces/alibaba-gpu-2023"));
        candidates.push(default_trace_dir());
    }
    for c in &candidates {
        if c.join(GPU_NODE_FILE).is_file() {
            return Ok(c.clone());
        }
    }
    Err(TraceError::NoTraceDir {
        looked: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The trace folder as seen from this crate's sources (`../../../shared/...`).
pub fn default_trace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/alibaba-gpu-2023")
}

/// The pod file of a trace given by name (`default`, `gpushare40`, ...) or by path.
pub fn resolve_pod_file(dir: &Path, trace: &str) -> Result<(String, PathBuf), TraceError> {
    let as_path = Path::new(trace);
    if trace.ends_with(".csv") || as_path.components().count() > 1 {
        if !as_path.is_file() {
            return Err(TraceError::UnknownTrace {
                name: trace.to_string(),
                path: as_path.to_path_buf(),
            });
        }
        let stem = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| trace.to_string());
        let name = stem
            .strip_prefix("openb_pod_list_")
            .unwrap_or(&stem)
            .to_string();
        return Ok((name, as_path.to_path_buf()));
    }
    let path = dir.join(format!("openb_pod_list_{trace}.csv"));
    if !path.is_file() {
        return Err(TraceError::UnknownTrace {
            name: trace.to_string(),
            path,
        });
    }
    Ok((trace.to_string(), path))
}

/// Every pod file of the folder, by trace name, sorted.
pub fn list_traces(dir: &Path) -> Result<Vec<String>, TraceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TraceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix("openb_pod_list_")
                .and_then(|n| n.strip_suffix(".csv"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

struct Columns<'a> {
    path: &'a Path,
    headers: csv::StringRecord,
}

impl Columns<'_> {
    fn index(&self, column: &'static str) -> Result<usize, TraceError> {
        self.optional(column).ok_or(TraceError::MissingColumn {
            path: self.path.to_path_buf(),
            column,
        })
    }

    fn optional(&self, column: &str) -> Option<usize> {
        self.headers.iter().position(|h| h.trim() == column)
    }
}

fn open(path: &Path) -> Result<(csv::Reader<std::fs::File>, csv::StringRecord), TraceError> {
    let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let headers = reader
        .headers()
        .map_err(|source| TraceError::Csv {
            path: path.to_path_buf(),
            source,
        })?
        .clone();
    Ok((reader, headers))
}

fn field<'r>(
    path: &Path,
    record: &'r csv::StringRecord,
    index: usize,
    column: &'static str,
) -> Result<&'r str, TraceError> {
    record
        .get(index)
        .map(str::trim)
        .ok_or_else(|| TraceError::BadField {
            path: path.to_path_buf(),
            line: record.position().map_or(0, |p| p.line()),
            column,
            message: "missing field".into(),
        })
}

fn number<T: std::str::FromStr>(
    path: &Path,
    record: &csv::StringRecord,
    index: usize,
    column: &'static str,
) -> Result<T, TraceError> {
    let text = field(path, record, index, column)?;
    text.parse().map_err(|_| TraceError::BadField {
        path: path.to_path_buf(),
        line: record.position().map_or(0, |p| p.line()),
        column,
        message: format!("{text:?} is not a valid non-negative integer"),
    })
}

/// Reads a node list (`sn,cpu_milli,memory_mib,gpu,model`).
pub fn read_nodes(path: &Path) -> Result<Vec<TraceNode>, TraceError> {
    let (mut reader, headers) = open(path)?;
    let cols = Columns { path, headers };
    let (sn, cpu, mem, gpu) = (
        cols.index("sn")?,
        cols.index("cpu_milli")?,
        cols.index("memory_mib")?,
        cols.index("gpu")?,
    );
    let model = cols.optional("model");
    let mut nodes = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|source| TraceError::Csv {
            path: path.to_path_buf(),
            source,
        })?;
        nodes.push(TraceNode {
            name: field(path, &record, sn, "sn")?.to_string(),
            cpu_milli: number(path, &record, cpu, "cpu_milli")?,
            memory_mib: number(path, &record, mem, "memory_mib")?,
            gpus: number(path, &record, gpu, "gpu")?,
            model: model
                .and_then(|i| record.get(i))
                .unwrap_or("")
                .trim()
                .to_string(),
        });
    }
    if nodes.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
            what: "nodes",
        });
    }
    Ok(nodes)
}

/// Reads a pod list, converting each row as the reference does (spec §1.2).
pub fn read_pods(path: &Path) -> Result<Vec<TracePod>, TraceError> {
    let (mut reader, headers) = open(path)?;
    let cols = Columns { path, headers };
    let (name, cpu, mem, num, milli) = (
        cols.index("name")?,
        cols.index("cpu_milli")?,
        cols.index("memory_mib")?,
        cols.index("num_gpu")?,
        cols.index("gpu_milli")?,
    );
    let spec = cols.optional("gpu_spec");
    let mut pods = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|source| TraceError::Csv {
            path: path.to_path_buf(),
            source,
        })?;
        let num_gpu: u8 = number(path, &record, num, "num_gpu")?;
        let raw_milli: u64 = number(path, &record, milli, "gpu_milli")?;
        let (num_gpu, gpu_milli, gpu_spec) = if num_gpu == 0 || raw_milli == 0 {
            (0, 0, String::new())
        } else {
            let spec_text = spec.and_then(|i| record.get(i)).unwrap_or("");
            let joined = spec_text
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("|");
            (num_gpu, raw_milli.min(GPU_MILLI as u64) as u16, joined)
        };
        if num_gpu > 1 && gpu_milli != GPU_MILLI {
            return Err(TraceError::BadField {
                path: path.to_path_buf(),
                line: record.position().map_or(0, |p| p.line()),
                column: "gpu_milli",
                message: "a multi-GPU pod must ask for 1000 milli per GPU".into(),
            });
        }
        pods.push(TracePod {
            name: field(path, &record, name, "name")?.to_string(),
            cpu_milli: number(path, &record, cpu, "cpu_milli")?,
            memory_mib: number(path, &record, mem, "memory_mib")?,
            num_gpu,
            gpu_milli,
            gpu_spec,
        });
    }
    if pods.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
            what: "pods",
        });
    }
    Ok(pods)
}

/// Loads a trace by name or path, with the folder's GPU-node cluster (or `nodes_file`).
pub fn load_trace(dir: &Path, trace: &str, nodes_file: Option<&Path>) -> Result<Trace, TraceError> {
    let (name, pod_path) = resolve_pod_file(dir, trace)?;
    let node_path = nodes_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(GPU_NODE_FILE));
    Ok(Trace {
        name,
        nodes: read_nodes(&node_path)?,
        pods: read_pods(&pod_path)?,
    })
}

/// Builds the cluster: nodes sorted by name (node id = position in name order).
pub fn build_cluster(nodes: &[TraceNode]) -> Result<Cluster, TraceError> {
    let mut sorted: Vec<&TraceNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut cluster = Cluster::new();
    let path = PathBuf::from("<nodes>");
    for n in sorted {
        let model = if n.gpus > 0 && !n.model.is_empty() {
            Some(
                cluster
                    .intern_model(&n.model)
                    .map_err(|source| TraceError::Model {
                        path: path.clone(),
                        source,
                    })?,
            )
        } else {
            None
        };
        let spec = NodeSpec::simple(&n.name, n.cpu_milli, n.memory_mib, model, n.gpus as usize);
        cluster.add_node(spec).map_err(|source| TraceError::State {
            path: path.clone(),
            source,
        })?;
    }
    Ok(cluster)
}

/// The pod request of a trace pod (interning its model names into the cluster).
pub fn pod_request(cluster: &mut Cluster, pod: &TracePod) -> Result<PodRequest, ModelError> {
    let models = cluster.models_mut().parse_set(&pod.gpu_spec)?;
    let gpu = if pod.num_gpu == 0 {
        GpuRequest::NONE
    } else {
        GpuRequest {
            count: pod.num_gpu,
            milli: pod.gpu_milli,
            memory_mib: 0,
        }
    };
    Ok(PodRequest::new(pod.cpu_milli, pod.memory_mib, gpu, models))
}

/// The workload histogram of a pod list (CPU-only pods included; memory ignored).
pub fn workload_counts(
    cluster: &mut Cluster,
    pods: &[TracePod],
) -> Result<Vec<(WorkloadKey, u64)>, ModelError> {
    let mut counts: std::collections::HashMap<WorkloadKey, u64> = Default::default();
    for p in pods {
        let models = cluster.models_mut().parse_set(&p.gpu_spec)?;
        let key = WorkloadKey {
            cpu_milli: p.cpu_milli,
            gpu_milli: p.gpu_milli,
            gpu_count: p.num_gpu,
            models,
            models_text: p.gpu_spec.clone(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts.into_iter().collect())
}

/// The target workload of the spec (§3.2): top keys up to `threshold_pct` percent of pods.
pub fn target_workload(
    cluster: &mut Cluster,
    pods: &[TracePod],
    threshold_pct: f64,
) -> Result<TargetWorkload, ModelError> {
    Ok(TargetWorkload::from_counts(
        workload_counts(cluster, pods)?,
        threshold_pct,
    ))
}
