//! Shared helpers of the integration tests: an in-process control plane on a random loopback
//! port in a temporary directory, and the real kubectl pointed at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry::up::{ControlPlane, UpConfig};

pub mod containerd;
pub mod leaks;

/// A control plane for one test.
pub struct TestPlane {
    pub plane: ControlPlane,
    pub client: kube::Client,
    /// Unmounts what the node agent mounted under `dir` (secret and projected volumes are
    /// tmpfs mounts; pods outlive an agent that stops), so `dir` can be removed.
    _mounts: MountGuard,
    pub dir: tempfile::TempDir,
    /// This plane's network plan (its own ranges, bridge and rules).
    pub network: ferry_api::network::ClusterNetwork,
    /// Removes the plane's bridge, routes, hygiene table and namespaces when the test ends.
    _net: NetGuard,
    /// Holds the plane's network slot (see [`network_slot`]).
    _slot: std::fs::File,
}

/// Lazily unmounts every mount under its directory, deepest first, when dropped.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
            .filter(|m| m.starts_with(&self.0))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in points {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Removes what a plane's node agent made on the host for its network (as root), when dropped.
pub struct NetGuard(pub ferry_api::network::ClusterNetwork);

impl Drop for NetGuard {
    fn drop(&mut self) {
        clean_slot(&self.0);
    }
}

/// Removes everything a test plane with network plan `net` may have left on the host: the
/// processes and cgroups under its cgroup root (pods keep running when an agent stops, by
/// design), its bridge, routes, hygiene table and namespaces. Run when a plane ends and when a
/// slot is taken (a test process that was killed cleaned nothing).
pub fn clean_slot(net: &ferry_api::network::ClusterNetwork) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Ok(driver) = ferry_agent::sandbox::cgroup::Driver::host() {
        let _ = driver.remove(&net.nft_table);
    }
    ferry_agent::sandbox::network::remove_node(net);
}

/// Picks a network slot no other running test plane on this machine holds (an exclusive
/// `flock` on `/run/ferry-test-net/<n>.lock`, released when the file closes, even when the
/// test process dies), so parallel tests and test binaries never share a bridge, a range or an
/// nftables table.
pub fn network_slot() -> (u8, std::fs::File) {
    use std::os::fd::AsRawFd;
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/ferry-test-net")
    } else {
        std::env::temp_dir().join("ferry-test-net")
    };
    std::fs::create_dir_all(&dir).expect("network slot directory");
    for n in 1..=200u8 {
        let f = std::fs::File::create(dir.join(format!("{n}.lock"))).expect("slot lock file");
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (n, f);
        }
    }
    panic!("no free test network slot (200 planes running?)");
}

/// Starts the control plane (API server and scheduler, no node agent) in a fresh temporary
/// directory.
pub async fn start() -> TestPlane {
    start_with(|_| {}).await
}

/// Starts the whole embedded control plane, node agent included, with declared GPUs.
pub async fn start_with_node(fake_gpus: &str) -> TestPlane {
    let groups = ferry_agent::gpu::parse_fake_gpus(fake_gpus).expect("valid --fake-gpus");
    start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Fake(groups);
        agent.shim = Some(shim_command());
        c.agent = Some(agent);
    })
    .await
}

/// The container supervisor: the `ferry` binary's hidden subcommand (the test binary itself
/// is not `ferry`).
pub fn shim_command() -> ferry_agent::runtime::ShimCommand {
    ferry_agent::runtime::ShimCommand {
        program: env!("CARGO_BIN_EXE_ferry").into(),
        args: vec![ferry_agent::shim::SHIM_SUBCOMMAND.into()],
    }
}

/// A TLS connection to `server` (HTTP/1.1 by ALPN) that trusts the cluster CA and presents
/// the admin's client certificate: for tests that write raw HTTP.
pub async fn tls_connect(
    server: &ferry_apiserver::RunningServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let admin = server
        .admin
        .as_ref()
        .expect("a TLS server has an admin certificate");
    tls_connect_as(server, Some(admin)).await
}

/// A TLS connection to `server` presenting `credentials` (none: no client certificate).
pub async fn tls_connect_as(
    server: &ferry_apiserver::RunningServer,
    credentials: Option<&ferry_apiserver::tls::Credentials>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let pki = server.pki.as_ref().expect("a TLS server has a PKI");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match credentials {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::IpAddress(server.addr.ip().into());
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Starts the control plane after adjusting its configuration.
pub async fn start_with(adjust: impl FnOnce(&mut UpConfig)) -> TestPlane {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = UpConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.agent = None;
    let token_file = dir.path().join("tokens.csv");
    std::fs::write(&token_file, TEST_TOKENS).expect("token file");
    config.token_file = Some(token_file);
    let (slot, slot_lock) = network_slot();
    config.network = ferry_api::network::ClusterNetwork::for_index(slot);
    clean_slot(&config.network);
    adjust(&mut config);
    let network = config.network.clone();
    let plane = ControlPlane::start(config)
        .await
        .expect("control plane starts");
    let client = plane.client().await.expect("client");
    TestPlane {
        plane,
        client,
        _mounts: MountGuard(dir.path().to_path_buf()),
        dir,
        network: network.clone(),
        _net: NetGuard(network),
        _slot: slot_lock,
    }
}

/// The static tokens of every test plane: users `alice` (group `tenant-a`), `bob` (group
/// `tenant-b`) and `carol` (no group), with the token `<user>-token`.
pub const TEST_TOKENS: &str = "alice-token,alice,alice-uid,\"tenant-a\"\nbob-token,bob,bob-uid,\"tenant-b\"\ncarol-token,carol,carol-uid\n";

/// A test user's credentials (see [`TEST_TOKENS`]).
pub struct TestUser {
    /// The user name.
    pub name: String,
    /// The bearer token.
    pub token: String,
    /// A kubeconfig for the user.
    pub kubeconfig: PathBuf,
}

impl TestPlane {
    /// The credentials of test user `name` (`alice`, `bob` or `carol`), with a kubeconfig
    /// written into the plane's directory.
    pub fn user(&self, name: &str) -> TestUser {
        let token = format!("{name}-token");
        let kubeconfig = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, self.plane.kubeconfig_for_token(&token))
            .expect("user kubeconfig");
        TestUser {
            name: name.into(),
            token,
            kubeconfig,
        }
    }

    /// A kube-rs client as test user `name`.
    pub async fn client_as(&self, name: &str) -> kube::Client {
        self.plane
            .client_for_token(&self.user(name).token)
            .await
            .expect("user client")
    }

    /// Runs kubectl as test user `name`.
    pub fn kubectl_as(&self, name: &str, args: &[&str]) -> Kubectl {
        kubectl(&self.user(name).kubeconfig, args, None)
    }

    /// Runs kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Kubectl {
        kubectl(&self.plane.kubeconfig, args, None)
    }

    /// Runs kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Kubectl {
        kubectl(&self.plane.kubeconfig, args, Some(stdin))
    }

    /// Starts one more node agent, `node_name`, on this machine: its own data directory under
    /// the plane's, the host runtime (pods share the host's network), no GPUs, its own Node
    /// credentials. Stop it with [`ferry_agent::AgentHandle::stop`] before the plane ends.
    pub async fn add_agent(&self, node_name: &str) -> ferry_agent::AgentHandle {
        self.add_agent_with(node_name, |_| {}).await
    }

    /// [`TestPlane::add_agent`] with its configuration adjusted first (fake GPUs, say:
    /// `c.gpus = GpuSource::Fake(parse_fake_gpus("2xH100-80GB").unwrap())`).
    pub async fn add_agent_with(
        &self,
        node_name: &str,
        adjust: impl FnOnce(&mut ferry_agent::AgentConfig),
    ) -> ferry_agent::AgentHandle {
        let data_dir = self.dir.path().join(format!("agent-{node_name}"));
        let mut config = ferry_agent::AgentConfig::new(node_name, data_dir);
        config.gpus = ferry_agent::gpu::GpuSource::Disabled;
        config.network = self.network.clone();
        config.log_server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.shim = shim_command();
        config.sandbox = ferry_agent::sandbox::SandboxMode::Host;
        adjust(&mut config);
        config.tls = Some(
            self.plane
                .agent_tls(node_name, config.node_ip)
                .expect("agent certificate"),
        );
        let client = self
            .plane
            .client_as(
                &ferry_apiserver::auth::users::node(node_name),
                &[ferry_apiserver::auth::groups::NODES],
            )
            .await
            .expect("node client");
        ferry_agent::start(client, config)
            .await
            .expect("the extra agent starts")
    }
}

/// A `kubectl ... -w` running in the background; its output is collected as it comes.
pub struct KubectlWatch {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _cache: tempfile::TempDir,
}

impl KubectlWatch {
    /// What kubectl printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until kubectl has printed a line for which `line` is true (an event the test
    /// expects); returns the output so far. Panics with the output after 30 s.
    pub async fn wait_for(&self, what: &str, line: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.output();
            if out.lines().any(&line) {
                return out;
            }
            if Instant::now() > deadline {
                panic!("kubectl -w never printed {what}:\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops kubectl and returns what it printed.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.output()
    }
}

impl TestPlane {
    /// Starts `kubectl <args>` (a watch) in the background; wait for the lines it prints
    /// with [`KubectlWatch::wait_for`].
    pub fn kubectl_watch(&self, args: &[&str]) -> KubectlWatch {
        let cache = tempfile::tempdir().unwrap();
        let child = Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(&self.plane.kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        let mut child = child;
        let stdout = child.stdout.take().expect("piped stdout");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            })
        };
        KubectlWatch {
            child,
            output,
            reader: Some(reader),
            _cache: cache,
        }
    }
}

/// The outcome of one kubectl run.
#[derive(Debug)]
pub struct Kubectl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// Panics with kubectl's output unless it succeeded; returns stdout.
    #[track_caller]
    pub fn success(self) -> String {
        assert!(
            self.ok,
            "kubectl failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Panics unless kubectl failed; returns stderr.
    #[track_caller]
    pub fn failure(self) -> String {
        assert!(
            !self.ok,
            "kubectl should have failed:\nstdout: {}",
            self.stdout
        );
        self.stderr
    }
}

/// The kubectl binary: `$KUBECTL` or `kubectl` on the PATH. The tests need it; `.ci/run`
/// installs it where it is missing.
pub fn kubectl_binary() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Runs kubectl with the kubeconfig `kubeconfig` (and `stdin` as its input).
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Kubectl {
    use std::io::Write;
    let mut cmd = Command::new(kubectl_binary());
    // No cache shared between tests (discovery is cached per server address otherwise). The
    // flags go first: after a `--` (exec) they would be the command's.
    let cache = tempfile::tempdir().unwrap();
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run kubectl ({}): {e}; install kubectl or set KUBECTL",
            kubectl_binary().display()
        )
    });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    Kubectl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits until `check` returns `Some`, polling; panics with `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when this machine can run real pod sandboxes (root: network namespaces, cgroups,
/// nftables). Otherwise the test says so and is skipped, except under `CI=true`, where a
/// missing capability fails the test instead of letting it pass unseen.
pub fn sandbox_capable(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let message = format!("{test}: needs root (network namespaces, cgroups, nftables)");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{message}, and CI is set: refusing to skip");
    }
    eprintln!("SKIPPED {message}");
    false
}
