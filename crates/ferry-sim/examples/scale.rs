//! Dev tool: only the scale benchmark, for one policy (handy under a profiler).
//!
//! `cargo run --release -p ferry-sim --example scale -- [fgd|ferry] [nodes] [fill %]`
use ferry_sim::bench::scale_benchmark;
use ferry_sim::experiment::{Info, PolicySetting, PreparedTrace};
use ferry_sim::trace;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let policy = args.get(1).map_or("ferry", String::as_str).parse()?;
    let nodes = args.get(2).map_or(Ok(10_000), |s| s.parse())?;
    let fill = args.get(3).map_or(Ok(90.0), |s| s.parse())?;
    let dir = trace::find_trace_dir(None)?;
    let prepared = PreparedTrace::new(&trace::load_trace(&dir, "default", None)?)?;
    let setting = PolicySetting {
        policy,
        info: Info::TraceWide,
    };
    let run = scale_benchmark(&prepared, setting, nodes, fill, None)?;
    println!(
        "{policy}: {} pods in {:.2} s = {:.0} pods/s ({} failed, {:.1}% cached)",
        run.pods,
        run.seconds,
        run.pods as f64 / run.seconds,
        run.failed,
        run.cached_pct
    );
    Ok(())
}
