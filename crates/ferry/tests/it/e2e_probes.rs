//! Startup, liveness and readiness probes end to end, with real kubectl and real processes: an
//! httpGet readiness probe following a file a real HTTP server serves, an exec liveness probe
//! restarting its container, a tcpSocket readiness probe behind a startup probe that gates
//! liveness, and a probe on a port the container does not declare.
//!
//! Until pods have networks of their own they share the host's, so every server listens on a
//! port picked free for the test; probes reach the pod's IP when it has one, else loopback.

use crate::common;

use std::time::Duration;

use common::TestPlane;

const WAIT: Duration = Duration::from_secs(60);

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The READY column of `kubectl get pod` (`1/1`).
fn ready_column(t: &TestPlane, pod: &str) -> String {
    let out = t.kubectl(&["get", "pod", pod, "--no-headers"]).success();
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn jsonpath(t: &TestPlane, pod: &str, path: &str) -> String {
    t.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .success()
}

fn condition(t: &TestPlane, pod: &str, type_: &str) -> String {
    jsonpath(
        t,
        pod,
        &format!("{{.status.conditions[?(@.type==\"{type_}\")].status}}"),
    )
}

/// `reason|message` of every Event about `pod`.
fn events(t: &TestPlane, pod: &str) -> Vec<String> {
    let out = t
        .kubectl(&[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.involvedObject.name}|{.reason}|{.message}{\"\\n\"}{end}",
        ])
        .success();
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{pod}|")).map(str::to_string))
        .collect()
}

async fn wait_ready(t: &TestPlane, pod: &str, column: &str) {
    common::eventually(&format!("{pod} to show READY {column}"), WAIT, async || {
        (ready_column(t, pod) == column).then_some(())
    })
    .await;
}

async fn wait_event(t: &TestPlane, pod: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    common::eventually(what, WAIT, async || {
        events(t, pod).into_iter().find(|e| f(e))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_readiness_probe_follows_the_served_file_and_bad_ports_get_events() {
    let t = common::start_with_node("1xT4").await;
    let www = t.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("healthz"), "ok\n").unwrap();
    let port = free_port();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - name: main\n    image: python\n    command: [python3, -m, http.server, '{port}', --bind, 0.0.0.0, --directory, '{}']\n    ports:\n    - {{name: http, containerPort: {port}}}\n    readinessProbe:\n      httpGet: {{path: /healthz, port: http}}\n      periodSeconds: 1\n      failureThreshold: 1\n",
        www.display()
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    wait_ready(&t, "web", "1/1").await;
    assert_eq!(condition(&t, "web", "Ready"), "True");
    assert_eq!(condition(&t, "web", "ContainersReady"), "True");
    let since = jsonpath(
        &t,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
    );

    // The file goes: the pod goes unready (the container keeps running).
    std::fs::remove_file(www.join("healthz")).unwrap();
    wait_ready(&t, "web", "0/1").await;
    assert_eq!(condition(&t, "web", "Ready"), "False");
    assert_eq!(condition(&t, "web", "ContainersReady"), "False");
    assert_eq!(
        jsonpath(&t, "web", "{.status.containerStatuses[0].started}"),
        "true"
    );
    assert_eq!(jsonpath(&t, "web", "{.status.phase}"), "Running");
    let message = jsonpath(
        &t,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].message}",
    );
    assert_eq!(message, "containers with unready status: [main]");
    wait_event(&t, "web", "an Unhealthy event", |e| {
        e == "Unhealthy|Readiness probe failed: HTTP probe failed with statuscode: 404"
    })
    .await;

    // It comes back: ready again, with a new transition time.
    std::fs::write(www.join("healthz"), "ok\n").unwrap();
    wait_ready(&t, "web", "1/1").await;
    assert_eq!(condition(&t, "web", "Ready"), "True");
    let again = jsonpath(
        &t,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
    );
    assert!(again >= since, "{again} < {since}");
    assert_eq!(
        jsonpath(&t, "web", "{.status.containerStatuses[0].restartCount}"),
        "0",
        "readiness never restarts"
    );

    // A probe on a named port the container does not declare: an Event saying so, never ready,
    // the container left running.
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: badport}\nspec:\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '600']\n    readinessProbe:\n      tcpSocket: {port: nope}\n      periodSeconds: 1\n";
    t.kubectl_stdin(&["apply", "-f", "-"], bad).success();
    let event = wait_event(&t, "badport", "the bad port's event", |e| {
        e.starts_with("Unhealthy|Readiness probe errored:")
    })
    .await;
    assert!(
        event.contains("port \"nope\" not found"),
        "the event names the port: {event}"
    );
    assert_eq!(jsonpath(&t, "badport", "{.status.phase}"), "Running");
    assert_eq!(ready_column(&t, "badport"), "0/1");
    assert_eq!(condition(&t, "badport", "Ready"), "False");
    // Probes Kubernetes rejects are rejected at the API, naming the field.
    let invalid = "apiVersion: v1\nkind: Pod\nmetadata: {name: invalid}\nspec:\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '600']\n    livenessProbe:\n      tcpSocket: {port: 0}\n      successThreshold: 2\n";
    let err = t.kubectl_stdin(&["apply", "-f", "-"], invalid).failure();
    assert!(
        err.contains("spec.containers[0].livenessProbe.successThreshold")
            && err.contains("must be 1")
            && err.contains("spec.containers[0].livenessProbe.tcpSocket.port"),
        "{err}"
    );
    t.kubectl(&["delete", "pod", "web", "badport", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exec_liveness_probe_restarts_the_container() {
    let t = common::start_with_node("1xT4").await;
    // The first attempt never becomes healthy; the second does (the marker is in the pod's
    // working directory, as is the file the probe tests).
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: live}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'if [ -e once ]; then touch healthy; else touch once; fi; exec sleep 600']\n    livenessProbe:\n      exec: {command: [test, -f, healthy]}\n      periodSeconds: 1\n      failureThreshold: 2\n";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let restarts = || jsonpath(&t, "live", "{.status.containerStatuses[0].restartCount}");
    common::eventually("the liveness restart", WAIT, async || {
        (restarts() == "1").then_some(())
    })
    .await;
    wait_event(&t, "live", "the Unhealthy event", |e| {
        e.starts_with("Unhealthy|Liveness probe failed: ")
    })
    .await;
    wait_event(&t, "live", "the Killing event", |e| {
        e == "Killing|Container main failed liveness probe, will be restarted"
    })
    .await;
    wait_ready(&t, "live", "1/1").await;
    assert_eq!(
        jsonpath(
            &t,
            "live",
            "{.status.containerStatuses[0].lastState.terminated.message}"
        ),
        "Container main failed liveness probe, will be restarted"
    );
    assert_eq!(
        jsonpath(
            &t,
            "live",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "143",
        "SIGTERM ended it"
    );
    // The second attempt is healthy: it stays.
    let out = t.kubectl(&["get", "pod", "live", "--no-headers"]).success();
    let columns: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(&columns[1..3], ["1/1", "Running"], "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(restarts(), "1", "a healthy container is left alone");
    t.kubectl(&["delete", "pod", "live", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_probe_gates_liveness_and_a_tcp_probe_gives_readiness() {
    let t = common::start_with_node("1xT4").await;
    let port = free_port();
    // The container needs 3 s to start: it creates `started` and only then listens. Liveness
    // fails until `started` exists, so it must not run before the startup probe passes.
    let listen = format!(
        "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", {port})); s.listen(); time.sleep(600)"
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: slow}}\nspec:\n  containers:\n  - name: main\n    image: python\n    command: [sh, -c, 'sleep 3; touch started; exec python3 -c \"$0\"', '{listen}']\n    startupProbe:\n      exec: {{command: [test, -f, started]}}\n      periodSeconds: 1\n      failureThreshold: 30\n    livenessProbe:\n      exec: {{command: [test, -f, started]}}\n      periodSeconds: 1\n      failureThreshold: 1\n    readinessProbe:\n      tcpSocket: {{port: {port}}}\n      periodSeconds: 1\n"
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    // Running but not started (nor ready) while the startup probe has not passed.
    common::eventually("slow to run, not yet started", WAIT, async || {
        let out = jsonpath(
            &t,
            "slow",
            "{.status.phase} {.status.containerStatuses[0].started} {.status.containerStatuses[0].ready}",
        );
        (out == "Running false false").then_some(())
    })
    .await;
    wait_ready(&t, "slow", "1/1").await;
    assert_eq!(
        jsonpath(&t, "slow", "{.status.containerStatuses[0].started}"),
        "true"
    );
    assert_eq!(
        jsonpath(&t, "slow", "{.status.containerStatuses[0].restartCount}"),
        "0",
        "liveness waited for the startup probe"
    );
    assert_eq!(condition(&t, "slow", "Ready"), "True");
    let killed: Vec<String> = events(&t, "slow")
        .into_iter()
        .filter(|e| e.starts_with("Killing|"))
        .collect();
    assert!(killed.is_empty(), "{killed:?}");
    t.kubectl(&["delete", "pod", "slow", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}
