//! The data scientist's CLI (`ferry submit|list|get|logs|delete|top`) against a live plane:
//! the real `ferry` binary, real kubectl to look behind it, real PyTorch in the jobs. The
//! `-o json` output is checked against the JSON schema written in docs/cli.md (the doc is the
//! oracle: a field the doc promises and the CLI drops fails here).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{TestPlane, eventually};

/// Runs `ferry ARGS` against the plane: (success, stdout, stderr).
fn ferry(t: &TestPlane, args: &[&str]) -> (bool, String, String) {
    ferry_with(&t.plane.kubeconfig, args)
}

fn ferry_with(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("FERRY_DATA_DIR")
        .output()
        .expect("run ferry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(t: &TestPlane, args: &[&str]) -> String {
    let (success, stdout, stderr) = ferry(t, args);
    assert!(success, "ferry {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn fails(t: &TestPlane, args: &[&str]) -> String {
    let (success, stdout, stderr) = ferry(t, args);
    assert!(!success, "ferry {args:?} should fail:\n{stdout}\n{stderr}");
    stderr
}

fn train_py() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pytorch/train.py")
        .canonicalize()
        .expect("examples/pytorch/train.py")
        .display()
        .to_string()
}

/// The JSON schemas in docs/cli.md (```json schema=NAME blocks).
fn doc_schema(name: &str) -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md"))
        .expect("docs/cli.md");
    let fence = format!("```json schema={name}\n");
    let start = doc
        .find(&fence)
        .unwrap_or_else(|| panic!("docs/cli.md has no schema {name}"))
        + fence.len();
    let end = start + doc[start..].find("\n```").expect("closed fence");
    serde_json::from_str(&doc[start..end]).expect("the schema in docs/cli.md is JSON")
}

/// A small JSON-schema check (type, enum, required, properties, items) with the path of the
/// first mismatch. Properties the schema does not list are errors too: the doc must name every
/// field the CLI prints.
fn check_schema(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        return Err(format!("{path}: {v} is not one of {allowed:?}"));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let is = |ty: &str| match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        };
        if !types.iter().any(|ty| is(ty)) {
            return Err(format!("{path}: {v} is not {types:?}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Err(format!("{path}: missing required {r:?}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, val) in obj {
                let sub = props
                    .get(k)
                    .ok_or_else(|| format!("{path}: {k:?} is not documented in docs/cli.md"))?;
                check_schema(sub, val, &format!("{path}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check_schema(items, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn no_jobs_created(t: &TestPlane) {
    for kind in ["pytorchjobs", "tfjobs", "mpijobs"] {
        let out = t.kubectl(&["get", kind, "-A", "-o", "name"]).success();
        assert_eq!(out.trim(), "", "a failed submit created {kind}: {out}");
    }
}

#[test]
fn help_teaches() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["submit", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "pytorchjob",
        "tfjob",
        "mpijob",
        "Examples:",
        "--min-workers 2 --max-workers 4",
        "ferry get NAME",
    ] {
        assert!(
            help.contains(want),
            "`ferry submit --help` lacks {want:?}:\n{help}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["submit", "pytorch", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--name",
        "--image",
        "--workers",
        "--gpus",
        "--cpu",
        "--memory",
        "--env",
        "--data ",
        "--data-dir",
        "--selector",
        "--toleration",
        "--priority",
        "--queue",
        "--retry",
        "--running-timeout",
        "--ttl-after-finished",
        "--clean-task-policy",
        "--working-dir",
        "--min-workers",
        "--max-workers",
        "MASTER_ADDR",
    ] {
        assert!(
            help.contains(flag),
            "`ferry submit pytorch --help` lacks {flag}:\n{help}"
        );
    }
    // Arena's aliases.
    for alias in [
        ["submit", "mj", "--help"],
        ["submit", "tf", "--help"],
        ["submit", "mpi", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(alias)
            .output()
            .unwrap();
        assert!(out.status.success(), "{alias:?}");
    }
}

/// Bad input is refused before anything is created, with the reason and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_anything_is_created() {
    let t = common::start_with_node("4xH100-80GB").await;
    let base = ["submit", "pytorch", "--name", "bad"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v.extend_from_slice(&["--", "true"]);
        v
    }
    let with = |extra: &[&'static str]| with(&base, extra);
    let e = fails(&t, &with(&["--queue", "gold"]));
    assert!(e.contains("queue \"gold\" not found (404 NotFound)"), "{e}");
    let e = fails(&t, &with(&["--gpus", "8"]));
    assert!(
        e.contains("no node has 8 GPUs (the most on one node is 4, on test-node)"),
        "{e}"
    );
    let e = fails(&t, &with(&["--gpus", "2", "--workers", "3"]));
    assert!(e.contains("needs 6 GPUs at once"), "{e}");
    let e = fails(&t, &with(&["--priority", "urgent"]));
    assert!(e.contains("priority class \"urgent\" not found"), "{e}");
    let e = fails(&t, &with(&["--data", "imagenet:/data"]));
    assert!(
        e.contains("PersistentVolumeClaim \"imagenet\" not found"),
        "{e}"
    );
    let e = fails(&t, &with(&["--cpu", "two"]));
    assert!(e.contains("invalid --cpu \"two\""), "{e}");
    let e = fails(&t, &with(&["--toleration", "gpu:Sometimes"]));
    assert!(
        e.contains("NoSchedule, PreferNoSchedule or NoExecute"),
        "{e}"
    );
    let e = fails(&t, &with(&["--min-workers", "3", "--max-workers", "2"]));
    assert!(e.contains("1 <= min <= max"), "{e}");
    let e = fails(
        &t,
        &["submit", "pytorch", "--name", "Bad_Name", "--", "true"],
    );
    assert!(
        e.contains("invalid --name \"Bad_Name\" (422 Invalid)"),
        "{e}"
    );
    let e = fails(&t, &with(&["--image", "UPPER/case"]));
    assert!(e.contains("invalid --image"), "{e}");

    // An image missing from a real registry (Debian's docker-registry, empty).
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (Debian's docker-registry package) must be installed");
    eventually(
        "the registry listens",
        Duration::from_secs(20),
        async || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    )
    .await;
    let image = format!("127.0.0.1:{port}/team/trainer:v1");
    let image_args = [
        "submit",
        "pytorch",
        "--name",
        "bad",
        "--image",
        image.as_str(),
        "--",
        "true",
    ];
    let e = fails(&t, &image_args);
    assert!(
        e.contains(&format!(
            "image {image} not found in registry 127.0.0.1:{port} (404 NotFound"
        )),
        "{e}"
    );
    registry.kill().unwrap();
    registry.wait().unwrap();
    let e = fails(&t, &image_args);
    assert!(e.contains("cannot reach registry"), "{e}");

    no_jobs_created(&t);

    // A job that exists is not overwritten.
    ok(
        &t,
        &["submit", "pytorch", "--name", "twice", "--", "sleep", "1"],
    );
    let e = fails(
        &t,
        &["submit", "pytorch", "--name", "twice", "--", "sleep", "1"],
    );
    assert!(
        e.contains("already exists in namespace \"default\" (409 AlreadyExists)"),
        "{e}"
    );
    // Verbs on missing jobs.
    let e = fails(&t, &["get", "nosuch"]);
    assert!(
        e.contains("no training job \"nosuch\" in namespace \"default\" (404 NotFound)"),
        "{e}"
    );
    let e = fails(&t, &["delete", "nosuch"]);
    assert!(e.contains("404 NotFound"), "{e}");
    let e = fails(&t, &["logs", "nosuch"]);
    assert!(e.contains("404 NotFound"), "{e}");
}

/// What submit renders, read back with kubectl: arena's shapes and every flag's field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_renders_every_flag() {
    let t = common::start_with_node("4xH100-80GB").await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: scheduling.ferry.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: research\nspec: {}\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: imagenet\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n",
    )
    .success();
    // Suspended right after creation would need a flag arena lacks: use --dry-run to render
    // with every check, then submit for real and compare.
    let args = [
        "submit",
        "pytorch",
        "--name",
        "full",
        "--workers",
        "3",
        "--gpus",
        "1",
        "--cpu",
        "500m",
        "--memory",
        "1Gi",
        "-e",
        "A=1",
        "--env",
        "B=x=y",
        "--data",
        "imagenet:/data",
        "--data-dir",
        "/tmp:/scratch",
        "--selector",
        "zone=a",
        "--toleration",
        "gpu=true:NoSchedule",
        "--priority",
        "high",
        "--queue",
        "research",
        "--retry",
        "2",
        "--running-timeout",
        "1h",
        "--ttl-after-finished",
        "10m",
        "--clean-task-policy",
        "All",
        "--working-dir",
        "/work",
        "--",
        "python3 train.py --steps 5",
    ];
    let mut dry = args.to_vec();
    dry.insert(2, "--dry-run");
    let rendered = json(&ok(&t, &dry));
    no_jobs_created(&t);
    let out = ok(&t, &args);
    assert!(
        out.contains("pytorchjob.kubeflow.org/full created"),
        "{out}"
    );
    assert!(out.contains("ferry get full"), "{out}");
    let job = json(
        &t.kubectl(&["get", "pytorchjob", "full", "-o", "json"])
            .success(),
    );
    assert_eq!(
        job["spec"]["pytorchReplicaSpecs"],
        rendered["spec"]["pytorchReplicaSpecs"]
    );
    let rp = &job["spec"]["runPolicy"];
    assert_eq!(rp["backoffLimit"], 2);
    assert_eq!(rp["activeDeadlineSeconds"], 3600);
    assert_eq!(rp["ttlSecondsAfterFinished"], 600);
    assert_eq!(rp["cleanPodPolicy"], "All");
    assert_eq!(rp["schedulingPolicy"]["queue"], "research");
    assert_eq!(rp["schedulingPolicy"]["priorityClass"], "high");
    let specs = &job["spec"]["pytorchReplicaSpecs"];
    assert_eq!(specs["Master"]["replicas"], 1);
    assert_eq!(specs["Master"]["restartPolicy"], "Never");
    assert_eq!(
        specs["Worker"]["replicas"], 2,
        "--workers counts the master, as arena"
    );
    assert_eq!(specs["Worker"]["restartPolicy"], "OnFailure");
    let pod = &specs["Worker"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "pytorch");
    assert_eq!(
        c["command"],
        serde_json::json!(["sh", "-c", "python3 train.py --steps 5"])
    );
    assert_eq!(c["workingDir"], "/work");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}])
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
    assert_eq!(c["volumeMounts"][1]["mountPath"], "/scratch");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "imagenet"
    );
    assert_eq!(pod["volumes"][1]["hostPath"]["path"], "/tmp");
    assert_eq!(pod["nodeSelector"]["zone"], "a");
    assert_eq!(
        pod["tolerations"][0],
        serde_json::json!({"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    );
    assert_eq!(pod["priorityClassName"], "high");

    // Elastic: Workers only, maxReplicas of them, c10d.
    ok(
        &t,
        &[
            "submit",
            "pytorch",
            "--name",
            "el",
            "--min-workers",
            "2",
            "--max-workers",
            "4",
            "--max-restarts",
            "3",
            "--",
            "/usr/bin/python3",
            "-m",
            "torch.distributed.run",
            "x.py",
        ],
    );
    let job = json(
        &t.kubectl(&["get", "pytorchjob", "el", "-o", "json"])
            .success(),
    );
    assert_eq!(
        job["spec"]["elasticPolicy"],
        serde_json::json!({"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d", "maxRestarts": 3})
    );
    assert_eq!(job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"], 4);
    assert!(job["spec"]["pytorchReplicaSpecs"]["Master"].is_null());
    assert_eq!(
        job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["/usr/bin/python3", "-m", "torch.distributed.run", "x.py"])
    );
    // TFJob and MPIJob shapes, by arena's aliases.
    ok(
        &t,
        &[
            "submit",
            "tf",
            "--name",
            "tfj",
            "--workers",
            "2",
            "--ps",
            "1",
            "--chief",
            "--gpus",
            "1",
            "--",
            "python3",
            "t.py",
        ],
    );
    let job = json(&t.kubectl(&["get", "tfjob", "tfj", "-o", "json"]).success());
    let specs = &job["spec"]["tfReplicaSpecs"];
    assert_eq!(
        (
            specs["Chief"]["replicas"].clone(),
            specs["PS"]["replicas"].clone(),
            specs["Worker"]["replicas"].clone()
        ),
        (1.into(), 1.into(), 2.into())
    );
    assert!(
        specs["PS"]["template"]["spec"]["containers"][0]["resources"].is_null(),
        "PS get no GPUs"
    );
    assert_eq!(
        specs["Worker"]["template"]["spec"]["containers"][0]["name"],
        "tensorflow"
    );
    ok(
        &t,
        &[
            "submit",
            "mj",
            "--name",
            "mpj",
            "--workers",
            "2",
            "--gpus",
            "2",
            "--",
            "mpirun",
            "-np",
            "4",
            "hostname",
        ],
    );
    let job = json(&t.kubectl(&["get", "mpijob", "mpj", "-o", "json"]).success());
    assert_eq!(job["spec"]["slotsPerWorker"], 2);
    let specs = &job["spec"]["mpiReplicaSpecs"];
    assert_eq!(
        specs["Launcher"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["mpirun", "-np", "4", "hostname"])
    );
    assert_eq!(
        specs["Worker"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "2"
    );

    // list: -T filters, -o json is an array of TrainingJob.
    let all = json(&ok(&t, &["list", "-o", "json"]));
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["el", "full", "mpj", "tfj"]);
    let schema = doc_schema("TrainingJob");
    for j in all.as_array().unwrap() {
        check_schema(&schema, j, "$").unwrap();
    }
    let tf = json(&ok(&t, &["list", "-T", "tf", "-o", "json"]));
    assert_eq!(tf.as_array().unwrap().len(), 1);
    assert_eq!(tf[0]["type"], "tfjob");
    assert_eq!(tf[0]["requestedGpus"], 3);
    let table = ok(&t, &["ls"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("GPU(Requested)"), "{table}");
    let yaml = ok(&t, &["get", "full", "-o", "yaml"]);
    assert!(yaml.contains("kind: TrainingJob"), "{yaml}");
    // Deleting several at once.
    let out = ok(&t, &["delete", "el", "tfj", "mpj"]);
    assert!(out.contains("pytorchjob.kubeflow.org/el deleted"), "{out}");
    assert!(out.contains("tfjob.kubeflow.org/tfj deleted"), "{out}");
    eventually("the jobs are gone", Duration::from_secs(20), async || {
        let names = t
            .kubectl(&["get", "pytorchjobs,tfjobs,mpijobs", "-o", "name"])
            .success();
        (names.trim() == "pytorchjob.kubeflow.org/full").then_some(())
    })
    .await;
    let other = json(&ok(&t, &["list", "-A", "-o", "json"]));
    assert_eq!(other.as_array().unwrap().len(), 1);
}

/// A real PyTorch job through every verb: submit, get (instances, nodes, GPU devices), top
/// node (per card), top job, logs (-i, --tail, -f), the JSON schema while it runs and after
/// it succeeded, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_job_through_every_verb() {
    if !common::sandbox_capable("a_real_job_through_every_verb") {
        return;
    }
    let t = common::start_with_node("4xH100-80GB").await;
    gpus_published(&t).await;
    let ckpt = t.dir.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    let train = train_py();
    let ckpt_env = format!("CHECKPOINT_DIR={}", ckpt.display());
    let out = ok(
        &t,
        &[
            "submit",
            "pytorch",
            "--name",
            "mnist",
            "--workers",
            "2",
            "--gpus",
            "2",
            "-e",
            &ckpt_env,
            "--",
            "/usr/bin/python3",
            &train,
            "--steps",
            "40",
            "--step-seconds",
            "0.2",
        ],
    );
    assert!(
        out.contains("pytorchjob.kubeflow.org/mnist created"),
        "{out}"
    );
    let schema = doc_schema("TrainingJob");
    let running = eventually(
        "mnist RUNNING with 2 instances on GPUs",
        Duration::from_secs(120),
        async || {
            let j = json(&ok(&t, &["get", "mnist", "-o", "json"]));
            (j["status"] == "RUNNING"
                && j["instances"]
                    .as_array()
                    .is_some_and(|i| i.len() == 2 && i.iter().all(|i| i["status"] == "Running")))
            .then_some(j)
        },
    )
    .await;
    check_schema(&schema, &running, "$").unwrap();
    assert_eq!(running["requestedGpus"], 4);
    assert_eq!(running["allocatedGpus"], 4);
    assert_eq!(running["chiefName"], "mnist-master-0");
    let mut devices: Vec<u64> = running["instances"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["gpuDevices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
        })
        .collect();
    devices.sort();
    assert_eq!(devices, [0, 1, 2, 3], "each card assigned once: {running}");
    for i in running["instances"].as_array().unwrap() {
        assert_eq!(i["node"], "test-node");
    }
    // top node: per node and per card, checked against the pods' annotations via kubectl.
    let top = json(&ok(&t, &["top", "node", "-o", "json"]));
    check_schema(&doc_schema("NodeGpus"), &top, "$").unwrap();
    assert_eq!(
        (top["totalGpus"].clone(), top["allocatedGpus"].clone()),
        (4.into(), 4.into())
    );
    let pods = json(
        &t.kubectl(&[
            "get",
            "pods",
            "-l",
            "training.kubeflow.org/job-name=mnist",
            "-o",
            "json",
        ])
        .success(),
    );
    for p in pods["items"].as_array().unwrap() {
        let name = p["metadata"]["name"].as_str().unwrap();
        let assigned = p["metadata"]["annotations"]["ferry.dev/gpu-assigned"]
            .as_str()
            .unwrap();
        for idx in assigned.split(',') {
            let card = &top["nodes"][0]["gpus"][idx.parse::<usize>().unwrap()];
            assert_eq!(
                card["allocatedTo"],
                serde_json::json!([format!("default/{name}")]),
                "{top}"
            );
        }
    }
    let table = ok(&t, &["top", "node"]);
    assert!(
        table.contains("Allocated/Total GPUs In Cluster: 4/4 (100.0%)"),
        "{table}"
    );
    let table = ok(&t, &["top", "job"]);
    assert!(table.contains("mnist-worker-0"), "{table}");
    let table = ok(&t, &["get", "mnist"]);
    assert!(
        table.contains("Status:      RUNNING") && table.contains("mnist-master-0"),
        "{table}"
    );
    // logs: rank 0 by default, -i another instance, --tail.
    let rank0 = eventually("rank 0 prints steps", Duration::from_secs(60), async || {
        let l = ok(&t, &["logs", "mnist"]);
        l.contains("rank=0").then_some(l)
    })
    .await;
    assert!(!rank0.contains("rank=1"), "{rank0}");
    let w = ok(
        &t,
        &["logs", "mnist", "-i", "mnist-worker-0", "--tail", "1"],
    );
    assert_eq!(w.lines().count(), 1, "{w}");
    assert!(w.contains("rank=1") || w.contains("done"), "{w}");
    // -f follows to the end of the process.
    let followed = ok(&t, &["logs", "mnist", "-f"]);
    assert!(followed.contains("done steps=40"), "{followed}");
    let done = eventually("mnist SUCCEEDED", Duration::from_secs(60), async || {
        let j = json(&ok(&t, &["get", "mnist", "-e", "-o", "json"]));
        (j["status"] == "SUCCEEDED").then_some(j)
    })
    .await;
    check_schema(&schema, &done, "$").unwrap();
    assert!(done["finishedAt"].is_string(), "{done}");
    assert_eq!(done["allocatedGpus"], 0, "a finished job holds no GPUs");
    assert!(
        !done["events"].as_array().unwrap().is_empty(),
        "-e shows events: {done}"
    );
    let e = fails(&t, &["logs", "mnist", "-i", "mnist-worker-7"]);
    assert!(e.contains("no instance \"mnist-worker-7\""), "{e}");
    let out = ok(&t, &["delete", "mnist"]);
    assert!(out.contains("deleted"), "{out}");
    eventually("its pods are gone", Duration::from_secs(30), async || {
        let out = t.kubectl(&["get", "pods", "-o", "name"]).success();
        out.trim().is_empty().then_some(())
    })
    .await;
}

/// Waits until the node agent has published its GPUs (the CLI checks requests against them).
async fn gpus_published(t: &common::TestPlane) {
    eventually(
        "the node's GPUs published",
        Duration::from_secs(60),
        async || {
            let out = t
                .kubectl(&[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={.items[*].status.allocatable.nvidia\\.com/gpu}",
                ])
                .success();
            (!out.trim().is_empty() && out.trim() != "0").then_some(())
        },
    )
    .await;
}

/// A job that cannot fit says why it waits (`get`), and its events say it too (`get -e`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_says_why() {
    let t = common::start_with_node("4xH100-80GB").await;
    gpus_published(&t).await;
    ok(
        &t,
        &[
            "submit",
            "pytorch",
            "--name",
            "first",
            "--workers",
            "2",
            "--gpus",
            "2",
            "--",
            "sleep",
            "600",
        ],
    );
    eventually("first runs", Duration::from_secs(60), async || {
        let j = json(&ok(&t, &["get", "first", "-o", "json"]));
        (j["allocatedGpus"] == 4).then_some(())
    })
    .await;
    ok(
        &t,
        &[
            "submit",
            "pytorch",
            "--name",
            "second",
            "--workers",
            "2",
            "--gpus",
            "1",
            "--",
            "sleep",
            "1",
        ],
    );
    let j = eventually(
        "second says why it waits",
        Duration::from_secs(60),
        async || {
            let j = json(&ok(&t, &["get", "second", "-e", "-o", "json"]));
            j["waitingReason"]
                .as_str()
                .is_some_and(|w| w.contains("GPU") || w.contains("gpu"))
                .then_some(j)
        },
    )
    .await;
    assert_eq!(j["status"], "PENDING", "{j}");
    let table = ok(&t, &["get", "second", "-e"]);
    assert!(table.contains("Waiting:"), "{table}");
    assert!(table.contains("Events:"), "{table}");
    ok(&t, &["delete", "first", "second"]);
}
