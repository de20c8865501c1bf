//! Pods with images through containerd (CRI), end to end with real kubectl, a containerd of
//! the test's own and a local registry holding images built on the machine
//! (`scripts/test-images`): logs, limits, exec (once the exec route exists), image pull
//! policies and failures, RuntimeClasses, and no sandbox or container left behind.
//!
//! Needs root, containerd, runc, docker-registry, umoci and skopeo (`scripts/install-deps`):
//! skipped loudly without them, and failing under `CI=true`.

use crate::common;
use crate::common::containerd;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};

use common::{TestPlane, sandbox_capable};
use containerd::TestRuntime;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The plane with a node agent using the test's containerd, or `None` (skipped).
pub(crate) async fn plane_with_containerd(test: &str) -> Option<(TestPlane, TestRuntime)> {
    plane_with_containerd_and(test, |_| {}).await
}

/// [`plane_with_containerd`] with the agent's options adjusted first.
pub(crate) async fn plane_with_containerd_and(
    test: &str,
    adjust: impl FnOnce(&mut ferry::up::AgentOptions),
) -> Option<(TestPlane, TestRuntime)> {
    if !sandbox_capable(test) {
        return None;
    }
    let mut runtime: Option<Result<TestRuntime, String>> = None;
    let plane = common::start_with(|c| {
        let cni = c.data_dir.join("agent/cni/net.d");
        let rt = TestRuntime::start(&cni, &c.network);
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
        agent.shim = Some(common::shim_command());
        agent.containerd = rt.as_ref().ok().map(|r| r.socket.clone());
        adjust(&mut agent);
        c.agent = Some(agent);
        runtime = Some(rt);
    })
    .await;
    match runtime.expect("the harness ran") {
        Ok(rt) => Some((plane, rt)),
        Err(why) => {
            let message =
                format!("{test}: containerd or the test images cannot be prepared: {why}");
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{message}, and CI is set: refusing to skip");
            }
            eprintln!("SKIPPED {message}");
            None
        }
    }
}

async fn pod(plane: &TestPlane, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(plane.client.clone(), "default")
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The waiting reason of the pod's first container, if it waits.
fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

async fn events_of(plane: &TestPlane, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(plane.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

/// What the test saw, for a failure message: the pods, their events, containerd's log.
fn dump(plane: &TestPlane, rt: &TestRuntime) -> String {
    let pods = plane.kubectl(&["get", "pods", "-o", "yaml"]).stdout;
    let events = plane.kubectl(&["get", "events"]).stdout;
    let log = rt.log();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    format!(
        "{pods}\n{events}\ncontainerd:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// `common::eventually`, with the state of everything in the panic message.
async fn wait_for<T>(
    plane: &TestPlane,
    rt: &TestRuntime,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}:\n{}", dump(plane, rt));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn apply(plane: &TestPlane, yaml: &str) {
    let out = plane.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.ok, "kubectl apply failed: {}\n{yaml}", out.stderr);
}

/// The memory limit of the cgroup of process `pid` (cgroup v1, else v2).
fn memory_limit_of(pid: i32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return std::fs::read_to_string(format!(
                "/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
            ))
            .ok()
            .map(|s| s.trim().to_string());
        }
        if controllers.is_empty() {
            for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
                if let Ok(s) = std::fs::read_to_string(format!("{base}{path}/memory.max")) {
                    return Some(s.trim().to_string());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_pods_run_images_from_the_local_registry() {
    let Some((plane, rt)) = plane_with_containerd("containerd_pods").await else {
        return;
    };
    let busybox = rt.image("busybox");
    // 1. A pod with an image runs under containerd: logs, pod IP, limits, container id.
    apply(
        &plane,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: boxed}}
spec:
  containers:
  - name: main
    image: {busybox}
    command: ["sh", "-c", "echo hello-from-containerd; echo host=$(cat /etc/hostname); exec sleep 3600"]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
"#
        ),
    );
    let running = wait_for(&plane, &rt, "the containerd pod to run", async || {
        let p = pod(&plane, "boxed").await?;
        let s = p.status.as_ref()?;
        (s.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let status = running.status.as_ref().unwrap();
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert!(
        cs.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{cs:?}"
    );
    let ip: std::net::Ipv4Addr = status
        .pod_ip
        .as_deref()
        .expect("the pod has an IP")
        .parse()
        .unwrap();
    assert!(plane.network.node_pod_cidr.contains(ip), "pod IP {ip}");
    let logs = wait_for(&plane, &rt, "the containerd pod's logs", async || {
        let out = plane.kubectl(&["logs", "boxed"]);
        (out.ok && out.stdout.contains("host=boxed")).then_some(out.stdout)
    })
    .await;
    assert!(logs.contains("hello-from-containerd"), "{logs}");
    // The recorded container pid (what exec enters) is in a cgroup with the memory limit.
    let uid = running.metadata.uid.clone().unwrap();
    let state_file = plane.dir.path().join(format!(
        "data/agent/pods/{uid}/containers/main/0/state.json"
    ));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state.json")).unwrap();
    let pid = state["container"]["pid"].as_i64().expect("a pid") as i32;
    assert_eq!(
        memory_limit_of(pid).as_deref(),
        Some("67108864"),
        "the container's cgroup has the 64Mi limit"
    );
    // What exec runs through: the recorded pid's namespaces and root filesystem.
    let entered = ferry_agent::sandbox::enter::command_in(pid, "cat", true)
        .expect("enter the container")
        .arg("/etc/hostname")
        .output()
        .expect("run cat in the container");
    assert_eq!(
        String::from_utf8_lossy(&entered.stdout).trim(),
        "boxed",
        "{}",
        String::from_utf8_lossy(&entered.stderr)
    );
    let entered = ferry_agent::sandbox::enter::command_in(pid, "/bin/busybox", true)
        .expect("enter the container")
        .args(["readlink", "/bin/sh"])
        .output()
        .expect("run busybox in the container");
    assert_eq!(
        String::from_utf8_lossy(&entered.stdout).trim(),
        "busybox",
        "the image's root filesystem"
    );
    // kubectl exec runs inside the image's root filesystem, and kubectl cp through it.
    let exec = plane.kubectl(&["exec", "boxed", "--", "cat", "/etc/hostname"]);
    assert!(exec.ok, "kubectl exec failed: {}", exec.stderr);
    assert_eq!(exec.stdout.trim(), "boxed");
    let ls = plane.kubectl(&["exec", "boxed", "--", "ls", "/bin/busybox"]);
    assert!(ls.ok, "the image's /bin/busybox: {}", ls.stderr);

    // 2. imagePullPolicy Never with an image that is not there.
    apply(
        &plane,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  containers:
  - name: main
    image: {}/ferry-test/absent:1
    imagePullPolicy: Never
    command: ["true"]
"#,
            rt.registry
        ),
    );
    wait_for(&plane, &rt, "ErrImageNeverPull", async || {
        let p = pod(&plane, "never").await?;
        (waiting_reason(&p).as_deref() == Some("ErrImageNeverPull")).then_some(())
    })
    .await;

    // 3. An image the registry does not have: ErrImagePull, then ImagePullBackOff, an Event.
    apply(
        &plane,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: missing}}
spec:
  containers:
  - name: main
    image: {}/ferry-test/nonexistent:1
"#,
            rt.registry
        ),
    );
    wait_for(&plane, &rt, "ImagePullBackOff", async || {
        let p = pod(&plane, "missing").await?;
        (waiting_reason(&p).as_deref() == Some("ImagePullBackOff")).then_some(())
    })
    .await;
    let events = events_of(&plane, "missing").await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Failed")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("Failed to pull image"))),
        "{events:?}"
    );

    // 3b. A registry that requires basic auth: no pull without the pod's imagePullSecrets,
    // a pull with them (a kubernetes.io/dockerconfigjson Secret).
    let mut pods = vec!["boxed", "never", "missing", "unknown-class", "on-host"];
    if let Some(auth) = rt.auth_registry.clone() {
        let private = format!("{auth}/ferry-test/busybox:1");
        apply(
            &plane,
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: no-secret}}
spec:
  containers:
  - name: main
    image: {private}
    imagePullPolicy: Always
    command: ["sleep", "3600"]
"#
            ),
        );
        let out = plane.kubectl(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={auth}"),
            &format!("--docker-username={}", containerd::AUTH_USER),
            &format!("--docker-password={}", containerd::AUTH_PASSWORD),
        ]);
        assert!(out.ok, "{}", out.stderr);
        apply(
            &plane,
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: with-secret}}
spec:
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - name: main
    image: {private}
    command: ["sh", "-c", "echo pulled-with-credentials; exec sleep 3600"]
"#
            ),
        );
        wait_for(
            &plane,
            &rt,
            "the pod with pull secrets to run",
            async || {
                let out = plane.kubectl(&["logs", "with-secret"]);
                (out.ok && out.stdout.contains("pulled-with-credentials")).then_some(())
            },
        )
        .await;
        wait_for(&plane, &rt, "no pull without credentials", async || {
            let p = pod(&plane, "no-secret").await?;
            matches!(
                waiting_reason(&p).as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
            .then_some(())
        })
        .await;
        pods.extend(["no-secret", "with-secret"]);
    } else {
        let message = "containerd_pods: htpasswd is missing (apache2-utils): the imagePullSecrets part is not run";
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{message}, and CI is set");
        }
        eprintln!("SKIPPED {message}");
    }

    // 4. An unknown RuntimeClass fails the pod clearly; nothing is made for it.
    apply(
        &plane,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: unknown-class}}
spec:
  runtimeClassName: nope
  restartPolicy: Never
  containers:
  - name: main
    image: {busybox}
    command: ["true"]
"#
        ),
    );
    let failed = wait_for(
        &plane,
        &rt,
        "the unknown RuntimeClass to fail the pod",
        async || {
            let p = pod(&plane, "unknown-class").await?;
            (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(p)
        },
    )
    .await;
    let s = failed.status.as_ref().unwrap();
    assert_eq!(s.reason.as_deref(), Some("RuntimeClassNotFound"), "{s:?}");
    assert!(
        s.message
            .as_deref()
            .is_some_and(|m| m.contains(r#"RuntimeClass "nope" not found"#)),
        "{s:?}"
    );

    // 5. An image on the host runtime (RuntimeClass host): its command runs on the host.
    apply(
        &plane,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: on-host}}
spec:
  runtimeClassName: host
  restartPolicy: Never
  containers:
  - name: main
    image: {busybox}
    command: ["sh", "-c", "echo ran-on-the-host"]
"#
        ),
    );
    wait_for(&plane, &rt, "the host-runtime pod to finish", async || {
        let p = pod(&plane, "on-host").await?;
        (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let out = plane.kubectl(&["logs", "on-host"]);
    assert!(out.stdout.contains("ran-on-the-host"), "{out:?}");
    let events = events_of(&plane, "on-host").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("HostRuntime")),
        "{events:?}"
    );
    let p = pod(&plane, "on-host").await.unwrap();
    let id = p.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap_or_default();
    assert!(id.starts_with("ferry://"), "{id}");

    // 6. Deleting the pods leaves nothing in containerd.
    let cri = rt.cri();
    assert!(!cri.list_sandboxes(None).await.unwrap().is_empty());
    let mut args = vec!["delete", "pod"];
    args.extend(pods.iter().copied());
    args.extend(["--grace-period=1", "--wait=false"]);
    let out = plane.kubectl(&args);
    assert!(out.ok, "{}", out.stderr);
    wait_for(&plane, &rt, "the pods to be gone", async || {
        let pods = Api::<Pod>::namespaced(plane.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?;
        pods.items.is_empty().then_some(())
    })
    .await;
    wait_for(
        &plane,
        &rt,
        "containerd to hold no sandbox or container",
        async || {
            let sandboxes = cri.list_sandboxes(None).await.ok()?;
            let containers = cri.list_containers(None).await.ok()?;
            (sandboxes.is_empty() && containers.is_empty()).then_some(())
        },
    )
    .await;
    drop(plane);
    drop(rt);
}

/// An agent restart adopts the containerd sandbox and container: same container id, one
/// sandbox, no restart; the new agent then removes both when the pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_restart_adopts_containerd_pods() {
    let test = "containerd_adoption";
    if !sandbox_capable(test) {
        return;
    }
    let plane = common::start_with(|c| c.agent = None).await;
    let data_dir = plane.dir.path().join("agent-data");
    let rt = match TestRuntime::start(&data_dir.join("cni/net.d"), &plane.network) {
        Ok(rt) => rt,
        Err(why) => {
            let message =
                format!("{test}: containerd or the test images cannot be prepared: {why}");
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{message}, and CI is set: refusing to skip");
            }
            eprintln!("SKIPPED {message}");
            return;
        }
    };
    let config = {
        let mut c = ferry_agent::AgentConfig::new("test-node", &data_dir);
        c.gpus = ferry_agent::gpu::GpuSource::Disabled;
        c.network = plane.network.clone();
        c.log_server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c.shim = common::shim_command();
        c.cri_endpoint = Some(rt.socket.clone());
        c.tls = Some(
            plane
                .plane
                .agent_tls("test-node", c.node_ip)
                .expect("agent certificate"),
        );
        c
    };
    let agent = ferry_agent::start(plane.client.clone(), config.clone())
        .await
        .expect("agent starts");
    apply(
        &plane,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: adopted}}
spec:
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "echo first-start; exec sleep 3600"]
"#,
            rt.image("busybox")
        ),
    );
    let container_id = |p: &Pod| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .container_id
            .clone()
    };
    let before = wait_for(&plane, &rt, "the pod to run", async || {
        let p = pod(&plane, "adopted").await?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let id = container_id(&before).expect("a container id");
    agent.stop().await;
    let agent = ferry_agent::start(plane.client.clone(), config)
        .await
        .expect("agent restarts");
    let cri = rt.cri();
    // The new agent publishes the same container (its log server is new: logs prove it).
    wait_for(&plane, &rt, "logs through the new agent", async || {
        let out = plane.kubectl(&["logs", "adopted"]);
        (out.ok && out.stdout.contains("first-start")).then_some(())
    })
    .await;
    let after = pod(&plane, "adopted").await.unwrap();
    assert_eq!(container_id(&after).as_deref(), Some(id.as_str()));
    let cs = &after
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(cs.restart_count, 0);
    assert_eq!(cri.list_sandboxes(None).await.unwrap().len(), 1);
    assert_eq!(cri.list_containers(None).await.unwrap().len(), 1);
    let out = plane.kubectl(&[
        "delete",
        "pod",
        "adopted",
        "--grace-period=1",
        "--wait=false",
    ]);
    assert!(out.ok, "{}", out.stderr);
    wait_for(&plane, &rt, "containerd to hold nothing", async || {
        let gone = pod(&plane, "adopted").await.is_none();
        let sandboxes = cri.list_sandboxes(None).await.ok()?;
        let containers = cri.list_containers(None).await.ok()?;
        (gone && sandboxes.is_empty() && containers.is_empty()).then_some(())
    })
    .await;
    agent.stop().await;
    drop(plane);
    drop(rt);
}

/// A containerd container that exits ends its pod as the kubelet would: containerd reports the
/// exit a moment after the process is gone, and the agent looks again until it has.
#[tokio::test(flavor = "multi_thread")]
async fn containerd_containers_that_exit_end_their_pods() {
    let Some((plane, rt)) = plane_with_containerd("containerd_exits").await else {
        return;
    };
    let busybox = rt.image("busybox");
    for (name, policy, code) in [("done", "OnFailure", 0), ("broken", "Never", 3)] {
        apply(
            &plane,
            &format!(
                r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  containers:
  - name: main
    image: {busybox}
    command: ["sh", "-c", "echo started; sleep 1; exit {code}"]
"#
            ),
        );
    }
    for (name, phase, code) in [("done", "Succeeded", 0), ("broken", "Failed", 3)] {
        let p = wait_for(&plane, &rt, &format!("{name} to end {phase}"), async || {
            let p = pod(&plane, name).await?;
            (p.status.as_ref()?.phase.as_deref() == Some(phase)).then_some(p)
        })
        .await;
        let status = &p.status.unwrap().container_statuses.unwrap()[0];
        let terminated = status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("a terminated state");
        assert_eq!(terminated.exit_code, code, "{status:?}");
        assert_eq!(status.restart_count, 0, "{status:?}");
    }
}
