//! The durable log in SQLite: one row per revision, compacted behind the watch history.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::state::State;
use crate::{Durability, Event, EventType, ObjectKey, StoreError, StoredObject};

pub(crate) struct Database {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev       INTEGER PRIMARY KEY,
    resource  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    value     BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_key ON log (resource, namespace, name, rev);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

impl Database {
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Storage(format!("cannot open database {}: {e}", path.display()))
        })?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Storage(format!(
                "{} does not support write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=OFF;"
        ))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    fn meta(&self, key: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Reads the current objects and the recent history.
    pub fn load(&mut self, history_capacity: usize) -> Result<State, StoreError> {
        let max_row: Option<i64> = self
            .conn
            .query_row("SELECT max(rev) FROM log", [], |r| r.get(0))?;
        let rev = self.meta("revision")?.max(max_row.unwrap_or(0) as u64);
        let compacted = self.meta("compacted")?;
        let history_start = compacted.max(rev.saturating_sub(history_capacity as u64));
        let mut state = State::new(rev, history_capacity, history_start);

        let mut current = self.conn.prepare(
            "SELECT l.rev, l.resource, l.namespace, l.name, l.value FROM log l
             JOIN (SELECT max(rev) AS rev FROM log GROUP BY resource, namespace, name) newest
               ON l.rev = newest.rev
             WHERE l.kind != 2",
        )?;
        let rows = current.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ObjectKey::new(
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ),
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        for row in rows {
            let (row_rev, key, bytes) = row?;
            let value = decode(&bytes, row_rev)?;
            state.load_object(
                key,
                StoredObject {
                    rev: row_rev as u64,
                    value: Arc::new(value),
                },
            );
        }
        drop(current);

        let mut recent = self.conn.prepare(
            "SELECT rev, resource, namespace, name, kind, value FROM log WHERE rev > ?1 ORDER BY rev",
        )?;
        let rows = recent.query_map([history_start as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ObjectKey::new(
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ),
                r.get::<_, i64>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })?;
        let mut previous: HashMap<ObjectKey, Arc<Value>> = HashMap::new();
        for row in rows {
            let (row_rev, key, kind, bytes) = row?;
            let kind = EventType::from_code(kind).ok_or_else(|| {
                StoreError::Storage(format!(
                    "revision {row_rev} has an unknown event kind {kind}"
                ))
            })?;
            let object = Arc::new(decode(&bytes, row_rev)?);
            let prev = if kind == EventType::Deleted {
                previous.remove(&key)
            } else {
                previous.insert(key.clone(), object.clone())
            };
            state.load_history(Arc::new(Event {
                rev: row_rev as u64,
                kind,
                key,
                object,
                previous: prev,
            }));
        }
        Ok(state)
    }

    /// Writes the events of one batch in one transaction.
    pub fn persist(&mut self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log (rev, resource, namespace, name, kind, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in events {
                let bytes = serde_json::to_vec(&*e.object).map_err(|err| {
                    StoreError::Storage(format!("cannot encode {}: {err}", e.key))
                })?;
                insert.execute(params![
                    e.rev as i64,
                    e.key.resource,
                    e.key.namespace,
                    e.key.name,
                    e.kind.code(),
                    bytes
                ])?;
            }
            if let Some(last) = events.last() {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('revision', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [last.rev as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops rows at or below `horizon` that a newer row of the same key supersedes, and
    /// tombstones at or below it.
    pub fn compact(&mut self, horizon: u64) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let removed = tx.execute(
            "DELETE FROM log WHERE rev <= ?1 AND (kind = 2 OR EXISTS (
                 SELECT 1 FROM log newer
                 WHERE newer.resource = log.resource AND newer.namespace = log.namespace
                   AND newer.name = log.name AND newer.rev > log.rev))",
            [horizon as i64],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('compacted', ?1)
             ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            [horizon as i64],
        )?;
        tx.commit()?;
        Ok(removed)
    }
}

fn decode(bytes: &[u8], rev: i64) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Storage(format!("revision {rev} holds invalid JSON: {e}")))
}
