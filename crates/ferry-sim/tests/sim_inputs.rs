//! Inputs that used to loop forever, or pass silently: an infinite `--tune`, a pod file with
//! only CPU pods, a header-only file, pods no node can take; and what the plots say.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, Command, FromArgMatches};
use ferry_sched_core::policies::PolicyKind;
use ferry_sim::cli::{SimArgs, run};
use ferry_sim::curves::aggregate;
use ferry_sim::experiment::{self, Info, PolicySetting, PreparedTrace, Unplaceable};
use ferry_sim::{plot, trace};

const NODES: &str = "sn,cpu_milli,memory_mib,gpu,model\n\
n1,64000,262144,8,A100\n\
n2,64000,262144,8,A100\n\
n3,32000,131072,2,T4\n";

/// A trace folder with the node list and one pod file `openb_pod_list_t.csv`.
fn trace_dir(pods: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(trace::GPU_NODE_FILE), NODES).unwrap();
    std::fs::write(dir.path().join("openb_pod_list_t.csv"), pods).unwrap();
    dir
}

fn gpu_pods() -> String {
    let mut s = String::from("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n");
    for i in 0..20 {
        s.push_str(&format!("p{i:02},1000,1024,1,500,\n"));
    }
    s
}

/// Runs `ferry sim <args>` on a thread; fails the test when it runs past `limit` (the bug
/// this guards against is an endless loop that eats memory).
fn sim(dir: &Path, out: &Path, extra: &[&str], limit: Duration) -> anyhow::Result<()> {
    let mut argv: Vec<String> = vec!["sim".into(), "run".into()];
    argv.extend(["--trace-dir".into(), dir.display().to_string()]);
    argv.extend(["--out".into(), out.display().to_string()]);
    argv.extend(
        [
            "--trace",
            "t",
            "--seeds",
            "1..2",
            "--policy",
            "bestfit,fgd",
            "--quiet",
        ]
        .map(String::from),
    );
    argv.extend(extra.iter().map(|s| s.to_string()));
    let matches = SimArgs::augment_args(Command::new("sim").no_binary_name(false))
        .try_get_matches_from(argv)?;
    let args = SimArgs::from_arg_matches(&matches)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(args));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("ferry sim {extra:?} did not finish within {limit:?}"))
}

#[test]
fn infinite_or_huge_tune_is_refused() {
    let dir = trace_dir(&gpu_pods());
    let out = tempfile::tempdir().unwrap();
    for tune in ["inf", "1e300", "NaN", "0", "-1", "11"].map(|t| format!("--tune={t}")) {
        let err = sim(
            dir.path(),
            out.path(),
            &[tune.as_str()],
            Duration::from_secs(20),
        )
        .expect_err(&tune)
        .to_string();
        assert!(
            err.contains("--tune") && err.contains("at most 10"),
            "{tune}: {err}"
        );
    }
    assert!(experiment::check_tune(1.3).is_ok());
    assert!(experiment::check_tune(f64::INFINITY).is_err());
}

#[test]
fn cpu_only_pod_file_is_an_error_not_an_endless_loop() {
    let pods = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nc1,1000,10,0,0\nc2,2000,10,0,0\n";
    let dir = trace_dir(pods);
    let out = tempfile::tempdir().unwrap();
    let err = sim(dir.path(), out.path(), &[], Duration::from_secs(20))
        .expect_err("CPU-only trace")
        .to_string();
    assert!(err.contains("no pod asks for a GPU"), "{err}");
}

#[test]
fn header_only_files_are_errors() {
    let dir = trace_dir("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n");
    let err = trace::load_trace(dir.path(), "t", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no pods") && err.contains("only a header"),
        "{err}"
    );
    std::fs::write(
        dir.path().join(trace::GPU_NODE_FILE),
        "sn,cpu_milli,memory_mib,gpu\n",
    )
    .unwrap();
    let err = trace::read_nodes(&dir.path().join(trace::GPU_NODE_FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no nodes"), "{err}");
}

#[test]
fn pods_that_can_never_be_placed_are_counted_and_reported() {
    let mut pods = gpu_pods();
    pods.push_str("big1,1000,1024,9,1000,\n");
    pods.push_str("big2,1000,1024,12,1000,A100\n");
    pods.push_str("h1,1000,1024,1,1000,H100\n");
    pods.push_str("t4x4,1000,1024,4,1000,T4\n");
    let dir = trace_dir(&pods);
    let loaded = trace::load_trace(dir.path(), "t", None).unwrap();
    let prepared = PreparedTrace::new(&loaded).unwrap();
    let name = |i: u32| prepared.pod_names[i as usize].as_str();
    let found: Vec<(&str, &Unplaceable)> = prepared
        .unplaceable
        .iter()
        .map(|(i, why)| (name(*i), why))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "big1",
                &Unplaceable::TooManyGpus {
                    asked: 9,
                    largest: 8
                }
            ),
            (
                "big2",
                &Unplaceable::TooManyGpus {
                    asked: 12,
                    largest: 8
                }
            ),
            (
                "h1",
                &Unplaceable::ModelAbsent {
                    models: "H100".into()
                }
            ),
            ("t4x4", &Unplaceable::NoNodeFits),
        ]
    );
    let report = prepared.unplaceable_report();
    assert!(
        report
            .iter()
            .any(|l| l.starts_with("2 pod(s)") && l.contains("largest node has 8")),
        "{report:?}"
    );
    assert!(
        report
            .iter()
            .any(|l| l.contains("H100, absent from the cluster")),
        "{report:?}"
    );

    // Every run counts them among its failures, and the summary lists them.
    let r = experiment::run(
        &prepared,
        PolicySetting {
            policy: PolicyKind::BestFit,
            info: Info::TraceWide,
        },
        1,
        1.0,
    );
    let failed_never: usize = r
        .snapshots
        .iter()
        .filter(|s| s.node.is_none() && prepared.unplaceable.iter().any(|(i, _)| *i == s.pod))
        .count();
    assert_eq!(
        failed_never,
        r.snapshots
            .iter()
            .filter(|s| prepared.unplaceable.iter().any(|(i, _)| *i == s.pod))
            .count()
    );
    let out = tempfile::tempdir().unwrap();
    sim(
        dir.path(),
        out.path(),
        &["--no-snapshots"],
        Duration::from_secs(60),
    )
    .unwrap();
    let summary = std::fs::read_to_string(out.path().join("t/summary.md")).unwrap();
    assert!(
        summary.contains("can never be placed") && summary.contains("H100"),
        "{summary}"
    );
}

fn svg_of(dir: &Path, policies: &[PolicyKind]) -> (PreparedTrace, String) {
    let loaded = trace::load_trace(dir, "t", None).unwrap();
    let prepared = PreparedTrace::new(&loaded).unwrap();
    let results: Vec<_> = policies
        .iter()
        .flat_map(|&policy| {
            let prepared = &prepared;
            [1, 2].map(move |seed| {
                experiment::run(
                    prepared,
                    PolicySetting {
                        policy,
                        info: Info::TraceWide,
                    },
                    seed,
                    1.3,
                )
            })
        })
        .collect();
    let svg = plot::unallocated_svg("t", &aggregate(&results));
    (prepared, svg)
}

/// The stroke colour of the legend entry for `label`.
fn legend_color<'a>(svg: &'a str, label: &str) -> &'a str {
    let line = svg
        .lines()
        .find(|l| l.contains(&format!(">{label}<")) || l.contains(&format!(">{label} (hidden")))
        .unwrap_or_else(|| panic!("no legend entry {label}: {svg}"));
    let at = line.find("stroke=\"").unwrap() + 8;
    &line[at..at + 7]
}

#[test]
fn plot_has_a_caption_fixed_colours_and_notes_hidden_lines() {
    let dir = trace_dir(&gpu_pods());
    let (_, both) = svg_of(dir.path(), &[PolicyKind::Random, PolicyKind::Fgd]);
    let (_, alone) = svg_of(dir.path(), &[PolicyKind::Fgd]);
    // One colour per policy, whatever else the chart holds.
    assert_eq!(legend_color(&both, "fgd"), legend_color(&alone, "fgd"));
    assert_ne!(legend_color(&both, "fgd"), legend_color(&both, "random"));
    // The caption says what lines, bands and the dashed line are.
    for text in ["median over 2 seed(s)", "25–75 %", "Dashed grey: the ideal"] {
        assert!(both.contains(text), "caption lacks {text:?}: {both}");
    }
    // On 20 half-GPU pods every policy places everything: the lines coincide, and the one
    // drawn below is named.
    let (_, same) = svg_of(dir.path(), &[PolicyKind::BestFit, PolicyKind::GpuPacking]);
    assert!(same.contains("(hidden under"), "{same}");
    assert!(same.contains("same"), "{same}");
}
