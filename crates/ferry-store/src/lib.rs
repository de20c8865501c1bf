//! Crash-safe revisioned object store with watch history (SQLite WAL, group commit)
