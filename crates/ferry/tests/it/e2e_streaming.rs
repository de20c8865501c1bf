//! Streaming through the API server to the node agent with the real kubectl: `exec` (exit
//! codes, stdin, a terminal driven through tmux, resizes), `cp` both ways, `port-forward`
//! carrying HTTP, `attach` and `run -it`, and the errors of a finished container and a wrong
//! container name.

use crate::common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const WAIT: Duration = Duration::from_secs(30);

async fn phase(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name).await.ok().flatten()?.status?.phase
}

/// Whether every container of the pod runs.
async fn all_running(pods: &Api<Pod>, name: &str) -> bool {
    let Some(pod) = pods.get_opt(name).await.ok().flatten() else {
        return false;
    };
    let statuses = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    !statuses.is_empty()
        && statuses
            .iter()
            .all(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
}

async fn apply_and_wait_running(t: &common::TestPlane, manifest: &str, name: &str) {
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually(&format!("{name} to run"), WAIT, async || {
        all_running(&pods, name).await.then_some(())
    })
    .await;
}

/// kubectl's exit code, stdout and stderr; a kubectl that hangs is killed after 60 s (exit
/// code 124, which no assertion accepts).
fn kubectl_code(t: &common::TestPlane, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(common::kubectl_binary())
        .arg("--kubeconfig")
        .arg(&t.plane.kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    let mut input = child.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Deletes the test's pods when dropped (also when the test fails), so no container outlives
/// it: the agent stopping with the plane leaves containers running, as it should.
struct DeletePods<'a>(&'a common::TestPlane);

impl Drop for DeletePods<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--wait=true",
            "--timeout=60s",
        ]);
    }
}

/// Pseudo-random bytes (no compression shortcut for tar or SPDY).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_propagates_output_exit_codes_and_stdin_and_cp_copies_both_ways() {
    let t = common::start_with_node("1xT4").await;
    let cleanup = DeletePods(&t);
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: box}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '600']\n";
    apply_and_wait_running(&t, manifest, "box").await;

    // Output and the exit code, as kubectl reports them.
    let (code, out, err) = kubectl_code(
        &t,
        &[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "echo $HOSTNAME; echo oops >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(
        code, 3,
        "kubectl exits with the command's code; stderr: {err}"
    );
    assert_eq!(String::from_utf8_lossy(&out), "box\n");
    assert!(err.contains("oops"), "stderr on channel 2: {err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");

    // stdin, to its end (v5 close frame).
    let (code, out, err) = kubectl_code(
        &t,
        &[
            "exec",
            "-i",
            "box",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo end",
        ],
        b"hello stdin\n",
    );
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (0, "HELLO STDIN\nend\n"),
        "{err}"
    );

    // An exec leaves nothing behind, even what it put in the background.
    // (a unique sleep: `sleep <n>` is its command line)
    let seconds = 600_000 + std::process::id() % 100_000;
    let marker = format!("sleep {seconds}");
    let script = format!("{marker} & sleep 0.2; kill -0 $! && echo started");
    let (code, out, err) = kubectl_code(&t, &["exec", "box", "--", "sh", "-c", &script], b"");
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (0, "started\n"),
        "{err}"
    );
    common::eventually(
        "the exec's background process to be gone",
        WAIT,
        async || processes_with(&marker).is_empty().then_some(()),
    )
    .await;

    // A command that does not exist: a clear error, a failing kubectl.
    let (code, _, err) = kubectl_code(&t, &["exec", "box", "--", "no-such-command-here"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("no-such-command-here"), "{err}");

    // `kubectl attach -i` to a container reading its stdin (a pipe the shim keeps open;
    // closed by the end of kubectl's input, as `stdinOnce` says).
    let reader = "apiVersion: v1\nkind: Pod\nmetadata: {name: reader}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'while read l; do echo got-$l; done; echo stdin-closed']\n    stdin: true\n    stdinOnce: true\n";
    apply_and_wait_running(&t, reader, "reader").await;
    let (code, out, err) = kubectl_code(&t, &["attach", "-i", "reader"], b"one\ntwo\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "got-one\ngot-two\nstdin-closed\n",
        "{err}"
    );
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually(
        "reader to succeed once its stdin closed",
        WAIT,
        async || (phase(&pods, "reader").await.as_deref() == Some("Succeeded")).then_some(()),
    )
    .await;

    // A wrong container name: the API server's 400.
    let (code, _, err) = kubectl_code(&t, &["exec", "box", "-c", "nope", "--", "true"], b"");
    assert_ne!(code, 0);
    assert!(
        err.contains("container nope is not valid for pod box"),
        "{err}"
    );

    // kubectl cp both ways (tar through exec), a few hundred KB, same checksum.
    let work = tempfile::tempdir().unwrap();
    let blob = noise(300 * 1024);
    let local = work.path().join("blob.bin");
    std::fs::write(&local, &blob).unwrap();
    let inside = work.path().join("in-pod");
    std::fs::create_dir_all(&inside).unwrap();
    let remote = format!("box:{}/copied.bin", inside.display());
    t.kubectl(&["cp", local.to_str().unwrap(), &remote])
        .success();
    let (code, out, err) = kubectl_code(
        &t,
        &[
            "exec",
            "box",
            "--",
            "sha256sum",
            &format!("{}/copied.bin", inside.display()),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&out).starts_with(&sha256(&blob)),
        "copied in: {}",
        String::from_utf8_lossy(&out)
    );
    let back = work.path().join("back.bin");
    t.kubectl(&["cp", &remote, back.to_str().unwrap()])
        .success();
    assert_eq!(
        sha256(&std::fs::read(&back).unwrap()),
        sha256(&blob),
        "copied out"
    );

    // Exec into a finished container: a clear error and a failing kubectl, in a pod that
    // still runs (the agent's answer) and in a completed pod.
    let half = "apiVersion: v1\nkind: Pod\nmetadata: {name: half}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: long\n    image: busybox\n    command: [sleep, '600']\n  - name: short\n    image: busybox\n    command: ['true']\n";
    t.kubectl_stdin(&["apply", "-f", "-"], half).success();
    common::eventually("half's short container to finish", WAIT, async || {
        let pod = pods.get_opt("half").await.ok().flatten()?;
        let statuses = pod.status?.container_statuses?;
        statuses
            .iter()
            .any(|s| {
                s.name == "short" && s.state.as_ref().is_some_and(|st| st.terminated.is_some())
            })
            .then_some(())
    })
    .await;
    let (code, _, err) = kubectl_code(&t, &["exec", "half", "-c", "short", "--", "true"], b"");
    assert_ne!(code, 0);
    assert!(
        err.contains("container not found") && err.contains("not running"),
        "{err}"
    );
    let done = "apiVersion: v1\nkind: Pod\nmetadata: {name: done}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: ['true']\n";
    t.kubectl_stdin(&["apply", "-f", "-"], done).success();
    common::eventually("done to succeed", WAIT, async || {
        (phase(&pods, "done").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let (code, _, err) = kubectl_code(&t, &["exec", "done", "--", "true"], b"");
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot exec into a container in a completed pod; current phase is Succeeded"),
        "{err}"
    );
    drop(cleanup);
    t.plane.stop().await;
}

/// A tmux server of the test's own (`-L`), killed when the test ends.
struct Tmux {
    socket: String,
    /// The session driven now.
    session: std::cell::RefCell<String>,
}

impl Tmux {
    fn new() -> Self {
        Tmux {
            socket: format!("ferry-streaming-{}", std::process::id()),
            session: std::cell::RefCell::new(String::new()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `command` in a new session of 120x40, which the other methods then drive.
    fn start(&self, name: &str, command: &str) {
        *self.session.borrow_mut() = name.to_string();
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "40",
            command,
        ]);
    }

    fn keys(&self, keys: &str) {
        let session = self.session.borrow().clone();
        self.run(&["send-keys", "-t", &session, keys, "Enter"]);
    }

    fn screen(&self) -> String {
        let session = self.session.borrow().clone();
        self.run(&["capture-pane", "-p", "-t", &session])
    }

    async fn wait_for_line(&self, what: &str, line: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.screen().lines().any(|l| line(l.trim())) {
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; the screen:\n{}",
                    self.screen()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `keys` and Enter until a line of the screen is `expect` (keys typed before
    /// kubectl has put its terminal in raw mode may be lost).
    async fn type_until(&self, keys: &str, expect: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            self.keys(keys);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if self.screen().lines().any(|l| l.trim() == expect) {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out typing {keys:?} until {expect:?}; the screen:\n{}",
                    self.screen()
                );
            }
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_it_drives_an_interactive_shell_through_a_terminal() {
    let t = common::start_with_node("1xT4").await;
    let cleanup = DeletePods(&t);
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: term}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '600']\n";
    apply_and_wait_running(&t, manifest, "term").await;
    let tmux = Tmux::new();
    let cmd = format!(
        "{} --kubeconfig {} exec -it term -- sh; echo kubectl-exited-$?; sleep 30",
        common::kubectl_binary().display(),
        t.plane.kubeconfig.display()
    );
    tmux.start("exec", &cmd);
    tmux.type_until("echo $((6*7))", "42").await;
    tmux.keys("stty size; tty");
    tmux.wait_for_line("the terminal size 40x120", |l| l == "40 120")
        .await;
    // `tty` answers on the line after the size: wait for it rather than read the screen once.
    tmux.wait_for_line("a terminal (/dev/pts/N)", |l| l.starts_with("/dev/pts/"))
        .await;
    tmux.run(&["resize-window", "-t", "exec", "-x", "100", "-y", "30"]);
    tmux.keys("stty size");
    tmux.wait_for_line("the resized terminal 30x100", |l| l == "30 100")
        .await;
    // A background job of the interactive shell (a process group of its own) goes too.
    let marker = format!("sleep {}", 700_000 + std::process::id() % 100_000);
    tmux.keys(&format!("{marker} &"));
    common::eventually("the background job to start", WAIT, async || {
        (!processes_with(&marker).is_empty()).then_some(())
    })
    .await;
    tmux.keys("exit 4");
    tmux.wait_for_line("kubectl to exit with the shell's code", |l| {
        l == "kubectl-exited-4"
    })
    .await;
    common::eventually("the shell's background job to be gone", WAIT, async || {
        processes_with(&marker).is_empty().then_some(())
    })
    .await;

    // `kubectl attach -it` to a container with its own terminal.
    let shell = "apiVersion: v1\nkind: Pod\nmetadata: {name: shell}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sh]\n    stdin: true\n    tty: true\n";
    apply_and_wait_running(&t, shell, "shell").await;
    let cmd = format!(
        "{} --kubeconfig {} attach -it shell; echo attach-exited-$?; sleep 30",
        common::kubectl_binary().display(),
        t.plane.kubeconfig.display()
    );
    tmux.start("attach", &cmd);
    tmux.type_until("echo attached-$((40+2))", "attached-42")
        .await;
    tmux.keys("exit");
    tmux.wait_for_line("attach to end with the container", |l| {
        l == "attach-exited-0"
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually("the attached shell to succeed", WAIT, async || {
        (phase(&pods, "shell").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;

    // `kubectl run -it --rm`: attaches once the pod runs, deletes it afterwards. (`--command`:
    // the host runtime runs no image entrypoint.)
    let cmd = format!(
        "{} --kubeconfig {} run -it --rm --restart=Never runner --image=busybox --command -- sh; echo run-exited-$?; sleep 30",
        common::kubectl_binary().display(),
        t.plane.kubeconfig.display()
    );
    tmux.start("run", &cmd);
    tmux.type_until("echo ran-$((2+3))", "ran-5").await;
    tmux.keys("exit");
    tmux.wait_for_line("run -it to end", |l| l == "run-exited-0")
        .await;
    common::eventually("the --rm pod to be deleted", WAIT, async || {
        pods.get_opt("runner")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    drop(cleanup);
    t.plane.stop().await;
}

/// Sends one HTTP/1.0 GET to `127.0.0.1:port`; the body of a `200` answer.
fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP answer"))?;
    if !(all.starts_with(b"HTTP/1.0 200") || all.starts_with(b"HTTP/1.1 200")) {
        return Err(std::io::Error::other(format!(
            "answer: {}",
            String::from_utf8_lossy(&all[..at])
        )));
    }
    Ok(all[at + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_carries_http_to_a_server_in_the_pod() {
    let t = common::start_with_node("1xT4").await;
    let cleanup = DeletePods(&t);
    let www = tempfile::tempdir().unwrap();
    let blob = noise(300 * 1024);
    std::fs::write(www.path().join("blob.bin"), &blob).unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello through port-forward\n").unwrap();
    // A port free here (the pod may share the host's network).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: python\n    command: [python3, -m, http.server, '{port}', --bind, 127.0.0.1, --directory, '{}']\n",
        www.path().display()
    );
    apply_and_wait_running(&t, &manifest, "web").await;
    // kubectl port-forward ends at the first connection the pod refuses: wait until the
    // server listens (checked from inside the pod, whose network it may not share with us).
    let probe =
        format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)");
    common::eventually("the pod's server to listen", WAIT, async || {
        let (code, _, _) = kubectl_code(&t, &["exec", "web", "--", "python3", "-c", &probe], b"");
        (code == 0).then_some(())
    })
    .await;
    let forward = t.kubectl_watch(&["port-forward", "web", &format!(":{port}")]);
    let out = forward
        .wait_for("the local port", |l| {
            l.starts_with("Forwarding from 127.0.0.1:")
        })
        .await;
    let local: u16 = out
        .lines()
        .find_map(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("kubectl names its local port");
    let hello = tokio::task::spawn_blocking(move || http_get(local, "/hello.txt"))
        .await
        .unwrap()
        .expect("hello.txt through port-forward");
    assert_eq!(
        String::from_utf8_lossy(&hello),
        "hello through port-forward\n"
    );
    let body = tokio::task::spawn_blocking(move || http_get(local, "/blob.bin"))
        .await
        .unwrap()
        .expect("the blob through port-forward");
    assert_eq!(body.len(), blob.len());
    assert_eq!(sha256(&body), sha256(&blob));
    let printed = forward.finish();
    assert!(printed.contains(&format!("-> {port}")), "{printed}");
    drop(cleanup);
    t.plane.stop().await;
}
