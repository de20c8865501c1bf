//! Benchmark figures: single-run speed, the 6 x 10 grid, and a synthetic scale cluster.

use std::io::Write;
use std::path::Path;

/// Runs every benchmark and prints the figures.
pub fn run_benchmarks(
    _dir: &Path,
    _scale_nodes: usize,
    _scale_fill: f64,
    _repeat: usize,
    _out: &mut dyn Write,
) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
