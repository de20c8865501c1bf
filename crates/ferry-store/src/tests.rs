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

/// Creates `n` pods `p0..` (revisions 1..=n), each carrying a marker unique to it.
async fn write_markers(store: &Store, n: usize) {
    for i in 0..n {
        let key = ObjectKey::new("pods", "default", format!("p{i}"));
        let value = json!({"metadata": {"name": format!("p{i}")}, "data": format!("marker-{i:04}-abcdefgh")});
        store.create(key, value).await.unwrap();
    }
}

/// Flips a byte inside the first occurrence of `needle` in `path`.
fn flip_inside(path: &std::path::Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} does not hold the marker", path.display()));
    // 'a' -> 'b' inside the string: still valid JSON, so only a checksum can tell.
    bytes[at + needle.len() - 8] ^= 0x03;
    std::fs::write(path, bytes).unwrap();
}

fn damaged(result: Result<Store, StoreError>) -> (String, u64) {
    match result {
        Err(StoreError::Damaged {
            problem, last_good, ..
        }) => (problem, last_good),
        Err(e) => panic!("expected a damaged store, got {e}"),
        Ok(_) => panic!("a damaged store opened"),
    }
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir, 100);
    let (k, v) = pod("default", "a");
    first.create(k, v).await.unwrap();
    let second = Store::open(StoreConfig::new(dir.path().join("ferry.db")));
    match second {
        Err(e @ StoreError::InUse { pid: Some(pid), .. }) => {
            assert_eq!(pid, std::process::id());
            assert!(e.to_string().contains("is in use by another Ferry"), "{e}");
        }
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("a second store opened the same directory"),
    }
    // `store check` is refused too while the store is open.
    assert!(matches!(
        check(dir.path().join("ferry.db")),
        Err(StoreError::InUse { .. })
    ));
    // The first one goes on writing; once it is closed the directory is free.
    let (k, v) = pod("default", "b");
    assert_eq!(first.create(k, v).await.unwrap().rev, 2);
    drop(first);
    assert_eq!(open(&dir, 100).revision(), 2);
}

#[tokio::test]
async fn close_releases_the_directory_while_handles_remain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100);
    let other = store.clone();
    let (k, v) = pod("default", "a");
    store.create(k, v).await.unwrap();
    store.close();
    let (k, v) = pod("default", "b");
    assert_eq!(other.create(k, v).await.unwrap_err(), StoreError::Closed);
    assert_eq!(other.revision(), 1);
    let reopened = open(&dir, 100);
    assert_eq!(reopened.revision(), 1);
}

#[tokio::test]
async fn flipped_bytes_refuse_the_start_and_recover_keeps_the_revisions_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db");
    {
        let store = open(&dir, 100);
        write_markers(&store, 10).await;
    }
    // Closed: the log is checkpointed into the database file. p4 is revision 5.
    flip_inside(&db, b"marker-0004-abcdefgh");
    let (problem, last_good) = damaged(Store::open(StoreConfig::new(&db)));
    assert!(problem.contains("revision 5 "), "{problem}");
    assert_eq!(last_good, 4);

    let report = check(&db).unwrap();
    assert!(!report.is_ok());
    assert_eq!(
        (report.last_good, report.bad_rows, report.good_rows),
        (4, 1, 9)
    );
    assert!(report.problems[0].contains("revision 5 "), "{report:?}");

    let recovered = recover(&db).unwrap();
    assert!(!recovered.intact);
    assert_eq!(recovered.last_good, 4);
    assert_eq!(recovered.dropped_revisions, 6);
    assert_eq!(recovered.kept_rows, 4);
    assert_eq!(recovered.new_revision, 11);
    let backup = recovered.backup.unwrap();
    assert!(backup.join("ferry.db").exists());
    assert!(check(&db).unwrap().is_ok());

    let store = open(&dir, 100);
    let names: Vec<String> = store
        .list("pods", None, None, 0, |_| true)
        .items
        .iter()
        .map(|o| o.value["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["p0", "p1", "p2", "p3"]);
    assert_eq!(store.revision(), 11);
    // Watches from before the recovery expire (clients list again); new writes go on.
    assert!(matches!(
        store.watch("pods", None, WatchFrom::Revision(10)),
        Err(StoreError::Expired { .. })
    ));
    let (k, v) = pod("default", "new");
    assert_eq!(store.create(k, v).await.unwrap().rev, 12);
}

/// Writes 100 acknowledged revisions and copies the files as a crash would leave them (the
/// store still open: the newest commits are only in the WAL) into a new directory.
async fn crashed_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1000);
    write_markers(&store, 100).await;
    let copy = tempfile::tempdir().unwrap();
    for name in ["ferry.db", "ferry.db-wal", "ferry.db.revision"] {
        std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
    }
    drop(store);
    let db = copy.path().join("ferry.db");
    (copy, db)
}

#[tokio::test]
async fn a_damaged_or_truncated_wal_refuses_the_start() {
    // Control: the copy as it is opens with every write.
    let (_dir, db) = crashed_copy().await;
    assert_eq!(Store::open(StoreConfig::new(&db)).unwrap().revision(), 100);

    // A frame in the middle of the WAL damaged: SQLite stops its replay there, silently.
    let (_dir, db) = crashed_copy().await;
    let wal = db.with_file_name("ferry.db-wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 3] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, &bytes).unwrap();
    let (problem, _) = damaged(Store::open(StoreConfig::new(&db)));
    assert!(
        problem.contains("to 100 were acknowledged but are missing"),
        "{problem}"
    );
    // The refused start left the WAL as it was, for recovery.
    assert_eq!(std::fs::read(&wal).unwrap(), bytes);

    // The WAL cut short.
    let (_dir, db) = crashed_copy().await;
    let wal = db.with_file_name("ferry.db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (problem, last_good) = damaged(Store::open(StoreConfig::new(&db)));
    assert!(
        problem.contains("to 100 were acknowledged but are missing"),
        "{problem}"
    );
    assert!(last_good < 100);
    let report = check(&db).unwrap();
    assert_eq!(
        (report.acknowledged, report.last_good),
        (Some(100), last_good)
    );
    let recovered = recover(&db).unwrap();
    assert_eq!(recovered.dropped_revisions, 100 - last_good);
    let store = Store::open(StoreConfig::new(&db)).unwrap();
    assert_eq!(store.revision(), 101);
    assert_eq!(
        store.list("pods", None, None, 0, |_| true).items.len() as u64,
        last_good
    );
}

#[tokio::test]
async fn a_truncated_database_beside_its_wal_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db");
    {
        let store = open(&dir, 1000);
        write_markers(&store, 300).await;
    }
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("ferry.db");
    {
        // Reopened: the first 300 revisions are in the database file, 20 more in the WAL.
        let store = open(&dir, 1000);
        for i in 0..20 {
            let (k, v) = pod("other", &format!("q{i}"));
            store.create(k, v).await.unwrap();
        }
        for name in ["ferry.db", "ferry.db-wal", "ferry.db.revision"] {
            std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
        }
    }
    let len = std::fs::metadata(&copied).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copied)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let _ = db;
    match Store::open(StoreConfig::new(&copied)) {
        Err(StoreError::Damaged { .. }) => {}
        Err(e) => panic!("expected a damaged store, got {e}"),
        Ok(_) => panic!("a truncated database opened"),
    }
    assert!(!check(&copied).unwrap().is_ok());
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let store = Store::open(StoreConfig::new(dir.join("state.db"))).unwrap();
        let (k, v) = pod("default", "secret");
        store.create(k, v).await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        for name in [
            "state.db",
            "state.db-wal",
            "state.db-shm",
            "state.db.revision",
            "lock",
        ] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
    }
    // A directory made before: opened, it is restricted.
    for (path, m) in [(&dir, 0o755), (&dir.join("state.db"), 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let _store = Store::open(StoreConfig::new(dir.join("state.db"))).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("state.db")), 0o600);
}

#[tokio::test]
async fn a_store_from_before_checksums_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE log (rev INTEGER PRIMARY KEY, resource TEXT NOT NULL,
                 namespace TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,
                 value BLOB NOT NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('revision', 2);",
        )
        .unwrap();
        for rev in 1..=2 {
            let value = json!({"metadata": {"name": format!("old{rev}"), "resourceVersion": rev.to_string()}});
            conn.execute(
                "INSERT INTO log VALUES (?1, 'pods', 'default', ?2, 0, ?3)",
                rusqlite::params![
                    rev,
                    format!("old{rev}"),
                    serde_json::to_vec(&value).unwrap()
                ],
            )
            .unwrap();
        }
    }
    {
        let store = Store::open(StoreConfig::new(&db)).unwrap();
        assert_eq!(store.revision(), 2);
        assert_eq!(store.list("pods", None, None, 0, |_| true).items.len(), 2);
    }
    let report = check(&db).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.good_rows, 2);
    // The migrated rows are checked from now on.
    flip_inside(&db, b"old1\"");
    let (problem, _) = damaged(Store::open(StoreConfig::new(&db)));
    assert!(problem.contains("revision 1 "), "{problem}");
}

#[tokio::test]
async fn the_history_is_bounded_in_bytes_and_keeps_deleted_objects_encoded_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path().join("ferry.db"));
    config.history = 100_000;
    config.history_bytes = 200_000;
    let store = Store::open(config).unwrap();
    let big = "x".repeat(2_000);
    for i in 0..300 {
        let key = ObjectKey::new("pods", "default", format!("p{i}"));
        store
            .create(
                key.clone(),
                json!({"metadata": {"name": format!("p{i}")}, "data": big}),
            )
            .await
            .unwrap();
        store.delete(key, None).await.unwrap();
    }
    let (events, bytes) = store.history_size();
    // 600 events of ~2 kB each would be 1.2 MB: the budget keeps the newest that fit.
    assert!(bytes <= 200_000, "{bytes} bytes kept");
    assert!((80..300).contains(&events), "{events} events kept");
    // The oldest are gone for watches (clients list again); the newest replay, decoded, with
    // the state before each delete.
    assert!(matches!(
        store.watch("pods", None, WatchFrom::Revision(1)),
        Err(StoreError::Expired { .. })
    ));
    let mut w = store.watch("pods", None, WatchFrom::Revision(598)).unwrap();
    let (added, deleted) = (w.next().await.unwrap(), w.next().await.unwrap());
    assert_eq!((added.rev, added.kind), (599, EventType::Added));
    assert_eq!((deleted.rev, deleted.kind), (600, EventType::Deleted));
    assert_eq!(deleted.previous.as_ref().unwrap()["data"], big);
    assert_eq!(deleted.object["metadata"]["resourceVersion"], "600");
    assert_eq!(store.list("pods", None, None, 0, |_| true).items.len(), 0);
}

/// A test transformer for `secrets`: the stored form is `sealed<N>:` and the value with every
/// byte XORed with N (N = the "key").
#[derive(Debug)]
struct Sealing {
    write_key: Option<u8>,
    read_keys: Vec<u8>,
}

impl ValueTransformer for Sealing {
    fn transform_to_storage<'a>(
        &self,
        key: &ObjectKey,
        plain: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, String> {
        match self.write_key {
            Some(k) if key.resource == "secrets" => {
                let mut out = format!("sealed{k}:").into_bytes();
                out.extend(plain.iter().map(|b| b ^ k));
                Ok(out.into())
            }
            _ => Ok(plain.into()),
        }
    }

    fn transform_from_storage<'a>(
        &self,
        key: &ObjectKey,
        stored: &'a [u8],
    ) -> Result<FromStorage<'a>, String> {
        let Some(rest) = stored.strip_prefix(b"sealed") else {
            let stale = key.resource == "secrets" && self.write_key.is_some();
            return Ok(FromStorage {
                plain: stored.into(),
                stale,
            });
        };
        let colon = rest.iter().position(|b| *b == b':').ok_or("no key name")?;
        let k: u8 = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|k| k.parse().ok())
            .ok_or("bad key name")?;
        if !self.read_keys.contains(&k) {
            return Err(format!("sealed with key {k}, which is not configured"));
        }
        Ok(FromStorage {
            plain: rest[colon + 1..]
                .iter()
                .map(|b| b ^ k)
                .collect::<Vec<_>>()
                .into(),
            stale: self.write_key != Some(k),
        })
    }
}

fn open_sealed(
    dir: &tempfile::TempDir,
    write_key: Option<u8>,
    read_keys: &[u8],
) -> Result<Store, StoreError> {
    let mut config = StoreConfig::new(dir.path().join("ferry.db"));
    config.transformer = Arc::new(Sealing {
        write_key,
        read_keys: read_keys.to_vec(),
    });
    Store::open(config)
}

/// Every file of the store directory, concatenated.
fn all_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            out.extend(std::fs::read(path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn transformed_values_never_reach_disk_in_plain_form() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sealed(&dir, Some(7), &[7]).unwrap();
    let key = ObjectKey::new("secrets", "default", "s");
    store
        .create(
            key.clone(),
            json!({"metadata": {"name": "s"}, "data": {"v": "PLAINSECRET"}}),
        )
        .await
        .unwrap();
    store
        .create(
            ObjectKey::new("configmaps", "default", "c"),
            json!({"metadata": {"name": "c"}, "data": {"v": "PLAINCONFIG"}}),
        )
        .await
        .unwrap();
    // Memory and watchers see the plain value.
    assert_eq!(store.get(&key).unwrap().value["data"]["v"], "PLAINSECRET");
    let disk = all_bytes(&dir);
    assert!(
        !contains(&disk, b"PLAINSECRET"),
        "the secret is on disk in plain form"
    );
    assert!(
        contains(&disk, b"PLAINCONFIG"),
        "other resources are stored as they are"
    );
    store.close();
    drop(store);
    // Reopened: read back through the transformer, history included.
    let store = open_sealed(&dir, Some(7), &[7]).unwrap();
    assert_eq!(store.get(&key).unwrap().value["data"]["v"], "PLAINSECRET");
    let mut watch = store
        .watch("secrets", None, WatchFrom::Revision(0))
        .unwrap();
    let first = watch.next().await.unwrap();
    assert_eq!(first.object["data"]["v"], "PLAINSECRET");
    // The check needs no key: it verifies the stored form's checksums.
    store.close();
    drop(store);
    assert!(check(dir.path().join("ferry.db")).unwrap().is_ok());
}

#[tokio::test]
async fn stale_rows_are_rewritten_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    // Written in plain form first (no encryption configured), updated once (two rows).
    let store = open(&dir, 100);
    let key = ObjectKey::new("secrets", "default", "s");
    store
        .create(
            key.clone(),
            json!({"metadata": {"name": "s"}, "data": {"v": "OLDPLAIN1"}}),
        )
        .await
        .unwrap();
    store
        .update(
            key.clone(),
            json!({"metadata": {"name": "s"}, "data": {"v": "OLDPLAIN2"}}),
            None,
        )
        .await
        .unwrap();
    store.close();
    drop(store);
    assert!(contains(&all_bytes(&dir), b"OLDPLAIN1"));
    // Key 3 configured: every row, the superseded one too, is rewritten.
    let store = open_sealed(&dir, Some(3), &[3]).unwrap();
    assert_eq!(store.get(&key).unwrap().value["data"]["v"], "OLDPLAIN2");
    assert_eq!(store.revision(), 2, "a rewrite keeps the revisions");
    let disk = all_bytes(&dir);
    assert!(
        !contains(&disk, b"OLDPLAIN1"),
        "the old row is still plain on disk"
    );
    assert!(
        !contains(&disk, b"OLDPLAIN2"),
        "the current row is still plain on disk"
    );
    store.close();
    drop(store);
    // Rotation: key 5 first, key 3 still readable; afterwards key 3 is no longer needed.
    let store = open_sealed(&dir, Some(5), &[5, 3]).unwrap();
    assert_eq!(store.get(&key).unwrap().value["data"]["v"], "OLDPLAIN2");
    store.close();
    drop(store);
    let store = open_sealed(&dir, Some(5), &[5]).unwrap();
    assert_eq!(store.get(&key).unwrap().value["data"]["v"], "OLDPLAIN2");
    store.close();
    drop(store);
    assert!(check(dir.path().join("ferry.db")).unwrap().is_ok());
}

#[tokio::test]
async fn a_missing_key_stops_the_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sealed(&dir, Some(9), &[9]).unwrap();
    let key = ObjectKey::new("secrets", "default", "s");
    store
        .create(
            key.clone(),
            json!({"metadata": {"name": "s"}, "data": {"v": "X"}}),
        )
        .await
        .unwrap();
    store.close();
    drop(store);
    let db = std::fs::read(dir.path().join("ferry.db")).unwrap();
    let Err(err) = open_sealed(&dir, Some(4), &[4]) else {
        panic!("the store opened without the key its secret was written with");
    };
    match &err {
        StoreError::Unreadable { problem, .. } => {
            assert!(problem.contains("key 9"), "{problem}");
            assert!(problem.contains("secrets"), "{problem}");
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
    assert!(err.to_string().contains("Nothing was changed"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("ferry.db")).unwrap(), db);
    // With the key, everything is there.
    let store = open_sealed(&dir, Some(9), &[9]).unwrap();
    assert_eq!(store.get(&key).unwrap().value["data"]["v"], "X");
}
