//! Dev tool: where the unallocated GPU is when the arrived workload reaches 100 % of capacity.
//!
//! `cargo run --release -p ferry-sim --example stranded -- [trace] [policy] [online] [seeds]`
//! replays the spec's procedure and, at the first pod with arrived ≥ capacity, classifies
//! every idle thousandth of a GPU: left on a partly used card (by the card's free amount),
//! or on an untouched card (by the node's CPU left); and lists the failed pods by class.

use std::collections::BTreeMap;

use ferry_sched_core::engine::Scheduler;
use ferry_sched_core::framework::NodeRanks;
use ferry_sched_core::model::GPU_MILLI;
use ferry_sim::cli::parse_seeds;
use ferry_sim::experiment::{Info, PolicySetting, PreparedTrace, arrival_order, knowledge_for};
use ferry_sim::trace;

fn class_of(p: &ferry_sched_core::PodRequest) -> String {
    if !p.gpu.is_gpu() {
        "cpu-only".into()
    } else if p.gpu.is_shared() {
        format!("share {:>3}", p.gpu.milli)
    } else {
        format!("whole x{}", p.gpu.count)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trace_name = args.get(1).cloned().unwrap_or("default".into());
    let policy = args.get(2).cloned().unwrap_or("fgd".into());
    let info = match args.get(3).map(String::as_str) {
        Some("online") => Info::Online,
        _ => Info::TraceWide,
    };
    let seeds = parse_seeds(args.get(4).map_or("42..51", String::as_str)).unwrap();
    let dir = trace::find_trace_dir(None).unwrap();
    let t = trace::load_trace(&dir, &trace_name, None).unwrap();
    let prepared = PreparedTrace::new(&t).unwrap();
    let setting = PolicySetting {
        policy: policy.parse().unwrap(),
        info,
    };
    let cap = prepared.capacity_milli() as f64;
    let pct = |m: f64| 100.0 * m / cap / seeds.len() as f64;
    let mut idle: BTreeMap<String, f64> = BTreeMap::new();
    let mut failed: BTreeMap<String, (u32, f64)> = BTreeMap::new();
    let mut total_idle = 0.0;
    for &seed in &seeds {
        let (order, ranks) = arrival_order(&prepared, seed, 1.3);
        let mut cluster = prepared.cluster.clone();
        let mut scheduler = Scheduler::new(setting.policy.build(seed));
        scheduler.set_ranks(NodeRanks::from_ranks(ranks));
        scheduler.set_knowledge(knowledge_for(&prepared, setting));
        scheduler.set_explain_failures(false);
        let mut arrived = 0u64;
        for &idx in &order {
            let pod = &prepared.requests[idx as usize];
            if arrived as f64 >= cap {
                break;
            }
            arrived += pod.gpu.total_milli() as u64;
            scheduler.observe(&cluster, pod);
            if scheduler.place(&mut cluster, pod).is_err() {
                let e = failed.entry(class_of(pod)).or_default();
                e.0 += 1;
                e.1 += pod.gpu.total_milli() as f64;
            }
        }
        for (_, node) in cluster.nodes() {
            let st = &node.state;
            let model = node
                .spec
                .gpu_model
                .map_or("-", |m| prepared.cluster.models().name(m));
            let shape = format!(
                "{model}/{}/{}c",
                node.spec.gpu_count(),
                node.spec.cpu_milli / 1000
            );
            for &f in st.free() {
                if f == 0 {
                    continue;
                }
                total_idle += f as f64;
                let key = if f == GPU_MILLI {
                    let cpu = st.cpu_left / 1000;
                    let band = match cpu {
                        0..=3 => "cpu<4",
                        4..=7 => "cpu 4-7",
                        8..=11 => "cpu 8-11",
                        _ => "cpu>=12",
                    };
                    format!("whole card, node {band} ({shape})")
                } else {
                    format!("partial card, free {:>3}", f / 10 * 10)
                };
                *idle.entry(key).or_default() += f as f64;
            }
        }
    }
    println!(
        "{} {} ({}), {} seeds: unallocated at arrived = 100 %: {:.2} %",
        trace_name,
        setting.label(),
        info.label(),
        seeds.len(),
        pct(total_idle)
    );
    let mut rows: Vec<_> = idle.into_iter().collect();
    rows.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    for (k, v) in rows.iter().take(25) {
        println!("  {:6.3} pp  {k}", pct(*v));
    }
    println!("failed pods (per seed):");
    for (k, (n, d)) in failed {
        println!(
            "  {:10} {:7.1} pods {:6.3} pp",
            k,
            n as f64 / seeds.len() as f64,
            pct(d)
        );
    }
}
