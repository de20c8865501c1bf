use thiserror::Error;

use crate::ObjectKey;

/// Why a store operation failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// A create found the key taken.
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(ObjectKey),
    /// A conditional write found another revision than the one it expected.
    #[error(
        "{key} has been modified (revision {actual}, expected {expected}); read it again and retry"
    )]
    Conflict {
        /// The object.
        key: ObjectKey,
        /// The revision the writer expected.
        expected: u64,
        /// The revision stored.
        actual: u64,
    },
    /// A watch asked for a revision older than the kept history.
    #[error(
        "revision {requested} is too old: the oldest revision a watch can start from is {oldest}"
    )]
    Expired {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still available.
        oldest: u64,
    },
    /// The database failed (disk full, I/O error, corrupt file).
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}
