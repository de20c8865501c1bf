//! Pipeline behaviour: filters and "why not", tie-breaks, release, rollback, node updates.

use ferry_sched_core::engine::{Knowledge, ScheduleError, Scheduler};
use ferry_sched_core::framework::{FilterReason, NodeRanks};
use ferry_sched_core::model::{
    GpuRequest, ModelSet, NodeSpec, PodRequest, Taint, TaintEffect, Toleration,
};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::state::{CardSet, Cluster};

fn cluster() -> Cluster {
    let mut c = Cluster::new();
    let t4 = c.intern_model("T4").unwrap();
    let v100 = c.intern_model("V100").unwrap();
    c.add_node(NodeSpec::simple("a", 32000, 65536, Some(t4), 2))
        .unwrap();
    c.add_node(NodeSpec::simple("b", 64000, 131072, Some(v100), 4))
        .unwrap();
    c.add_node(NodeSpec::simple("c", 8000, 16384, Some(v100), 1))
        .unwrap();
    c
}

#[test]
fn why_not_counts_the_first_failing_filter_per_node() {
    let mut c = cluster();
    let v100 = c.models().get("V100").unwrap();
    let pod = PodRequest::new(16000, 1024, GpuRequest::whole(2), ModelSet::only(v100));
    let mut s = Scheduler::new(PolicyKind::BestFit.build(1));
    s.place(&mut c, &pod).unwrap();
    s.place(&mut c, &pod).unwrap();
    let err = s.decide(&c, &pod).unwrap_err();
    let ScheduleError::Unschedulable(why) = err else {
        panic!("expected unschedulable")
    };
    assert_eq!(why.nodes, 3);
    assert_eq!(
        why.reasons,
        vec![
            (FilterReason::InsufficientCpu, 1),
            (FilterReason::GpuModelMismatch, 1),
            (FilterReason::InsufficientGpu, 1)
        ]
    );
    assert_eq!(
        why.to_string(),
        "0/3 nodes are available: 1 insufficient cpu, 1 GPU model mismatch, 1 insufficient GPU"
    );
}

#[test]
fn ties_go_to_the_lowest_rank() {
    let mut c = Cluster::new();
    for name in ["n0", "n1", "n2"] {
        c.add_node(NodeSpec::simple(name, 8000, 8192, None, 0))
            .unwrap();
    }
    let pod = PodRequest::new(1000, 10, GpuRequest::NONE, ModelSet::ANY);
    let mut s = Scheduler::new(PolicyKind::GpuPacking.build(0));
    s.set_ranks(NodeRanks::from_ranks(vec![2, 0, 1]));
    assert_eq!(s.decide(&c, &pod).unwrap().node, 1);
    s.set_ranks(NodeRanks::from_ranks(vec![1, 2, 0]));
    assert_eq!(s.decide(&c, &pod).unwrap().node, 2);
}

#[test]
fn release_gives_everything_back() {
    let mut c = cluster();
    let empty: Vec<_> = c.nodes().map(|(_, n)| n.state).collect();
    let mut s = Scheduler::new(PolicyKind::Fgd.build(0));
    s.set_knowledge(Knowledge::None);
    let pods = [
        PodRequest::new(4000, 100, GpuRequest::shared(300, 0), ModelSet::ANY),
        PodRequest::new(4000, 100, GpuRequest::whole(2), ModelSet::ANY),
        PodRequest::new(1000, 100, GpuRequest::NONE, ModelSet::ANY),
    ];
    let handles: Vec<_> = pods.iter().map(|p| s.place(&mut c, p).unwrap().1).collect();
    assert_eq!(c.placed_pods(), 3);
    assert!(c.used_gpu_milli() > 0);
    for h in handles {
        c.release(h).unwrap();
    }
    assert_eq!(c.placed_pods(), 0);
    let after: Vec<_> = c.nodes().map(|(_, n)| n.state).collect();
    assert_eq!(after, empty);
    assert!(c.release(ferry_sched_core::PodHandle(0)).is_err());
}

#[test]
fn rollback_restores_state_and_invalidates_stamps() {
    let mut c = cluster();
    let pod = PodRequest::new(2000, 100, GpuRequest::shared(500, 0), ModelSet::ANY);
    let keep = c.bind(1, &pod, CardSet(1)).unwrap();
    let before: Vec<_> = c.nodes().map(|(_, n)| n.state).collect();
    let stamp = c.stamp(1);
    let cp = c.begin();
    c.bind(1, &pod, CardSet(2)).unwrap();
    c.release(keep).unwrap();
    c.add_node(NodeSpec::simple("d", 1000, 1000, None, 0))
        .unwrap();
    c.rollback(cp);
    c.commit();
    let after: Vec<_> = c.nodes().map(|(_, n)| n.state).collect();
    assert_eq!(after, before);
    assert_ne!(c.stamp(1), stamp, "a rolled-back node gets a fresh stamp");
    assert!(c.allocation(keep).is_some());
    assert_eq!(c.node_id("d"), None);
}

#[test]
fn selectors_taints_and_node_updates() {
    let mut c = cluster();
    let mut spec = c.node(1).unwrap().spec.clone();
    spec.labels.push(("pool".into(), "train".into()));
    spec.taints.push(Taint {
        key: "dedicated".into(),
        value: "ml".into(),
        effect: TaintEffect::NoSchedule,
    });
    c.update_node(1, spec).unwrap();
    let mut pod = PodRequest::new(1000, 100, GpuRequest::NONE, ModelSet::ANY);
    pod.node_selector.push(("pool".into(), "train".into()));
    let mut s = Scheduler::new(PolicyKind::BestFit.build(0));
    let err = s.decide(&c, &pod).unwrap_err().to_string();
    assert!(
        err.contains("untolerated taint") && err.contains("node selector mismatch"),
        "{err}"
    );
    pod.tolerations.push(Toleration {
        key: Some("dedicated".into()),
        value: None,
        effect: None,
    });
    assert_eq!(s.decide(&c, &pod).unwrap().node, 1);
    c.remove_node(2).unwrap();
    assert!(c.node(2).is_none());
    assert!(
        c.update_node(0, NodeSpec::simple("a", 1, 1, None, 2))
            .is_ok()
    );
    let big = PodRequest::new(2000, 10, GpuRequest::NONE, ModelSet::ANY);
    c.bind(
        0,
        &PodRequest::new(1, 1, GpuRequest::NONE, ModelSet::ANY),
        CardSet::EMPTY,
    )
    .unwrap();
    assert!(
        c.update_node(0, NodeSpec::simple("a", 0, 0, None, 2))
            .is_err()
    );
    assert!(c.bind(0, &big, CardSet::EMPTY).is_err());
}

#[test]
fn invalid_requests_are_rejected() {
    let c = cluster();
    let mut s = Scheduler::new(PolicyKind::Fgd.build(0));
    let bad = PodRequest::new(
        1,
        1,
        GpuRequest {
            count: 2,
            milli: 500,
            memory_mib: 0,
        },
        ModelSet::ANY,
    );
    assert!(matches!(
        s.decide(&c, &bad),
        Err(ScheduleError::InvalidPod(_))
    ));
}
