//! Dev tool: compare Ferry policy variants on a trace (not part of the CLI).
use ferry_sched_core::engine::Knowledge;
use ferry_sched_core::framework::Policy;
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::policies::ferry::{FerryCards, FerryConfig, FerryScore};
use ferry_sim::curves::{Stat, discretise};
use ferry_sim::experiment::{Info, PolicySetting, PreparedTrace, run_with};
use ferry_sim::trace;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tr = args.get(1).cloned().unwrap_or("default".into());
    let dir = trace::find_trace_dir(None).unwrap();
    let t = trace::load_trace(&dir, &tr, None).unwrap();
    let p = PreparedTrace::new(&t).unwrap();
    let q = |quantum, cpu_only_stranding, packing, spread, fgd_bins| FerryConfig {
        quantum,
        cpu_only_stranding,
        packing,
        spread,
        fgd_bins,
    };
    let variants: Vec<(&str, FerryConfig, bool)> = vec![
        (
            "bins+strand+spread metric",
            q(1e9, true, false, true, true),
            false,
        ),
        (
            "bins+exact100+strand metric",
            q(100.0, true, false, false, true),
            false,
        ),
        (
            "bins+exact20+strand metric",
            q(20.0, true, false, false, true),
            false,
        ),
    ];
    for (name, cfg, full) in variants {
        let mut v = Vec::new();
        let start = std::time::Instant::now();
        for seed in 42..52u64 {
            let pol = Policy {
                name: "ferry".into(),
                scorer: Box::new(FerryScore { config: cfg }),
                cards: Box::new(FerryCards { config: cfg }),
            };
            let w = if full {
                p.full_workload.clone()
            } else {
                p.metric_workload.clone()
            };
            let r = run_with(
                &p,
                PolicySetting {
                    policy: PolicyKind::Ferry,
                    info: Info::TraceWide,
                },
                pol,
                Knowledge::Fixed(w),
                seed,
                1.3,
            );
            v.push(discretise(&r).unallocated_pct[100]);
        }
        let s = Stat::of(v).unwrap();
        println!(
            "{name:24} {:.2} ± {:.2}  ({:.1}s)",
            s.mean,
            s.sd,
            start.elapsed().as_secs_f64()
        );
    }
}
