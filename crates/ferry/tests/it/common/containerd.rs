//! A containerd of the test's own (own root, state and socket, CRI plugin with the plane's CNI
//! configuration directory, cgroupfs, overlayfs or native snapshots) and a local OCI registry
//! (Debian's `docker-registry`) holding the images `scripts/test-images` builds on the
//! machine. Nothing comes from the internet. Everything is stopped and removed on drop,
//! containerd's sandboxes and containers first.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_api::network::ClusterNetwork;

/// A running containerd and registry.
pub struct TestRuntime {
    /// containerd's CRI socket.
    pub socket: PathBuf,
    /// `127.0.0.1:<port>` of the registry.
    pub registry: String,
    /// `127.0.0.1:<port>` of a second registry that requires basic auth ([`AUTH_USER`] /
    /// [`AUTH_PASSWORD`]), when `htpasswd` is installed.
    pub auth_registry: Option<String>,
    containerd: Option<Child>,
    registry_proc: Option<Child>,
    auth_registry_proc: Option<Child>,
    bridge: String,
    dir: tempfile::TempDir,
}

/// The user of the registry with basic auth.
pub const AUTH_USER: &str = "ferry";
/// Their password.
pub const AUTH_PASSWORD: &str = "s3cret-test";

/// Why the runtime could not be prepared (the test skips, or fails under `CI=true`).
pub type Unavailable = String;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not come up within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Can overlayfs be mounted under `dir` (not on an overlay or a filesystem it rejects)?
fn overlay_works(dir: &Path) -> bool {
    let base = dir.join("overlay-check");
    let (lower, upper, work, merged) = (
        base.join("l"),
        base.join("u"),
        base.join("w"),
        base.join("m"),
    );
    for d in [&lower, &upper, &work, &merged] {
        if std::fs::create_dir_all(d).is_err() {
            return false;
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let ok = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .is_ok();
    if ok {
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&base);
    ok
}

/// The repository's `scripts/` directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

impl TestRuntime {
    /// Starts the registry (with the test images pushed) and containerd, whose CNI plugin reads
    /// `cni_conf_dir` (the agent's `<data dir>/cni/net.d`). When no conflist is there yet, a
    /// minimal bridge one for `network` is written.
    pub fn start(cni_conf_dir: &Path, network: &ClusterNetwork) -> Result<Self, Unavailable> {
        for tool in [
            "containerd",
            "runc",
            "docker-registry",
            "umoci",
            "skopeo",
            "ctr",
        ] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Err(format!(
                    "{tool} is not installed (run scripts/install-deps)"
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-ctd-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let d = dir.path().to_path_buf();
        // The registry.
        let port = free_port();
        let registry = format!("127.0.0.1:{port}");
        std::fs::write(
            d.join("registry.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {registry}\n",
                d.join("registry").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = |name: &str| std::fs::File::create(d.join(name)).map_err(|e| e.to_string());
        let registry_proc = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("registry.yml"))
            .stdout(log("registry.log")?)
            .stderr(log("registry.err")?)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let mut rt = TestRuntime {
            socket: d.join("containerd.sock"),
            registry: registry.clone(),
            auth_registry: None,
            containerd: None,
            auth_registry_proc: None,
            registry_proc: Some(registry_proc),
            bridge: network.bridge.clone(),
            dir,
        };
        let d = rt.dir.path().to_path_buf();
        wait_until("the registry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&registry).is_ok()
        })?;
        let pushed = Command::new(scripts_dir().join("test-images"))
            .args(["push", &registry])
            .output()
            .map_err(|e| format!("scripts/test-images: {e}"))?;
        if !pushed.status.success() {
            return Err(format!(
                "scripts/test-images push failed: {}",
                String::from_utf8_lossy(&pushed.stderr)
            ));
        }
        // The registry with basic auth.
        let htpasswd = Command::new("htpasswd")
            .args(["-nbB", AUTH_USER, AUTH_PASSWORD])
            .output();
        if let Some(out) = htpasswd.ok().filter(|o| o.status.success()) {
            std::fs::write(d.join("htpasswd"), &out.stdout).map_err(|e| e.to_string())?;
            let auth = format!("127.0.0.1:{}", free_port());
            std::fs::write(
                d.join("auth-registry.yml"),
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {auth}\nauth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n",
                    d.join("auth-registry").display(),
                    d.join("htpasswd").display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let proc = Command::new("docker-registry")
                .arg("serve")
                .arg(d.join("auth-registry.yml"))
                .stdout(log("auth-registry.log")?)
                .stderr(log("auth-registry.err")?)
                .spawn()
                .map_err(|e| format!("cannot start docker-registry: {e}"))?;
            rt.auth_registry_proc = Some(proc);
            wait_until("the registry with auth", Duration::from_secs(20), || {
                std::net::TcpStream::connect(&auth).is_ok()
            })?;
            let pushed = Command::new(scripts_dir().join("test-images"))
                .args(["push", &auth])
                .env(
                    "FERRY_REGISTRY_CREDS",
                    format!("{AUTH_USER}:{AUTH_PASSWORD}"),
                )
                .output()
                .map_err(|e| format!("scripts/test-images: {e}"))?;
            if !pushed.status.success() {
                return Err(format!(
                    "scripts/test-images push (with auth) failed: {}",
                    String::from_utf8_lossy(&pushed.stderr)
                ));
            }
            rt.auth_registry = Some(auth);
        }
        // The CNI configuration (the agent's; a minimal one until the agent writes its own).
        std::fs::create_dir_all(cni_conf_dir).map_err(|e| e.to_string())?;
        let conflist = cni_conf_dir.join(format!("10-{}.conflist", network.cni_network));
        if !conflist.exists() {
            let conf = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": network.cni_network,
                "plugins": [
                    {"type": "bridge", "bridge": network.bridge, "isGateway": true, "ipMasq": false,
                     "ipam": {"type": "host-local",
                              "ranges": [[{"subnet": network.node_pod_cidr.to_string(),
                                           "gateway": network.gateway().to_string()}]],
                              "dataDir": d.join("ipam").display().to_string()}},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                    {"type": "loopback"}
                ]
            });
            std::fs::write(&conflist, conf.to_string()).map_err(|e| e.to_string())?;
        }
        let snapshotter = if overlay_works(&d) {
            "overlayfs"
        } else {
            "native"
        };
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/ferry-test/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  # Machines (and containers) without CAP_SYS_RESOURCE cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  # Network namespaces under the state directory: never mixed with other tests' /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false{binary}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
  # Docker Hub names (the Kubeflow examples' images) come from the local registry too.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://{registry}"]
{auth_mirror}"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = rt.socket.display(),
            cni = cni_conf_dir.display(),
            auth_mirror = rt
                .auth_registry
                .as_ref()
                .map(|a| format!(
                    "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{a}\"]\n    endpoint = [\"http://{a}\"]\n"
                ))
                .unwrap_or_default(),
            // FERRY_TEST_RUNC names another runc (a wrapper adding `--debug`, when diagnosing).
            binary = std::env::var("FERRY_TEST_RUNC")
                .map(|b| format!("\n        BinaryName = \"{b}\""))
                .unwrap_or_default(),
        );
        std::fs::write(d.join("containerd.toml"), config).map_err(|e| e.to_string())?;
        let containerd = Command::new("containerd")
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .stdout(log("containerd.log")?)
            .stderr(log("containerd.err")?)
            .spawn()
            .map_err(|e| format!("cannot start containerd: {e}"))?;
        rt.containerd = Some(containerd);
        let sock = rt.socket.clone();
        wait_until("containerd", Duration::from_secs(30), || {
            Command::new("ctr")
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map_err(|e| format!("{e}; see {}", d.join("containerd.err").display()))?;
        Ok(rt)
    }

    /// Pushes the training image to the local registry under the Docker Hub names of the
    /// Kubeflow examples (`scripts/test-images push-training`; built on first use).
    pub fn push_training_images(&self) -> Result<(), Unavailable> {
        let out = Command::new("bash")
            .arg(scripts_dir().join("test-images"))
            .args(["push-training", &self.registry])
            .output()
            .map_err(|e| format!("scripts/test-images: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/test-images push-training failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The image reference of a test image in the local registry (`busybox` or `pause`).
    pub fn image(&self, name: &str) -> String {
        format!("{}/ferry-test/{name}:1", self.registry)
    }

    /// A CRI client of this containerd.
    pub fn cri(&self) -> ferry_agent::cri::Cri {
        ferry_agent::cri::Cri::new(&self.socket).expect("CRI client")
    }

    /// containerd's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.err")).unwrap_or_default()
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        // Whatever the test left: sandboxes (their network namespaces) and containers.
        let socket = self.socket.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(cri) = ferry_agent::cri::Cri::new(&socket) else {
                    return;
                };
                for s in cri.list_sandboxes(None).await.unwrap_or_default() {
                    let _ = cri.remove_sandbox(&s.id).await;
                }
                for c in cri.list_containers(None).await.unwrap_or_default() {
                    let _ = cri.remove_container(&c.id).await;
                }
            });
        })
        .join();
        for child in [
            self.containerd.take(),
            self.registry_proc.take(),
            self.auth_registry_proc.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut child = child;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Mounts left under our directory (snapshots, network namespaces), deepest first.
        let root = self.dir.path().to_path_buf();
        let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .filter(|p| p.starts_with(&root))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        // The plane's bridge, made by the CNI bridge plugin when the agent did not make it.
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}
