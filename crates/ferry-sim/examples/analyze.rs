//! Dev tool: ablation of Ferry's policy terms on a trace.
//!
//! `cargo run --release -p ferry-sim --example analyze -- [trace] [seeds] [trace|online]`
//! prints the mean ± sd unallocated GPU % at arrived = 100 % of FGD, Ferry, and Ferry with
//! each cost term switched off.
use ferry_sched_core::engine::{Knowledge, OnlineWorkload};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::policies::ferry::{FerryConfig, policy};
use ferry_sim::cli::parse_seeds;
use ferry_sim::curves::{Stat, discretise};
use ferry_sim::experiment::{Info, PolicySetting, PreparedTrace, run_with};
use ferry_sim::trace;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trace_name = args.get(1).cloned().unwrap_or("default".into());
    let seeds = parse_seeds(args.get(2).map_or("42..51", String::as_str)).unwrap();
    let info = match args.get(3).map(String::as_str) {
        Some("online") => Info::Online,
        _ => Info::TraceWide,
    };
    let dir = trace::find_trace_dir(None).unwrap();
    let t = trace::load_trace(&dir, &trace_name, None).unwrap();
    let prepared = PreparedTrace::new(&t).unwrap();
    let base = FerryConfig::default();
    let variants: Vec<(&str, Option<FerryConfig>)> = vec![
        ("fgd", None),
        ("ferry", Some(base)),
        (
            "ferry, no dead-capacity term",
            Some(FerryConfig {
                dead_weight: 0.0,
                ..base
            }),
        ),
        (
            "ferry, no CPU-stranding term",
            Some(FerryConfig {
                stranding_weight: 0.0,
                ..base
            }),
        ),
        (
            "ferry, no model-pressure term",
            Some(FerryConfig {
                pressure_weight: 0.0,
                ..base
            }),
        ),
        (
            "ferry, gaps live for any pod",
            Some(FerryConfig {
                min_live_weight: 0.0,
                ..base
            }),
        ),
    ];
    for (name, cfg) in variants {
        let start = std::time::Instant::now();
        let values: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = seeds
                .chunks(seeds.len().div_ceil(2))
                .map(|chunk| {
                    let prepared = &prepared;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&seed| {
                                let (pol, kind) = match cfg {
                                    None => (PolicyKind::Fgd.build(seed), PolicyKind::Fgd),
                                    Some(c) => (policy(c), PolicyKind::Ferry),
                                };
                                let knowledge = match info {
                                    Info::TraceWide => {
                                        Knowledge::Fixed(prepared.metric_workload.clone())
                                    }
                                    Info::Online => Knowledge::Online(OnlineWorkload::new(95.0)),
                                };
                                let setting = PolicySetting { policy: kind, info };
                                let r = run_with(prepared, setting, pol, knowledge, seed, 1.3);
                                discretise(&r).unallocated_pct[100]
                            })
                            .collect::<Vec<f64>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("run"))
                .collect()
        });
        let s = Stat::of(values).unwrap();
        println!(
            "{trace_name:12} {:6} {name:32} {:.2} ± {:.2}  ({:.1}s)",
            info.label(),
            s.mean,
            s.sd,
            start.elapsed().as_secs_f64()
        );
    }
}
