//! Crash safety: `kill -9` the API server under a concurrent write load; after a restart every
//! acknowledged create and update is there, and a watch resumes from its last resourceVersion.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// Starts `ferry apiserver` on a free port and returns it with its URL.
fn start_server(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["apiserver", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ferry apiserver starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // The admin's kubeconfig (TLS, client certificate), once the server has written it.
    let url = loop {
        let line = lines.next().expect("server prints its kubeconfig").unwrap();
        if let Some(path) = line.strip_prefix("kubeconfig:") {
            break path.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// A client from the kubeconfig at `kubeconfig`.
fn client(kubeconfig: &str) -> kube::Client {
    let yaml = std::fs::read_to_string(kubeconfig).unwrap();
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current()
            .block_on(ferry::up::client_from_kubeconfig(&yaml))
            .unwrap()
    })
}

/// What the writers got acknowledged: per object, the last acknowledged counter.
type Acked = Arc<Mutex<BTreeMap<String, u64>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_and_watches_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start_server(dir.path());
    let cms: Api<ConfigMap> = Api::namespaced(client(&url), "default");

    // A watcher records the newest revision it saw before the crash.
    let last_seen = Arc::new(Mutex::new(0u64));
    let watcher = {
        let cms = cms.clone();
        let last_seen = last_seen.clone();
        tokio::spawn(async move {
            let stream = cms
                .watch(&WatchParams::default(), "0")
                .await
                .expect("the watcher connects");
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = event {
                    let rv: u64 = o.metadata.resource_version.unwrap().parse().unwrap();
                    let mut last = last_seen.lock().unwrap();
                    *last = (*last).max(rv);
                }
            }
        })
    };

    // Writers: each creates its objects, then keeps updating them; only answers that came
    // back successfully count as acknowledged.
    let acked: Acked = Arc::default();
    let acked_writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let cms = cms.clone();
        let acked = acked.clone();
        let acked_writes = acked_writes.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("w{w}-{}", n % 20);
                let result = if n < 20 {
                    let cm: ConfigMap = serde_json::from_value(
                        json!({"metadata": {"name": name}, "data": {"n": n.to_string()}}),
                    )
                    .unwrap();
                    cms.create(&PostParams::default(), &cm).await.map(|_| ())
                } else {
                    let patch = json!({"data": {"n": n.to_string()}});
                    cms.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map(|_| ())
                };
                match result {
                    Ok(()) => {
                        acked.lock().unwrap().insert(name, n);
                        acked_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        n += 1;
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Let the load run until every object exists and LOAD writes were acknowledged (well
    // inside the store's watch history), then kill the server without warning.
    const LOAD: u64 = 3_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked_writes.load(std::sync::atomic::Ordering::Relaxed) < LOAD
        || acked.lock().unwrap().len() < 160
    {
        assert!(
            Instant::now() < deadline,
            "the writers did not reach {LOAD} acknowledged writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    watcher.abort();
    let acked = acked.lock().unwrap().clone();
    let last_seen = *last_seen.lock().unwrap();
    assert!(last_seen > 0, "the watcher saw events before the crash");
    assert!(
        acked.len() == 160,
        "every writer created its 20 objects before the crash ({} acked)",
        acked.len()
    );
    let writes: u64 = acked.values().map(|n| n / 20 + 1).sum();
    println!(
        "{writes} acknowledged writes before kill -9; the watcher had seen revision {last_seen}"
    );

    // Restart on the same data: every acknowledged write is there.
    let (mut server, url) = start_server(dir.path());
    let cms: Api<ConfigMap> = Api::namespaced(client(&url), "default");
    let stored: BTreeMap<String, (u64, u64)> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| {
            let rv: u64 = cm.metadata.resource_version.unwrap().parse().unwrap();
            (
                cm.metadata.name.unwrap(),
                (cm.data.unwrap()["n"].parse().unwrap(), rv),
            )
        })
        .collect();
    for (name, n) in &acked {
        let (have, _) = stored
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged object {name} lost"));
        // The write in flight at the kill may or may not have landed (it was never answered),
        // but nothing acknowledged may be missing.
        assert!(
            *have == *n || *have == n + 20,
            "{name}: acknowledged n={n}, stored n={have}"
        );
    }

    // A watch resumes from the revision the watcher had reached, and from an older one (the
    // median revision of the stored objects, so that at least half of them were written after
    // it): each delivers, in order, every write after its resume point up to the stored state.
    let mut revisions: Vec<u64> = stored.values().map(|(_, rv)| *rv).collect();
    revisions.sort();
    let median = revisions[revisions.len() / 2 - 1];
    let mut previous = last_seen;
    for from in [last_seen, median] {
        let expected: BTreeMap<&str, u64> = stored
            .iter()
            .filter(|(_, (_, rv))| *rv > from)
            .map(|(name, (_, rv))| (name.as_str(), *rv))
            .collect();
        if from == median {
            assert!(
                expected.len() >= 80,
                "{} objects after {from}",
                expected.len()
            );
        }
        let delivered = resume(&cms, from, &expected).await;
        previous = previous.max(delivered);
    }
    // New writes continue the revision sequence past everything seen before the crash.
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "after-restart"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv > previous.max(last_seen));
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Watches from `from` until every object of `expected` (name, stored resourceVersion) has
/// arrived in its stored version; checks that revisions go forward. Returns the newest one.
async fn resume(cms: &Api<ConfigMap>, from: u64, expected: &BTreeMap<&str, u64>) -> u64 {
    let stream = cms
        .watch(&WatchParams::default().timeout(60), &from.to_string())
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    let mut previous = from;
    let done = |latest: &BTreeMap<String, u64>| {
        expected
            .iter()
            .all(|(name, rv)| latest.get(*name) == Some(rv))
    };
    while !done(&latest) {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the resumed watch delivers the writes after its start")
            .unwrap_or_else(|| {
                panic!(
                    "the watch from {from} ended with {} of {} objects delivered",
                    expected
                        .iter()
                        .filter(|(n, rv)| latest.get(**n) == Some(rv))
                        .count(),
                    expected.len()
                )
            });
        match event.unwrap() {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                let rv: u64 = o.metadata.resource_version.unwrap().parse().unwrap();
                assert!(
                    rv > previous,
                    "revisions go forward after resume from {from} ({rv} after {previous})"
                );
                previous = rv;
                latest.insert(o.metadata.name.unwrap(), rv);
            }
            WatchEvent::Error(e) => {
                panic!("the watch from {from} (inside the history) failed: {e:?}")
            }
            WatchEvent::Bookmark(_) => {}
        }
    }
    previous
}
