use std::path::PathBuf;

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
    /// Another process (or another store in this one) holds the data directory.
    #[error(
        "the data directory {} is in use by another Ferry{}: stop that one first, or give this one another --data-dir",
        dir.display(),
        pid.map(|p| if p == std::process::id() { " (in this process)".to_string() } else { format!(" (pid {p})") }).unwrap_or_default()
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holder's process id, when it recorded one.
        pid: Option<u32>,
    },
    /// The database failed its integrity checks; the store refuses to start on it.
    #[error(
        "the store {} is damaged: {problem}. Nothing was changed. Run `ferry store check --data-dir {}` for details, then `ferry store recover --data-dir {}` to keep every revision up to {last_good} (the damaged files are moved aside as a backup)",
        path.display(),
        dir.display(),
        dir.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// Its data directory.
        dir: PathBuf,
        /// What is wrong, naming the revision.
        problem: String,
        /// The newest revision up to which every row is intact.
        last_good: u64,
    },
    /// Stored values cannot be turned back into their plain form (encrypted with a key the
    /// store was not given); the store refuses to start and changes nothing.
    #[error(
        "the store {} holds values it cannot read: {problem}. Nothing was changed: start it with the encryption configuration whose keys wrote them (--encryption-provider-config)",
        path.display()
    )]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What cannot be read and why, naming the revision and the object.
        problem: String,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}
