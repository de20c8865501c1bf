//! The built-in controllers as API clients (the `ferry apiserver` and `ferry controllers`
//! processes apart), the `default` ServiceAccount, the order of Events, and what the binary
//! prints when it cannot start or is not on a terminal.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// A `ferry` subprocess, killed when dropped, whose stderr is collected (a pipe: not a TTY).
struct Ferry {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Ferry {
    fn start(args: &[&str]) -> (Self, BufReader<std::process::ChildStdout>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ferry starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (
            Self {
                child,
                stderr,
                reader: Some(reader),
            },
            stdout,
        )
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits up to `timeout` for the process to exit on its own (killed after that).
    /// Returns its status and everything it wrote to stderr.
    fn exit_within(mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
        let reader = self.reader.take();
        let stderr = self.stderr.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = self.child.id();
        let waiter = std::thread::spawn(move || {
            let mut me = self;
            let status = me.child.wait();
            let _ = tx.send(());
            status.ok()
        });
        let exited = rx.recv_timeout(timeout).is_ok();
        if !exited {
            // Still running: stop it (our own child, by its id).
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let status = waiter.join().ok().flatten().filter(|_| exited);
        // Everything it wrote, up to the end of its stderr.
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        let log = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        (status, log)
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads what a child still writes to its stdout, so that it neither blocks on a full pipe nor
/// dies writing to a closed one.
fn drain(mut stdout: BufReader<std::process::ChildStdout>) {
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        while stdout.read_until(b'\n', &mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
}

/// Starts `ferry apiserver` alone on a free port; returns it, its kubeconfig and a client.
async fn apiserver(dir: &Path) -> (Ferry, PathBuf, kube::Client) {
    let data = dir.join("data");
    let (server, mut stdout) = Ferry::start(&[
        "apiserver",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "ferry apiserver exited: {}",
            server.stderr()
        );
        if line.trim().starts_with("kubeconfig:") {
            break;
        }
    }
    drain(stdout);
    let kubeconfig = std::fs::read_to_string(data.join("kubeconfig")).unwrap();
    let client = ferry::up::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    (server, data.join("kubeconfig"), client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_run_apart_from_the_api_server_through_its_api_only() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubeconfig, client) = apiserver(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A dependent whose owner never existed, and a namespace being deleted.
    let orphan: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "orphan",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
            "uid": "00000000-0000-0000-0000-000000000000"}]}}))
    .unwrap();
    cms.create(&PostParams::default(), &orphan).await.unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    // The API server alone runs no controller: the namespace waits for its finalizer.
    let doomed = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        doomed.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        doomed.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    assert!(cms.get_opt("orphan").await.unwrap().is_some());

    let (controllers, stdout) = Ferry::start(&[
        "controller-manager",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    drain(stdout);
    eventually("the orphaned dependent to be collected", WAIT, async || {
        let cm = cms.get_opt("orphan").await.unwrap_or_else(|e| {
            panic!(
                "{e}\nthe API server's stderr:\n{}\nthe controllers' stderr:\n{}",
                server.stderr(),
                controllers.stderr()
            )
        });
        cm.is_none().then_some(())
    })
    .await;
    eventually("the namespace to be finalized", WAIT, async || {
        namespaces
            .get_opt("doomed")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    eventually("kube-system's default ServiceAccount", WAIT, async || {
        accounts.get_opt("default").await.unwrap()
    })
    .await;
    // Both logs went to a pipe: no colour codes in them.
    for (name, log) in [
        ("controllers", controllers.stderr()),
        ("apiserver", server.stderr()),
    ] {
        assert!(!log.is_empty(), "{name} logged nothing");
        assert!(!log.contains('\x1b'), "{name} logged ANSI codes: {log:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_has_a_default_service_account() {
    let t = common::start().await;
    t.kubectl(&["create", "namespace", "team-x"]).success();
    let names = eventually("the default ServiceAccount of team-x", WAIT, async || {
        let out = t.kubectl(&["get", "sa", "-n", "team-x", "-o", "name"]);
        (out.ok && out.stdout.contains("serviceaccount/default")).then_some(out.stdout)
    })
    .await;
    assert_eq!(names.trim(), "serviceaccount/default");
    // The bootstrap namespaces have one too.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        eventually(
            &format!("the default ServiceAccount of {ns}"),
            WAIT,
            async || {
                t.kubectl(&["get", "sa", "default", "-n", ns])
                    .ok
                    .then_some(())
            },
        )
        .await;
    }
    // Deleted, it comes back (a new object).
    let accounts: Api<ServiceAccount> = Api::namespaced(t.client.clone(), "team-x");
    let first = accounts.get("default").await.unwrap().metadata.uid;
    t.kubectl(&["delete", "sa", "default", "-n", "team-x"])
        .success();
    eventually(
        "the default ServiceAccount to be recreated",
        WAIT,
        async || {
            let now = accounts.get_opt("default").await.unwrap()?;
            (now.metadata.uid != first).then_some(())
        },
    )
    .await;
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_within_one_second_sort_in_the_order_they_happened() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    // A scheduler no one runs: the only Events are the ones recorded below.
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "ordered"},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid = pod.metadata.uid.unwrap();
    let recorder = ferry_agent::events::EventRecorder::new(t.client.clone(), "node-a");
    let subject = ferry_agent::events::Subject::pod("default", "ordered", &uid, None);
    // Reasons that do not sort by name, recorded well within one second.
    let reasons = ["Zulu", "Alpha", "Mike", "Bravo"];
    for reason in reasons {
        recorder
            .record(
                &subject,
                ferry_agent::events::EventType::Normal,
                reason,
                reason,
            )
            .await;
    }
    let sorted = t
        .kubectl(&[
            "get",
            "events",
            "--sort-by=.eventTime",
            "-o",
            "custom-columns=REASON:.reason",
            "--no-headers",
        ])
        .success();
    let got: Vec<&str> = sorted.lines().map(str::trim).collect();
    assert_eq!(got, reasons, "{sorted}");
    // kubectl describe lists them in the same order.
    let describe = t.kubectl(&["describe", "pod", "ordered"]).success();
    let at: Vec<usize> = reasons
        .iter()
        .map(|r| {
            describe
                .find(&format!("  {r}  "))
                .unwrap_or_else(|| panic!("{r} missing from describe:\n{describe}"))
        })
        .collect();
    assert!(at.is_sorted(), "describe order {at:?}:\n{describe}");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_refuses_a_busy_metrics_port_clearly() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (up, _stdout) = Ferry::start(&[
        "up",
        "--no-agent",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (status, stderr) = up.exit_within(WAIT);
    let status = status.unwrap_or_else(|| panic!("ferry up kept running; stderr: {stderr}"));
    assert!(!status.success());
    assert!(
        stderr.contains(&addr) && stderr.contains("in use") && stderr.contains("--metrics-listen"),
        "{stderr}"
    );
}

/// The STATUS values README.md says `kubectl get pods -w` prints for its first job.
fn readme_watch_states() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("kubectl get pods -w"))
        .expect("README runs kubectl get pods -w");
    let (_, comment) = line.split_once('#').expect("a comment says what it prints");
    comment
        .split("->")
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_first_job_prints_what_the_readme_says() {
    let t = common::start_with_node("1xA100-80GB").await;
    // `kubectl get pods -w`, connected (it printed a pod that waits for a scheduler no one
    // runs) before the first job's pod exists.
    let marker: Pod = serde_json::from_value(json!({"metadata": {"name": "marker"},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    Api::<Pod>::namespaced(t.client.clone(), "default")
        .create(&PostParams::default(), &marker)
        .await
        .unwrap();
    let mut watch = Command::new(common::kubectl_binary())
        .arg("--kubeconfig")
        .arg(&t.plane.kubeconfig)
        .args(["get", "pods", "-w"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        Box::new(watch.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(watch.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let next = |what: &str| {
        rx.recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("kubectl get pods -w printed no {what}"))
    };
    while !next("first answer").starts_with("marker ") {}
    t.kubectl(&[
        "run",
        "hello",
        "--image=busybox",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        "echo hello from Ferry",
    ])
    .success();
    let mut states = Vec::new();
    loop {
        let line = next("Completed line");
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() != Some(&"hello") {
            continue;
        }
        let state = cols[2].to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "Completed" || state == "Error" {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let readme = readme_watch_states();
    assert_eq!(states.first(), readme.first(), "kubectl printed {states:?}");
    assert_eq!(states.last(), readme.last(), "kubectl printed {states:?}");
    assert!(
        states.iter().all(|s| readme.contains(s)),
        "kubectl printed {states:?}, README says {readme:?}"
    );
    assert_eq!(
        t.kubectl(&["logs", "hello"]).success(),
        "hello from Ferry\n"
    );
    // The scheduler's and the agent's Events, within one second, in the order they happened.
    // (The agent records Events in the background: wait until all three are in.)
    let describe = eventually("the pod's Events", WAIT, async || {
        let out = t.kubectl(&["describe", "pod", "hello"]).success();
        ["Scheduled", "Created", "Started"]
            .iter()
            .all(|r| out.contains(&format!("  {r}  ")))
            .then_some(out)
    })
    .await;
    let at = |reason: &str| {
        describe
            .find(&format!("  {reason}  "))
            .unwrap_or_else(|| panic!("no {reason} event:\n{describe}"))
    };
    assert!(
        at("Scheduled") < at("Created") && at("Created") < at("Started"),
        "{describe}"
    );
    t.plane.stop().await;
}
