//! Watches: a backlog (snapshot or history) followed by live events, in revision order.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{Event, ObjectKey, Shared};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Only changes after now.
    Now,
    /// Every current object as an `Added` event first, then changes.
    Snapshot,
    /// Every change after this revision (fails with `Expired` if the history no longer has it).
    Revision(u64),
}

/// Which events a watch wants.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub resource: String,
    pub namespace: Option<String>,
}

impl Filter {
    pub fn new(resource: &str, namespace: Option<&str>) -> Self {
        Self {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }

    /// Whether an event of `key` passes the filter; an empty resource means every resource.
    pub fn matches(&self, key: &ObjectKey) -> bool {
        (self.resource.is_empty() || key.resource == self.resource)
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }
}

/// Why a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The store closed.
    Closed,
    /// The watcher fell too far behind the live events; it must resume from its last revision.
    Lagged,
}

/// A stream of events for one resource (and optionally one namespace).
pub struct Watch {
    filter: Filter,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    /// The newest revision delivered (or known to be covered).
    last_rev: u64,
    shared: Arc<Shared>,
}

impl Watch {
    pub(crate) fn new(
        filter: Filter,
        backlog: Vec<Arc<Event>>,
        live: broadcast::Receiver<Arc<Event>>,
        start_rev: u64,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            filter,
            backlog: backlog.into(),
            live,
            last_rev: start_rev,
            shared,
        }
    }

    /// The next event, or why the watch ended.
    pub async fn next(&mut self) -> Result<Arc<Event>, WatchEnd> {
        if let Some(event) = self.backlog.pop_front() {
            return Ok(event);
        }
        loop {
            match self.live.recv().await {
                Ok(event) => {
                    if event.rev <= self.last_rev {
                        continue;
                    }
                    self.last_rev = event.rev;
                    if self.filter.matches(&event.key) {
                        return Ok(event);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Err(WatchEnd::Closed),
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(WatchEnd::Lagged),
            }
        }
    }

    /// A revision up to which this watcher has seen every event it wants, if it has caught up
    /// with the store (for bookmarks). `None` while events are still queued for it.
    pub fn caught_up_revision(&self) -> Option<u64> {
        if !self.backlog.is_empty() {
            return None;
        }
        // Events are sent under the write lock, so while we hold the read lock the queue and
        // the committed revision are consistent.
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.live.is_empty().then_some(state.rev)
    }
}

impl Watch {
    /// The newest revision this watch has delivered or skipped past: resume from here.
    pub fn last_revision(&self) -> u64 {
        self.last_rev
    }
}
