//! The single writer: validates queued writes against the committed state, commits them in
//! one transaction, then publishes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::files::DirLock;
use crate::sqlite::Database;
use crate::{Event, EventType, ObjectKey, Shared, StoreError, StoredObject};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 2048;

pub(crate) enum Write {
    Create {
        key: ObjectKey,
        value: Value,
    },
    Update {
        key: ObjectKey,
        value: Value,
        expected_rev: Option<u64>,
    },
    Delete {
        key: ObjectKey,
        expected_rev: Option<u64>,
    },
}

pub(crate) struct Request {
    pub write: Write,
    pub reply: oneshot::Sender<Result<StoredObject, StoreError>>,
}

/// What the writer's queue carries.
pub(crate) enum Message {
    Write(Request),
    /// Commit what came before, then stop (writes queued after it fail with `Closed`).
    Close,
}

/// Runs until the queue closes or a `Close` arrives; then closes the database and releases
/// the data directory's lock.
pub(crate) fn run(
    mut db: Database,
    lock: DirLock,
    requests: Receiver<Message>,
    shared: Arc<Shared>,
    history: usize,
) {
    let mut compacted_at = 0u64;
    let mut trim = Trim::default();
    let mut closing = false;
    while !closing {
        let first = match requests.recv() {
            Ok(Message::Write(r)) => r,
            Ok(Message::Close) | Err(_) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(Message::Write(r)) => batch.push(r),
                Ok(Message::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let (events, outcomes) = stage(&shared, batch);
        let Some(last_rev) = events.last().map(|e| e.rev) else {
            answer(outcomes, &events); // every write of the batch failed its checks
            continue;
        };
        let encoded: Result<Vec<Arc<[u8]>>, StoreError> = events
            .iter()
            .map(|e| {
                serde_json::to_vec(&*e.object)
                    .map(Arc::from)
                    .map_err(|err| StoreError::Storage(format!("cannot encode {}: {err}", e.key)))
            })
            .collect();
        let commit_started = std::time::Instant::now();
        let persisted = encoded.and_then(|encoded| db.persist(&events, &encoded).map(|()| encoded));
        let commit = commit_started.elapsed();
        if commit > std::time::Duration::from_millis(100) {
            tracing::debug!(
                writes = events.len(),
                commit_ms = commit.as_millis() as u64,
                "slow commit"
            );
        }
        let encoded = match persisted {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(error = %e, writes = events.len(), "commit failed; writes rejected");
                for (reply, outcome) in outcomes {
                    let _ = reply.send(Err(outcome.err().unwrap_or_else(|| e.clone())));
                }
                continue;
            }
        };
        {
            let mut state = shared
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (event, encoded) in events.iter().zip(encoded) {
                state.apply(event.clone(), encoded);
                // Sent under the lock, so a watch that subscribes under the read lock never
                // misses or doubles an event. No receivers is fine.
                let _ = shared.events.send(event.clone());
            }
        }
        answer(outcomes, &events);
        trim.after(&events);
        // Compact the log once the history has moved on by another full window.
        let horizon = last_rev.saturating_sub(history as u64);
        if horizon >= compacted_at + history as u64 {
            let compact_started = std::time::Instant::now();
            match db.compact(horizon) {
                Ok(removed) => tracing::debug!(
                    horizon,
                    removed,
                    ms = compact_started.elapsed().as_millis() as u64,
                    "log compacted"
                ),
                Err(e) => tracing::warn!(error = %e, "log compaction failed"),
            }
            compacted_at = horizon;
        }
    }
    drop(db);
    drop(lock);
    tracing::debug!("store writer stopped");
}

/// Replies to each request with its committed object or its error.
fn answer(outcomes: Outcomes, events: &[Arc<Event>]) {
    for (reply, outcome) in outcomes {
        let result = outcome.and_then(|index| {
            events
                .get(index)
                .map(|e| StoredObject {
                    rev: e.rev,
                    value: e.object.clone(),
                })
                .ok_or(StoreError::Closed)
        });
        let _ = reply.send(result);
    }
}

type Reply = oneshot::Sender<Result<StoredObject, StoreError>>;
/// Per request: its reply channel and the index of its event in the batch, or its error.
type Outcomes = Vec<(Reply, Result<usize, StoreError>)>;

/// Checks each write against the committed state plus the batch's earlier writes and turns the
/// accepted ones into events. Returns the events and, per request, the index of its event.
fn stage(shared: &Shared, batch: Vec<Request>) -> (Vec<Arc<Event>>, Outcomes) {
    let state = shared
        .state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut next_rev = state.rev + 1;
    // The batch's own writes, seen by its later writes: None = deleted within the batch.
    let mut overlay: HashMap<ObjectKey, Option<Arc<Value>>> = HashMap::new();
    let mut overlay_rev: HashMap<ObjectKey, u64> = HashMap::new();
    let mut events = Vec::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    for Request { write, reply } in batch {
        let key = match &write {
            Write::Create { key, .. } | Write::Update { key, .. } | Write::Delete { key, .. } => {
                key.clone()
            }
        };
        let current: Option<(u64, Arc<Value>)> = match overlay.get(&key) {
            Some(Some(v)) => Some((overlay_rev[&key], v.clone())),
            Some(None) => None,
            None => state.get(&key).map(|o| (o.rev, o.value.clone())),
        };
        let rev = next_rev;
        let result = match write {
            Write::Create { value, .. } => match current {
                Some(_) => Err(StoreError::AlreadyExists(key.clone())),
                None => Ok((EventType::Added, stamp(value, rev), None)),
            },
            Write::Update {
                value,
                expected_rev,
                ..
            } => match current {
                None => Err(StoreError::NotFound(key.clone())),
                Some((actual, _)) if expected_rev.is_some_and(|e| e != actual) => {
                    Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: expected_rev.unwrap_or_default(),
                        actual,
                    })
                }
                Some((_, old)) => Ok((EventType::Modified, stamp(value, rev), Some(old))),
            },
            Write::Delete { expected_rev, .. } => match current {
                None => Err(StoreError::NotFound(key.clone())),
                Some((actual, _)) if expected_rev.is_some_and(|e| e != actual) => {
                    Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: expected_rev.unwrap_or_default(),
                        actual,
                    })
                }
                Some((_, old)) => Ok((EventType::Deleted, stamp((*old).clone(), rev), Some(old))),
            },
        };
        match result {
            Ok((kind, object, previous)) => {
                let object = Arc::new(object);
                overlay.insert(
                    key.clone(),
                    (kind != EventType::Deleted).then(|| object.clone()),
                );
                overlay_rev.insert(key.clone(), rev);
                next_rev += 1;
                outcomes.push((reply, Ok(events.len())));
                events.push(Arc::new(Event {
                    rev,
                    kind,
                    key,
                    object,
                    previous,
                }));
            }
            Err(e) => outcomes.push((reply, Err(e))),
        }
    }
    (events, outcomes)
}

/// Writes the revision into `metadata.resourceVersion`.
fn stamp(mut value: Value, rev: u64) -> Value {
    if let Some(obj) = value.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
        }
    }
    value
}

/// Hands freed memory back to the operating system after large deletions. glibc's allocator
/// keeps freed pages in its per-thread arenas (measured: 28 MB of 40 MB after 2,000 pods were
/// deleted, see docs/api-server.md); `malloc_trim` returns them. At most every 10 s.
#[derive(Default)]
struct Trim {
    deleted: usize,
    last: Option<std::time::Instant>,
}

impl Trim {
    /// Deletions after which a trim is worth its few milliseconds.
    const DELETIONS: usize = 1_000;
    const INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

    fn after(&mut self, events: &[Arc<Event>]) {
        self.deleted += events
            .iter()
            .filter(|e| e.kind == EventType::Deleted)
            .count();
        if self.deleted < Self::DELETIONS || self.last.is_some_and(|t| t.elapsed() < Self::INTERVAL)
        {
            return;
        }
        self.deleted = 0;
        self.last = Some(std::time::Instant::now());
        release_free_memory();
    }
}

/// Returns the allocator's free pages to the operating system (glibc only; elsewhere nothing).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            ms = started.elapsed().as_millis() as u64,
            "returned free memory to the system"
        );
    }
}
