//! The data directory: one owner at a time, and `ferry store check` / `recover` on a damaged
//! store, through the real binary.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry::up::{ControlPlane, UpConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

/// Runs the `ferry` binary to its end (killed after a minute: a command that should have
/// refused to start and serves instead must not hang the test).
fn ferry(args: &[&str], data_dir: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for ferry").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("ferry's output")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ferry_on_the_same_data_directory_refuses_to_start() {
    let t = common::start().await;
    let data_dir = t.dir.path().join("data");
    let kubeconfig = std::fs::read(&t.plane.kubeconfig).unwrap();
    // Owner-only: the directory holds Secrets (whatever is inside it, agent state included).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        for name in [
            "kubeconfig",
            "state.db",
            "state.db-wal",
            "state.db-shm",
            "lock",
        ] {
            assert_eq!(mode(&data_dir.join(name)), 0o600, "{name}");
        }
    }

    // A second control plane in this process.
    let mut config = UpConfig::new(&data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.agent = None;
    config.scheduler = false;
    let error = match ControlPlane::start(config).await {
        Ok(_) => panic!("a second control plane started on the same data directory"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("is in use by another Ferry"),
        "unclear error: {error}"
    );

    // The real binary, in another process: exits non-zero naming this process.
    let output = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        move || ferry(&["apiserver", "--listen", "127.0.0.1:0"], &data_dir)
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    let expected = format!("is in use by another Ferry (pid {})", std::process::id());
    assert!(text(&output).contains(&expected), "{}", text(&output));

    // The first one's kubeconfig is untouched and it goes on writing.
    assert_eq!(std::fs::read(&t.plane.kubeconfig).unwrap(), kubeconfig);
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "after"}})).unwrap();
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("the first server still writes");

    // Once stopped, the directory is free again at once (also in the same process).
    t.plane.stop().await;
    let mut config = UpConfig::new(&data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.agent = None;
    config.scheduler = false;
    let again = ControlPlane::start(config)
        .await
        .expect("a control plane starts after the first one stopped");
    let cms: Api<ConfigMap> = Api::namespaced(again.client().await.unwrap(), "default");
    assert!(cms.get_opt("after").await.unwrap().is_some());
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_check_and_recover_on_flipped_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let db = data_dir.join("state.db");
    {
        let store = ferry_store::Store::open(ferry_store::StoreConfig::new(&db)).unwrap();
        for i in 0..10 {
            let key = ferry_store::ObjectKey::new("configmaps", "default", format!("cm{i}"));
            let value = serde_json::json!({"metadata": {"name": format!("cm{i}")},
                "data": {"k": format!("value-{i:02}-abcdefgh")}});
            store.create(key, value).await.unwrap();
        }
    }
    // Three flipped bytes inside cm4's value (revision 5), still valid JSON.
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = b"value-04-abcdefgh";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    for b in &mut bytes[at + 9..at + 12] {
        *b ^= 0x01;
    }
    std::fs::write(&db, bytes).unwrap();

    let run = |args: &'static [&'static str]| {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || ferry(args, &data_dir))
    };
    let served = run(&["apiserver", "--listen", "127.0.0.1:0"])
        .await
        .unwrap();
    assert!(!served.status.success(), "{}", text(&served));
    assert!(text(&served).contains("revision 5 "), "{}", text(&served));
    assert!(
        text(&served).contains("ferry store recover"),
        "{}",
        text(&served)
    );

    let checked = run(&["store", "check"]).await.unwrap();
    assert!(!checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains("revision 5 "), "{}", text(&checked));
    assert!(
        text(&checked).contains("last good revision   4"),
        "{}",
        text(&checked)
    );

    let recovered = run(&["store", "recover"]).await.unwrap();
    assert!(recovered.status.success(), "{}", text(&recovered));
    assert!(
        text(&recovered).contains("dropped              6 revisions (5 to 10)"),
        "{}",
        text(&recovered)
    );
    let backups: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("damaged-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert!(backups[0].path().join("state.db").exists());

    let checked = run(&["store", "check"]).await.unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
    let store = ferry_store::Store::open(ferry_store::StoreConfig::new(&db)).unwrap();
    assert_eq!(
        store
            .list("configmaps", None, None, 0, |_| true)
            .items
            .len(),
        4
    );
}
