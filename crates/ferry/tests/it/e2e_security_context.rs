//! A pod's `securityContext` enforced by the node agent, end to end with real kubectl and real
//! processes: users and groups (`id`), a root-owned host file out of reach, capabilities
//! (`/proc/self/status`), `no_new_privs`, a read-only root with a writable emptyDir, a
//! `runAsNonRoot` pod refused with `CreateContainerConfigError`, and a secret volume on a
//! private tmpfs that never reaches the agent's disk; and under containerd (CRI), a user and
//! dropped capabilities passed through `LinuxContainerSecurityContext`.

use crate::common;
use crate::common::containerd;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn jsonpath(t: &common::TestPlane, pod: &str, path: &str) -> String {
    t.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .success()
}

/// Waits for `pod` to reach `phase`; fails with its status otherwise.
async fn wait_phase(t: &common::TestPlane, pod: &str, phase: &str) {
    common::eventually(&format!("pod {pod} to be {phase}"), WAIT, async || {
        (jsonpath(t, pod, "{.status.phase}") == phase).then_some(())
    })
    .await;
}

/// The files under `dir` on `dir`'s own filesystem (other mounts, such as a tmpfs, skipped).
fn files_on_disk(dir: &Path) -> Vec<PathBuf> {
    let dev = std::fs::metadata(dir).expect("agent data directory").dev();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The filesystem type mounted exactly at `path` in this process's mount namespace.
fn mount_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (Path::new(f.get(4)?) == path).then(|| f[sep + 1].to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_contexts_are_enforced_or_refused() {
    if !common::sandbox_capable("security_contexts_are_enforced_or_refused") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    // A root-owned host file, world-readable, writable by root only.
    let host_file = PathBuf::from(format!("/tmp/ferry-podsec-{}", std::process::id()));
    std::fs::write(&host_file, "root's\n").unwrap();
    let probe = format!("/ferry-ro-probe-{}", std::process::id());

    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: ids}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 65534, runAsGroup: 65534, fsGroup: 2000}}
  volumes:
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'id; echo x >> {host} && echo HOST-WRITTEN || echo HOST-DENIED; touch /scratch/f && stat -c "%g %a" /scratch /scratch/f']
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: caps}}
spec:
  restartPolicy: Never
  containers:
  - name: default
    image: busybox
    command: [sh, -c, 'grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status']
  - name: none
    image: busybox
    command: [sh, -c, 'grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status']
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: ro}}
spec:
  restartPolicy: Never
  volumes:
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'touch {probe} && echo ROOT-WRITABLE || echo ROOT-READONLY; touch /scratch/ok && echo VOLUME-WRITABLE']
    securityContext: {{readOnlyRootFilesystem: true}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: main
    image: busybox
    command: [sleep, "600"]
"#,
        host = host_file.display(),
        probe = probe,
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();

    // Users and groups: uid, gid, the supplementary fsGroup; the host file stays root's.
    wait_phase(&t, "ids", "Succeeded").await;
    let out = t.kubectl(&["logs", "ids"]).success();
    let id = out
        .lines()
        .find(|l| l.starts_with("uid="))
        .unwrap_or_default();
    assert!(id.starts_with("uid=65534"), "id: {out}");
    assert!(id.contains(" gid=65534"), "id: {out}");
    let groups = id.split("groups=").nth(1).unwrap_or_default();
    assert!(
        groups.contains("2000"),
        "fsGroup not among the groups: {out}"
    );
    assert!(
        out.contains("HOST-DENIED"),
        "a root-owned file was written: {out}"
    );
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "root's\n");
    // fsGroup owns the emptyDir (setgid: new files get the group).
    assert!(out.contains("2000 2777"), "emptyDir ownership: {out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("2000 ")).count(),
        2,
        "a new file in the emptyDir does not get the fsGroup: {out}"
    );

    // Capabilities: containerd's default set; none with drop ALL; no_new_privs.
    wait_phase(&t, "caps", "Succeeded").await;
    let default = t.kubectl(&["logs", "caps", "-c", "default"]).success();
    assert!(default.contains("CapEff:\t00000000a80425fb"), "{default}");
    assert!(default.contains("CapBnd:\t00000000a80425fb"), "{default}");
    assert!(default.contains("NoNewPrivs:\t0"), "{default}");
    let none = t.kubectl(&["logs", "caps", "-c", "none"]).success();
    assert!(none.contains("CapEff:\t0000000000000000"), "{none}");
    assert!(none.contains("CapBnd:\t0000000000000000"), "{none}");
    assert!(none.contains("NoNewPrivs:\t1"), "{none}");

    // A read-only root, a writable volume.
    wait_phase(&t, "ro", "Succeeded").await;
    let out = t.kubectl(&["logs", "ro"]).success();
    let wrote = Path::new(&probe).exists();
    let _ = std::fs::remove_file(&probe);
    assert!(
        !wrote && out.contains("ROOT-READONLY"),
        "root writable: {out}"
    );
    assert!(out.contains("VOLUME-WRITABLE"), "{out}");

    // runAsNonRoot without a user: refused, with the kubelet's reason and an Event.
    let reason = common::eventually("nonroot to be refused", WAIT, async || {
        let r = jsonpath(
            &t,
            "nonroot",
            "{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
        );
        r.starts_with("CreateContainerConfigError|").then_some(r)
    })
    .await;
    assert!(
        reason.contains("container has runAsNonRoot and image will run as root"),
        "{reason}"
    );
    let table = t.kubectl(&["get", "pod", "nonroot"]).success();
    assert!(table.contains("CreateContainerConfigError"), "{table}");
    let events = common::eventually("the Failed event", WAIT, async || {
        let e = t
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=nonroot,reason=Failed",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .success();
        e.contains("runAsNonRoot").then_some(e)
    })
    .await;
    assert!(
        events.contains("Error: container has runAsNonRoot"),
        "{events}"
    );
    let _ = std::fs::remove_file(&host_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_volumes_are_private_tmpfs_and_never_on_disk() {
    if !common::sandbox_capable("secret_volumes_are_private_tmpfs_and_never_on_disk") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let value = format!("podsec-{}-value", std::process::id());
    t.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        &format!("--from-literal=password={value}"),
    ])
    .success();
    let manifest = r#"apiVersion: v1
kind: Pod
metadata: {name: vault}
spec:
  securityContext: {runAsUser: 65534, runAsGroup: 65534, fsGroup: 2000}
  volumes:
  - name: creds
    secret: {secretName: creds}
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'grep " /creds " /proc/mounts; echo "read $(wc -c < /creds/password) bytes"; exec sleep 600']
    volumeMounts: [{name: creds, mountPath: /creds, readOnly: true}]
"#;
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    wait_phase(&t, "vault", "Running").await;
    // The pod's user reads the secret (its length is printed, so the value stays off the log).
    let read = format!("read {} bytes", value.len());
    let out = common::eventually("vault's output", WAIT, async || {
        let o = t.kubectl(&["logs", "vault"]).success();
        o.contains(&read).then_some(o)
    })
    .await;
    assert!(
        out.lines().any(|l| l.contains(" /creds tmpfs ")),
        "/creds is not a tmpfs in the pod: {out}"
    );

    // From the host: the volume is a tmpfs, owned by the pod's user and fsGroup, 0750.
    let uid = jsonpath(&t, "vault", "{.metadata.uid}");
    let agent_dir = t.dir.path().join("data/agent");
    let vol = agent_dir.join(format!("pods/{uid}/volumes/secret/creds"));
    assert_eq!(
        mount_type(&vol).as_deref(),
        Some("tmpfs"),
        "{}",
        vol.display()
    );
    let meta = std::fs::metadata(&vol).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (65534, 2000, 0o750)
    );
    // Another user cannot read it.
    use std::os::unix::process::CommandExt;
    let other = std::process::Command::new("cat")
        .arg(vol.join("password"))
        .uid(4242)
        .gid(4242)
        .output()
        .unwrap();
    assert!(!other.status.success(), "uid 4242 read the secret");
    assert!(!String::from_utf8_lossy(&other.stdout).contains(&value));
    // The agent's state is private, and the value is nowhere on its disk.
    let data_mode = std::fs::metadata(&agent_dir).unwrap().mode() & 0o777;
    assert_eq!(data_mode, 0o700, "agent data directory mode {data_mode:o}");
    let files = files_on_disk(&agent_dir);
    assert!(
        files.iter().any(|f| f.ends_with("spec.json")),
        "no spec.json found: {files:?}"
    );
    for f in &files {
        if f.ends_with("spec.json") || f.ends_with("sandbox.json") {
            let mode = std::fs::metadata(f).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
        }
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "the secret's value is on disk in {}",
            f.display()
        );
    }

    // The tmpfs goes with the pod.
    t.kubectl(&["delete", "pod", "vault", "--grace-period=1"])
        .success();
    common::eventually("the secret tmpfs to be unmounted", WAIT, async || {
        mount_type(&vol).is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_containers_get_the_user_and_capabilities() {
    let test = "containerd_containers_get_the_user_and_capabilities";
    if !common::sandbox_capable(test) {
        return;
    }
    let mut runtime = None;
    let t = common::start_with(|c| {
        let cni = c.data_dir.join("agent/cni/net.d");
        let rt = containerd::TestRuntime::start(&cni, &c.network);
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
        agent.shim = Some(common::shim_command());
        agent.containerd = rt.as_ref().ok().map(|r| r.socket.clone());
        c.agent = Some(agent);
        runtime = Some(rt);
    })
    .await;
    let rt = match runtime.expect("the harness ran") {
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
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: cri-user}}
spec:
  securityContext: {{runAsUser: 65534, runAsGroup: 65534, supplementalGroups: [3000]}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'id; grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status; exec sleep 600']
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
"#,
        image = rt.image("busybox")
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    // Read while it runs (the output is what matters, not how quickly its end is seen).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let out = loop {
        let logs = t.kubectl(&["logs", "cri-user"]);
        if logs.ok && logs.stdout.contains("NoNewPrivs") {
            break logs.stdout;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cri-user printed nothing:\n{}\ncontainerd:\n{}",
            t.kubectl(&["get", "pod", "cri-user", "-o", "yaml"]).stdout,
            rt.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.contains("uid=65534"), "{out}");
    assert!(out.contains("gid=65534"), "{out}");
    assert!(out.contains("3000"), "supplemental group missing: {out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}
