//! The kubelet's prober: startup, liveness and readiness probes of every running container.
//!
//! Each running container attempt with probes gets one tokio task, owned by the pod worker
//! through a [`Prober`]: started when the worker first observes the attempt running, aborted
//! when the attempt ends, the pod terminates or the worker goes. As in the kubelet:
//!
//! - until the startup probe succeeds, neither liveness nor readiness probes run, and the
//!   container is not `started`;
//! - a probe waits `initialDelaySeconds` after the container started, then runs every
//!   `periodSeconds`, each run given `timeoutSeconds`; `successThreshold` consecutive successes
//!   (readiness only; 1 for the others) and `failureThreshold` consecutive failures flip it;
//! - every failed run records an `Unhealthy` Warning Event (`Liveness probe failed: ...`);
//! - a startup or liveness probe that reaches its failure threshold kills the container
//!   (SIGTERM, SIGKILL after the probe's `terminationGracePeriodSeconds` or the pod's), with a
//!   `Killing` Event; the worker restarts it per `restartPolicy`, and its exit record says why;
//! - readiness gives the container's `ready`; a container without a readiness probe is ready
//!   once it started.
//!
//! Handlers: `exec` (inside the container's namespaces and cgroups, with its environment and
//! user, see [`crate::sandbox::enter`]), `httpGet` (HTTP; 200–399 succeeds; redirects on the same host
//! are followed, one off the host ends the probe as a success, as in the kubelet), `tcpSocket`
//! (a connection within the timeout) and `grpc` (the standard `grpc.health.v1.Health/Check`
//! over HTTP/2 without TLS). Bad input (a named port the container does not declare, an
//! `https` scheme) is a failed probe whose Event says why.
//!
//! Results are kept in memory: an agent that restarts probes afresh, starting from what the
//! pod status last said about the same attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::events::{EventRecorder, EventType, Subject};
use crate::runtime::{self, ExitRecord, ShimSpec, StateRecord, files, read_json};

/// File in an attempt directory recording that a probe had the container killed.
pub const KILL_RECORD: &str = "probe-kill.json";

/// Largest output of an exec probe or body of an HTTP probe read (the kubelet's 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

/// The three kinds of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`.
    Startup,
    /// `livenessProbe`.
    Liveness,
    /// `readinessProbe`.
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness` or `Readiness`, as Events start.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    fn lower(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

/// What a probe runs, resolved against its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Run a command in the container; exit 0 succeeds.
    Exec {
        /// The command, not run through a shell.
        argv: Vec<String>,
    },
    /// An HTTP GET; 200–399 succeeds.
    Http {
        /// The host to connect to (`None`: the pod's IP).
        host: Option<String>,
        /// The port.
        port: u16,
        /// Path and query (`/` when empty).
        path: String,
        /// Extra request headers (a `Host` header replaces the default one).
        headers: Vec<(String, String)>,
    },
    /// A TCP connection.
    Tcp {
        /// The host to connect to (`None`: the pod's IP).
        host: Option<String>,
        /// The port.
        port: u16,
    },
    /// The gRPC health-checking protocol.
    Grpc {
        /// The port.
        port: u16,
        /// The service name asked about (empty: the server as a whole).
        service: String,
    },
}

/// One probe of a container, with its timers and thresholds (defaults as in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Which probe.
    pub kind: ProbeKind,
    /// What it runs, or why it cannot run (reported on every attempt as a failure).
    pub handler: Result<Handler, String>,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10, at least 1).
    pub period: Duration,
    /// `timeoutSeconds` (1, at least 1).
    pub timeout: Duration,
    /// `successThreshold` (1; always 1 for startup and liveness probes).
    pub success_threshold: u32,
    /// `failureThreshold` (3, at least 1).
    pub failure_threshold: u32,
    /// The probe's own `terminationGracePeriodSeconds`, for the kill it triggers.
    pub grace: Option<Duration>,
}

fn seconds(v: Option<i32>, default: u64, min: u64) -> Duration {
    Duration::from_secs(
        v.map_or(default, |s| u64::try_from(s).unwrap_or(0))
            .max(min),
    )
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.map_or(default, |n| u32::try_from(n).unwrap_or(1)).max(1)
}

impl ProbeSpec {
    /// The probe of `kind` as `container` declares it.
    pub fn of(kind: ProbeKind, probe: &Probe, container: &Container) -> Self {
        let success_threshold = match kind {
            ProbeKind::Readiness => count(probe.success_threshold, 1),
            _ => 1,
        };
        ProbeSpec {
            kind,
            handler: resolve_handler(probe, container),
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, 3),
            grace: probe
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        }
    }
}

/// The container's probes, startup first.
pub fn container_probes(container: &Container) -> Vec<ProbeSpec> {
    [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| p.as_ref().map(|p| ProbeSpec::of(kind, p, container)))
    .collect()
}

/// A port number, or a port the container declares by name.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => match container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
        {
            Some(p) => i64::from(p.container_port),
            None => match name.parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    return Err(format!(
                        "port {name:?} not found: container {:?} declares no port of that name",
                        container.name
                    ));
                }
            },
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

fn resolve_handler(probe: &Probe, container: &Container) -> Result<Handler, String> {
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err("exec probe has no command".into());
        }
        return Ok(Handler::Exec { argv });
    }
    if let Some(http) = &probe.http_get {
        let scheme = http.scheme.as_deref().unwrap_or("HTTP");
        if !scheme.eq_ignore_ascii_case("HTTP") {
            return Err(format!(
                "httpGet scheme {scheme:?} is not supported by Ferry's agent (only HTTP)"
            ));
        }
        let port = resolve_port(&http.port, container)?;
        let path = match http.path.as_deref().unwrap_or("") {
            "" => "/".to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("/{p}"),
        };
        let headers = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return Ok(Handler::Http {
            host: http.host.clone().filter(|h| !h.is_empty()),
            port,
            path,
            headers,
        });
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(Handler::Tcp {
            host: tcp.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&tcp.port, container)?,
        });
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {}", grpc.port))?;
        return Ok(Handler::Grpc {
            port,
            service: grpc.service.clone().unwrap_or_default(),
        });
    }
    Err("the probe names no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// The outcome of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It ran and failed; the text says how (`HTTP probe failed with statuscode: 503`).
    Failure(String),
    /// It could not run (bad input, the container is gone).
    Error(String),
}

/// Where and as whom a probe runs.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The container's main process (exec probes join its namespaces).
    pub pid: i32,
    /// The default host of network probes: the pod's IP, or loopback.
    pub host: String,
    /// The container's environment (exec probes).
    pub env: Vec<(String, String)>,
    /// The container's user and group (exec probes).
    pub uid: Option<u32>,
    /// The container's group.
    pub gid: Option<u32>,
}

/// Runs `handler` once against `target`, within `timeout`.
pub async fn run_handler(handler: &Handler, target: &Target, timeout: Duration) -> Outcome {
    match handler {
        Handler::Exec { argv } => exec(argv, target, timeout).await,
        Handler::Http {
            host,
            port,
            path,
            headers,
        } => {
            let host = host.as_deref().unwrap_or(&target.host);
            http_get(host, *port, path, headers, timeout).await
        }
        Handler::Tcp { host, port } => {
            let host = host.as_deref().unwrap_or(&target.host);
            match connect(host, *port, timeout).await {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Failure(e),
            }
        }
        Handler::Grpc { port, service } => grpc(&target.host, *port, service, timeout).await,
    }
}

/// `host:port` with IPv6 addresses bracketed.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, String> {
    let addr = host_port(host, port);
    // Hosts are addresses as a rule; a name is resolved by the system (the kubelet does too).
    let connecting = async {
        match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => tokio::net::TcpStream::connect((ip, port)).await,
            Err(_) => tokio::net::TcpStream::connect(addr.as_str()).await,
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", io_text(&e))),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// An I/O error as Go prints it (`connection refused`), without Rust's `(os error N)`.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text.get(..i).unwrap_or(&text).to_string(),
        None => text,
    };
    text.to_lowercase()
}

async fn exec(argv: &[String], target: &Target, timeout: Duration) -> Outcome {
    let Some(program) = argv.first() else {
        return Outcome::Error("exec probe has no command".into());
    };
    let cmd = match crate::sandbox::enter::command_in(target.pid, program, false) {
        Ok(cmd) => cmd,
        Err(e) => return Outcome::Error(format!("cannot enter the container: {e}")),
    };
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !target.env.is_empty() {
        cmd.env_clear().envs(target.env.iter().cloned());
    }
    if let Some(gid) = target.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = target.uid {
        cmd.uid(uid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failure(format!(
                "command {:?} cannot run: {}",
                argv.join(" "),
                io_text(&e)
            ));
        }
    };
    let pgid = child.id();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let mut output = Vec::new();
        let mut errors = Vec::new();
        let read_out = async {
            if let Some(o) = out.as_mut() {
                let _ = o.take(MAX_OUTPUT as u64).read_to_end(&mut output).await;
            }
        };
        let read_err = async {
            if let Some(e) = err.as_mut() {
                let _ = e.take(MAX_OUTPUT as u64).read_to_end(&mut errors).await;
            }
        };
        let (status, _, _) = tokio::join!(child.wait(), read_out, read_err);
        output.extend(errors);
        (status, output)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((Ok(status), output)) if status.success() => {
            let _ = output;
            Outcome::Success
        }
        Ok((Ok(status), output)) => {
            let text = String::from_utf8_lossy(&output).trim().to_string();
            if text.is_empty() {
                let code = status
                    .code()
                    .map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
                Outcome::Failure(format!("command {:?} exited with {code}", argv.join(" ")))
            } else {
                Outcome::Failure(text)
            }
        }
        Ok((Err(e), _)) => Outcome::Error(format!("cannot wait for the probe command: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
            }
            Outcome::Failure(format!("command {:?} timed out", argv.join(" ")))
        }
    }
}

/// Most redirects an HTTP probe follows (Go's client's limit).
const MAX_REDIRECTS: usize = 10;

/// An HTTP probe: redirects to the same host are followed (as the kubelet does); a redirect
/// elsewhere ends the probe with the redirect's own status, a success.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let first_url = format!("http://{}{path}", host_port(host, port));
    let run = async {
        let (mut port, mut path) = (port, path.to_string());
        for _ in 0..=MAX_REDIRECTS {
            let (status, location) = fetch(host, port, &path, headers, timeout).await?;
            let Some(location) = location.filter(|_| (300..400).contains(&status)) else {
                return Ok(status);
            };
            match redirect_target(host, port, &path, &location) {
                Some((p, next)) => (port, path) = (p, next),
                None => return Ok(status),
            }
        }
        Err(format!(
            "Get {first_url:?}: stopped after {MAX_REDIRECTS} redirects"
        ))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Outcome::Success,
        Ok(Ok(status)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!(
            "Get {first_url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// Where a redirect from `host:port` + `path` to `location` leads, when it stays on the host
/// (same host name, any port, plain HTTP): the port and path to ask next.
fn redirect_target(host: &str, port: u16, path: &str, location: &str) -> Option<(u16, String)> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some((port, location.to_string()));
    }
    if let Some(rest) = location.strip_prefix("http://") {
        let uri: hyper::Uri = format!("http://{rest}").parse().ok()?;
        let authority = uri.authority()?;
        let same = authority.host().trim_matches(['[', ']']) == host.trim_matches(['[', ']']);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        return same.then(|| (authority.port_u16().unwrap_or(80), path));
    }
    if location.contains("://") || location.starts_with("//") {
        return None;
    }
    // Relative to the current path's directory.
    let dir = path.split('?').next().unwrap_or("/");
    let dir = dir
        .get(..dir.rfind('/').map_or(0, |i| i + 1))
        .unwrap_or("/");
    Some((port, format!("{dir}{location}")))
}

/// One GET: the status and the `Location` header.
async fn fetch(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, Option<String>), String> {
    use http_body_util::BodyExt;
    let url = format!("http://{}{path}", host_port(host, port));
    let stream = connect(host, port, timeout).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::get(path)
        .header(hyper::header::HOST, host_port(host, port))
        .header(hyper::header::USER_AGENT, "kube-probe/1.30")
        .header(hyper::header::ACCEPT, "*/*");
    for (name, value) in headers {
        let Some(map) = request.headers_mut() else {
            break;
        };
        let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) else {
            driver.abort();
            return Err(format!("invalid HTTP header {name:?}"));
        };
        if name == hyper::header::HOST || name == hyper::header::USER_AGENT {
            map.insert(name, value);
        } else {
            map.append(name, value);
        }
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("Get {url:?}: {e}"));
    let result = match request {
        Ok(request) => match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let location = response
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                // Read (some of) the body, as the kubelet does, so the server sees a complete
                // exchange.
                let mut body = response.into_body();
                let mut read = 0usize;
                while read < MAX_OUTPUT {
                    match body.frame().await {
                        Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
                Ok((status, location))
            }
            Err(e) => Err(format!("Get {url:?}: {e}")),
        },
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

/// `grpc.health.v1.Health/Check` over cleartext HTTP/2; `SERVING` (1) succeeds.
async fn grpc(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    use http_body_util::BodyExt;
    let addr = host_port(host, port);
    let run = async {
        let stream = connect(host, port, timeout).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| {
                    format!("failed to connect service {addr:?} within {timeout:?}: {e}")
                })?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        // HealthCheckRequest { string service = 1; }, length-prefixed.
        let mut message = Vec::new();
        if !service.is_empty() {
            message.push(0x0a);
            push_varint(&mut message, service.len() as u64);
            message.extend_from_slice(service.as_bytes());
        }
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend(message);
        let request = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .header(hyper::header::USER_AGENT, "kube-probe/1.30")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(frame)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("health rpc probe failed: {e}"))?;
        let mut grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("health rpc probe failed: {e}"))?;
        if let Some(trailers) = collected.trailers()
            && let Some(v) = trailers.get("grpc-status").and_then(|v| v.to_str().ok())
        {
            grpc_status = Some(v.to_string());
        }
        driver.abort();
        let body = collected.to_bytes();
        if grpc_status.as_deref().is_some_and(|s| s != "0") {
            return Err(format!(
                "health rpc probe failed: grpc-status {}",
                grpc_status.unwrap_or_default()
            ));
        }
        // HealthCheckResponse { ServingStatus status = 1; } after the 5-byte prefix.
        let serving = body.get(5..).map_or(0, |m| match m {
            [0x08, v, ..] => u64::from(*v),
            _ => 0,
        });
        Ok(serving)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(1)) => Outcome::Success,
        Ok(Ok(status)) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            match status {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "?",
            }
        )),
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {timeout:?}"
        )),
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Consecutive results of one probe, and the verdict they give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    successes: u32,
    failures: u32,
    /// The current verdict: passing or not.
    pub passing: bool,
}

impl Counter {
    /// A counter starting at verdict `passing`.
    pub fn new(passing: bool) -> Self {
        Counter {
            successes: 0,
            failures: 0,
            passing,
        }
    }

    /// Adds one result; returns whether the verdict changed.
    pub fn add(&mut self, success: bool, spec: &ProbeSpec) -> bool {
        let before = self.passing;
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= spec.success_threshold {
                self.passing = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= spec.failure_threshold {
                self.passing = false;
            }
        }
        before != self.passing
    }
}

/// What the probes say about one container attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// The container is ready (started, and its readiness probe passes or it has none).
    pub ready: bool,
}

/// Why a probe had its container killed (`probe-kill.json` in the attempt directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillNote {
    /// `Container main failed liveness probe, will be restarted`.
    pub message: String,
}

/// Gives an exit record the reason a probe had the container killed, if one did.
pub fn annotate_exit(attempt_dir: &Path, exit: &mut ExitRecord) {
    if exit.message.is_none()
        && let Ok(Some(note)) = read_json::<KillNote>(&attempt_dir.join(KILL_RECORD))
    {
        exit.message = Some(note.message);
    }
}

/// The pod-level facts probes need.
#[derive(Debug, Clone)]
pub struct PodFacts {
    /// Namespace, name and uid, for Events.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// The pod's IP (its sandbox's), when it has its own network.
    pub pod_ip: Option<String>,
    /// `terminationGracePeriodSeconds` of the pod.
    pub grace_seconds: i64,
}

struct Running {
    attempt: u32,
    health: Arc<Mutex<Health>>,
    task: Option<AbortHandle>,
}

/// The probes of one pod's containers, owned by its worker.
pub struct Prober {
    events: EventRecorder,
    wake: Arc<Notify>,
    running: HashMap<String, Running>,
    closed: bool,
}

impl Prober {
    /// A prober that records Events with `events` and wakes the worker through `wake`.
    pub fn new(events: EventRecorder, wake: Arc<Notify>) -> Self {
        Prober {
            events,
            wake,
            running: HashMap::new(),
            closed: false,
        }
    }

    /// The health of `container`'s running attempt `attempt` (whose directory is `dir` and
    /// state `state`), starting its probes when this attempt is new. `previous` is what the pod
    /// status said about the container, so an agent restart keeps a ready container ready.
    pub fn observe(
        &mut self,
        pod: &PodFacts,
        container: &Container,
        attempt: u32,
        state: &StateRecord,
        dir: &Path,
        previous: Option<&ContainerStatus>,
    ) -> Health {
        if let Some(r) = self.running.get(&container.name)
            && (r.attempt == attempt || self.closed)
        {
            return *r.health.lock().unwrap_or_else(|p| p.into_inner());
        }
        self.stop(&container.name);
        let probes = container_probes(container);
        let has = |k| probes.iter().any(|p| p.kind == k);
        let same_attempt = previous.is_some_and(|s| {
            s.container_id.as_deref()
                == Some(format!("ferry://{}/{}/{attempt}", pod.uid, container.name).as_str())
        });
        let started = !has(ProbeKind::Startup)
            || (same_attempt && previous.is_some_and(|s| s.started == Some(true)));
        let ready = started
            && (!has(ProbeKind::Readiness) || (same_attempt && previous.is_some_and(|s| s.ready)));
        let health = Arc::new(Mutex::new(Health { started, ready }));
        let task = (!probes.is_empty() && !self.closed).then(|| {
            let spec: Option<ShimSpec> = read_json(&dir.join(files::SPEC)).ok().flatten();
            let target = Target {
                pid: state.container.pid,
                host: pod.pod_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
                env: spec.as_ref().map(|s| s.env.clone()).unwrap_or_default(),
                uid: spec.as_ref().and_then(|s| s.run_as_user),
                gid: spec.as_ref().and_then(|s| s.run_as_group),
            };
            let job = ContainerProbes {
                probes,
                target,
                state: state.clone(),
                dir: dir.to_path_buf(),
                container: container.name.clone(),
                subject: Subject::pod(&pod.namespace, &pod.name, &pod.uid, Some(&container.name)),
                events: self.events.clone(),
                wake: self.wake.clone(),
                health: health.clone(),
                pod_grace: Duration::from_secs(u64::try_from(pod.grace_seconds).unwrap_or(0)),
            };
            tokio::spawn(job.run()).abort_handle()
        });
        let h = *health.lock().unwrap_or_else(|p| p.into_inner());
        self.running.insert(
            container.name.clone(),
            Running {
                attempt,
                health,
                task,
            },
        );
        h
    }

    /// Stops the probes of `container` (its attempt ended).
    pub fn stop(&mut self, container: &str) {
        if let Some(r) = self.running.remove(container)
            && let Some(t) = r.task
        {
            t.abort();
        }
    }

    /// Stops every probe for good (the pod terminates); health stays as last seen.
    pub fn close(&mut self) {
        self.closed = true;
        for r in self.running.values_mut() {
            if let Some(t) = r.task.take() {
                t.abort();
            }
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.close();
    }
}

/// The task probing one container attempt.
struct ContainerProbes {
    probes: Vec<ProbeSpec>,
    target: Target,
    state: StateRecord,
    dir: PathBuf,
    container: String,
    subject: Subject,
    events: EventRecorder,
    wake: Arc<Notify>,
    health: Arc<Mutex<Health>>,
    pod_grace: Duration,
}

/// How a probe loop ended.
enum Ended {
    /// The startup probe passed.
    Started,
    /// A startup or liveness probe reached its failure threshold.
    Kill(ProbeSpec),
}

impl ContainerProbes {
    fn set(&self, f: impl FnOnce(&mut Health)) {
        let changed = {
            let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let before = *h;
            f(&mut h);
            before != *h
        };
        if changed {
            self.wake.notify_one();
        }
    }

    fn probe(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        self.probes.iter().find(|p| p.kind == kind)
    }

    async fn run(self) {
        let started = self.health.lock().map(|h| h.started).unwrap_or(false);
        if !started && let Some(startup) = self.probe(ProbeKind::Startup) {
            match self.probe_loop(startup, false).await {
                Ended::Started => self.set(|h| h.started = true),
                Ended::Kill(spec) => return self.kill(&spec).await,
            }
        }
        if self.probe(ProbeKind::Readiness).is_none() {
            self.set(|h| h.ready = h.started);
        }
        let readiness = async {
            match self.probe(ProbeKind::Readiness) {
                Some(spec) => {
                    let ready = self.health.lock().map(|h| h.ready).unwrap_or(false);
                    self.probe_loop(spec, ready).await
                }
                None => std::future::pending().await,
            }
        };
        let liveness = async {
            match self.probe(ProbeKind::Liveness) {
                Some(spec) => self.probe_loop(spec, true).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            e = liveness => e,
            e = readiness => e,
        };
        if let Ended::Kill(spec) = ended {
            self.kill(&spec).await;
        }
    }

    /// Runs `spec` on its timers until a startup probe passes or a startup or liveness probe
    /// fails for good; readiness probes never end.
    async fn probe_loop(&self, spec: &ProbeSpec, passing: bool) -> Ended {
        let since_start: Duration = Timestamp::now()
            .duration_since(self.state.started_at)
            .try_into()
            .unwrap_or(Duration::ZERO);
        if let Some(wait) = spec.initial_delay.checked_sub(since_start) {
            tokio::time::sleep(wait).await;
        }
        let mut ticks = tokio::time::interval(spec.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut counter = Counter::new(passing);
        loop {
            ticks.tick().await;
            let outcome = match &spec.handler {
                Ok(h) => run_handler(h, &self.target, spec.timeout).await,
                Err(e) => Outcome::Error(e.clone()),
            };
            let success = outcome == Outcome::Success;
            match &outcome {
                Outcome::Success => {}
                Outcome::Failure(m) => {
                    self.event(
                        EventType::Warning,
                        "Unhealthy",
                        &format!("{} probe failed: {m}", spec.kind.title()),
                    )
                    .await
                }
                Outcome::Error(m) => {
                    self.event(
                        EventType::Warning,
                        "Unhealthy",
                        &format!("{} probe errored: {m}", spec.kind.title()),
                    )
                    .await
                }
            }
            counter.add(success, spec);
            match spec.kind {
                ProbeKind::Readiness => {
                    let ready = counter.passing;
                    self.set(|h| h.ready = ready && h.started);
                }
                ProbeKind::Startup if counter.passing && success => return Ended::Started,
                ProbeKind::Startup | ProbeKind::Liveness
                    if !success && counter.failures >= spec.failure_threshold =>
                {
                    return Ended::Kill(spec.clone());
                }
                _ => {}
            }
        }
    }

    async fn event(&self, kind: EventType, reason: &str, message: &str) {
        let events = self.events.clone();
        let subject = self.subject.clone();
        let (reason, message) = (reason.to_string(), message.to_string());
        // In the background: a slow API server never delays the next probe.
        tokio::spawn(async move { events.record(&subject, kind, &reason, &message).await });
    }

    /// Kills the container because `spec` failed: SIGTERM, SIGKILL after the grace period.
    async fn kill(&self, spec: &ProbeSpec) {
        self.set(|h| h.ready = false);
        let message = format!(
            "Container {} failed {} probe, will be restarted",
            self.container,
            spec.kind.lower()
        );
        let note = KillNote {
            message: message.clone(),
        };
        if let Err(e) = runtime::write_json_atomic(&self.dir.join(KILL_RECORD), &note) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot record the probe's kill");
        }
        self.event(EventType::Normal, "Killing", &message).await;
        let grace = spec.grace.unwrap_or(self.pod_grace);
        if let Err(e) = runtime::signal(&self.state, Signal::SIGTERM) {
            tracing::warn!(container = %self.container, error = %e, "cannot signal the container");
        }
        let exited = tokio::time::timeout(grace, runtime::wait_exit(self.state.container)).await;
        if exited.is_err()
            && let Err(e) = runtime::signal(&self.state, Signal::SIGKILL)
        {
            tracing::warn!(container = %self.container, error = %e, "cannot kill the container");
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests;
