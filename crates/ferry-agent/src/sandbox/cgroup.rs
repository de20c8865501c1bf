//! Pod and container cgroups (v1 and v2): limits, QoS classes, usage, OOM kills.
//!
//! The layout is the kubelet's cgroupfs driver: `<root>/<qos>/pod<uid>/<container>` in every
//! hierarchy, where `<root>` is the cluster network's nftables table name (`ferry` for
//! `ferry up`, `ferrytN` for test planes, so parallel planes never share), Guaranteed pods sit
//! directly under the root, the others under `burstable/` or `besteffort/`.
//!
//! | limit          | cgroup v1                               | cgroup v2                 |
//! |----------------|-----------------------------------------|---------------------------|
//! | memory limit   | `memory.limit_in_bytes`                 | `memory.max`              |
//! | CPU limit      | `cpu.cfs_quota_us` / `cpu.cfs_period_us` | `cpu.max`                 |
//! | CPU request    | `cpu.shares` (milli * 1024 / 1000)      | `cpu.weight` (from shares) |
//! | pids           | `pids.max`                              | `pids.max`                |
//!
//! The pod's cgroup carries the sums of its containers' limits (when every container has
//! one) and the pids limit; each container attempt gets a fresh directory with its own limits
//! ([`container_dirs`]), so its OOM-kill counter starts at zero.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SandboxContext, SandboxError};

/// The CFS period the kubelet uses (100 ms).
pub const CFS_PERIOD_US: i64 = 100_000;

/// Pids limit of a pod when the agent sets none (the kubelet's `podPidsLimit`).
pub const DEFAULT_POD_PIDS_LIMIT: i64 = 4096;

/// Minimum `cpu.shares` (the kernel's, and the kubelet's for best-effort containers).
const MIN_SHARES: i64 = 2;

/// Serializes creation and removal of shared parent directories (QoS and root).
static TREE: Mutex<()> = Mutex::new(());

/// Where the controllers live on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum Driver {
    /// cgroup v1: one hierarchy per controller (`cpu` and `cpuacct` may be the same mount).
    V1 {
        /// The `memory` hierarchy's mount point.
        memory: PathBuf,
        /// The `cpu` hierarchy's mount point.
        cpu: PathBuf,
        /// The `cpuacct` hierarchy's mount point.
        cpuacct: PathBuf,
        /// The `pids` hierarchy's mount point.
        pids: PathBuf,
    },
    /// cgroup v2: one unified hierarchy; controllers enabled through `cgroup.subtree_control`.
    V2 {
        /// The unified hierarchy's mount point.
        root: PathBuf,
    },
}

/// A cgroup's limits, as the files say them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Memory limit in bytes.
    #[serde(default)]
    pub memory_bytes: Option<i64>,
    /// CPU limit in millicores (CFS quota).
    #[serde(default)]
    pub cpu_limit_milli: Option<i64>,
    /// CPU request in millicores (shares / weight).
    #[serde(default)]
    pub cpu_request_milli: Option<i64>,
    /// Maximum number of tasks.
    #[serde(default)]
    pub pids: Option<i64>,
}

/// A pod's cgroup, as recorded in the sandbox record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCgroup {
    /// The pod's cgroup path relative to each hierarchy's root (`ferry/burstable/pod<uid>`).
    pub path: String,
    /// The hierarchy it lives in.
    #[serde(default)]
    pub driver: Option<Driver>,
    /// `Guaranteed`, `Burstable` or `BestEffort`.
    #[serde(default)]
    pub qos: String,
    /// The pod-level limits.
    #[serde(default)]
    pub pod: Limits,
    /// Each container's limits (init containers included), by name.
    #[serde(default)]
    pub containers: BTreeMap<String, Limits>,
}

/// What a cgroup has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time consumed, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory charged, in bytes (page cache included).
    pub memory_bytes: u64,
    /// The working set: usage minus inactive file pages (as cAdvisor computes it).
    pub working_set_bytes: u64,
    /// Resident anonymous memory, in bytes.
    pub rss_bytes: u64,
}

fn cg_err(what: impl std::fmt::Display, path: &Path, e: io::Error) -> SandboxError {
    SandboxError::Cgroup(format!("cannot {what} {}: {e}", path.display()))
}

impl Driver {
    /// The driver of this machine: v2 when `/sys/fs/cgroup` is the unified hierarchy, else
    /// the v1 hierarchies of memory, cpu, cpuacct and pids (found in `/proc/self/mountinfo`).
    pub fn host() -> Result<Driver, SandboxError> {
        static HOST: OnceLock<Result<Driver, String>> = OnceLock::new();
        HOST.get_or_init(|| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
            Driver::from_mountinfo(&mountinfo)
        })
        .clone()
        .map_err(SandboxError::Cgroup)
    }

    /// Picks the driver from a `mountinfo` text.
    pub fn from_mountinfo(mountinfo: &str) -> Result<Driver, String> {
        let mut v1: BTreeMap<&str, PathBuf> = BTreeMap::new();
        let mut v2: Vec<PathBuf> = Vec::new();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(mount_point), Some(fstype), Some(options)) =
                (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
            else {
                continue;
            };
            match *fstype {
                "cgroup2" => v2.push(PathBuf::from(mount_point)),
                "cgroup" => {
                    for ctrl in ["memory", "cpu", "cpuacct", "pids"] {
                        if options.split(',').any(|o| o == ctrl) {
                            v1.entry(ctrl).or_insert_with(|| PathBuf::from(mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        // A unified hierarchy that holds the memory controller wins (pure v2).
        for root in &v2 {
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                return Ok(Driver::V2 { root: root.clone() });
            }
        }
        match (
            v1.remove("memory"),
            v1.remove("cpu"),
            v1.remove("cpuacct"),
            v1.remove("pids"),
        ) {
            (Some(memory), Some(cpu), Some(cpuacct), Some(pids)) => Ok(Driver::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
            }),
            _ => Err(
                "no usable cgroup hierarchy: need cgroup v2 with the memory controller, or \
                 cgroup v1 memory, cpu, cpuacct and pids hierarchies"
                    .into(),
            ),
        }
    }

    /// `v1` or `v2`.
    pub fn version(&self) -> &'static str {
        match self {
            Driver::V1 { .. } => "v1",
            Driver::V2 { .. } => "v2",
        }
    }

    /// The distinct hierarchy roots.
    fn roots(&self) -> Vec<&Path> {
        match self {
            Driver::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
            } => {
                let mut v: Vec<&Path> = Vec::new();
                for p in [memory, cpu, cpuacct, pids] {
                    if !v.contains(&p.as_path()) {
                        v.push(p);
                    }
                }
                v
            }
            Driver::V2 { root } => vec![root],
        }
    }

    /// The directories of cgroup `rel` (one per hierarchy).
    pub fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        self.roots().into_iter().map(|r| r.join(rel)).collect()
    }

    /// Creates cgroup `rel` (and its parents) in every hierarchy; on v2 enables the memory,
    /// cpu and pids controllers for the children of each ancestor.
    fn mkdir(&self, rel: &str) -> Result<(), SandboxError> {
        match self {
            Driver::V1 { .. } => {
                for dir in self.dirs(rel) {
                    std::fs::create_dir_all(&dir).map_err(|e| cg_err("create", &dir, e))?;
                }
            }
            Driver::V2 { root } => {
                let mut dir = root.clone();
                for part in Path::new(rel).components() {
                    enable_controllers(&dir)?;
                    dir.push(part);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(cg_err("create", &dir, e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `limits` into cgroup `rel` (which exists).
    pub fn apply(&self, rel: &str, limits: &Limits) -> Result<(), SandboxError> {
        let write = |dir: &Path, file: &str, value: String| {
            let path = dir.join(file);
            std::fs::write(&path, value.as_bytes()).map_err(|e| cg_err("write", &path, e))
        };
        let shares = cpu_shares(limits.cpu_request_milli);
        let quota = limits.cpu_limit_milli.map(cfs_quota_us);
        match self {
            Driver::V1 {
                memory, cpu, pids, ..
            } => {
                let (m, c, p) = (memory.join(rel), cpu.join(rel), pids.join(rel));
                write(&c, "cpu.shares", shares.to_string())?;
                write(&c, "cpu.cfs_period_us", CFS_PERIOD_US.to_string())?;
                write(&c, "cpu.cfs_quota_us", quota.unwrap_or(-1).to_string())?;
                write(
                    &m,
                    "memory.limit_in_bytes",
                    limits.memory_bytes.unwrap_or(-1).to_string(),
                )?;
                let pids_max = limits.pids.map_or("max".to_string(), |p| p.to_string());
                write(&p, "pids.max", pids_max)?;
            }
            Driver::V2 { root } => {
                let d = root.join(rel);
                write(&d, "cpu.weight", shares_to_weight(shares).to_string())?;
                let max = quota.map_or("max".to_string(), |q| q.to_string());
                write(&d, "cpu.max", format!("{max} {CFS_PERIOD_US}"))?;
                let mem = limits.memory_bytes.map_or("max".into(), |b| b.to_string());
                write(&d, "memory.max", mem)?;
                let pids_max = limits.pids.map_or("max".to_string(), |p| p.to_string());
                write(&d, "pids.max", pids_max)?;
                // The kubelet kills a container's whole cgroup on OOM (memory.oom.group).
                if d.join("memory.oom.group").exists() {
                    write(&d, "memory.oom.group", "1".into())?;
                }
            }
        }
        Ok(())
    }

    /// Kills every process in cgroup `rel` (and its children), then removes its directories,
    /// children first. Idempotent: what does not exist is skipped.
    pub fn remove(&self, rel: &str) -> Result<(), SandboxError> {
        for dir in self.dirs(rel) {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// How many processes of cgroup `rel` the kernel's OOM killer killed.
    pub fn oom_kills(&self, rel: &str) -> u64 {
        let (path, key) = match self {
            Driver::V1 { memory, .. } => (memory.join(rel).join("memory.oom_control"), "oom_kill"),
            Driver::V2 { root } => (root.join(rel).join("memory.events"), "oom_kill"),
        };
        read_keyed(&path, key).unwrap_or(0)
    }

    /// What cgroup `rel` used so far (`None` when it does not exist).
    pub fn usage(&self, rel: &str) -> Option<Usage> {
        match self {
            Driver::V1 {
                memory, cpuacct, ..
            } => {
                let m = memory.join(rel);
                let cpu_nanos = read_u64(&cpuacct.join(rel).join("cpuacct.usage"))?;
                let memory_bytes = read_u64(&m.join("memory.usage_in_bytes")).unwrap_or(0);
                let stat = m.join("memory.stat");
                let inactive = read_keyed(&stat, "total_inactive_file").unwrap_or(0);
                let rss = read_keyed(&stat, "total_rss").unwrap_or(0);
                Some(Usage {
                    cpu_nanos,
                    memory_bytes,
                    working_set_bytes: memory_bytes.saturating_sub(inactive),
                    rss_bytes: rss,
                })
            }
            Driver::V2 { root } => {
                let d = root.join(rel);
                let cpu_nanos = read_keyed(&d.join("cpu.stat"), "usage_usec")? * 1000;
                let memory_bytes = read_u64(&d.join("memory.current")).unwrap_or(0);
                let stat = d.join("memory.stat");
                let inactive = read_keyed(&stat, "inactive_file").unwrap_or(0);
                let rss = read_keyed(&stat, "anon").unwrap_or(0);
                Some(Usage {
                    cpu_nanos,
                    memory_bytes,
                    working_set_bytes: memory_bytes.saturating_sub(inactive),
                    rss_bytes: rss,
                })
            }
        }
    }

    /// Makes the pod's cgroup with its limits (idempotent).
    pub fn create_pod(&self, cg: &PodCgroup) -> Result<(), SandboxError> {
        let _tree = TREE.lock().unwrap_or_else(|p| p.into_inner());
        // Another agent on the machine may remove an empty shared parent meanwhile: retry.
        let mut tries = 0;
        while let Err(e) = self.mkdir(&cg.path) {
            tries += 1;
            if tries == 3 {
                return Err(e);
            }
        }
        if cg.qos == "BestEffort"
            && let Some(qos) = Path::new(&cg.path).parent().and_then(Path::to_str)
        {
            // The best-effort class gets the minimum weight, as the kubelet gives it.
            self.apply(
                qos,
                &Limits {
                    cpu_request_milli: Some(0),
                    ..Limits::default()
                },
            )?;
        }
        self.apply(&cg.path, &cg.pod)
    }

    /// Makes a fresh cgroup for container `name` of the pod (removing the previous attempt's
    /// one) with the container's limits; returns its directories.
    pub fn create_container(
        &self,
        cg: &PodCgroup,
        name: &str,
    ) -> Result<Vec<PathBuf>, SandboxError> {
        let rel = format!("{}/{name}", cg.path);
        self.remove(&rel)?;
        // The pod cgroup may be gone (removed by hand): make it again.
        if self.dirs(&cg.path).iter().any(|d| !d.exists()) {
            self.create_pod(cg)?;
        }
        self.mkdir(&rel)?;
        let limits = cg.containers.get(name).cloned().unwrap_or_default();
        self.apply(&rel, &limits)?;
        Ok(self.dirs(&rel))
    }

    /// Removes the pod's cgroup, then its QoS and root directories when they are empty.
    pub fn remove_pod(&self, cg: &PodCgroup) -> Result<(), SandboxError> {
        let _tree = TREE.lock().unwrap_or_else(|p| p.into_inner());
        self.remove(&cg.path)?;
        let mut parent = Path::new(&cg.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            for dir in self.dirs(&p.to_string_lossy()) {
                // Busy (other pods) or already gone: both fine.
                let _ = std::fs::remove_dir(&dir);
            }
            parent = p.parent();
        }
        Ok(())
    }
}

/// On v2, enables memory, cpu and pids for the children of `dir` (those it offers).
fn enable_controllers(dir: &Path) -> Result<(), SandboxError> {
    let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = ["memory", "cpu", "pids"]
        .iter()
        .filter(|c| offered.split_whitespace().any(|o| o == **c))
        .filter(|c| !enabled.split_whitespace().any(|o| o == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    std::fs::write(&path, missing.join(" ")).map_err(|e| cg_err("write", &path, e))
}

/// Kills what runs in `dir` and below, then removes the directories bottom-up.
fn remove_tree(dir: &Path) -> Result<(), SandboxError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(cg_err("read", dir, e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if !pids.is_empty() {
            // cgroup.kill (v2, Linux 5.14+) kills everything at once; else one by one.
            if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
                for pid in &pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(dir = %dir.display(), error = %e, "cgroup still busy");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(cg_err("remove", dir, e)),
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`, ...).
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// `cpu.shares` of a CPU request (the kubelet's `MilliCPUToShares`).
pub fn cpu_shares(request_milli: Option<i64>) -> i64 {
    match request_milli {
        None | Some(0) => MIN_SHARES,
        Some(m) => (m * 1024 / 1000).max(MIN_SHARES),
    }
}

/// CFS quota of a CPU limit over [`CFS_PERIOD_US`] (the kubelet's `MilliCPUToQuota`, at
/// least 1 ms).
pub fn cfs_quota_us(limit_milli: i64) -> i64 {
    (limit_milli * CFS_PERIOD_US / 1000).max(1000)
}

/// `cpu.weight` (v2) of `cpu.shares` (the kubelet's `CpuSharesToCpuWeight`).
pub fn shares_to_weight(shares: i64) -> i64 {
    1 + ((shares - 2) * 9999) / 262_142
}

/// The QoS class of a pod spec, as the API server computes it (`status.qosClass`).
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in all_containers(spec) {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let rq = req.get(r).or(lim.get(r));
            let lm = lim.get(r);
            if rq.is_some() || lm.is_some() {
                any = true;
            }
            let same = match (rq.and_then(Value::as_str), lm.and_then(Value::as_str)) {
                (Some(a), Some(b)) => quantity(r, a) == quantity(r, b),
                _ => false,
            };
            if !same {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn all_containers(spec: &Value) -> impl Iterator<Item = &Value> {
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
}

/// A CPU quantity in millicores, a memory one in bytes.
fn quantity(resource: &str, q: &str) -> Option<i64> {
    if resource == "cpu" {
        ferry_api::quantity::parse_milli(q).ok()
    } else {
        ferry_api::quantity::parse_units(q).ok()
    }
}

/// The cgroup plan of a pod: QoS class, pod limits (`pids_limit` < 0: none) and each
/// container's limits.
pub fn plan(root: &str, spec: &Value, uid: &str, pids_limit: i64) -> PodCgroup {
    let qos = qos_class(spec);
    let get = |c: &Value, kind: &str, r: &str| {
        c["resources"][kind][r]
            .as_str()
            .and_then(|q| quantity(r, q))
    };
    let limits_of = |c: &Value| Limits {
        memory_bytes: get(c, "limits", "memory"),
        cpu_limit_milli: get(c, "limits", "cpu"),
        // An unset request defaults to the limit (API defaulting).
        cpu_request_milli: get(c, "requests", "cpu").or(get(c, "limits", "cpu")),
        pids: None,
    };
    let mut containers = BTreeMap::new();
    for c in all_containers(spec) {
        if let Some(name) = c["name"].as_str() {
            containers.insert(name.to_string(), limits_of(c));
        }
    }
    let app: Vec<Limits> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(limits_of)
        .collect();
    let init: Vec<Limits> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(limits_of)
        .collect();
    // The pod's figure: the sum over app containers, or the largest init container's if it is
    // larger (init containers run one at a time); none when any container is unbounded.
    let pod_figure = |f: fn(&Limits) -> Option<i64>| -> Option<i64> {
        let sum = app.iter().map(f).sum::<Option<i64>>()?;
        let init_max = init.iter().map(f).collect::<Option<Vec<i64>>>()?;
        Some(init_max.into_iter().fold(sum, i64::max))
    };
    let request_sum: i64 = app.iter().filter_map(|l| l.cpu_request_milli).sum();
    let pod = Limits {
        memory_bytes: pod_figure(|l| l.memory_bytes),
        cpu_limit_milli: pod_figure(|l| l.cpu_limit_milli),
        cpu_request_milli: (qos != "BestEffort").then_some(request_sum),
        pids: (pids_limit > 0).then_some(pids_limit),
    };
    let path = match qos {
        "Guaranteed" => format!("{root}/pod{uid}"),
        "Burstable" => format!("{root}/burstable/pod{uid}"),
        _ => format!("{root}/besteffort/pod{uid}"),
    };
    PodCgroup {
        path,
        driver: None,
        qos: qos.to_string(),
        pod,
        containers,
    }
}

/// The cgroup root of the agent's pods: the cluster network's nftables table name.
pub fn root_name(ctx: &SandboxContext) -> String {
    ctx.network.nft_table.clone()
}

/// Creates the pod's cgroup with its limits, under its QoS class.
pub fn create_pod(
    ctx: &SandboxContext,
    pod: &Pod,
    uid: &str,
) -> Result<Option<PodCgroup>, SandboxError> {
    if !crate::layout::safe_component(uid) {
        return Err(SandboxError::Cgroup(format!(
            "pod uid {uid:?} cannot name a cgroup"
        )));
    }
    let driver = Driver::host()?;
    let spec = serde_json::to_value(&pod.spec).unwrap_or(Value::Null);
    let mut cg = plan(&root_name(ctx), &spec, uid, ctx.pod_pids_limit);
    driver.create_pod(&cg)?;
    cg.driver = Some(driver);
    Ok(Some(cg))
}

/// Removes the pod's cgroup (killing what is left in it). Idempotent.
pub fn remove_pod(cgroup: &PodCgroup) -> Result<(), SandboxError> {
    match &cgroup.driver {
        Some(d) => d.remove_pod(cgroup),
        None => Ok(()),
    }
}

/// Removes the cgroup of the pod whose directory is `pod_dir`, if its sandbox record names one,
/// and forgets it in the record: for pods that reached Succeeded or Failed (nothing runs in
/// them any more, as the kubelet removes their cgroups) and for a pod being removed.
pub fn release(pod_dir: &Path) -> Result<(), SandboxError> {
    let Some(mut record) = super::load(pod_dir)? else {
        return Ok(());
    };
    if let Some(cg) = record.cgroup.take() {
        remove_pod(&cg)?;
        super::save(pod_dir, &record)?;
    }
    Ok(())
}

/// Makes a fresh cgroup (with its limits) for the next attempt of container `name` of the
/// pod, and returns its directories (one per hierarchy), which the container joins. On a
/// failure the container runs in the pod's cgroup (still bounded by the pod's limits).
pub fn container_dirs(cgroup: &PodCgroup, name: &str) -> Vec<PathBuf> {
    let Some(driver) = &cgroup.driver else {
        return Vec::new();
    };
    match driver.create_container(cgroup, name) {
        Ok(dirs) => dirs,
        Err(e) => {
            tracing::warn!(container = name, error = %e, "cannot make the container's cgroup; it runs in the pod's");
            driver.dirs(&cgroup.path)
        }
    }
}

/// The memory cgroup directory among a container's cgroup directories (for OOM detection).
pub fn oom_kills_in(dirs: &[PathBuf]) -> Option<u64> {
    dirs.iter().find_map(|d| {
        read_keyed(&d.join("memory.events"), "oom_kill")
            .or_else(|| read_keyed(&d.join("memory.oom_control"), "oom_kill"))
    })
}

/// Marks `record` `OOMKilled` (exit 137 when a signal ended it) when the kernel's OOM killer
/// killed a process of the container's cgroup since `before` (as containerd reports it).
pub fn mark_oom_kill(
    record: &mut crate::runtime::ExitRecord,
    before: Option<u64>,
    dirs: &[PathBuf],
) {
    let after = oom_kills_in(dirs);
    if record.exit_code != 0 && after.unwrap_or(0) > before.unwrap_or(0) {
        record.reason = "OOMKilled".into();
        record.message = Some(format!(
            "the container exceeded its memory limit and the kernel killed it ({} OOM kill{})",
            after.unwrap_or(0) - before.unwrap_or(0),
            if after.unwrap_or(0) - before.unwrap_or(0) == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_conversions() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(1)), 2);
        assert_eq!(cpu_shares(Some(500)), 512);
        assert_eq!(cpu_shares(Some(2000)), 2048);
        assert_eq!(cfs_quota_us(500), 50_000);
        assert_eq!(cfs_quota_us(1), 1000);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn qos_classes_follow_kubernetes() {
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let g2 = json!({"containers": [{"resources": {
            "limits": {"cpu": "1", "memory": "1Gi"},
            "requests": {"cpu": "1000m", "memory": "1024Mi"}}}]});
        assert_eq!(qos_class(&g2), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
        let b2 = json!({"containers": [
            {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}, {}]});
        assert_eq!(qos_class(&b2), "Burstable");
    }

    #[test]
    fn plan_sums_container_limits() {
        let spec = json!({
        "initContainers": [{"name": "init", "resources": {"limits": {"memory": "512Mi", "cpu": "2"}}}],
        "containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}},
            {"name": "b", "resources": {"limits": {"memory": "128Mi", "cpu": "250m"}, "requests": {"cpu": "100m"}}},
        ]});
        let cg = plan("ferryt3", &spec, "u1", 4096);
        assert_eq!(cg.qos, "Burstable");
        assert_eq!(cg.path, "ferryt3/burstable/podu1");
        assert_eq!(cg.pod.memory_bytes, Some(512 << 20));
        assert_eq!(cg.pod.cpu_limit_milli, Some(2000));
        assert_eq!(cg.pod.cpu_request_milli, Some(600));
        assert_eq!(cg.pod.pids, Some(4096));
        assert_eq!(cg.containers["b"].cpu_request_milli, Some(100));
        assert_eq!(cg.containers["a"].cpu_request_milli, Some(500));
        let unbounded = json!({"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}}, {"name": "b"}]});
        let cg = plan("ferry", &unbounded, "u2", 10);
        assert_eq!(cg.pod.memory_bytes, None);
        assert_eq!(cg.qos, "Burstable");
        let g = json!({"containers": [{"name": "a", "resources": {"limits": {"memory": "64Mi", "cpu": "1"}}}]});
        assert_eq!(plan("ferry", &g, "u3", 10).path, "ferry/podu3");
        assert_eq!(
            plan("ferry", &json!({"containers": [{"name": "a"}]}), "u4", 10).path,
            "ferry/besteffort/podu4"
        );
    }

    #[test]
    fn mountinfo_of_a_hybrid_machine_gives_v1() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
41 31 0:38 / /nonexistent/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let d = Driver::from_mountinfo(text).unwrap();
        assert_eq!(d.version(), "v1");
        assert_eq!(d.dirs("x").len(), 4);
    }

    /// The v2 code path over a directory laid out like `/sys/fs/cgroup` (v2).
    #[test]
    fn v2_writes_limits_into_a_fake_unified_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let driver = Driver::V2 { root: root.clone() };
        let spec = json!({"containers": [
            {"name": "main", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m", "memory": "32Mi"}}}]});
        let mut cg = plan("ferryfake", &spec, "abc", 1234);
        cg.driver = Some(driver.clone());
        // A real cgroupfs fills each new directory with the controller files; the fake tree
        // offers the controllers at every level by hand.
        let ensure = |rel: &str| {
            let d = root.join(rel);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        };
        ensure("ferryfake");
        ensure("ferryfake/burstable");
        driver.create_pod(&cg).unwrap();
        let read = |rel: &str, f: &str| {
            std::fs::read_to_string(root.join(rel).join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(read("", "cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(
            read("ferryfake", "cgroup.subtree_control"),
            "+memory +cpu +pids"
        );
        let pod = "ferryfake/burstable/podabc";
        assert_eq!(read(pod, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(pod, "cpu.max"), "50000 100000");
        assert_eq!(read(pod, "cpu.weight"), shares_to_weight(256).to_string());
        assert_eq!(read(pod, "pids.max"), "1234");
        std::fs::write(
            root.join(pod).join("cgroup.controllers"),
            "cpu memory pids\n",
        )
        .unwrap();
        let dirs = driver.create_container(&cg, "main").unwrap();
        assert_eq!(dirs, vec![root.join(pod).join("main")]);
        let c = format!("{pod}/main");
        assert_eq!(read(pod, "cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read(&c, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read(&c, "cpu.max"), "50000 100000");
        assert_eq!(read(&c, "cpu.weight"), "10");
        assert_eq!(read(&c, "pids.max"), "max");
        // Usage and OOM kills are read from the v2 files.
        std::fs::write(
            root.join(&c).join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\n",
        )
        .unwrap();
        std::fs::write(root.join(&c).join("memory.current"), "1000000\n").unwrap();
        std::fs::write(
            root.join(&c).join("memory.stat"),
            "anon 600000\ninactive_file 300000\n",
        )
        .unwrap();
        std::fs::write(root.join(&c).join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        let u = driver.usage(&c).unwrap();
        assert_eq!(u.cpu_nanos, 1_500_000);
        assert_eq!(u.working_set_bytes, 700_000);
        assert_eq!(driver.oom_kills(&c), 1);
        assert_eq!(oom_kills_in(&dirs), Some(1));
    }
}
