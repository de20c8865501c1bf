//! Clear errors for bad inputs (never panics).

use std::io::Write;

use ferry_sim::cli::{parse_policies, parse_seeds};
use ferry_sim::trace;

#[test]
fn malformed_row_reports_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openb_pod_list_bad.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "name,cpu_milli,memory_mib,num_gpu,gpu_milli").unwrap();
    writeln!(f, "p1,1000,10,1,500").unwrap();
    writeln!(f, "p2,lots,10,1,500").unwrap();
    let err = trace::read_pods(&path).unwrap_err().to_string();
    assert!(
        err.contains(":3:") && err.contains("cpu_milli") && err.contains("lots"),
        "{err}"
    );
}

#[test]
fn missing_column_and_unknown_trace_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openb_node_list_gpu_node.csv");
    std::fs::write(&path, "sn,cpu_milli,gpu\nn1,1000,1\n").unwrap();
    let err = trace::read_nodes(&path).unwrap_err().to_string();
    assert!(err.contains("memory_mib"), "{err}");
    let err = trace::resolve_pod_file(dir.path(), "nosuch")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nosuch") && err.contains("not found"), "{err}");
    let err = trace::find_trace_dir(Some(&dir.path().join("absent")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--trace-dir"), "{err}");
}

#[test]
fn seeds_and_policies_parse() {
    assert_eq!(
        parse_seeds("42..51").unwrap(),
        (42..=51).collect::<Vec<_>>()
    );
    assert_eq!(parse_seeds("1,5").unwrap(), vec![1, 5]);
    assert!(parse_seeds("9..3").is_err());
    assert!(parse_seeds("x").is_err());
    assert_eq!(parse_policies(&["baselines".into()]).unwrap().len(), 6);
    let err = parse_policies(&["bestest".into()]).unwrap_err().to_string();
    assert!(err.contains("unknown policy"), "{err}");
}
