//! TFJob and MPIJob end to end with real kubectl, real processes and real Open MPI on the
//! embedded control plane's node agent (host runtime):
//! - a TFJob with one PS and two workers whose processes (`examples/tensorflow/
//!   tf_config_probe.py`, no TensorFlow needed) read `TF_CONFIG`, listen on their own address
//!   and reach each other by the names it gives (`<job>-<type>-<i>.<ns>.svc:<port>`, through
//!   the cluster DNS and each replica's headless Service), to Succeeded;
//! - an MPIJob whose launcher runs the real `mpirun` (Debian's openmpi-bin) over its two
//!   workers through `kubectl exec` (`kubexec.sh` from the job's ConfigMap, kubectl delivered
//!   by the init container, the launcher's ServiceAccount bound to a Role allowing exec into
//!   its workers only), collecting each rank's output (`examples/mpi/rank_probe.py`) in the
//!   launcher's log, to Succeeded;
//! - bad TFJob and MPIJob specs failed with a clear message.

use crate::common;

use std::time::Duration;

use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(150);
const TF_PROBE: &str = include_str!("../../../../examples/tensorflow/tf_config_probe.py");
const RANK_PROBE: &str = include_str!("../../../../examples/mpi/rank_probe.py");

fn get_json(t: &common::TestPlane, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = t.kubectl(&a);
    out.ok.then(|| serde_json::from_str(&out.stdout).unwrap())
}

fn condition(job: &Value, type_: &str) -> Option<(String, String)> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Waits for `kind/name` to be Succeeded; panics with its status, its pods and their logs
/// when it fails or times out instead.
async fn wait_succeeded(t: &common::TestPlane, kind: &str, name: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let job = get_json(t, &[kind, name]);
        if let Some(job) = &job
            && condition(job, "Succeeded").is_some()
        {
            return job.clone();
        }
        let failed = job.as_ref().and_then(|j| condition(j, "Failed"));
        if failed.is_some() || std::time::Instant::now() > deadline {
            let selector = format!("training.kubeflow.org/job-name={name}");
            let pods = t
                .kubectl(&["get", "pods", "-l", &selector, "-o", "wide"])
                .stdout;
            let logs = t
                .kubectl(&[
                    "logs",
                    "-l",
                    &selector,
                    "--all-containers",
                    "--prefix",
                    "--tail=40",
                ])
                .stdout;
            let status = job.map(|j| j["status"].clone()).unwrap_or_default();
            panic!(
                "{kind} {name} did not succeed ({failed:?}):\nstatus: {status}\npods:\n{pods}\nlogs:\n{logs}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn logs(t: &common::TestPlane, pod: &str) -> String {
    t.kubectl(&["logs", pod, "--all-containers"]).success()
}

fn pod_env(pod: &Value, container: usize, name: &str) -> Option<String> {
    pod["spec"]["containers"][container]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tfjob_ps_and_workers_reach_each_other_by_tf_config() {
    if !common::sandbox_capable("tfjob_ps_and_workers_reach_each_other_by_tf_config") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let template = |port: Option<i32>| {
        let mut c = json!({
            "name": "tensorflow",
            "command": ["/usr/bin/python3", "-c", TF_PROBE, "--timeout", "90"],
        });
        if let Some(p) = port {
            c["ports"] = json!([{"name": "tfjob-port", "containerPort": p}]);
        }
        json!({"spec": {"containers": [c]}})
    };
    let job = json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {
            "successPolicy": "AllWorkers",
            "tfReplicaSpecs": {
                "PS": {"replicas": 1, "restartPolicy": "Never", "template": template(Some(2300))},
                "Worker": {"replicas": 2, "restartPolicy": "Never", "template": template(None)},
            }
        }
    });
    t.kubectl_stdin(&["create", "-f", "-"], &job.to_string())
        .success();
    let started = std::time::Instant::now();
    let done = wait_succeeded(&t, "tfjob", "probe").await;
    eprintln!("TFJob probe Succeeded after {:?}", started.elapsed());

    // Each pod got TF_CONFIG naming every replica by its Service, its own task last.
    let cluster = json!({
        "ps": ["probe-ps-0.default.svc:2300"],
        "worker": ["probe-worker-0.default.svc:2222", "probe-worker-1.default.svc:2222"],
    });
    for (pod, rtype, index) in [
        ("probe-ps-0", "ps", 0),
        ("probe-worker-0", "worker", 0),
        ("probe-worker-1", "worker", 1),
    ] {
        let p = get_json(&t, &["pod", pod]).unwrap_or_else(|| panic!("pod {pod}"));
        let cfg: Value = serde_json::from_str(
            &pod_env(&p, 0, "TF_CONFIG").unwrap_or_else(|| panic!("{pod} has no TF_CONFIG")),
        )
        .unwrap();
        assert_eq!(cfg["cluster"], cluster, "{pod}");
        assert_eq!(cfg["task"], json!({"type": rtype, "index": index}), "{pod}");
        assert_eq!(
            p["metadata"]["labels"]["training.kubeflow.org/replica-type"],
            rtype
        );
        assert_eq!(p["status"]["phase"], "Succeeded", "{pod}");
        // Its process reached both others at those names and was reached by both.
        let log = logs(&t, pod);
        let me = format!("{rtype}-{index}");
        assert!(
            log.contains(&format!("done {me} reached=2 reached_by=2")),
            "{pod} log:\n{log}"
        );
        let reached = log
            .lines()
            .filter(|l| l.contains(" reached ") && l.contains(".default.svc:"))
            .count();
        assert_eq!(reached, 2, "{pod} log:\n{log}");
        // The headless Service of the replica exists.
        let svc = get_json(&t, &["service", pod]).unwrap_or_else(|| panic!("service {pod}"));
        assert_eq!(svc["spec"]["clusterIP"], "None", "{pod}");
    }
    assert_eq!(
        done["status"]["replicaStatuses"]["Worker"]["succeeded"], 2,
        "{}",
        done["status"]
    );
    // The PS may end after the job's Succeeded was written: its count follows.
    common::eventually("the PS counted as succeeded", WAIT, async || {
        let j = get_json(&t, &["tfjob", "probe"])?;
        (j["status"]["replicaStatuses"]["PS"]["succeeded"] == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpijob_launcher_runs_mpirun_over_its_workers_through_kubectl_exec() {
    if !common::sandbox_capable("mpijob_launcher_runs_mpirun_over_its_workers_through_kubectl_exec")
    {
        return;
    }
    assert!(
        std::path::Path::new("/usr/bin/mpirun").exists(),
        "needs Open MPI's mpirun (scripts/install-deps installs openmpi-bin)"
    );
    let t = common::start_with_node("1xT4").await;
    let job = json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "MPIJob",
        "metadata": {"name": "pi", "namespace": "default"},
        "spec": {
            "slotsPerWorker": 1,
            "runPolicy": {"cleanPodPolicy": "Running"},
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": {"spec": {"containers": [{
                    "name": "mpi",
                    "command": ["/usr/bin/mpirun", "--allow-run-as-root", "-np", "2",
                                "-bind-to", "none", "-map-by", "slot",
                                "/usr/bin/python3", "-c", RANK_PROBE],
                }]}}},
                "Worker": {"replicas": 2, "template": {"spec": {"containers": [{
                    "name": "mpi",
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                }]}}},
            }
        }
    });
    t.kubectl_stdin(&["create", "-f", "-"], &job.to_string())
        .success();

    // The job's ConfigMap, ServiceAccount, Role and RoleBinding, as v1 makes them.
    let cm = common::eventually("ConfigMap pi-config", WAIT, async || {
        get_json(&t, &["configmap", "pi-config"])
    })
    .await;
    assert_eq!(
        cm["data"]["hostfile"],
        "pi-worker-0 slots=1\npi-worker-1 slots=1\n"
    );
    assert!(
        cm["data"]["kubexec.sh"]
            .as_str()
            .unwrap()
            .contains("/opt/kube/kubectl exec ${POD_NAME}")
    );
    let role = get_json(&t, &["role", "pi-launcher"]).expect("Role pi-launcher");
    assert_eq!(role["rules"][1]["resources"], json!(["pods/exec"]));
    assert_eq!(
        role["rules"][1]["resourceNames"],
        json!(["pi-worker-0", "pi-worker-1"])
    );
    assert_eq!(role["metadata"]["ownerReferences"][0]["kind"], "MPIJob");
    get_json(&t, &["serviceaccount", "pi-launcher"]).expect("ServiceAccount pi-launcher");
    let rb = get_json(&t, &["rolebinding", "pi-launcher"]).expect("RoleBinding pi-launcher");
    assert_eq!(rb["subjects"][0]["name"], "pi-launcher");

    let started = std::time::Instant::now();
    let done = wait_succeeded(&t, "mpijob", "pi").await;
    eprintln!("MPIJob pi Succeeded after {:?}", started.elapsed());

    let launchers = get_json(
        &t,
        &[
            "pods",
            "-l",
            "training.kubeflow.org/job-name=pi,training.kubeflow.org/replica-type=launcher",
        ],
    )
    .unwrap();
    let launcher = &launchers["items"][0];
    let name = launcher["metadata"]["name"]
        .as_str()
        .expect("a launcher pod")
        .to_string();
    assert_eq!(launcher["spec"]["serviceAccountName"], "pi-launcher");
    assert_eq!(
        pod_env(launcher, 0, "OMPI_MCA_plm_rsh_agent").as_deref(),
        Some("/etc/mpi/kubexec.sh")
    );
    let log = logs(&t, &name);
    eprintln!("launcher log:\n{log}");
    // Every rank ran, each in one of the workers (its POD_NAME is the worker's: the launcher
    // exec'd orted into that pod).
    let mut ranks: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| {
            let l = &l[l.find("rank=")?..];
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(String::from)
            };
            Some((field("rank=")?, field("pod=")?))
        })
        .collect();
    ranks.sort();
    let ran_in: std::collections::BTreeSet<&str> = ranks.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(ranks.len(), 2, "two ranks in the launcher's log:\n{log}");
    assert_eq!(
        (ranks[0].0.as_str(), ranks[1].0.as_str()),
        ("0", "1"),
        "{log}"
    );
    assert_eq!(
        ran_in,
        ["pi-worker-0", "pi-worker-1"].into(),
        "each rank in its own worker pod:\n{log}"
    );
    assert_eq!(
        done["status"]["replicaStatuses"]["Launcher"]["succeeded"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tfjob_and_mpijob_specs_fail_with_a_clear_message() {
    if !common::sandbox_capable("bad_tfjob_and_mpijob_specs_fail_with_a_clear_message") {
        return;
    }
    let t = common::start().await;
    let container = json!({"spec": {"containers": [{"name": "x", "command": ["/bin/true"]}]}});
    let bad = [
        (
            "tfjob",
            json!({"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
                   "metadata": {"name": "two-chiefs"},
                   "spec": {"tfReplicaSpecs": {"Chief": {"replicas": 2, "template": container}}}}),
            "two-chiefs",
            "must be 1 or less",
        ),
        (
            "mpijob",
            json!({"apiVersion": "kubeflow.org/v1", "kind": "MPIJob",
                   "metadata": {"name": "no-launcher"},
                   "spec": {"mpiReplicaSpecs": {"Worker": {"replicas": 1, "template": container}}}}),
            "no-launcher",
            "spec.mpiReplicaSpecs[Launcher]: Required value",
        ),
    ];
    for (kind, obj, name, expect) in bad {
        let created = t.kubectl_stdin(&["create", "-f", "-"], &obj.to_string());
        if !created.ok {
            // Rejected at admission (by the CRD's schema): the message must say why.
            assert!(
                created.stderr.contains("Invalid") || created.stderr.contains(expect),
                "{}",
                created.stderr
            );
            continue;
        }
        let job = common::eventually(&format!("{kind} {name} Failed"), WAIT, async || {
            let j = get_json(&t, &[kind, name])?;
            condition(&j, "Failed").map(|c| (j, c))
        })
        .await;
        assert!(job.1.1.contains(expect), "{kind} {name}: {:?}", job.1);
        let pods = get_json(
            &t,
            &[
                "pods",
                "-l",
                &format!("training.kubeflow.org/job-name={name}"),
            ],
        )
        .unwrap();
        assert_eq!(
            pods["items"].as_array().unwrap().len(),
            0,
            "{kind} {name} made pods"
        );
    }
}
