//! `ferry bench controllers` with tiny counts: it runs the Deployment, ReplicaSet and Job
//! controllers in their own process against the embedded API server and prints every figure
//! beside its baseline. No figure is asserted (timings are the benchmark's to report).

use std::process::Command;

#[test]
fn the_controllers_bench_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "controllers",
            "--deployments",
            "3",
            "--replicas",
            "2",
            "--completions",
            "6",
            "--parallelism",
            "2",
            "--nodes",
            "1",
            "--timeout-secs",
            "180",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("ferry runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "(a) 3 Deployments x 2 replicas reconciled to ready",
        "baseline: 6 pods created directly, to ready",
        "(b) Indexed Job of 6 completions, parallelism 2, to Complete",
        "baseline: 6 bare pods created directly, to Succeeded",
        "controller-manager memory: peak RSS",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Every Deployment's pods exist, and only those; the Job made one pod per completion.
    assert!(stdout.contains("6 pods exist"), "{stdout}");
}
