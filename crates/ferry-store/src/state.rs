//! The committed state in memory: objects by resource, plus the bounded event history.
//!
//! The history keeps past events as their encoded JSON (the bytes written to SQLite), a tenth
//! of a parsed object's size, and is bounded both in events and in bytes: superseded and
//! deleted objects do not keep their parsed form alive. A watch that resumes from an older
//! revision decodes its backlog.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use crate::watch::Filter;
use crate::{Event, EventType, ListPage, ObjectKey, StoreError, StoredObject};

/// A current object and its encoded form (the next event's `previous`).
struct Entry {
    object: StoredObject,
    encoded: Arc<[u8]>,
}

type Objects = BTreeMap<(String, String), Entry>;

/// A past event, encoded.
#[derive(Clone)]
pub(crate) struct Past {
    rev: u64,
    kind: EventType,
    key: ObjectKey,
    object: Arc<[u8]>,
    previous: Option<Arc<[u8]>>,
}

impl Past {
    pub fn new(
        rev: u64,
        kind: EventType,
        key: ObjectKey,
        object: Arc<[u8]>,
        previous: Option<Arc<[u8]>>,
    ) -> Self {
        Self {
            rev,
            kind,
            key,
            object,
            previous,
        }
    }

    /// What it costs the history: its object (a `previous` is an earlier event's object, or
    /// the current one's) and its key.
    fn size(&self) -> usize {
        self.object.len()
            + self.key.resource.len()
            + self.key.namespace.len()
            + self.key.name.len()
            + 96
    }

    /// The event, parsed again.
    pub fn decode(&self) -> Result<Arc<Event>, StoreError> {
        let parse = |bytes: &[u8]| {
            serde_json::from_slice::<Value>(bytes)
                .map(Arc::new)
                .map_err(|e| {
                    StoreError::Storage(format!("revision {} holds invalid JSON: {e}", self.rev))
                })
        };
        Ok(Arc::new(Event {
            rev: self.rev,
            kind: self.kind,
            key: self.key.clone(),
            object: parse(&self.object)?,
            previous: self.previous.as_deref().map(parse).transpose()?,
        }))
    }
}

pub(crate) struct State {
    objects: HashMap<String, Objects>,
    /// The newest committed revision.
    pub rev: u64,
    history: VecDeque<Past>,
    history_capacity: usize,
    history_bytes: usize,
    history_budget: usize,
    /// A watch can resume from any revision >= this one: every later event is in `history`.
    oldest_watchable: u64,
}

impl State {
    pub fn new(
        rev: u64,
        history_capacity: usize,
        history_budget: usize,
        oldest_watchable: u64,
    ) -> Self {
        Self {
            objects: HashMap::new(),
            rev,
            history: VecDeque::new(),
            history_capacity: history_capacity.max(1),
            history_bytes: 0,
            history_budget,
            oldest_watchable,
        }
    }

    pub fn object_count(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects
            .get(&key.resource)?
            .get(&(key.namespace.clone(), key.name.clone()))
            .map(|e| &e.object)
    }

    /// Puts an object in place during loading, without recording an event.
    pub fn load_object(&mut self, key: ObjectKey, object: StoredObject, encoded: Arc<[u8]>) {
        self.objects
            .entry(key.resource)
            .or_default()
            .insert((key.namespace, key.name), Entry { object, encoded });
    }

    /// Adds a past event to the history during loading.
    pub fn load_history(&mut self, past: Past) {
        self.push_history(past);
    }

    /// Applies a committed event; `encoded` is its object as written to the database.
    pub fn apply(&mut self, event: Arc<Event>, encoded: Arc<[u8]>) {
        let objects = self.objects.entry(event.key.resource.clone()).or_default();
        let id = (event.key.namespace.clone(), event.key.name.clone());
        let previous = match event.kind {
            EventType::Deleted => objects.remove(&id).map(|e| e.encoded),
            EventType::Added | EventType::Modified => objects
                .insert(
                    id,
                    Entry {
                        object: StoredObject {
                            rev: event.rev,
                            value: event.object.clone(),
                        },
                        encoded: encoded.clone(),
                    },
                )
                .map(|e| e.encoded),
        };
        if objects.is_empty() {
            // No per-resource map outlives its last object.
            self.objects.remove(&event.key.resource);
        }
        self.rev = event.rev;
        self.push_history(Past::new(
            event.rev,
            event.kind,
            event.key.clone(),
            encoded,
            previous,
        ));
    }

    fn push_history(&mut self, past: Past) {
        self.history_bytes += past.size();
        self.history.push_back(past);
        while self.history.len() > self.history_capacity
            || (self.history_bytes > self.history_budget && self.history.len() > 1)
        {
            if let Some(dropped) = self.history.pop_front() {
                self.history_bytes -= dropped.size();
                self.oldest_watchable = dropped.rev;
            }
        }
    }

    /// Events and bytes the history holds.
    pub fn history_size(&self) -> (usize, usize) {
        (self.history.len(), self.history_bytes)
    }

    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        start_after: Option<&(String, String)>,
        limit: usize,
        filter: impl Fn(&Value) -> bool,
    ) -> ListPage {
        let mut items = Vec::new();
        let mut continue_after = None;
        if let Some(objects) = self.objects.get(resource) {
            use std::ops::Bound;
            let lower = match (start_after, namespace) {
                (Some(after), _) => Bound::Excluded(after.clone()),
                (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
                (None, None) => Bound::Unbounded,
            };
            let mut last: Option<&(String, String)> = None;
            for (id, Entry { object, .. }) in objects.range((lower, Bound::Unbounded)) {
                if let Some(wanted) = namespace
                    && id.0 != wanted
                {
                    break;
                }
                if !filter(&object.value) {
                    continue;
                }
                if limit > 0 && items.len() == limit {
                    // At least one more item matches: the next page starts after `last`.
                    continue_after = last.cloned();
                    break;
                }
                items.push(object.clone());
                last = Some(id);
            }
        }
        ListPage {
            items,
            rev: self.rev,
            continue_after,
        }
    }

    pub fn for_each(&self, visit: &mut impl FnMut(&ObjectKey, &StoredObject)) {
        for (resource, objects) in &self.objects {
            for ((namespace, name), Entry { object, .. }) in objects {
                let key = ObjectKey::new(resource.clone(), namespace.clone(), name.clone());
                visit(&key, object);
            }
        }
    }

    /// Synthetic `Added` events for every object matching `filter` (the start of a watch
    /// without a revision).
    pub fn snapshot_events(&self, filter: &Filter) -> Vec<Arc<Event>> {
        let Some(objects) = self.objects.get(&filter.resource) else {
            return Vec::new();
        };
        objects
            .iter()
            .filter(|((ns, _), _)| filter.namespace.as_ref().is_none_or(|want| want == ns))
            .map(|((namespace, name), Entry { object, .. })| {
                Arc::new(Event {
                    rev: object.rev,
                    kind: EventType::Added,
                    key: ObjectKey::new(filter.resource.clone(), namespace.clone(), name.clone()),
                    object: object.value.clone(),
                    previous: None,
                })
            })
            .collect()
    }

    /// The events after `rev` matching `filter` (still encoded: decode them outside the lock),
    /// or `Expired` if some are no longer kept.
    pub fn history_after(&self, rev: u64, filter: &Filter) -> Result<Vec<Past>, StoreError> {
        if rev < self.oldest_watchable {
            return Err(StoreError::Expired {
                requested: rev,
                oldest: self.oldest_watchable,
            });
        }
        let start = self.history.partition_point(|e| e.rev <= rev);
        Ok(self
            .history
            .range(start..)
            .filter(|e| filter.matches(&e.key))
            .cloned()
            .collect())
    }
}
