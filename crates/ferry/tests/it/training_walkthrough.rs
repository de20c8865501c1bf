//! docs/training.md, run command by command against a live plane with 4 fake GPUs: every
//! `$ ...` line of its console blocks in order, through bash, with the `ferry` binary on PATH
//! and the plane's kubeconfig. `# until: TEXT` retries the command until its output contains
//! TEXT (a reader running `ferry get` again); `# fails: TEXT` expects a non-zero exit with TEXT
//! in the error; any other command must succeed.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One command of the walkthrough.
#[derive(Debug)]
struct Step {
    line: String,
    until: Option<String>,
    fails: Option<String>,
}

fn steps(doc: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut in_console = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ").filter(|_| in_console) {
            let (cmd, comment) = match cmd.split_once("   # ") {
                Some((c, m)) => (c.trim(), Some(m.trim())),
                None => (cmd.trim(), None),
            };
            let until = comment
                .and_then(|m| m.strip_prefix("until: "))
                .map(str::to_string);
            let fails = comment
                .and_then(|m| m.strip_prefix("fails: "))
                .map(str::to_string);
            out.push(Step {
                line: cmd.to_string(),
                until,
                fails,
            });
        }
    }
    out
}

fn run(repo: &Path, kubeconfig: &Path, line: &str) -> (bool, String) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(line)
        .current_dir(repo)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("FERRY_DATA_DIR")
        .output()
        .expect("bash");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_walkthrough_has_every_step() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/training.md"
    ))
    .expect("docs/training.md");
    let steps = steps(&doc);
    let verbs: Vec<&str> = steps
        .iter()
        .filter_map(|s| s.line.split_whitespace().nth(1))
        .collect();
    for verb in ["submit", "list", "get", "logs", "top", "delete"] {
        assert!(
            verbs.contains(&verb),
            "docs/training.md runs no `ferry {verb}`: {verbs:?}"
        );
    }
    assert!(
        steps.iter().any(|s| s.line.contains("--min-workers")),
        "no elastic step"
    );
    assert!(steps.iter().any(|s| s.fails.is_some()), "no refused step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_training_md_runs_command_by_command() {
    if !common::sandbox_capable("docs_training_md_runs_command_by_command") {
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let doc = std::fs::read_to_string(repo.join("docs/training.md")).expect("docs/training.md");
    for dir in ["/tmp/walkthrough-mnist", "/tmp/walkthrough-stretchy"] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let t = common::start_with_node("4xH100-80GB").await;
    let kubeconfig = t.plane.kubeconfig.clone();
    for step in steps(&doc) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(180);
        loop {
            let (line, kc, repo2) = (step.line.clone(), kubeconfig.clone(), repo.clone());
            let (ok, output) = tokio::task::spawn_blocking(move || run(&repo2, &kc, &line))
                .await
                .unwrap();
            let done = match (&step.fails, &step.until) {
                (Some(want), _) => {
                    assert!(!ok, "`{}` should be refused:\n{output}", step.line);
                    assert!(
                        output.contains(want.as_str()),
                        "`{}` failed without {want:?}:\n{output}",
                        step.line
                    );
                    true
                }
                (None, Some(want)) => ok && output.contains(want.as_str()),
                (None, None) => {
                    assert!(ok, "`{}` failed:\n{output}", step.line);
                    true
                }
            };
            if done {
                println!(
                    "ok ({:.1}s): {}",
                    started.elapsed().as_secs_f64(),
                    step.line
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` never showed {:?}; last output:\n{output}",
                step.line,
                step.until
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
