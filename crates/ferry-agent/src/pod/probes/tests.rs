//! The handlers against real local servers and processes, the thresholds, and the timers of a
//! whole prober driving a real process.

use super::*;
use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
};
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn me() -> Target {
    Target {
        pid: std::process::id() as i32,
        host: "127.0.0.1".into(),
        ..Default::default()
    }
}

const T: Duration = Duration::from_secs(1);

/// A tiny HTTP server: answers by path (`/ok` 200, `/down` 503, `/moved` 302 off-host,
/// `/header` 200 only with `x-probe: yes`, `/slow` never).
async fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let status = match path.as_str() {
                    "/ok" => "200 OK",
                    "/moved" => "302 Found\r\nlocation: http://192.0.2.1/elsewhere",
                    "/hop" => "302 Found\r\nlocation: /ok",
                    "/dir/hop" => "301 Moved Permanently\r\nlocation: here",
                    "/dir/here" => "200 OK",
                    "/hop-down" => "307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/down",
                    "/loop" => "302 Found\r\nlocation: /loop",
                    "/header"
                        if req.contains("x-probe: yes")
                            && req.contains("user-agent: kube-probe/") =>
                    {
                        "200 OK"
                    }
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => "503 Service Unavailable",
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nhi").as_bytes(),
                    )
                    .await;
            });
        }
    });
    port
}

fn http(port: u16, path: &str, headers: &[(&str, &str)]) -> Handler {
    Handler::Http {
        host: None,
        port,
        path: path.into(),
        headers: headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn http_get_succeeds_on_2xx_and_3xx_and_fails_otherwise() {
    let port = http_server().await;
    let run = |h: Handler| async move { run_handler(&h, &me(), T).await };
    assert_eq!(run(http(port, "/ok", &[])).await, Outcome::Success);
    assert_eq!(
        run(http(port, "/moved", &[])).await,
        Outcome::Success,
        "an off-host redirect is not followed and counts as success"
    );
    assert_eq!(
        run(http(port, "/hop", &[])).await,
        Outcome::Success,
        "same-host redirects are followed"
    );
    assert_eq!(
        run(http(port, "/dir/hop", &[])).await,
        Outcome::Success,
        "relative ones too"
    );
    let Outcome::Failure(m) = run(http(port, "/hop-down", &[])).await else {
        panic!("a redirect to a closed port fails");
    };
    assert!(
        m.contains("127.0.0.1:1: connect: connection refused"),
        "{m}"
    );
    let Outcome::Failure(m) = run(http(port, "/loop", &[])).await else {
        panic!("a redirect loop fails");
    };
    assert!(m.ends_with("stopped after 10 redirects"), "{m}");
    assert_eq!(
        run(http(port, "/down", &[])).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
    assert_eq!(
        run(http(port, "/header", &[])).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
    assert_eq!(
        run(http(port, "/header", &[("X-Probe", "yes")])).await,
        Outcome::Success,
        "httpHeaders are sent"
    );
    let started = Instant::now();
    let Outcome::Failure(m) = run(http(port, "/slow", &[])).await else {
        panic!("a server that never answers fails the probe");
    };
    assert!(m.contains("context deadline exceeded"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout bounds the probe"
    );
}

#[tokio::test]
async fn tcp_socket_needs_a_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = Handler::Tcp { host: None, port };
    assert_eq!(run_handler(&h, &me(), T).await, Outcome::Success);
    drop(listener);
    let Outcome::Failure(m) = run_handler(&h, &me(), T).await else {
        panic!("nobody listens any more");
    };
    assert_eq!(
        m,
        format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
    // An explicit host wins over the pod's.
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = Handler::Tcp {
        host: Some("127.0.0.1".into()),
        port: other.local_addr().unwrap().port(),
    };
    let target = Target {
        host: "192.0.2.250".into(),
        ..me()
    };
    assert_eq!(run_handler(&h, &target, T).await, Outcome::Success);
}

fn exec(cmd: &[&str]) -> Handler {
    Handler::Exec {
        argv: cmd.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn exec_runs_in_the_container_with_its_environment() {
    assert_eq!(
        run_handler(&exec(&["true"]), &me(), T).await,
        Outcome::Success
    );
    assert_eq!(
        run_handler(&exec(&["sh", "-c", "exit 1"]), &me(), T).await,
        Outcome::Failure("command \"sh -c exit 1\" exited with code 1".into())
    );
    assert_eq!(
        run_handler(&exec(&["sh", "-c", "echo not healthy; exit 2"]), &me(), T).await,
        Outcome::Failure("not healthy".into()),
        "the output is the failure's message"
    );
    let target = Target {
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("PROBE_VAR".into(), "yes".into()),
        ],
        ..me()
    };
    assert_eq!(
        run_handler(
            &exec(&["sh", "-c", "test \"$PROBE_VAR\" = yes"]),
            &target,
            T
        )
        .await,
        Outcome::Success,
        "the container's environment is the probe's"
    );
    let started = Instant::now();
    let Outcome::Failure(m) = run_handler(&exec(&["sh", "-c", "sleep 30; true"]), &me(), T).await
    else {
        panic!("a probe past its timeout fails");
    };
    assert!(m.contains("timed out"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let Outcome::Failure(m) = run_handler(&exec(&["/no/such/probe"]), &me(), T).await else {
        panic!("a missing program fails the probe");
    };
    assert!(m.contains("cannot run"), "{m}");
    let gone = Target {
        pid: i32::MAX - 1,
        ..me()
    };
    assert!(matches!(
        run_handler(&exec(&["true"]), &gone, T).await,
        Outcome::Error(_)
    ));
}

fn container(probe: Probe) -> Container {
    Container {
        name: "main".into(),
        ports: Some(vec![ContainerPort {
            name: Some("web".into()),
            container_port: 8080,
            ..Default::default()
        }]),
        readiness_probe: Some(probe),
        ..Default::default()
    }
}

#[test]
fn probes_resolve_ports_defaults_and_bad_input() {
    let get = |port: IntOrString, scheme: Option<&str>| Probe {
        http_get: Some(HTTPGetAction {
            port,
            path: Some("healthz".into()),
            scheme: scheme.map(Into::into),
            http_headers: Some(vec![HTTPHeader {
                name: "Host".into(),
                value: "example".into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = container(get(IntOrString::String("web".into()), None));
    let spec = &container_probes(&c)[0];
    assert_eq!(
        spec.handler,
        Ok(Handler::Http {
            host: None,
            port: 8080,
            path: "/healthz".into(),
            headers: vec![("Host".into(), "example".into())],
        })
    );
    assert_eq!(
        (spec.initial_delay, spec.period, spec.timeout),
        (
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_secs(1)
        )
    );
    assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
    let c = container(get(IntOrString::String("nope".into()), None));
    let err = container_probes(&c)[0].handler.clone().unwrap_err();
    assert_eq!(
        err,
        "port \"nope\" not found: container \"main\" declares no port of that name"
    );
    let c = container(get(IntOrString::Int(70000), None));
    assert_eq!(
        container_probes(&c)[0].handler,
        Err("invalid port number: 70000".into())
    );
    let c = container(get(IntOrString::Int(80), Some("HTTPS")));
    assert!(
        container_probes(&c)[0]
            .handler
            .clone()
            .unwrap_err()
            .contains("HTTPS")
    );
    let c = container(Probe::default());
    assert!(container_probes(&c)[0].handler.is_err());
    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("9090".into()),
            ..Default::default()
        }),
        period_seconds: Some(0),
        success_threshold: Some(3),
        failure_threshold: Some(-1),
        ..Default::default()
    };
    let mut c = container(tcp.clone());
    c.liveness_probe = Some(tcp);
    let probes = container_probes(&c);
    assert_eq!(probes[0].kind, ProbeKind::Liveness);
    assert_eq!(probes[0].success_threshold, 1, "liveness needs one success");
    assert_eq!(probes[1].success_threshold, 3);
    assert_eq!(
        probes[1].period,
        Duration::from_secs(1),
        "at least a second"
    );
    assert_eq!(probes[1].failure_threshold, 1);
    assert_eq!(
        probes[1].handler,
        Ok(Handler::Tcp {
            host: None,
            port: 9090
        })
    );
}

#[test]
fn redirects_stay_on_the_host() {
    let t = |loc: &str| redirect_target("10.0.0.5", 8080, "/a/b?x=1", loc);
    assert_eq!(t("/c"), Some((8080, "/c".into())));
    assert_eq!(t("c"), Some((8080, "/a/c".into())));
    assert_eq!(t("http://10.0.0.5:9090/d?y"), Some((9090, "/d?y".into())));
    assert_eq!(t("http://10.0.0.5/"), Some((80, "/".into())));
    assert_eq!(t("http://192.0.2.1/"), None, "off the host: not followed");
    assert_eq!(t("https://10.0.0.5/"), None);
    assert_eq!(t("//elsewhere/x"), None);
}

#[test]
fn thresholds_need_consecutive_results() {
    let spec = ProbeSpec {
        kind: ProbeKind::Readiness,
        handler: Ok(exec(&["true"])),
        initial_delay: Duration::ZERO,
        period: T,
        timeout: T,
        success_threshold: 2,
        failure_threshold: 3,
        grace: None,
    };
    let mut c = Counter::new(false);
    assert!(!c.add(true, &spec) && !c.passing);
    assert!(c.add(true, &spec) && c.passing, "two successes in a row");
    assert!(!c.add(false, &spec) && !c.add(false, &spec));
    assert!(!c.add(true, &spec), "a success resets the failures");
    assert!(!c.add(false, &spec) && !c.add(false, &spec) && c.passing);
    assert!(c.add(false, &spec) && !c.passing, "three failures in a row");
}

/// A process standing in for a container: its own process group, supervised by this test
/// process (the "shim").
struct FakeContainer {
    child: std::process::Child,
    state: StateRecord,
    dir: tempfile::TempDir,
}

impl FakeContainer {
    fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let container = crate::procfs::ProcId::of(child.id() as i32).unwrap();
        let shim = crate::procfs::ProcId::of(std::process::id() as i32).unwrap();
        FakeContainer {
            child,
            state: StateRecord {
                shim,
                container,
                started_at: Timestamp::now(),
                mounts: Default::default(),
                chroot: false,
                cri_container_id: None,
            },
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prober() -> (Prober, Arc<Notify>) {
    // Events go nowhere (nothing listens on port 9 of loopback); they are logged and dropped.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let wake = Arc::new(Notify::new());
    (
        Prober::new(EventRecorder::new(client, "test-node"), wake.clone()),
        wake,
    )
}

fn facts() -> PodFacts {
    PodFacts {
        namespace: "default".into(),
        name: "p".into(),
        uid: "u".into(),
        pod_ip: None,
        grace_seconds: 1,
    }
}

fn probe(cmd: &[&str], failure_threshold: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_probe_and_liveness_kills() {
    let (mut prober, _wake) = prober();
    let flag = tempfile::tempdir().unwrap();
    let file = flag.path().join("ready");
    let file_s = file.display().to_string();
    let mut c = Container {
        name: "main".into(),
        readiness_probe: Some(probe(&["test", "-f", &file_s], 1)),
        ..Default::default()
    };
    let fake = FakeContainer::start();
    let h = prober.observe(&facts(), &c, 0, &fake.state, fake.dir.path(), None);
    assert_eq!(
        h,
        Health {
            started: true,
            ready: false
        },
        "not ready before a success"
    );
    std::fs::write(&file, "").unwrap();
    let look = |p: &mut Prober| p.observe(&facts(), &c, 0, &fake.state, fake.dir.path(), None);
    wait_until("ready", || look(&mut prober).ready).await;
    std::fs::remove_file(&file).unwrap();
    wait_until("unready", || !look(&mut prober).ready).await;

    // Liveness: two failures in a row kill the container, and the kill is recorded.
    c.readiness_probe = None;
    c.liveness_probe = Some(probe(&["sh", "-c", "exit 1"], 2));
    let mut fake = FakeContainer::start();
    let started = Instant::now();
    let h = prober.observe(&facts(), &c, 1, &fake.state, fake.dir.path(), None);
    assert_eq!(
        h,
        Health {
            started: true,
            ready: true
        },
        "no readiness probe: ready once started"
    );
    wait_until("the liveness kill", || fake.exited()).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "two periods: {:?}",
        started.elapsed()
    );
    let mut exit = ExitRecord::from_status(fake.child.wait().unwrap(), Timestamp::now());
    annotate_exit(fake.dir.path(), &mut exit);
    assert_eq!(
        exit.message.as_deref(),
        Some("Container main failed liveness probe, will be restarted")
    );
    assert_eq!(exit.signal, Some(15), "SIGTERM first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_gates_liveness_and_readiness() {
    let (mut prober, _wake) = prober();
    let flag = tempfile::tempdir().unwrap();
    let file = flag.path().join("started");
    let file_s = file.display().to_string();
    let c = Container {
        name: "main".into(),
        startup_probe: Some(probe(&["test", "-f", &file_s], 30)),
        liveness_probe: Some(probe(&["sh", "-c", "exit 1"], 1)),
        ..Default::default()
    };
    let mut fake = FakeContainer::start();
    let h = prober.observe(&facts(), &c, 0, &fake.state, fake.dir.path(), None);
    assert_eq!(
        h,
        Health {
            started: false,
            ready: false
        }
    );
    // The failing liveness probe does not run while the startup probe has not passed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!fake.exited(), "liveness ran before startup passed");
    assert!(
        !prober
            .observe(&facts(), &c, 0, &fake.state, fake.dir.path(), None)
            .started
    );
    std::fs::write(&file, "").unwrap();
    wait_until("started, then killed by liveness", || fake.exited()).await;
    // A new attempt starts from scratch; stopping it stops its probes.
    let mut next = FakeContainer::start();
    let h = prober.observe(&facts(), &c, 1, &next.state, next.dir.path(), None);
    assert!(!h.started);
    prober.stop("main");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!next.exited(), "stopped probes kill nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_startup_probe_kills_and_an_adopted_attempt_keeps_its_status() {
    let (mut prober, _wake) = prober();
    let c = Container {
        name: "main".into(),
        startup_probe: Some(probe(&["sh", "-c", "exit 1"], 1)),
        readiness_probe: Some(probe(&["true"], 1)),
        ..Default::default()
    };
    let mut fake = FakeContainer::start();
    prober.observe(&facts(), &c, 0, &fake.state, fake.dir.path(), None);
    wait_until("the startup kill", || fake.exited()).await;
    let note: KillNote = read_json(&fake.dir.path().join(KILL_RECORD))
        .unwrap()
        .unwrap();
    assert_eq!(
        note.message,
        "Container main failed startup probe, will be restarted"
    );
    // An agent restart: the status said this very attempt was started and ready.
    let (mut prober, _wake) = self::prober();
    let fake = FakeContainer::start();
    let previous = ContainerStatus {
        name: "main".into(),
        container_id: Some("ferry://u/main/3".into()),
        started: Some(true),
        ready: true,
        ..Default::default()
    };
    let h = prober.observe(
        &facts(),
        &c,
        3,
        &fake.state,
        fake.dir.path(),
        Some(&previous),
    );
    assert_eq!(
        h,
        Health {
            started: true,
            ready: true
        }
    );
    let h = prober.observe(
        &facts(),
        &c,
        4,
        &fake.state,
        fake.dir.path(),
        Some(&previous),
    );
    assert_eq!(
        h,
        Health {
            started: false,
            ready: false
        },
        "another attempt starts over"
    );
}

/// A gRPC health server over cleartext HTTP/2: `ok` (and the empty name) serve, `down` does
/// not, anything else is `NOT_FOUND`.
async fn grpc_server() -> u16 {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Bytes, Frame};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let name = body
                        .get(7..)
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_default();
                    let (status, code) = match name.as_str() {
                        "" | "ok" => (Some(1u8), "0"),
                        "down" => (Some(2), "0"),
                        _ => (None, "5"),
                    };
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", code.parse().unwrap());
                    let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                        Vec::new();
                    if let Some(s) = status {
                        frames.push(Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s]))));
                    }
                    frames.push(Ok(Frame::trailers(trailers)));
                    let body = StreamBody::new(futures::stream::iter(frames));
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap(),
                    )
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), service),
            );
        }
    });
    port
}

#[tokio::test]
async fn grpc_health_checks_the_named_service() {
    let port = grpc_server().await;
    let check = |service: &str| {
        let h = Handler::Grpc {
            port,
            service: service.into(),
        };
        async move { run_handler(&h, &me(), T).await }
    };
    assert_eq!(check("").await, Outcome::Success);
    assert_eq!(check("ok").await, Outcome::Success);
    assert_eq!(
        check("down").await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    assert_eq!(
        check("nope").await,
        Outcome::Failure("health rpc probe failed: grpc-status 5".into())
    );
    let closed = free_port_now();
    let h = Handler::Grpc {
        port: closed,
        service: String::new(),
    };
    assert!(
        matches!(run_handler(&h, &me(), T).await, Outcome::Failure(m) if m.contains("connection refused"))
    );
}

fn free_port_now() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
