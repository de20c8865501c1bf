//! `ferry bench training`, run small: the real binary with its own control plane, a
//! 4-rank PyTorchJob over 2 rounds beside 4 bare pods, and one crash of each recovery kind on
//! the real node agent. Checks that every figure and its baseline are printed (the figures
//! themselves are the benchmark's to report, not the test's to bound).

use crate::common;

use std::process::Command;

fn figures(out: &str, label: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no line with {label:?} in:\n{out}"));
    let num = |key: &str| -> f64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number after {key} in {line}"))
    };
    (num("p50"), num("p90"))
}

#[test]
fn bench_training_prints_each_figure_beside_its_baseline() {
    if !common::sandbox_capable("bench_training_prints_each_figure_beside_its_baseline") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "training",
            "--ranks",
            "4",
            "--rounds",
            "2",
            "--recoveries",
            "1",
            "--network-slot",
            "242",
            "--timeout-secs",
            "90",
        ])
        .output()
        .expect("ferry runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "ferry bench training failed:\n{stdout}\n{stderr}"
    );
    for label in [
        "PyTorchJob (1 master + 3 workers)",
        "baseline: 4 bare pods",
        "the controller adds",
        "in place (OnFailure",
        "whole-gang restart (a lost rank",
    ] {
        let (p50, p90) = figures(&stdout, label);
        assert!(p50.is_finite() && p90.is_finite(), "{label}: {p50} {p90}");
        if !label.starts_with("the controller adds") {
            assert!(p50 > 0.0 && p90 >= p50, "{label}: p50 {p50} p90 {p90}");
        }
    }
}
