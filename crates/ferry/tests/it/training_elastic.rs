//! An elastic PyTorchJob (`elasticPolicy` min 2, max 4, torchrun's c10d rendezvous) with the
//! real torch on a node of four fake GPUs shared by two queues, end to end:
//! - it starts with its minimum (2 workers) while the other queue holds two GPUs;
//! - it grows to 4 workers once those GPUs are free (the scheduler places its surplus pods,
//!   torchrun re-forms the group);
//! - it shrinks back to 2 when the other queue reclaims its guarantee (the scheduler takes
//!   back the two surplus pods, not the job; its minimum keeps running, the same pods);
//! - the script's step counter carries on from its checkpoint across each change, and the
//!   job ends Succeeded.
//!
//! The test prints how long each change took, from the GPUs freeing up (or being asked for)
//! to training steps at the new world size.

use crate::common;
use crate::e2e_elastic::{QUEUES, group, pod, running};
use crate::training_pytorch::{
    PYTHON, apply, job_pods, pytorchjob, replica, train_py, uid, wait_condition,
};

use std::time::{Duration, Instant};

use common::{TestPlane, eventually};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(240);
const STEPS: u64 = 1500;

/// One training step as the script prints it (`step=N world=W rank=R loss=L`), or the step
/// it resumed from (`resumed step=N world=W rank=R`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Line {
    step: u64,
    world: u64,
    resumed: bool,
}

fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The step lines of a worker's log (torchrun prefixes each with its local rank).
fn progress(log: &str) -> Vec<Line> {
    log.lines()
        .filter(|l| !l.contains("done steps="))
        .filter_map(|l| {
            Some(Line {
                step: field(l, "step=")?,
                world: field(l, "world=")?,
                resumed: l.contains("resumed step="),
            })
        })
        .collect()
}

fn log(t: &TestPlane, pod: &str) -> String {
    t.kubectl(&["logs", pod]).stdout
}

/// Waits for the first training step at world size `world` after `after` lines of worker
/// 0's log; returns its index in the log's step lines and the line. On a timeout it prints
/// what would explain it (the job's pods and PodGroup, each worker's log) before failing.
async fn steps_at_world(t: &TestPlane, world: u64, after: usize) -> (usize, Line) {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = progress(&log(t, "elastic-worker-0"))
            .into_iter()
            .enumerate()
            .skip(after)
            .find(|(_, l)| l.world == world && !l.resumed);
        if let Some(found) = found {
            return found;
        }
        if Instant::now() > deadline {
            let pods = t.kubectl(&["get", "pods", "-A", "-o", "wide"]).stdout;
            let groups = t.kubectl(&["get", "podgroups", "-A", "-o", "yaml"]).stdout;
            eprintln!("pods:\n{pods}\npodgroups:\n{groups}");
            for i in 0..4 {
                let name = format!("elastic-worker-{i}");
                eprintln!("--- log of {name}:\n{}", log(t, &name));
            }
            panic!("timed out after {WAIT:?} waiting for training steps at world size {world}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn workers_running(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    v.sort();
    v
}

/// The uids of the minimum's pods (workers 0 and 1, the lowest surplus orders).
fn minimum_uids(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            matches!(
                p.metadata.name.as_deref(),
                Some("elastic-worker-0" | "elastic-worker-1")
            )
        })
        .map(uid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elastic_pytorchjob_grows_into_free_gpus_and_shrinks_under_reclaim() {
    if !common::sandbox_capable("elastic_pytorchjob_grows_into_free_gpus_and_shrinks_under_reclaim")
    {
        return;
    }
    let t = common::start_with_node("4xH100-80GB").await;
    eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
    t.kubectl_stdin(&["apply", "-f", "-"], QUEUES).success();

    // Team B holds two of the four GPUs.
    let hold = |name: &str| {
        let mut m = group("ns-b", name, 2);
        m.push_str(&pod("ns-b", name, &format!("{name}-0"), None));
        m.push_str(&pod("ns-b", name, &format!("{name}-1"), None));
        m
    };
    t.kubectl_stdin(&["apply", "-f", "-"], &hold("hold"))
        .success();
    eventually("team B's pods to run", WAIT, async || {
        (running(&t.client, "ns-b", "hold").await.len() == 2).then_some(())
    })
    .await;

    // Team A's elastic job: min 2, max 4 workers of one GPU each.
    let ckpt = t.dir.path().join("ckpt-elastic");
    std::fs::create_dir_all(&ckpt).unwrap();
    let ckpt = ckpt.display().to_string();
    let train = train_py();
    let steps = STEPS.to_string();
    // Steps take 0.2 s until the test has seen the job grow and shrink (however long a loaded
    // machine takes), then run to the end at full speed.
    let finish = format!("{ckpt}/finish");
    let cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--redirects",
        "1",
        "--tee",
        "1",
        "--monitor_interval",
        "1",
        train.as_str(),
        "--steps",
        &steps,
        "--step-seconds",
        "0.2",
        "--checkpoint-dir",
        &ckpt,
        "--slow-until",
        &finish,
    ];
    let mut worker = replica(4, "OnFailure", &cmd);
    let spec = &mut worker["template"]["spec"];
    spec["terminationGracePeriodSeconds"] = json!(2);
    spec["volumes"] = json!([{"name": "ckpt", "hostPath": {"path": ckpt}}]);
    spec["containers"][0]["volumeMounts"] = json!([{"name": "ckpt", "mountPath": ckpt}]);
    spec["containers"][0]["resources"] = json!({"limits": {"nvidia.com/gpu": 1}});
    apply(
        &t,
        &pytorchjob(
            "elastic",
            json!({
                "nprocPerNode": "1",
                "runPolicy": {"schedulingPolicy": {"queue": "team-a"}},
                "elasticPolicy": {
                    "minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d", "maxRestarts": 20,
                    "rdzvConf": [{"key": "last_call_timeout", "value": "3"}],
                },
                "pytorchReplicaSpecs": {"Worker": worker},
            }),
        ),
    );

    // It starts with its minimum; its surplus waits for GPUs.
    let (mut seen, first) = steps_at_world(&t, 2, 0).await;
    println!("started at world size 2: {first:?}");
    let pods = job_pods(&t, "elastic").await;
    assert_eq!(
        workers_running(&pods),
        ["elastic-worker-0", "elastic-worker-1"],
        "the minimum runs first"
    );
    let minimum = minimum_uids(&pods);

    // Team B's GPUs free up: the job grows to 4 and carries on from its checkpoint.
    let before_grow = progress(&log(&t, "elastic-worker-0"));
    let last_before_grow = before_grow.last().unwrap().step;
    t.kubectl(&["delete", "-n", "ns-b", "pods", "--all", "--wait=false"])
        .success();
    t.kubectl(&["delete", "-n", "ns-b", "podgroup", "hold", "--wait=false"])
        .success();
    let freed = Instant::now();
    let (at, grown) = steps_at_world(&t, 4, seen).await;
    println!(
        "GPUs freed to training steps at world size 4: {:?} ({grown:?})",
        freed.elapsed()
    );
    seen = at;
    let pods = job_pods(&t, "elastic").await;
    assert_eq!(workers_running(&pods).len(), 4, "all four workers run");
    let lines = progress(&log(&t, "elastic-worker-0"));
    let resumed = lines[..at]
        .iter()
        .rev()
        .find(|l| l.resumed)
        .copied()
        .expect("the group re-formed from its checkpoint");
    assert!(
        resumed.step > 0 && resumed.step + 5 > last_before_grow,
        "the step counter carried on: resumed {resumed:?} after step {last_before_grow}"
    );
    assert_eq!(grown.step, resumed.step + 1, "{grown:?} after {resumed:?}");

    // Team B asks for its guarantee back: the two surplus workers go, not the job.
    let last_before_shrink = lines.last().unwrap().step;
    t.kubectl_stdin(&["apply", "-f", "-"], &hold("back"))
        .success();
    let asked = Instant::now();
    eventually("team B's pods to run again", WAIT, async || {
        (running(&t.client, "ns-b", "back").await.len() == 2).then_some(())
    })
    .await;
    let (_, shrunk) = steps_at_world(&t, 2, seen).await;
    println!(
        "GPUs reclaimed to training steps at world size 2: {:?} ({shrunk:?})",
        asked.elapsed()
    );
    assert!(
        shrunk.step + 5 > last_before_shrink,
        "the step counter carried on: {shrunk:?} after step {last_before_shrink}"
    );
    let pods = job_pods(&t, "elastic").await;
    assert_eq!(
        workers_running(&pods),
        ["elastic-worker-0", "elastic-worker-1"],
        "the surplus went, the minimum stays"
    );
    let still = minimum_uids(&pods);
    assert_eq!(still, minimum, "the minimum's pods ran throughout");

    // It trains on to the end.
    std::fs::write(&finish, "").unwrap();
    let job = wait_condition(&t, "elastic", "Succeeded").await;
    let text = log(&t, "elastic-worker-0");
    assert!(text.contains(&format!("done steps={STEPS}")), "{text}");
    let lines = progress(&text);
    let worlds: Vec<u64> =
        lines
            .iter()
            .filter(|l| !l.resumed)
            .map(|l| l.world)
            .fold(Vec::new(), |mut v, w| {
                if v.last() != Some(&w) {
                    v.push(w);
                }
                v
            });
    assert!(
        worlds.starts_with(&[2]) && worlds.contains(&4) && worlds.ends_with(&[2]),
        "world sizes over the run: {worlds:?}"
    );
    // Steps never went back to the start: each re-formed group resumed from a checkpoint.
    let restarts: Vec<u64> = lines.iter().filter(|l| l.resumed).map(|l| l.step).collect();
    assert!(
        restarts.len() >= 2 && restarts.iter().all(|s| *s > 0),
        "{restarts:?}"
    );
    println!(
        "world sizes {worlds:?}, resumed at steps {restarts:?}, job {}",
        job.data["status"]["replicaStatuses"]
    );
    // The surplus that never got a GPU again does not outlive the job.
    eventually("the unplaced surplus pods removed", WAIT, async || {
        let pods = job_pods(&t, "elastic").await;
        pods.iter()
            .all(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
            .then_some(())
    })
    .await;
}
