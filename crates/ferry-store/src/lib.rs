//! Crash-safe, revisioned object store with watch history: the storage under Ferry's API server.
//!
//! The store plays the part etcd plays for Kubernetes, in the way k3s's kine does it on SQLite:
//!
//! - Every write gets the next value of **one global, monotonic revision**, which the API
//!   server exposes as `metadata.resourceVersion`. The store stamps it into the object.
//! - Writes go through **one writer thread** that drains all queued writes into a single
//!   SQLite transaction (WAL mode, `synchronous=FULL` by default) and acknowledges them only
//!   after the commit: an acknowledged write survives `kill -9` and power loss, and concurrent
//!   writers share one `fsync` (group commit).
//! - The database is an **append-only log** of revisions (one row per write, deletes keep the
//!   last state of the object); the current state is the newest row per key. Superseded rows
//!   older than the watch history are compacted away.
//! - Reads never touch SQLite: the committed state lives in memory, and readers only ever see
//!   committed writes. Watchers get committed events in revision order, from a bounded history
//!   (so a watch can resume from an older revision, also across restarts) and then live.
//! - The store **owns its data directory**: an advisory lock (`<dir>/lock`) held while it is
//!   open refuses a second store on the same directory. The directory is owner-only (0700, its
//!   files 0600): it holds Secrets.
//! - **Nothing is lost silently**: every row carries a CRC-32 verified at start, and a side file
//!   (`<db>.revision`) records the newest acknowledged revision, which SQLite cannot drop the
//!   way it drops a damaged or truncated WAL's frames. Either kind of damage stops the start
//!   with the revision; [`check`] and [`recover`] are `ferry store check` / `recover`.
//! - Values can be **transformed on their way to disk** ([`ValueTransformer`]: the API server
//!   encrypts Secrets with it): every row is written in its stored form and turned back into
//!   its plain form when the store opens, so memory and watchers see plain values only and no
//!   file of the store (database, WAL, recovery copies) holds the plain form. Rows whose
//!   stored form is stale (written before encryption or with an older key) are rewritten in
//!   place when the store opens; a row that cannot be read back stops the start.

#![warn(clippy::string_slice)]

mod error;
mod event;
mod files;
mod sqlite;
mod state;
mod transform;
mod watch;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

pub use error::StoreError;
pub use event::{Event, EventType};
pub use files::LOCK_FILE;
pub use sqlite::{CheckReport, RecoverReport};
pub use transform::{FromStorage, Identity, ValueTransformer};
pub use watch::{Watch, WatchEnd, WatchFrom};
pub use writer::release_free_memory;

use state::State;
use writer::{Message, Request, Write};

/// Identifies one object: its resource (`pods`, `apps/deployments`, …), namespace (empty for
/// cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The resource, qualified by its API group for non-core groups (`group/plural`).
    pub resource: String,
    /// The namespace, or empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(
        resource: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {:?}", self.resource, self.name)
        } else {
            write!(
                f,
                "{} {:?} in namespace {:?}",
                self.resource, self.name, self.namespace
            )
        }
    }
}

/// An object as stored: its value (with `metadata.resourceVersion` stamped) and revision.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The revision of the write that produced this state.
    pub rev: u64,
    /// The object, shared: clone it to change it.
    pub value: Arc<Value>,
}

/// How hard a commit pushes data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fsync` on every commit: acknowledged writes survive power loss (the default).
    #[default]
    Full,
    /// `fsync` at WAL checkpoints only: acknowledged writes survive a crash of the process
    /// (`kill -9`) but the newest may be lost on power loss. Faster on slow disks.
    Normal,
}

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite database file (created if missing, with its parent directory).
    pub path: PathBuf,
    /// How many past events are kept for watches that resume from an older revision.
    pub history: usize,
    /// At most this many bytes of encoded past events are kept (the oldest go first).
    pub history_bytes: usize,
    /// Commit durability.
    pub durability: Durability,
    /// How values are stored on disk ([`Identity`]: as they are).
    pub transformer: Arc<dyn ValueTransformer>,
}

impl StoreConfig {
    /// A configuration with default history (50,000 events, at most 64 MiB of them) and full
    /// durability.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            history: 50_000,
            history_bytes: 64 << 20,
            durability: Durability::Full,
            transformer: Arc::new(Identity),
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The objects of this page, ordered by namespace then name.
    pub items: Vec<StoredObject>,
    /// The store's revision when the page was read.
    pub rev: u64,
    /// Where the next page starts (namespace, name of the last item), if more items match.
    pub continue_after: Option<(String, String)>,
}

struct Shared {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<Event>>,
}

/// A handle to an open store; cheap to clone. When the last handle is dropped the writer
/// thread finishes its batch and stops, and the data directory's lock is released.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    owner: Arc<Owner>,
}

/// What the last handle closes: the writer's queue and the writer thread (which holds the
/// database and the directory lock).
struct Owner {
    writes: Option<std::sync::mpsc::Sender<Message>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Owner {
    /// Waits for the writer thread to finish (it releases the lock as it ends).
    fn join(&self) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Closing the queue stops the writer; joining it means the next owner of the
        // directory starts after the last commit.
        self.writes.take();
        self.join();
    }
}

/// The data directory of the database at `path` (its parent).
fn data_dir(path: &std::path::Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf()
}

/// Takes the data directory of the database at `path`: creates it owner-only, restricts the
/// store's files to their owner and locks it.
fn own(path: &std::path::Path) -> Result<files::DirLock, StoreError> {
    let dir = data_dir(path);
    let mut private = sqlite::sqlite_files(path).to_vec();
    private.push(files::RevisionFile::path(path));
    private.push(dir.join(LOCK_FILE));
    files::make_private(&dir, &private)?;
    files::DirLock::acquire(&dir)
}

/// Checking or recovering creates nothing: the database must be there.
fn must_exist(path: &std::path::Path) -> Result<(), StoreError> {
    if path.exists() {
        Ok(())
    } else {
        Err(StoreError::Storage(format!(
            "there is no database at {}",
            path.display()
        )))
    }
}

/// Verifies every row of the store at `path` (checksums, SQLite's structure, no acknowledged
/// revision missing) without changing anything. Fails with [`StoreError::InUse`] while a
/// store has it open.
pub fn check(path: impl AsRef<std::path::Path>) -> Result<CheckReport, StoreError> {
    let path = path.as_ref();
    must_exist(path)?;
    let _lock = own(path)?;
    sqlite::check(path)
}

/// Recovers a damaged store at `path`: keeps every revision up to the last good one, moves
/// the damaged files into a `damaged-<time>` folder beside them, and bumps the revision past
/// every one handed out before (watches from older revisions expire, so clients list again).
/// An intact store is left as it is.
pub fn recover(path: impl AsRef<std::path::Path>) -> Result<RecoverReport, StoreError> {
    let path = path.as_ref();
    must_exist(path)?;
    let _lock = own(path)?;
    sqlite::recover(path)
}

/// Capacity of the live event channel; a watcher that falls this far behind is dropped and
/// must resume from its last revision.
const LIVE_EVENT_CAPACITY: usize = 65_536;

impl Store {
    /// Opens (or creates) the store at `config.path`, takes its directory's lock, verifies it
    /// and loads its current state. Fails with [`StoreError::InUse`] when another store has
    /// the directory and with [`StoreError::Damaged`] when a check fails (nothing is changed
    /// then).
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        let lock = own(&config.path)?;
        let mut db =
            sqlite::Database::open(&config.path, config.durability, config.transformer.clone())?;
        let state = db.load(config.history, config.history_bytes)?;
        tracing::info!(
            path = %config.path.display(),
            objects = state.object_count(),
            revision = state.rev,
            "store opened"
        );
        let (events, _) = broadcast::channel(LIVE_EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            events,
        });
        let (writes, receiver) = std::sync::mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("ferry-store-writer".into())
            .spawn(move || writer::run(db, lock, receiver, writer_shared, config.history))
            .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?;
        let owner = Arc::new(Owner {
            writes: Some(writes),
            writer: std::sync::Mutex::new(Some(writer)),
        });
        Ok(Self { shared, owner })
    }

    /// Closes the store for every handle: commits what is queued, closes the database and
    /// releases the data directory, blocking until done (a commit's time). Later writes fail
    /// with [`StoreError::Closed`]; reads still see the last state.
    pub fn close(&self) {
        if let Some(writes) = &self.owner.writes {
            let _ = writes.send(Message::Close);
        }
        self.owner.join();
    }

    /// The newest committed revision.
    pub fn revision(&self) -> u64 {
        self.read().rev
    }

    /// Live events held in memory because some watcher has not read them yet (a watcher that
    /// stops reading pins them until it lags out).
    pub fn queued_events(&self) -> usize {
        self.shared.events.len()
    }

    /// How many past events the watch history holds, and their encoded size in bytes.
    pub fn history_size(&self) -> (usize, usize) {
        self.read().history_size()
    }

    /// Reads one object.
    pub fn get(&self, key: &ObjectKey) -> Option<StoredObject> {
        self.read().get(key).cloned()
    }

    /// Lists objects of `resource` (in `namespace`, or all namespaces when `None`) that pass
    /// `filter`, starting after `start_after` and stopping after `limit` items (0 = no limit).
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        start_after: Option<&(String, String)>,
        limit: usize,
        filter: impl Fn(&Value) -> bool,
    ) -> ListPage {
        self.read()
            .list(resource, namespace, start_after, limit, filter)
    }

    /// Calls `visit` for every object of every resource (for garbage collection and
    /// namespace clean-up).
    pub fn for_each(&self, mut visit: impl FnMut(&ObjectKey, &StoredObject)) {
        self.read().for_each(&mut visit)
    }

    /// Creates an object; fails with [`StoreError::AlreadyExists`] if the key is taken.
    pub async fn create(&self, key: ObjectKey, value: Value) -> Result<StoredObject, StoreError> {
        self.submit(Write::Create { key, value }).await
    }

    /// Replaces an object. With `expected_rev`, fails with [`StoreError::Conflict`] unless the
    /// stored revision is that one.
    pub async fn update(
        &self,
        key: ObjectKey,
        value: Value,
        expected_rev: Option<u64>,
    ) -> Result<StoredObject, StoreError> {
        self.submit(Write::Update {
            key,
            value,
            expected_rev,
        })
        .await
    }

    /// Deletes an object and returns its last state (stamped with the delete's revision).
    pub async fn delete(
        &self,
        key: ObjectKey,
        expected_rev: Option<u64>,
    ) -> Result<StoredObject, StoreError> {
        self.submit(Write::Delete { key, expected_rev }).await
    }

    /// Starts a watch on `resource` (optionally one namespace), from `from`. An empty
    /// `resource` watches every resource (snapshots then cover nothing).
    pub fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, StoreError> {
        let state = self.read();
        // Subscribing under the read lock: every event committed after this snapshot comes
        // through the live channel, every one before it from the state or the history.
        let live = self.shared.events.subscribe();
        let filter = watch::Filter::new(resource, namespace);
        let start_rev = state.rev;
        let backlog = match from {
            WatchFrom::Now => Vec::new(),
            WatchFrom::Snapshot => state.snapshot_events(&filter),
            WatchFrom::Revision(rev) => {
                let past = state.history_after(rev, &filter)?;
                // Parsed outside the lock, so the writer is not held up.
                drop(state);
                past.iter()
                    .map(state::Past::decode)
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Watch::new(
            filter,
            backlog,
            live,
            start_rev,
            self.shared.clone(),
        ))
    }

    async fn submit(&self, write: Write) -> Result<StoredObject, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.owner
            .writes
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(Message::Write(Request { write, reply }))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock means a panic in the writer while applying committed events; the
        // state is still the last fully applied one, so reading it is sound.
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
