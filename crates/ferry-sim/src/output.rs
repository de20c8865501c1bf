//! Writing results: per-pod snapshots, curves, summary (CSV and Markdown) and the plots.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::curves::{Aggregate, MAX_X};
use crate::experiment::{PreparedTrace, RunResult};
use crate::plot;

/// Writes one run's per-pod snapshots as CSV.
pub fn write_snapshots(
    path: &Path,
    prepared: &PreparedTrace,
    run: &RunResult,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(fs::File::create(path)?);
    writeln!(
        w,
        "step,pod,cpu_milli,num_gpu,gpu_milli,node,arrived_gpu_milli,used_gpu_milli,frag_gpu_milli,frag_ratio_pct,used_nodes,used_gpus"
    )?;
    for (step, s) in run.snapshots.iter().enumerate() {
        let pod = &prepared.requests[s.pod as usize];
        let node = s
            .node
            .map_or("", |id| prepared.node_names[id as usize].as_str());
        writeln!(
            w,
            "{step},{},{},{},{},{node},{},{},{:.3},{:.4},{},{}",
            prepared.pod_names[s.pod as usize],
            pod.cpu_milli,
            pod.gpu.count,
            pod.gpu.milli,
            s.arrived_milli,
            s.used_milli,
            s.frag_milli,
            s.frag_ratio_pct(run.capacity_milli),
            s.used_nodes,
            s.used_gpus
        )?;
    }
    w.flush()
}

/// Writes the discretised curves of every run, long format.
pub fn write_curves(path: &Path, trace: &str, aggregates: &[Aggregate]) -> std::io::Result<()> {
    let mut w = BufWriter::new(fs::File::create(path)?);
    writeln!(
        w,
        "trace,policy,seed,arrived_pct,unallocated_gpu_pct,frag_amount_pct,frag_rate_pct"
    )?;
    for a in aggregates {
        for (seed, c) in a.seeds.iter().zip(&a.runs) {
            for x in 0..=MAX_X {
                if c.unallocated_pct[x].is_nan() {
                    continue;
                }
                writeln!(
                    w,
                    "{trace},{},{seed},{x},{:.4},{:.4},{:.4}",
                    a.setting.label(),
                    c.unallocated_pct[x],
                    c.frag_amount_pct[x],
                    c.frag_rate_pct[x]
                )?;
            }
        }
    }
    w.flush()
}

/// Writes the summary as CSV (mean, sd, median per policy and point).
pub fn write_summary_csv(
    path: &Path,
    trace: &str,
    aggregates: &[Aggregate],
    points: &[usize],
) -> std::io::Result<()> {
    let mut w = BufWriter::new(fs::File::create(path)?);
    writeln!(
        w,
        "trace,policy,seeds,arrived_pct,unalloc_mean,unalloc_sd,unalloc_median,frag_amount_mean,frag_rate_mean"
    )?;
    for a in aggregates {
        for &x in points {
            if let Some(s) = a.unallocated(x) {
                let fa = a
                    .stat(x, |r| &r.frag_amount_pct)
                    .map_or(f64::NAN, |s| s.mean);
                let fr = a.stat(x, |r| &r.frag_rate_pct).map_or(f64::NAN, |s| s.mean);
                writeln!(
                    w,
                    "{trace},{},{},{x},{:.4},{:.4},{:.4},{:.4},{:.4}",
                    a.setting.label(),
                    a.seeds.len(),
                    s.mean,
                    s.sd,
                    s.median,
                    fa,
                    fr
                )?;
            }
        }
    }
    w.flush()
}

/// Writes the two plots (unallocated GPU and fragmentation vs arrived).
pub fn write_plots(dir: &Path, trace: &str, aggregates: &[Aggregate]) -> std::io::Result<()> {
    fs::write(
        dir.join("unallocated.svg"),
        plot::unallocated_svg(trace, aggregates),
    )?;
    fs::write(
        dir.join("fragmentation.svg"),
        plot::fragmentation_svg(trace, aggregates),
    )
}
