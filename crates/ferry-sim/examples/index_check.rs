//! Dev tool: first decision where the score index and the node scan disagree.
use ferry_sched_core::engine::{Knowledge, Scheduler};
use ferry_sched_core::framework::NodeRanks;
use ferry_sched_core::policies::PolicyKind;
use ferry_sim::experiment::{PreparedTrace, arrival_order};
use ferry_sim::trace;

fn main() {
    let dir = trace::find_trace_dir(None).unwrap();
    let p = PreparedTrace::new(&trace::load_trace(&dir, "default", None).unwrap()).unwrap();
    let (order, ranks) = arrival_order(&p, 42, 1.3);
    let kind: PolicyKind = std::env::args()
        .nth(1)
        .map_or("fgd".into(), |s| s)
        .parse()
        .unwrap();
    let mk = |index| {
        let mut s = Scheduler::new(kind.build(42));
        s.set_score_index(index);
        s.set_ranks(NodeRanks::from_ranks(ranks.clone()));
        if std::env::args().nth(2).as_deref() == Some("online") {
            s.set_knowledge(Knowledge::Online(ferry_sched_core::OnlineWorkload::new(
                95.0,
            )));
        } else {
            s.set_knowledge(Knowledge::Fixed(p.metric_workload.clone()));
        }
        s.set_explain_failures(false);
        s
    };
    let (mut a, mut b) = (mk(false), mk(true));
    let mut cluster = p.cluster.clone();
    for (i, &idx) in order.iter().enumerate() {
        let pod = &p.requests[idx as usize];
        a.observe(&cluster, pod);
        b.observe(&cluster, pod);
        let da = a.decide(&cluster, pod);
        let db = b.decide(&cluster, pod);
        let key =
            |d: &Result<ferry_sched_core::Decision, _>| d.as_ref().ok().map(|d| (d.node, d.cards));
        if key(&da) != key(&db) {
            println!("pod {i} {pod:?}\nscan  {da:?}\nindex {db:?}");
            let chain = ferry_sched_core::plugins::Filter::default_chain();
            let n = cluster
                .nodes()
                .filter(|(_, node)| chain.iter().all(|f| f.filter(node, pod).is_ok()))
                .count();
            let n2 = cluster
                .nodes()
                .filter(|(_, node)| {
                    node.state.cpu_left >= pod.cpu_milli
                        && node.state.memory_left >= pod.memory_mib
                        && node.state.free().iter().any(|&f| f >= pod.gpu.milli)
                })
                .count();
            println!("filter chain: {n} feasible; plain: {n2}");
            return;
        }
        if let Ok(d) = da {
            cluster.bind(d.node, pod, d.cards).unwrap();
        }
    }
    println!("identical");
}
