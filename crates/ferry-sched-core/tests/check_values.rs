//! The spec's check values (§9.1 from the reference's unit tests, §9.2 computed with the
//! default trace's target workload of Appendix A).

use ferry_sched_core::engine::{Knowledge, Scheduler};
use ferry_sched_core::frag::{FragCategory, TargetWorkload, TypicalPod, fgd_score};
use ferry_sched_core::framework::ScoreContext;
use ferry_sched_core::model::{GpuRequest, ModelSet, NodeSpec, PodRequest};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::policies::fgd::fgd_best;
use ferry_sched_core::state::{CardSet, Cluster};

/// The 35-entry synthetic typical-pod list of the reference's `frag_test.go`
/// (cpu milli, gpu milli, gpu count, model, percent).
const GO_TEST_PODS: [(u64, u16, u8, &str, f64); 35] = [
    (6000, 465, 1, "", 9.33),
    (8000, 440, 1, "2080", 9.15),
    (8000, 475, 1, "T4", 8.76),
    (8000, 440, 1, "P100", 8.72),
    (2000, 465, 1, "", 8.68),
    (12000, 900, 1, "", 8.65),
    (4000, 900, 1, "", 8.43),
    (16000, 678, 1, "T4", 8.36),
    (8000, 500, 1, "", 8.29),
    (6000, 511, 1, "", 8.11),
    (14000, 1000, 2, "2080", 0.54),
    (4000, 1000, 1, "2080", 0.43),
    (32000, 1000, 2, "T4", 0.43),
    (16000, 1000, 1, "V100M16", 0.40),
    (64000, 1000, 2, "", 0.40),
    (10000, 1000, 2, "", 0.40),
    (11400, 1000, 1, "T4", 0.36),
    (16000, 1000, 1, "T4", 0.36),
    (4000, 1000, 2, "", 0.36),
    (14000, 1000, 2, "V100M16", 0.36),
    (8000, 1000, 4, "", 0.36),
    (16000, 1000, 2, "", 0.32),
    (2000, 1000, 1, "T4", 0.32),
    (6000, 1000, 1, "", 0.32),
    (4000, 1000, 1, "", 0.32),
    (5000, 1000, 1, "", 0.32),
    (32000, 1000, 4, "V100M16", 0.32),
    (32000, 1000, 2, "", 0.32),
    (24000, 1000, 8, "2080", 0.32),
    (40000, 1000, 4, "", 0.29),
    (32000, 1000, 8, "", 0.29),
    (32000, 1000, 1, "T4", 0.29),
    (16000, 1000, 1, "", 0.25),
    (7000, 1000, 1, "V100M16", 0.25),
    (24000, 1000, 1, "T4", 0.25),
];

/// Appendix A: the default trace's target workload (cpu milli, gpu milli, gpu count, p).
const DEFAULT_M: [(u64, u16, u8, f64); 35] = [
    (3152, 810, 1, 0.134818),
    (11300, 1000, 1, 0.112542),
    (11400, 1000, 1, 0.077131),
    (3152, 1000, 1, 0.060520),
    (11908, 470, 1, 0.049961),
    (12500, 0, 0, 0.047129),
    (8000, 470, 1, 0.046356),
    (12000, 1000, 1, 0.041978),
    (32000, 0, 0, 0.037342),
    (18708, 1000, 1, 0.032835),
    (11908, 650, 1, 0.030518),
    (4000, 320, 1, 0.029874),
    (9810, 1000, 1, 0.025109),
    (8000, 0, 0, 0.023822),
    (8000, 1000, 1, 0.021118),
    (4000, 1000, 1, 0.020474),
    (15700, 1000, 1, 0.020345),
    (11908, 1000, 1, 0.019701),
    (16000, 1000, 1, 0.019315),
    (4000, 230, 1, 0.015710),
    (15400, 0, 0, 0.015452),
    (6000, 460, 1, 0.015452),
    (16500, 0, 0, 0.012233),
    (14200, 1000, 1, 0.011975),
    (24200, 1000, 1, 0.010816),
    (3152, 590, 1, 0.009657),
    (8000, 320, 1, 0.009271),
    (4152, 550, 1, 0.009271),
    (11900, 1000, 1, 0.007082),
    (4000, 160, 1, 0.006953),
    (4152, 370, 1, 0.005794),
    (4000, 220, 1, 0.005537),
    (8200, 1000, 1, 0.005279),
    (15200, 1000, 1, 0.004636),
    (4152, 810, 1, 0.003992),
];

fn go_test_workload(cluster: &mut Cluster) -> TargetWorkload {
    TargetWorkload::new(
        GO_TEST_PODS
            .iter()
            .map(|&(cpu, milli, count, model, pct)| TypicalPod {
                cpu_milli: cpu,
                gpu_milli: milli,
                gpu_count: count,
                models: cluster.models_mut().parse_set(model).unwrap(),
                weight: pct / 100.0,
            })
            .collect(),
    )
}

fn default_workload() -> TargetWorkload {
    TargetWorkload::new(
        DEFAULT_M
            .iter()
            .map(|&(cpu, milli, count, p)| TypicalPod {
                cpu_milli: cpu,
                gpu_milli: milli,
                gpu_count: count,
                models: ModelSet::ANY,
                weight: p,
            })
            .collect(),
    )
}

fn assert_near(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "expected {expected} ± {tolerance}, got {actual}"
    );
}

#[test]
fn reference_unit_test_fragmentation() {
    let mut cluster = Cluster::new();
    let w = go_test_workload(&mut cluster);
    let m1080 = Some(cluster.intern_model("1080").unwrap());
    assert_near(
        w.node_frag(1000, &[200, 1000, 1000, 500], m1080),
        2566.62,
        0.01,
    );
    assert_near(w.node_frag(1000, &[1000; 4], m1080), 3802.40, 0.01);
    assert_near(w.node_frag(1000, &[1000; 8], m1080), 7604.80, 0.01);

    let single = TargetWorkload::new(vec![w.pods[0].clone()]);
    let detail = single.node_frag_detail(1000, &[200, 1000, 1000, 500], m1080);
    assert_eq!(detail, vec![(FragCategory::LackCpu, 2700)]);
    assert_near(
        single.node_frag(1000, &[200, 1000, 1000, 500], m1080),
        251.91,
        0.01,
    );
}

#[test]
fn default_workload_fragmentation() {
    let w = default_workload();
    assert_near(w.total_weight(), 1.0, 1e-5);
    let g2 = None; // no model constraint in the default M: any model behaves the same
    assert_near(w.node_frag(96000, &[1000; 8], g2), 1087.8187, 0.01);
    let mut one_used = [1000u16; 8];
    one_used[0] = 190;
    assert_near(w.node_frag(96000, &one_used, g2), 1140.5202, 0.01);
    // Appendix A rounds p to 6 decimals (they sum to 0.999998): compare to 0.05 milli.
    assert_near(w.node_frag(2000, &[1000; 8], g2), 8000.0, 0.05);
    assert_near(w.node_frag(104000, &[1000; 2], g2), 271.9547, 0.01);
    assert_near(
        w.node_frag(50000, &[530, 1000, 1000, 1000], g2),
        839.9305,
        0.01,
    );
}

fn g2_node(cluster: &mut Cluster) -> u32 {
    let g2 = cluster.intern_model("G2").unwrap();
    cluster
        .add_node(NodeSpec::simple("g2", 96000, 393216, Some(g2), 8))
        .unwrap()
}

#[test]
fn fgd_scores_and_card_choices() {
    let mut cluster = Cluster::new();
    let id = g2_node(&mut cluster);
    let w = default_workload();
    let first = PodRequest::new(3152, 0, GpuRequest::shared(810, 0), ModelSet::ANY);
    let node = cluster.node(id).unwrap();
    let (score, cards) = fgd_best(&w, node, &first).unwrap();
    let before = w.node_frag(96000, &[1000; 8], None);
    let mut after = [1000u16; 8];
    after[0] = 190;
    assert_near(
        w.node_frag(96000 - 3152, &after, None) - before,
        52.7015,
        0.01,
    );
    assert_eq!(score, 48);
    assert_eq!(cards, CardSet(1), "first fitting card of an empty node");
    cluster.bind(id, &first, cards).unwrap();

    let second = PodRequest::new(4000, 0, GpuRequest::shared(160, 0), ModelSet::ANY);
    let node = cluster.node(id).unwrap();
    let st = &node.state;
    let f0 = w.node_frag(st.cpu_left, st.free(), None);
    let mut on0 = *st;
    on0.free_milli[0] -= 160;
    let mut on1 = *st;
    on1.free_milli[1] -= 160;
    let d0 = f0 - w.node_frag(st.cpu_left - 4000, on0.free(), None);
    let d1 = f0 - w.node_frag(st.cpu_left - 4000, on1.free(), None);
    assert_near(d0, 158.68, 0.01);
    assert_near(d1, -390.56, 0.01);
    assert_eq!(fgd_score(d0), 53);
    assert_eq!(fgd_score(d1), 40);
    let (score, cards) = fgd_best(&w, node, &second).unwrap();
    assert_eq!(
        (score, cards),
        (53, CardSet(1)),
        "FGD puts it on GPU0 (190 -> 30)"
    );

    // The same through the whole pipeline (card selection of the FGD policy).
    let mut scheduler = Scheduler::new(PolicyKind::Fgd.build(0));
    scheduler.set_knowledge(Knowledge::Fixed(w.clone()));
    let decision = scheduler.decide(&cluster, &second).unwrap();
    assert_eq!(decision.cards, CardSet(1));
    let ctx = ScoreContext {
        cluster: &cluster,
        workload: &w,
        workload_epoch: 0,
    };
    assert_eq!(ctx.workload.pods.len(), 35);
}

#[test]
fn fgd_score_is_truncated_sigmoid() {
    assert_eq!(fgd_score(0.0), 50);
    assert_eq!(fgd_score(-52.7015), 48);
    assert_eq!(fgd_score(1e9), 100);
    assert_eq!(fgd_score(-1e9), 0);
}
