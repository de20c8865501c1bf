use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn open(dir: &tempfile::TempDir, history: usize) -> Store {
    let mut config = StoreConfig::new(dir.path().join("ferry.db"));
    config.history = history;
    Store::open(config).unwrap()
}

fn pod(ns: &str, name: &str) -> (ObjectKey, serde_json::Value) {
    (
        ObjectKey::new("pods", ns, name),
        json!({"metadata": {"name": name, "namespace": ns}, "spec": {"n": 0}}),
    )
}

#[tokio::test]
async fn create_get_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100);
    let (key, value) = pod("default", "a");
    let created = store.create(key.clone(), value.clone()).await.unwrap();
    assert_eq!(created.rev, 1);
    assert_eq!(created.value["metadata"]["resourceVersion"], "1");
    assert_eq!(
        store.create(key.clone(), value.clone()).await.unwrap_err(),
        StoreError::AlreadyExists(key.clone())
    );
    let mut changed = value.clone();
    changed["spec"]["n"] = json!(1);
    let updated = store
        .update(key.clone(), changed.clone(), Some(1))
        .await
        .unwrap();
    assert_eq!(updated.rev, 2);
    // A stale precondition is a conflict that names both revisions.
    match store.update(key.clone(), changed, Some(1)).await {
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get(&key).unwrap().value["spec"]["n"], 1);
    let deleted = store.delete(key.clone(), None).await.unwrap();
    assert_eq!(deleted.rev, 3);
    assert_eq!(deleted.value["metadata"]["resourceVersion"], "3");
    assert!(store.get(&key).is_none());
    assert_eq!(
        store.delete(key.clone(), None).await.unwrap_err(),
        StoreError::NotFound(key)
    );
}

#[tokio::test]
async fn list_pages_by_namespace_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100);
    for ns in ["a", "b"] {
        for i in 0..5 {
            let (k, v) = pod(ns, &format!("p{i}"));
            store.create(k, v).await.unwrap();
        }
    }
    let all = store.list("pods", None, None, 0, |_| true);
    assert_eq!(all.items.len(), 10);
    assert!(all.continue_after.is_none());
    let only_b = store.list("pods", Some("b"), None, 0, |_| true);
    assert_eq!(only_b.items.len(), 5);
    assert!(
        only_b
            .items
            .iter()
            .all(|o| o.value["metadata"]["namespace"] == "b")
    );
    // Pages of 3 over 10 items: 3 + 3 + 3 + 1, no item twice.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list("pods", None, after.as_ref(), 3, |_| true);
        seen.extend(
            page.items
                .iter()
                .map(|o| o.value["metadata"]["name"].to_string()),
        );
        match page.continue_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    let filtered = store.list("pods", None, None, 0, |v| v["metadata"]["name"] == "p1");
    assert_eq!(filtered.items.len(), 2);
    assert!(
        store
            .list("nodes", None, None, 0, |_| true)
            .items
            .is_empty()
    );
}

async fn kinds(w: &mut Watch, n: usize) -> Vec<(u64, &'static str)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = w.next().await.unwrap();
        out.push((e.rev, e.kind.as_str()));
    }
    out
}

#[tokio::test]
async fn watch_from_revision_snapshot_and_now() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100);
    let (k1, v1) = pod("default", "a");
    store.create(k1.clone(), v1.clone()).await.unwrap(); // rev 1
    let mut from_zero = store.watch("pods", None, WatchFrom::Revision(0)).unwrap();
    let mut snapshot = store
        .watch("pods", Some("default"), WatchFrom::Snapshot)
        .unwrap();
    let mut now = store.watch("pods", None, WatchFrom::Now).unwrap();
    let mut other_ns = store.watch("pods", Some("other"), WatchFrom::Now).unwrap();
    store.update(k1.clone(), v1.clone(), None).await.unwrap(); // rev 2
    let (k2, v2) = pod("other", "b");
    store.create(k2, v2).await.unwrap(); // rev 3
    store.delete(k1, None).await.unwrap(); // rev 4

    assert_eq!(
        kinds(&mut from_zero, 4).await,
        vec![(1, "ADDED"), (2, "MODIFIED"), (3, "ADDED"), (4, "DELETED")]
    );
    assert_eq!(
        kinds(&mut snapshot, 3).await,
        vec![(1, "ADDED"), (2, "MODIFIED"), (4, "DELETED")]
    );
    assert_eq!(
        kinds(&mut now, 3).await,
        vec![(2, "MODIFIED"), (3, "ADDED"), (4, "DELETED")]
    );
    assert_eq!(kinds(&mut other_ns, 1).await, vec![(3, "ADDED")]);
    assert_eq!(now.caught_up_revision(), Some(4));
}

#[tokio::test]
async fn old_revisions_expire_beyond_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 5);
    let (k, v) = pod("default", "a");
    store.create(k.clone(), v.clone()).await.unwrap();
    for _ in 0..9 {
        store.update(k.clone(), v.clone(), None).await.unwrap();
    }
    // 10 revisions, 5 kept: a watch can resume from revision 5 (events 6..10), not 4.
    assert!(store.watch("pods", None, WatchFrom::Revision(5)).is_ok());
    match store.watch("pods", None, WatchFrom::Revision(4)) {
        Err(StoreError::Expired {
            requested: 4,
            oldest: 5,
        }) => {}
        Err(other) => panic!("expected expiry, got {other:?}"),
        Ok(_) => panic!("expected expiry, got a watch"),
    }
}

#[tokio::test]
async fn state_and_history_survive_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir, 10);
        for i in 0..30 {
            let (k, v) = pod("default", &format!("p{}", i % 7));
            match store.create(k.clone(), v.clone()).await {
                Ok(_) => {}
                Err(StoreError::AlreadyExists(_)) => {
                    store.update(k, v, None).await.unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        store
            .delete(ObjectKey::new("pods", "default", "p0"), None)
            .await
            .unwrap();
        assert_eq!(store.revision(), 31);
    }
    let store = open(&dir, 10);
    assert_eq!(store.revision(), 31);
    let names: Vec<String> = store
        .list("pods", None, None, 0, |_| true)
        .items
        .iter()
        .map(|o| o.value["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["p1", "p2", "p3", "p4", "p5", "p6"]);
    // The last 10 events are still watchable after the restart, with their kinds.
    let mut w = store.watch("pods", None, WatchFrom::Revision(21)).unwrap();
    let mut revs = Vec::new();
    for _ in 0..10 {
        revs.push(w.next().await.unwrap().rev);
    }
    assert_eq!(revs, (22..=31).collect::<Vec<_>>());
    assert!(store.watch("pods", None, WatchFrom::Revision(20)).is_err());
    // New writes continue the revision sequence.
    let (k, v) = pod("default", "new");
    assert_eq!(store.create(k, v).await.unwrap().rev, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_distinct_ordered_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 10_000);
    let mut watch = store.watch("pods", None, WatchFrom::Now).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..100 {
                let (k, v) = pod("default", &format!("t{t}-{i}"));
                revs.push(store.create(k, v).await.unwrap().rev);
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<_>>());
    let mut last = 0;
    for _ in 0..800 {
        let e = watch.next().await.unwrap();
        assert!(e.rev > last, "watch delivered {} after {last}", e.rev);
        last = e.rev;
    }
    let counts: BTreeMap<_, _> = [(
        "pods",
        store.list("pods", None, None, 0, |_| true).items.len(),
    )]
    .into();
    assert_eq!(counts["pods"], 800);
}

#[tokio::test]
async fn a_batch_sees_its_own_earlier_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100);
    let (k, v) = pod("default", "a");
    // Queue create, update and delete of one key without awaiting in between: whatever the
    // batching, they apply in order.
    let (a, b, c) = tokio::join!(
        store.create(k.clone(), v.clone()),
        store.update(k.clone(), v.clone(), None),
        store.delete(k.clone(), None)
    );
    assert_eq!(a.unwrap().rev, 1);
    assert_eq!(b.unwrap().rev, 2);
    assert_eq!(c.unwrap().rev, 3);
    assert!(store.get(&k).is_none());
}
