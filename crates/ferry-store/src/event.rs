use std::sync::Arc;

use serde_json::Value;

use crate::ObjectKey;

/// The kind of change an [`Event`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was replaced.
    Modified,
    /// The object was deleted; the event carries its last state.
    Deleted,
}

impl EventType {
    /// The Kubernetes watch event type (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    pub(crate) fn code(self) -> i64 {
        match self {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(EventType::Added),
            1 => Some(EventType::Modified),
            2 => Some(EventType::Deleted),
            _ => None,
        }
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct Event {
    /// The revision of the change.
    pub rev: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (for deletes: its last state, stamped with `rev`).
    pub object: Arc<Value>,
    /// The object before the change, when known (for watchers that filter by labels or
    /// fields, to see an object leave their selection).
    pub previous: Option<Arc<Value>>,
}
