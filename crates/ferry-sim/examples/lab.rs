//! Dev tool: the prototype of Ferry's policy terms, with a sum-of-squares card term (Csirik
//! et al.) that is not in the final policy (it added nothing once dead gaps are priced).
//!
//! `lab <trace> <seeds> <trace|online> <spec>...`, spec = `fgd`, `ferry`, or
//! `mode:κ:ss_weight:quantum:cpu_kill:λ:θ:μ` (mode 1: SS first; 2: FGD bin, then SS; 4: one
//! value binned by FGD's sigmoid; 5: like 4, SS weight scaled by the share of untouched cards;
//! 6: like 4 with linear bins of `quantum`). `DETAIL=1` prints where the idle GPU sits at
//! arrived = 100 %, which card contents left each gap, and an LP lower bound on the card
//! waste of the sharing pods placed.
use std::sync::{Arc, Mutex};

use ferry_sched_core::engine::Knowledge;
use ferry_sched_core::frag::{TargetWorkload, fgd_score};
use ferry_sched_core::framework::{Caching, CardSelector, Policy, ScoreContext, ScorePlugin};
use ferry_sched_core::model::{GPU_MILLI, PodRequest};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::policies::fgd::candidate_deltas;
use ferry_sched_core::policies::fgd::fgd_best;
use ferry_sched_core::state::{CardSet, Cluster, Node, NodeId};
use ferry_sim::cli::parse_seeds;
use ferry_sim::curves::{Stat, discretise};
use ferry_sim::experiment::{Info, PolicySetting, PreparedTrace, run_with};
use ferry_sim::trace;

const LEVELS: usize = 101;

#[derive(Clone, Copy, Debug)]
struct Params {
    mode: u8,
    kappa: f64,
    ss_weight: f64,
    quant: f64,
    cpu_kill: bool,
    /// weight of the CPU-stranding term (milli-GPU expected stranded)
    lambda: f64,
    theta: f64,
    mu: f64,
}

#[derive(Default)]
struct Shared {
    epoch: u64,
    /// per model slot: min cpu of a typical sharing pod with milli <= level*10
    share_min_cpu: Vec<[u64; LEVELS]>,
    /// per model slot: min cpu of a typical 1-GPU pod
    gpu_min_cpu: Vec<u64>,
    counts: Vec<i64>,
    fresh_frac: f64,
    /// per model slot: typical cpu milli per full GPU
    rho: Vec<f64>,
    /// per model slot: constrained-demand share over supply share
    pressure: Vec<f64>,
}

fn slot(node: &Node) -> usize {
    node.spec.gpu_model.map_or(0, |m| m.0 as usize + 1)
}

impl Shared {
    fn refresh_tables(&mut self, w: &TargetWorkload, epoch: u64, cluster: &Cluster, theta: f64) {
        if self.epoch == epoch && !self.share_min_cpu.is_empty() {
            return;
        }
        self.epoch = epoch;
        let slots = 65;
        self.share_min_cpu = vec![[u64::MAX; LEVELS]; slots];
        self.gpu_min_cpu = vec![u64::MAX; slots];
        self.rho = vec![f64::INFINITY; slots];
        {
            let mut cards = vec![0.0f64; slots];
            let mut total_cards = 0.0;
            for (_, n) in cluster.nodes() {
                cards[slot(n)] += n.spec.gpu_count() as f64;
                total_cards += n.spec.gpu_count() as f64;
            }
            let mut need = vec![0.0f64; slots];
            let mut total_gpu = 0.0;
            for m in &w.pods {
                if m.gpu_milli == 0 {
                    continue;
                }
                let g = m.weight * m.gpu_milli as f64 * m.gpu_count as f64;
                total_gpu += g;
                if m.models.is_any() {
                    continue;
                }
                let allowed: Vec<usize> = (1..slots)
                    .filter(|&s| {
                        cards[s] > 0.0
                            && m.models
                                .allows(Some(ferry_sched_core::ModelId((s - 1) as u8)))
                    })
                    .collect();
                for &s in &allowed {
                    need[s] += g / allowed.len() as f64;
                }
            }
            self.pressure = (0..slots)
                .map(|s| {
                    if cards[s] > 0.0 && total_gpu > 0.0 {
                        (need[s] / total_gpu) / (cards[s] / total_cards)
                    } else {
                        0.0
                    }
                })
                .collect();
        }
        if self.counts.is_empty() {
            self.counts = vec![0; LEVELS];
        }
        for s in 0..slots {
            let model = if s == 0 {
                None
            } else {
                Some(ferry_sched_core::ModelId((s - 1) as u8))
            };
            let (mut cpu, mut gpu) = (0.0, 0.0);
            for m in &w.pods {
                if m.gpu_milli > 0 && m.models.allows(model) {
                    cpu += m.weight * m.cpu_milli as f64;
                    gpu += m.weight * m.gpu_milli as f64 * m.gpu_count as f64 / 1000.0;
                }
            }
            if gpu > 0.0 {
                self.rho[s] = cpu / gpu;
            }
            for m in &w.pods {
                if m.gpu_milli == 0 || !m.models.allows(model) {
                    continue;
                }
                if m.gpu_count == 1 {
                    self.gpu_min_cpu[s] = self.gpu_min_cpu[s].min(m.cpu_milli);
                }
            }
            // a gap level is live for cpu c when the typical sharing pods fitting it (milli
            // and cpu <= c) weigh at least theta; share_min_cpu = least such c
            let mut share: Vec<(u64, u16, f64)> = w
                .pods
                .iter()
                .filter(|m| {
                    m.gpu_count == 1
                        && m.gpu_milli > 0
                        && m.gpu_milli < GPU_MILLI
                        && m.models.allows(model)
                })
                .map(|m| (m.cpu_milli, m.gpu_milli, m.weight))
                .collect();
            share.sort_by_key(|x| x.0);
            for l in 0..LEVELS {
                let mut mass = 0.0;
                for &(cpu, milli, wt) in &share {
                    if milli as usize <= l * 10 {
                        mass += wt;
                        if mass >= theta.max(1e-12) {
                            self.share_min_cpu[s][l] = cpu;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// live level, or dead amount
    #[inline]
    fn classify(&self, s: usize, f: u16, cpu: u64) -> (Option<usize>, i64) {
        if f == 0 {
            return (None, 0);
        }
        if f == GPU_MILLI {
            return (None, if cpu < self.gpu_min_cpu[s] { 1000 } else { 0 });
        }
        let l = f as usize / 10;
        if cpu >= self.share_min_cpu[s][l] {
            (Some(l), 0)
        } else {
            (None, f as i64)
        }
    }

    fn recount(&mut self, cluster: &Cluster) {
        self.counts = vec![0; LEVELS];
        let (mut fresh, mut all) = (0, 0);
        for (_, n) in cluster.nodes() {
            let s = slot(n);
            for &f in n.state.free() {
                all += 1;
                if f == GPU_MILLI {
                    fresh += 1;
                }
                if let (Some(l), _) = self.classify(s, f, n.state.cpu_left) {
                    self.counts[l] += 1;
                }
            }
        }
        self.fresh_frac = fresh as f64 / all.max(1) as f64;
    }

    /// (ΔSS, Δdead) of placing pod on node with cards
    fn card_cost(
        &self,
        node: &Node,
        pod: &PodRequest,
        cards: CardSet,
        cpu_kill: bool,
    ) -> (i64, i64) {
        let s = slot(node);
        let st = &node.state;
        let c0 = st.cpu_left;
        let c1 = st.cpu_left - pod.cpu_milli;
        let mut d: [(usize, i64); 32] = [(0, 0); 32];
        let mut dn = 0;
        let mut dead = 0i64;
        let add = |l: usize, v: i64, d: &mut [(usize, i64); 32], dn: &mut usize| {
            for e in d[..*dn].iter_mut() {
                if e.0 == l {
                    e.1 += v;
                    return;
                }
            }
            d[*dn] = (l, v);
            *dn += 1;
        };
        for (j, &f0) in st.free().iter().enumerate() {
            let f1 = if cards.contains(j) {
                if pod.gpu.is_whole() {
                    0
                } else {
                    f0 - pod.gpu.milli
                }
            } else {
                f0
            };
            if f0 == f1 && !cpu_kill {
                continue;
            }
            let (l0, w0) = self.classify(s, f0, c0);
            let (l1, w1) = self.classify(s, f1, c1);
            if let Some(l) = l0 {
                add(l, -1, &mut d, &mut dn);
            }
            if let Some(l) = l1 {
                add(l, 1, &mut d, &mut dn);
            }
            dead += w1 - w0;
        }
        let mut ss = 0;
        for &(l, v) in &d[..dn] {
            ss += 2 * self.counts[l] * v + v * v;
        }
        (ss, dead)
    }
}

/// expected stranded GPU (milli) of a node state
fn stranded(sh: &Shared, node: &Node, cpu_left: u64, idle: i64) -> f64 {
    let rho = sh.rho[slot(node)];
    (idle as f64 - cpu_left as f64 * 1000.0 / rho).max(0.0)
}

fn local_ferry(
    _cfg: &(),
    ctx: &ScoreContext,
    node: &Node,
    pod: &PodRequest,
) -> Option<(i64, CardSet)> {
    fgd_best(ctx.workload, node, pod)
}

/// best (score, cards) of a node for a sharing pod
fn eval_shared(
    p: &Params,
    sh: &Shared,
    ctx: &ScoreContext,
    node: &Node,
    pod: &PodRequest,
) -> Option<(i64, CardSet)> {
    let mut best: Option<(i64, CardSet)> = None;
    let idle0 = node.state.idle_milli() as i64;
    let s0 = stranded(sh, node, node.state.cpu_left, idle0);
    candidate_deltas(ctx.workload, node, pod, |cards, delta| {
        let (ss, dead) = sh.card_cost(node, pod, cards, p.cpu_kill);
        let idle1 = idle0 - (cards.len() as i64) * pod.gpu.milli as i64;
        let ds = stranded(sh, node, node.state.cpu_left - pod.cpu_milli, idle1) - s0;
        let mut delta = delta - p.lambda * ds;
        if pod.gpu_models.is_any() && pod.gpu.is_gpu() {
            delta -= p.mu * sh.pressure[slot(node)] * pod.gpu.total_milli() as f64;
        }
        let horizon = if p.mode >= 5 { sh.fresh_frac } else { 1.0 };
        let g = -(p.ss_weight * horizon * ss as f64 + p.kappa * dead as f64);
        if p.mode >= 4 {
            let v = g + delta;
            let bin = if p.mode == 6 {
                ((v / p.quant).round() as i64).clamp(-(1 << 20), 1 << 20) + (1 << 20)
            } else {
                fgd_score(v)
            };
            let exact = ((v / 100.0).round() as i64).clamp(-(1 << 12), (1 << 12) - 1) + (1 << 12);
            let s = (bin << 30) | exact;
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, cards));
            }
            return;
        }
        let g = ((g / p.quant).round() as i64).clamp(-(1 << 20), (1 << 20) - 1) + (1 << 20);
        let bin = fgd_score(delta);
        let exact = ((delta / 100.0).round() as i64).clamp(-(1 << 12), (1 << 12) - 1) + (1 << 12);
        let s = match p.mode {
            1 => (g << 30) | (bin << 16) | exact,
            2 => (bin << 40) | (g << 16) | exact,
            3 => (bin << 40) | (exact << 24) | g,
            _ => (g << 30) | exact,
        };
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, cards));
        }
    });
    best
}

struct LabScore {
    p: Params,
    cfg: (),
    shared: Arc<Mutex<Shared>>,
    results: Vec<i64>,
    shared_pod: bool,
}

impl ScorePlugin for LabScore {
    fn name(&self) -> &'static str {
        "lab"
    }
    fn caching(&self) -> Caching {
        if self.shared_pod {
            Caching::Never
        } else {
            Caching::PerNodeState
        }
    }
    fn pre_score(&mut self, ctx: &ScoreContext, pod: &PodRequest, feasible: &[NodeId]) {
        self.shared_pod = pod.gpu.is_shared() && self.p.ss_weight != 0.0;
        let mut sh = self.shared.lock().unwrap();
        sh.refresh_tables(ctx.workload, ctx.workload_epoch, ctx.cluster, self.p.theta);
        if !self.shared_pod {
            return;
        }
        sh.recount(ctx.cluster);
        self.results.resize(ctx.cluster.node_slots(), i64::MIN);
        for &id in feasible {
            let node = ctx.cluster.node(id).unwrap();
            self.results[id as usize] =
                eval_shared(&self.p, &sh, ctx, node, pod).map_or(i64::MIN, |x| x.0);
        }
    }
    fn score(&self, ctx: &ScoreContext, id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        if self.shared_pod {
            self.results[id as usize]
        } else if self.p.lambda != 0.0 {
            let sh = self.shared.lock().unwrap();
            eval_shared(&self.p, &sh, ctx, node, pod).map_or(i64::MIN, |x| x.0)
        } else {
            local_ferry(&self.cfg, ctx, node, pod).map_or(i64::MIN, |x| x.0)
        }
    }
}

struct LabCards {
    p: Params,
    cfg: (),
    shared: Arc<Mutex<Shared>>,
}

impl CardSelector for LabCards {
    fn name(&self) -> &'static str {
        "lab"
    }
    fn select(&mut self, ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        if pod.gpu.is_shared() || self.p.lambda != 0.0 {
            let mut sh = self.shared.lock().unwrap();
            sh.refresh_tables(ctx.workload, ctx.workload_epoch, ctx.cluster, self.p.theta);
            if pod.gpu.is_shared() && self.p.ss_weight != 0.0 {
                sh.recount(ctx.cluster);
            }
            eval_shared(&self.p, &sh, ctx, node, pod).map(|x| x.1)
        } else {
            local_ferry(&self.cfg, ctx, node, pod).map(|x| x.1)
        }
    }
}

fn policy(p: Params) -> Policy {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let cfg = ();
    Policy {
        name: "lab".into(),
        scorer: Box::new(LabScore {
            p,
            cfg,
            shared: shared.clone(),
            results: Vec::new(),
            shared_pod: false,
        }),
        cards: Box::new(LabCards { p, cfg, shared }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tr = args.get(1).cloned().unwrap_or("default".into());
    let seeds = parse_seeds(args.get(2).map_or("42..51", String::as_str)).unwrap();
    let info = if args.get(3).map(String::as_str) == Some("online") {
        Info::Online
    } else {
        Info::TraceWide
    };
    let specs: Vec<String> = args[4.min(args.len())..].to_vec();
    let dir = trace::find_trace_dir(None).unwrap();
    let t = trace::load_trace(&dir, &tr, None).unwrap();
    let prepared = PreparedTrace::new(&t).unwrap();
    let setting = PolicySetting {
        policy: PolicyKind::Ferry,
        info,
    };
    for spec in specs {
        // spec: name or mode:kappa:ssw:quant:cpukill
        let parts: Vec<&str> = spec.split(':').collect();
        let start = std::time::Instant::now();
        let values: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = seeds
                .chunks(seeds.len().div_ceil(2))
                .map(|chunk| {
                    let prepared = &prepared;
                    let parts = &parts;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&seed| {
                                let pol = match parts[0] {
                                    "fgd" => PolicyKind::Fgd.build(seed),
                                    "ferry" => PolicyKind::Ferry.build(seed),
                                    m => policy(Params {
                                        mode: m.parse().unwrap(),
                                        kappa: parts[1].parse().unwrap(),
                                        ss_weight: parts[2].parse().unwrap(),
                                        quant: parts[3].parse().unwrap(),
                                        cpu_kill: parts[4] == "1",
                                        lambda: parts.get(5).map_or(0.0, |x| x.parse().unwrap()),
                                        theta: parts.get(6).map_or(0.0, |x| x.parse().unwrap()),
                                        mu: parts.get(7).map_or(0.0, |x| x.parse().unwrap()),
                                    }),
                                };
                                let knowledge = match info {
                                    Info::TraceWide => {
                                        Knowledge::Fixed(prepared.metric_workload.clone())
                                    }
                                    Info::Online => Knowledge::Online(
                                        ferry_sched_core::OnlineWorkload::new(95.0),
                                    ),
                                };
                                if std::env::var("DETAIL").is_ok() {
                                    detail(prepared, pol, knowledge, seed);
                                }
                                let pol = match parts[0] {
                                    "fgd" => PolicyKind::Fgd.build(seed),
                                    "ferry" => PolicyKind::Ferry.build(seed),
                                    m => policy(Params {
                                        mode: m.parse().unwrap(),
                                        kappa: parts[1].parse().unwrap(),
                                        ss_weight: parts[2].parse().unwrap(),
                                        quant: parts[3].parse().unwrap(),
                                        cpu_kill: parts[4] == "1",
                                        lambda: parts.get(5).map_or(0.0, |x| x.parse().unwrap()),
                                        theta: parts.get(6).map_or(0.0, |x| x.parse().unwrap()),
                                        mu: parts.get(7).map_or(0.0, |x| x.parse().unwrap()),
                                    }),
                                };
                                let knowledge = match info {
                                    Info::TraceWide => {
                                        Knowledge::Fixed(prepared.metric_workload.clone())
                                    }
                                    Info::Online => Knowledge::Online(
                                        ferry_sched_core::OnlineWorkload::new(95.0),
                                    ),
                                };
                                let r = run_with(prepared, setting, pol, knowledge, seed, 1.3);
                                discretise(&r).unallocated_pct[100]
                            })
                            .collect::<Vec<f64>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let s = Stat::of(values.clone()).unwrap();
        if std::env::var("DETAIL").is_ok() {
            print_detail(&prepared, seeds.len());
        }
        println!(
            "{tr} {spec:28} {:.2} ± {:.2}  ({:.1}s) {:?}",
            s.mean,
            s.sd,
            start.elapsed().as_secs_f64(),
            values.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>()
        );
    }
}

static DETAIL_IDLE: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());
static DETAIL_COMBOS: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());
static DETAIL_FAILED: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

fn bump(v: &Mutex<Vec<(String, f64)>>, k: String, x: f64) {
    let mut v = v.lock().unwrap();
    match v.iter_mut().find(|e| e.0 == k) {
        Some(e) => e.1 += x,
        None => v.push((k, x)),
    }
}

fn class_of(p: &PodRequest) -> String {
    if !p.gpu.is_gpu() {
        "cpu-only".into()
    } else if p.gpu.is_shared() {
        format!("share {:>3}", p.gpu.milli)
    } else {
        format!("whole x{}", p.gpu.count)
    }
}

fn detail(prepared: &PreparedTrace, pol: Policy, knowledge: Knowledge, seed: u64) {
    use ferry_sched_core::engine::Scheduler;
    use ferry_sched_core::framework::NodeRanks;
    let (order, ranks) = ferry_sim::experiment::arrival_order(prepared, seed, 1.3);
    let mut cluster = prepared.cluster.clone();
    let mut scheduler = Scheduler::new(pol);
    scheduler.set_ranks(NodeRanks::from_ranks(ranks));
    scheduler.set_knowledge(knowledge);
    scheduler.set_explain_failures(false);
    let cap = prepared.capacity_milli() as f64;
    let mut arrived = 0u64;
    let mut contents: std::collections::HashMap<(NodeId, usize), Vec<(u16, u32)>> =
        Default::default();
    for &idx in &order {
        let pod = &prepared.requests[idx as usize];
        if arrived as f64 >= cap {
            break;
        }
        arrived += pod.gpu.total_milli() as u64;
        scheduler.observe(&cluster, pod);
        match scheduler.place(&mut cluster, pod) {
            Err(_) => bump(&DETAIL_FAILED, class_of(pod), pod.gpu.total_milli() as f64),
            Ok((d, _)) => {
                if pod.gpu.is_shared() {
                    for c in d.cards.indices() {
                        contents
                            .entry((d.node, c))
                            .or_default()
                            .push((pod.gpu.milli, (100.0 * arrived as f64 / cap) as u32));
                    }
                }
            }
        }
    }
    {
        let mut hist: std::collections::BTreeMap<u16, u32> = Default::default();
        let mut waste = 0u64;
        for ((id, c), items) in &contents {
            for it in items {
                *hist.entry(it.0).or_default() += 1;
            }
            let f = cluster.node(*id).unwrap().state.free()[*c];
            if f < GPU_MILLI {
                waste += f as u64;
            }
        }
        let items: Vec<(u16, u32)> = hist.into_iter().collect();
        let volume: u64 = items.iter().map(|x| x.0 as u64 * x.1 as u64).sum();
        let lb = cards_lower_bound(&items);
        let lb_waste = lb.ceil() * 1000.0 - volume as f64;
        println!(
            "  seed {seed}: sharing cards waste {:.3} pp; LP bound for the same placed sharing pods {:.3} pp (cards {:.1})",
            100.0 * waste as f64 / cap,
            100.0 * lb_waste / cap,
            lb
        );
    }
    for ((id, c), items) in contents {
        let f = cluster.node(id).unwrap().state.free()[c];
        if f > 0 && f < 190 || (f > 190 && f < 300) {
            let mut sizes: Vec<u16> = items.iter().map(|x| x.0).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let last = items.last().unwrap().1;
            let band = if last < 80 {
                "<80%"
            } else if last < 95 {
                "80-95%"
            } else {
                ">=95%"
            };
            bump(
                &DETAIL_COMBOS,
                format!("gap {f:>3} = {:?} closed {band}", sizes),
                f as f64,
            );
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
            bump(&DETAIL_IDLE, key, f as f64);
        }
    }
}

fn print_detail(prepared: &PreparedTrace, seeds: usize) {
    let cap = prepared.capacity_milli() as f64;
    let pct = |m: f64| 100.0 * m / cap / seeds as f64;
    let mut idle = std::mem::take(&mut *DETAIL_IDLE.lock().unwrap());
    idle.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let total: f64 = idle.iter().map(|e| e.1).sum();
    let partial: f64 = idle
        .iter()
        .filter(|e| e.0.starts_with("partial"))
        .map(|e| e.1)
        .sum();
    println!(
        "  idle {:.3} pp: partial {:.3}, whole {:.3}",
        pct(total),
        pct(partial),
        pct(total - partial)
    );
    for (k, v) in idle.iter().take(80) {
        println!("    {:6.3} pp  {k}", pct(*v));
    }
    let mut combos = std::mem::take(&mut *DETAIL_COMBOS.lock().unwrap());
    combos.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    for (k, v) in combos.iter().take(30) {
        println!("    {:6.3} pp  {k}", pct(*v));
    }
    let mut failed = std::mem::take(&mut *DETAIL_FAILED.lock().unwrap());
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    let line: Vec<String> = failed
        .iter()
        .map(|(k, v)| format!("{}:{:.3}", k.replace(' ', ""), pct(*v)))
        .collect();
    println!("  failed pp: {}", line.join(" "));
}

/// A lower bound on the cards needed to pack `items` (size in thousandths, count) into cards
/// of 1000: the dual of the Gilmore–Gomory LP, solved by column generation (any dual-feasible
/// point bounds the LP, hence the integer optimum, from below).
pub fn cards_lower_bound(items: &[(u16, u32)]) -> f64 {
    let m = items.len();
    let sizes: Vec<usize> = items.iter().map(|x| x.0 as usize).collect();
    let demand: Vec<f64> = items.iter().map(|x| x.1 as f64).collect();
    // patterns: rows of the dual constraint set R y <= 1
    let mut patterns: Vec<Vec<f64>> = (0..m)
        .map(|i| {
            let mut p = vec![0.0; m];
            p[i] = (1000 / sizes[i]) as f64;
            p
        })
        .collect();
    let mut y = vec![0.0; m];
    for _ in 0..500 {
        y = simplex_max(&demand, &patterns);
        // pricing: unbounded knapsack maximising y·a with sizes <= 1000
        let mut best = vec![0.0f64; 1001];
        let mut choice = vec![usize::MAX; 1001];
        for c in 1..=1000 {
            best[c] = best[c - 1];
            choice[c] = usize::MAX;
            for i in 0..m {
                if sizes[i] <= c && best[c - sizes[i]] + y[i] > best[c] + 1e-12 {
                    best[c] = best[c - sizes[i]] + y[i];
                    choice[c] = i;
                }
            }
        }
        if best[1000] <= 1.0 + 1e-9 {
            break;
        }
        let mut p = vec![0.0; m];
        let mut c = 1000;
        while c > 0 {
            match choice[c] {
                usize::MAX => c -= 1,
                i => {
                    p[i] += 1.0;
                    c -= sizes[i];
                }
            }
        }
        patterns.push(p);
    }
    // scale y down to be feasible for every pattern (guards against tolerance)
    let mut best = vec![0.0f64; 1001];
    for c in 1..=1000 {
        best[c] = best[c - 1];
        for i in 0..m {
            if sizes[i] <= c {
                best[c] = best[c].max(best[c - sizes[i]] + y[i]);
            }
        }
    }
    let scale = best[1000].max(1.0);
    demand.iter().zip(&y).map(|(d, v)| d * v).sum::<f64>() / scale
}

/// max d·y s.t. R y <= 1, y >= 0 (dense tableau, Bland's rule).
#[allow(clippy::needless_range_loop)]
fn simplex_max(d: &[f64], rows: &[Vec<f64>]) -> Vec<f64> {
    let m = d.len();
    let r = rows.len();
    let w = m + r + 1;
    let mut t = vec![vec![0.0; w]; r + 1];
    for (k, row) in rows.iter().enumerate() {
        t[k][..m].copy_from_slice(row);
        t[k][m + k] = 1.0;
        t[k][w - 1] = 1.0;
    }
    for j in 0..m {
        t[r][j] = -d[j];
    }
    let mut basis: Vec<usize> = (m..m + r).collect();
    while let Some(col) = (0..w - 1).find(|&j| t[r][j] < -1e-12) {
        let mut row = None;
        let mut ratio = f64::INFINITY;
        for k in 0..r {
            if t[k][col] > 1e-12 {
                let q = t[k][w - 1] / t[k][col];
                if q < ratio - 1e-12
                    || (q < ratio + 1e-12 && row.is_some_and(|rr: usize| basis[k] < basis[rr]))
                {
                    ratio = q;
                    row = Some(k);
                }
            }
        }
        let Some(pr) = row else { break };
        let pv = t[pr][col];
        for j in 0..w {
            t[pr][j] /= pv;
        }
        for k in 0..=r {
            if k != pr && t[k][col].abs() > 0.0 {
                let f = t[k][col];
                for j in 0..w {
                    t[k][j] -= f * t[pr][j];
                }
            }
        }
        basis[pr] = col;
    }
    let mut y = vec![0.0; m];
    for (k, &b) in basis.iter().enumerate() {
        if b < m {
            y[b] = t[k][w - 1];
        }
    }
    y
}
