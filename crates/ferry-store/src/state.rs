//! The committed state in memory: objects by resource, plus the bounded event history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use crate::watch::Filter;
use crate::{Event, EventType, ListPage, ObjectKey, StoreError, StoredObject};

type Objects = BTreeMap<(String, String), StoredObject>;

pub(crate) struct State {
    objects: HashMap<String, Objects>,
    /// The newest committed revision.
    pub rev: u64,
    history: VecDeque<Arc<Event>>,
    history_capacity: usize,
    /// A watch can resume from any revision >= this one: every later event is in `history`.
    oldest_watchable: u64,
}

impl State {
    pub fn new(rev: u64, history_capacity: usize, oldest_watchable: u64) -> Self {
        Self {
            objects: HashMap::new(),
            rev,
            history: VecDeque::new(),
            history_capacity: history_capacity.max(1),
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
    }

    /// Puts an object in place during loading, without recording an event.
    pub fn load_object(&mut self, key: ObjectKey, object: StoredObject) {
        self.objects
            .entry(key.resource)
            .or_default()
            .insert((key.namespace, key.name), object);
    }

    /// Adds a past event to the history during loading.
    pub fn load_history(&mut self, event: Arc<Event>) {
        self.history.push_back(event);
        self.trim_history();
    }

    /// Applies a committed event.
    pub fn apply(&mut self, event: Arc<Event>) {
        let objects = self.objects.entry(event.key.resource.clone()).or_default();
        let id = (event.key.namespace.clone(), event.key.name.clone());
        match event.kind {
            EventType::Deleted => {
                objects.remove(&id);
            }
            EventType::Added | EventType::Modified => {
                objects.insert(
                    id,
                    StoredObject {
                        rev: event.rev,
                        value: event.object.clone(),
                    },
                );
            }
        }
        self.rev = event.rev;
        self.history.push_back(event);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_capacity {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.rev;
            }
        }
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
            for (id, object) in objects.range((lower, Bound::Unbounded)) {
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
            for ((namespace, name), object) in objects {
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
            .map(|((namespace, name), object)| {
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

    /// The events after `rev` matching `filter`, or `Expired` if some are no longer kept.
    pub fn history_after(&self, rev: u64, filter: &Filter) -> Result<Vec<Arc<Event>>, StoreError> {
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
