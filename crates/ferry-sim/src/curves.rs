//! Discretised curves per run (spec §5.2) and their aggregation over seeds (§5.3).

use std::collections::BTreeMap;

use crate::experiment::{PolicySetting, RunResult};

/// Largest arrived percentage of the curves.
pub const MAX_X: usize = 130;

/// The discretised curves of one run, indexed by arrived % (0..=130); NaN where no data.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// Unallocated GPU, % of capacity.
    pub unallocated_pct: Vec<f64>,
    /// Fragmentation amount, % of capacity.
    pub frag_amount_pct: Vec<f64>,
    /// Fragmentation rate, % of the idle GPU.
    pub frag_rate_pct: Vec<f64>,
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round_ties_even() / scale
}

/// Discretises one run: bucket by `round(arrived %)`, mean of each bucket, falling back to
/// the neighbouring buckets when a bucket is empty.
pub fn discretise(run: &RunResult) -> RunCurves {
    let cap = run.capacity_milli as f64;
    let mut buckets: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); MAX_X + 2];
    for s in &run.snapshots {
        let x = (s.arrived_milli as f64 / cap * 100.0).round_ties_even();
        if x < 0.0 || x > (MAX_X + 1) as f64 {
            continue;
        }
        let alloc = round_to(s.used_milli as f64 / cap * 100.0, 2);
        let amount = 100.0 * s.frag_milli / cap;
        buckets[x as usize].push((alloc, amount, s.frag_ratio_pct(run.capacity_milli)));
    }
    let mean = |items: &[&(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        items.iter().map(|t| f(t)).sum::<f64>() / items.len() as f64
    };
    let mut curves = RunCurves {
        unallocated_pct: vec![f64::NAN; MAX_X + 1],
        frag_amount_pct: vec![f64::NAN; MAX_X + 1],
        frag_rate_pct: vec![f64::NAN; MAX_X + 1],
    };
    for x in 0..=MAX_X {
        let mut items: Vec<&(f64, f64, f64)> = buckets[x].iter().collect();
        if items.is_empty() {
            let lo = x.saturating_sub(1);
            items = (lo..=x + 1).flat_map(|b| buckets[b].iter()).collect();
        }
        if items.is_empty() {
            continue;
        }
        curves.unallocated_pct[x] = 100.0 - mean(&items, |t| t.0);
        curves.frag_amount_pct[x] = mean(&items, |t| t.1);
        curves.frag_rate_pct[x] = mean(&items, |t| t.2);
    }
    curves
}

/// Statistics of one value over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub sd: f64,
    /// Median.
    pub median: f64,
    /// 25th percentile.
    pub p25: f64,
    /// 75th percentile.
    pub p75: f64,
    /// Number of values.
    pub n: usize,
}

/// Linear-interpolation percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Stat {
    /// Statistics of the non-NaN values, or `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stat {
            mean,
            sd,
            median: percentile(&v, 0.5),
            p25: percentile(&v, 0.25),
            p75: percentile(&v, 0.75),
            n,
        })
    }
}

/// Curves of one policy setting over its seeds.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Policy and knowledge.
    pub setting: PolicySetting,
    /// Seeds, in order.
    pub seeds: Vec<u64>,
    /// Per-seed curves, in seed order.
    pub runs: Vec<RunCurves>,
}

impl Aggregate {
    /// Statistics of a metric at arrived `x` %.
    pub fn stat(&self, x: usize, metric: fn(&RunCurves) -> &Vec<f64>) -> Option<Stat> {
        Stat::of(self.runs.iter().map(|r| metric(r)[x]))
    }

    /// Unallocated GPU % at `x`.
    pub fn unallocated(&self, x: usize) -> Option<Stat> {
        self.stat(x, |r| &r.unallocated_pct)
    }
}

/// Groups runs by policy setting (sorted by setting, seeds in order).
pub fn aggregate(results: &[RunResult]) -> Vec<Aggregate> {
    let mut by: BTreeMap<PolicySetting, Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        by.entry(r.setting).or_default().push(r);
    }
    by.into_iter()
        .map(|(setting, mut runs)| {
            runs.sort_by_key(|r| r.seed);
            Aggregate {
                setting,
                seeds: runs.iter().map(|r| r.seed).collect(),
                runs: runs.iter().map(|r| discretise(r)).collect(),
            }
        })
        .collect()
}

/// The summary table (mean ± sd of unallocated GPU % at the given arrived points), as
/// Markdown.
pub fn summary_markdown(trace: &str, aggregates: &[Aggregate], points: &[usize]) -> String {
    let mut out = format!(
        "Trace `{trace}`: unallocated GPU (% of capacity), mean ± sd over seeds, by arrived workload (% of capacity)\n\n| policy | seeds |"
    );
    for x in points {
        out.push_str(&format!(" {x}% |"));
    }
    out.push_str("\n|---|---|");
    for _ in points {
        out.push_str("---|");
    }
    out.push('\n');
    for a in aggregates {
        out.push_str(&format!("| {} | {} |", a.setting.label(), a.seeds.len()));
        for &x in points {
            match a.unallocated(x) {
                Some(s) => out.push_str(&format!(" {:.2} ± {:.2} |", s.mean, s.sd)),
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}
