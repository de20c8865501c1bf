//! Usage accounting: the kubelet's Summary API (`GET /stats/summary`) on the log server.
//!
//! Pods and containers are read from their cgroups (see [`crate::sandbox::cgroup`]), found
//! through the pods' sandbox records on disk; the node from `/proc/stat` and `/proc/meminfo`.
//! `usageNanoCores` is the rate between two samples of the CPU time: the one taken now and the
//! last one at least [`MIN_WINDOW`] older (the first request takes two samples itself).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use ferry_api::stats::{
    ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary,
};
use jiff::Timestamp;
use serde_json::Value;

use crate::layout::Layout;
use crate::logserver::LogServerState;
use crate::runtime::read_json;
use crate::sandbox::cgroup::{PodCgroup, Usage};

/// The shortest time between the two samples a CPU rate is computed from.
pub const MIN_WINDOW: Duration = Duration::from_millis(500);

/// The last CPU sample of each cgroup (and of the node): when, and the CPU time then.
static SAMPLES: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

/// `GET /stats/summary`.
pub async fn summary(State(state): State<LogServerState>) -> Json<Summary> {
    let layout = state.layout.clone();
    let node = state.node_name.clone();
    let summary = tokio::task::spawn_blocking(move || collect(&layout, &node))
        .await
        .unwrap_or_default();
    Json(summary)
}

/// One sample of everything, CPU rates included.
pub fn collect(layout: &Layout, node_name: &str) -> Summary {
    let mut first = sample(layout);
    let needs_second = {
        let guard = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
        let known = guard.as_ref();
        first.keys().any(|k| {
            known
                .and_then(|m| m.get(k))
                .is_none_or(|(t, _)| t.elapsed() < MIN_WINDOW)
        })
    };
    if needs_second {
        remember(&first, false);
        std::thread::sleep(MIN_WINDOW);
        first = sample(layout);
    }
    let rates = remember(&first, true);
    build(layout, node_name, &first, &rates)
}

/// Everything this node accounts for, keyed by `node` or the cgroup path.
type Sample = HashMap<String, Reading>;

#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    time: String,
    usage: Usage,
    /// The node's available memory (node only).
    available: Option<u64>,
}

fn sample(layout: &Layout) -> Sample {
    let mut out = Sample::new();
    let time = Timestamp::now().to_string();
    if let Some((usage, available)) = node_usage() {
        out.insert(
            "node".into(),
            Reading {
                at: Instant::now(),
                time: time.clone(),
                usage,
                available: Some(available),
            },
        );
    }
    for (_, _, cg) in pods(layout) {
        let Some(driver) = &cg.driver else { continue };
        if let Some(u) = driver.usage(&cg.path) {
            out.insert(
                cg.path.clone(),
                Reading {
                    at: Instant::now(),
                    time: time.clone(),
                    usage: u,
                    available: None,
                },
            );
        }
        for name in cg.containers.keys() {
            let rel = format!("{}/{name}", cg.path);
            let running = driver.dirs(&rel).first().is_some_and(|d| {
                std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
            });
            if running && let Some(u) = driver.usage(&rel) {
                out.insert(
                    rel,
                    Reading {
                        at: Instant::now(),
                        time: time.clone(),
                        usage: u,
                        available: None,
                    },
                );
            }
        }
    }
    out
}

/// Stores the sample as the base of the next rates (only where the stored one is at least
/// [`MIN_WINDOW`] old, so quick successive requests keep a usable base); returns the rates
/// (nanocores) against the previous base when `rates`.
fn remember(sample: &Sample, rates: bool) -> HashMap<String, u64> {
    let mut guard = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    let mut out = HashMap::new();
    for (key, r) in sample {
        match map.get(key) {
            Some((t, cpu)) if r.at > *t => {
                let dt = r.at.duration_since(*t);
                if rates && dt >= MIN_WINDOW / 2 {
                    let used = r.usage.cpu_nanos.saturating_sub(*cpu) as f64;
                    out.insert(key.clone(), (used / dt.as_secs_f64()) as u64);
                }
                if dt >= MIN_WINDOW {
                    map.insert(key.clone(), (r.at, r.usage.cpu_nanos));
                }
            }
            _ => {
                map.insert(key.clone(), (r.at, r.usage.cpu_nanos));
            }
        }
    }
    // Forget cgroups that are gone.
    map.retain(|k, _| sample.contains_key(k));
    out
}

fn cpu(r: &Reading, rates: &HashMap<String, u64>, key: &str) -> CpuStats {
    CpuStats {
        time: r.time.clone(),
        usage_nano_cores: rates.get(key).copied(),
        usage_core_nano_seconds: Some(r.usage.cpu_nanos),
    }
}

fn memory(r: &Reading, limit: Option<i64>) -> MemoryStats {
    let available = r.available.or_else(|| {
        limit
            .and_then(|l| u64::try_from(l).ok())
            .map(|l| l.saturating_sub(r.usage.working_set_bytes))
    });
    MemoryStats {
        time: r.time.clone(),
        available_bytes: available,
        usage_bytes: Some(r.usage.memory_bytes),
        working_set_bytes: Some(r.usage.working_set_bytes),
        rss_bytes: Some(r.usage.rss_bytes),
    }
}

fn build(layout: &Layout, node_name: &str, s: &Sample, rates: &HashMap<String, u64>) -> Summary {
    let node = s.get("node");
    let mut summary = Summary {
        node: NodeStats {
            node_name: node_name.to_string(),
            start_time: None,
            cpu: node.map(|r| cpu(r, rates, "node")),
            memory: node.map(|r| memory(r, None)),
        },
        pods: Vec::new(),
    };
    for (meta, reference, cg) in pods(layout) {
        let Some(r) = s.get(&cg.path) else { continue };
        let containers = cg
            .containers
            .iter()
            .filter_map(|(name, limits)| {
                let key = format!("{}/{name}", cg.path);
                let r = s.get(&key)?;
                Some(ContainerStats {
                    name: name.clone(),
                    start_time: None,
                    cpu: Some(cpu(r, rates, &key)),
                    memory: Some(memory(r, limits.memory_bytes)),
                })
            })
            .collect();
        summary.pods.push(PodStats {
            pod_ref: reference,
            start_time: meta["acceptedAt"].as_str().map(str::to_string),
            containers,
            cpu: Some(cpu(r, rates, &cg.path)),
            memory: Some(memory(r, cg.pod.memory_bytes)),
        });
    }
    summary
}

/// The pods of this node that have a cgroup: their `pod.json`, reference and cgroup.
fn pods(layout: &Layout) -> Vec<(Value, PodReference, PodCgroup)> {
    let mut out = Vec::new();
    for uid in layout.pod_uids() {
        let dir = layout.pod(&uid);
        let Ok(Some(record)) = crate::sandbox::load(&dir) else {
            continue;
        };
        let Some(cg) = record.cgroup else { continue };
        let meta: Value = read_json(&layout.pod_meta(&uid))
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let reference = PodReference {
            name: meta["name"].as_str().unwrap_or_default().to_string(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_string(),
            uid: uid.clone(),
        };
        if reference.name.is_empty() {
            continue;
        }
        out.push((meta, reference, cg));
    }
    out
}

/// The node's CPU time (from `/proc/stat`) and memory (from `/proc/meminfo`), with the
/// available memory.
fn node_usage() -> Option<(Usage, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(parse_node(&stat, &meminfo, clock_ticks()))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Node usage from the texts of `/proc/stat` and `/proc/meminfo`.
fn parse_node(stat: &str, meminfo: &str, ticks: u64) -> (Usage, u64) {
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is in user).
    let jiffies: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| jiffies.get(*i))
        .sum();
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .unwrap_or(0)
            * 1024
    };
    let usage = kib("MemTotal").saturating_sub(kib("MemFree"));
    let usage = Usage {
        cpu_nanos: busy * (1_000_000_000 / ticks.max(1)),
        memory_bytes: usage,
        working_set_bytes: usage.saturating_sub(kib("Inactive(file)")),
        rss_bytes: kib("AnonPages"),
    };
    (usage, kib("MemAvailable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_usage_from_proc_files() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\nAnonPages:       100 kB\n";
        let (u, available) = parse_node(stat, meminfo, 100);
        assert_eq!(u.cpu_nanos, 161 * 10_000_000);
        assert_eq!(u.memory_bytes, 800 * 1024);
        assert_eq!(u.working_set_bytes, 500 * 1024);
        assert_eq!(available, 600 * 1024);
    }
}
