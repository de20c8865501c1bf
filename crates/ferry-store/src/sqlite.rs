//! The durable log in SQLite: one row per revision, each with a checksum, compacted behind the
//! watch history; plus the integrity checks run before the store starts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::files::{Acknowledged, RevisionFile, private_options};
use crate::state::{Past, State};
use crate::{Durability, Event, EventType, ObjectKey, StoreError, StoredObject, ValueTransformer};

pub(crate) struct Database {
    conn: Connection,
    transformer: Arc<dyn ValueTransformer>,
    path: PathBuf,
    acknowledged: RevisionFile,
    durable: bool,
    ack_failed: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev       INTEGER PRIMARY KEY,
    resource  TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    value     BLOB    NOT NULL,
    crc       INTEGER
);
CREATE INDEX IF NOT EXISTS log_by_key ON log (resource, namespace, name, rev);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The checksum of one log row: CRC-32 over its revision, kind, key and value.
pub(crate) fn checksum(rev: u64, kind: i64, key: &ObjectKey, value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rev.to_le_bytes());
    h.update(&kind.to_le_bytes());
    for part in [&key.resource, &key.namespace, &key.name] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(value);
    h.finalize()
}

/// The database files SQLite keeps for `db`: the database, its WAL and its shared memory.
pub(crate) fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

use crate::data_dir;

/// Opens a connection that leaves the files as they are when it closes (no checkpoint), so a
/// refused start or a check keeps a damaged WAL intact for recovery.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| {
        StoreError::Storage(format!("cannot open database {}: {e}", path.display()))
    })?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.execute_batch("PRAGMA busy_timeout=5000; PRAGMA foreign_keys=OFF;")?;
    Ok(conn)
}

fn has_checksums(conn: &Connection) -> Result<bool, StoreError> {
    let mut columns = conn.prepare("SELECT name FROM pragma_table_info('log')")?;
    let names = columns
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names.iter().any(|n| n == "crc"))
}

fn has_log(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn meta(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// One row of the log as read, not yet decoded.
pub(crate) struct RawRow {
    pub rev: u64,
    pub key: ObjectKey,
    pub kind: EventType,
    pub value: Vec<u8>,
}

/// What a verification pass over the whole log found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Rows that passed their checks.
    pub good_rows: u64,
    /// Rows that failed them.
    pub bad_rows: u64,
    /// The first damaged revision and what is wrong with it.
    pub first_bad: Option<(u64, String)>,
    /// The newest revision of a readable row.
    pub newest_row: u64,
}

impl Scan {
    /// The newest revision up to which every row is intact.
    pub fn last_good(&self) -> u64 {
        match &self.first_bad {
            Some((rev, _)) => rev.saturating_sub(1),
            None => self.newest_row,
        }
    }
}

/// Reads every row in revision order, verifying its checksum (or, for rows without one, that
/// its value is JSON), and hands each good row with `rev <= up_to` to `visit`.
fn scan(
    conn: &Connection,
    up_to: u64,
    mut visit: impl FnMut(RawRow) -> Result<(), StoreError>,
) -> Result<Scan, StoreError> {
    let mut result = Scan::default();
    if !has_log(conn)? {
        return Ok(result);
    }
    let crc = if has_checksums(conn)? { "crc" } else { "NULL" };
    let mut statement = conn.prepare(&format!(
        "SELECT rev, resource, namespace, name, kind, value, {crc} FROM log WHERE rev <= ?1 ORDER BY rev"
    ))?;
    let mut rows = statement.query([up_to.min(i64::MAX as u64) as i64])?;
    let mut previous = 0u64;
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                // The table itself is unreadable from here on (a damaged page).
                result.bad_rows += 1;
                result.first_bad.get_or_insert((
                    previous + 1,
                    format!("the log cannot be read after revision {previous}: {e}"),
                ));
                break;
            }
        };
        let Ok(rev) = row.get::<_, i64>(0) else {
            result.bad_rows += 1;
            result.first_bad.get_or_insert((
                previous + 1,
                format!("the row after revision {previous} is unreadable"),
            ));
            continue;
        };
        let rev = rev as u64;
        previous = rev;
        result.newest_row = result.newest_row.max(rev);
        match check_row(row, rev, crc != "NULL") {
            Ok(raw) => {
                result.good_rows += 1;
                visit(raw)?;
            }
            Err(problem) => {
                result.bad_rows += 1;
                result.first_bad.get_or_insert((rev, problem));
            }
        }
    }
    Ok(result)
}

fn check_row(row: &rusqlite::Row<'_>, rev: u64, checksums: bool) -> Result<RawRow, String> {
    let unreadable = |e: rusqlite::Error| format!("revision {rev} is unreadable: {e}");
    let key = ObjectKey::new(
        row.get::<_, String>(1).map_err(unreadable)?,
        row.get::<_, String>(2).map_err(unreadable)?,
        row.get::<_, String>(3).map_err(unreadable)?,
    );
    let code: i64 = row.get(4).map_err(unreadable)?;
    let value: Vec<u8> = row.get(5).map_err(unreadable)?;
    let stored: Option<i64> = row.get(6).map_err(unreadable)?;
    if checksums {
        let expected = checksum(rev, code, &key, &value);
        match stored {
            Some(c) if c == i64::from(expected) => {}
            Some(_) => return Err(format!("revision {rev} ({key}) fails its checksum")),
            None => return Err(format!("revision {rev} ({key}) has no checksum")),
        }
    } else if serde_json::from_slice::<Value>(&value).is_err() {
        return Err(format!("revision {rev} ({key}) holds invalid JSON"));
    }
    let kind = EventType::from_code(code)
        .ok_or_else(|| format!("revision {rev} has an unknown event kind {code}"))?;
    Ok(RawRow {
        rev,
        key,
        kind,
        value,
    })
}

impl Database {
    pub fn open(
        path: &Path,
        durability: Durability,
        transformer: Arc<dyn ValueTransformer>,
    ) -> Result<Self, StoreError> {
        // Created here, owner-only, so that SQLite's WAL and shared-memory files (which take
        // the database's mode) are owner-only too.
        private_options()
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", path.display())))?;
        let conn = connect(path)?;
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
        conn.execute_batch(&format!("PRAGMA synchronous={sync};"))?;
        let migrate = has_log(&conn)? && !has_checksums(&conn)?;
        conn.execute_batch(SCHEMA)?;
        if migrate {
            add_checksums(&conn)?;
        }
        Ok(Self {
            acknowledged: RevisionFile::open(path)?,
            conn,
            transformer,
            path: path.to_path_buf(),
            durable: durability == Durability::Full,
            ack_failed: false,
        })
    }

    fn damaged(&self, problem: String, last_good: u64) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            dir: data_dir(&self.path),
            problem,
            last_good,
        }
    }

    /// Verifies every row and that no acknowledged revision is missing, then reads the current
    /// objects and the recent history.
    pub fn load(
        &mut self,
        history_capacity: usize,
        history_bytes: usize,
    ) -> Result<State, StoreError> {
        let acknowledged = RevisionFile::read(&self.path).map_err(|p| self.damaged(p, 0))?;
        // Every row is also read back through the transformer: one that cannot be is reported
        // (not skipped), one whose stored form is stale is rewritten below.
        let mut unreadable: Option<String> = None;
        let mut stale: Vec<RawRow> = Vec::new();
        let transformer = self.transformer.clone();
        let scan = scan(&self.conn, u64::MAX, |row| {
            if unreadable.is_some() {
                return Ok(());
            }
            match transformer.transform_from_storage(&row.key, &row.value) {
                Ok(read) if read.stale => stale.push(RawRow {
                    value: read.plain.into_owned(),
                    ..row
                }),
                Ok(_) => {}
                Err(problem) => {
                    unreadable = Some(format!("revision {} ({}): {problem}", row.rev, row.key))
                }
            }
            Ok(())
        })?;
        if let Some((_, problem)) = &scan.first_bad {
            return Err(self.damaged(problem.clone(), scan.last_good()));
        }
        if let Some(problem) = unreadable {
            return Err(StoreError::Unreadable {
                path: self.path.clone(),
                problem,
            });
        }
        if !stale.is_empty() {
            self.rewrite(&stale)?;
        }
        let rev = meta(&self.conn, "revision")?.max(scan.newest_row);
        if let Some(ack) = acknowledged
            && ack.rev > rev
        {
            let problem = format!(
                "revisions {} to {} were acknowledged but are missing from the database (a damaged or truncated write-ahead log or database file)",
                rev + 1,
                ack.rev
            );
            if ack.durable {
                return Err(self.damaged(problem, rev));
            }
            // Without fsync per commit, power loss may take the newest commits: say so.
            tracing::warn!(
                "{problem}; the last writer did not fsync every commit (durability normal), so continuing from revision {rev}"
            );
        }
        let compacted = meta(&self.conn, "compacted")?;
        let history_start = compacted.max(rev.saturating_sub(history_capacity as u64));
        let mut state = State::new(rev, history_capacity, history_bytes, history_start);

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
            let bytes = self.plain(&key, row_rev, bytes)?;
            let value = decode(&bytes, row_rev)?;
            state.load_object(
                key,
                StoredObject {
                    rev: row_rev as u64,
                    value: Arc::new(value),
                },
                Arc::from(bytes),
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
        let mut previous: HashMap<ObjectKey, Arc<[u8]>> = HashMap::new();
        for row in rows {
            let (row_rev, key, kind, bytes) = row?;
            let kind = EventType::from_code(kind).ok_or_else(|| {
                StoreError::Storage(format!(
                    "revision {row_rev} has an unknown event kind {kind}"
                ))
            })?;
            let object: Arc<[u8]> = Arc::from(self.plain(&key, row_rev, bytes)?);
            let prev = if kind == EventType::Deleted {
                previous.remove(&key)
            } else {
                previous.insert(key.clone(), object.clone())
            };
            state.load_history(Past::new(row_rev as u64, kind, key, object, prev));
        }
        drop(recent);
        // Verified: from now on closing checkpoints as usual.
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
        self.record(rev);
        Ok(state)
    }

    /// The plain form of the stored value of `key` at `rev`.
    fn plain(&self, key: &ObjectKey, rev: i64, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self.transformer.transform_from_storage(key, &stored) {
            Ok(read) => Ok(match read.plain {
                std::borrow::Cow::Borrowed(_) => stored,
                std::borrow::Cow::Owned(plain) => plain,
            }),
            Err(problem) => Err(StoreError::Unreadable {
                path: self.path.clone(),
                problem: format!("revision {rev} ({key}): {problem}"),
            }),
        }
    }

    /// Writes `rows` (plain values) again in today's stored form, in place (their revisions
    /// stay), with SQLite's secure delete on so the old forms' bytes are zeroed, then
    /// checkpoints and truncates the WAL so no copy of them is left in it either.
    fn rewrite(&mut self, rows: &[RawRow]) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA secure_delete=ON;")?;
        let tx = self.conn.transaction()?;
        {
            let mut update = tx.prepare("UPDATE log SET value = ?2, crc = ?3 WHERE rev = ?1")?;
            for row in rows {
                let stored = self
                    .transformer
                    .transform_to_storage(&row.key, &row.value)
                    .map_err(|e| {
                        StoreError::Storage(format!("cannot store {} again: {e}", row.key))
                    })?;
                let crc = checksum(row.rev, row.kind.code(), &row.key, &stored);
                update.execute(params![row.rev as i64, &*stored, i64::from(crc)])?;
            }
        }
        tx.commit()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.conn.execute_batch("PRAGMA secure_delete=OFF;")?;
        tracing::info!(
            rows = rows.len(),
            "rewrote stored values in the current storage form (encryption at rest)"
        );
        Ok(())
    }

    /// Records `rev` as acknowledged in the side file (a failure is logged once: the commit
    /// itself is durable, only the detection of a later loss is weakened).
    fn record(&mut self, rev: u64) {
        let ack = Acknowledged {
            rev,
            durable: self.durable,
        };
        if let Err(e) = self.acknowledged.write(ack)
            && !self.ack_failed
        {
            self.ack_failed = true;
            tracing::warn!(error = %e, "cannot record the acknowledged revision beside the database");
        }
    }

    /// Writes the events of one batch in one transaction.
    pub fn persist(
        &mut self,
        events: &[Arc<Event>],
        encoded: &[Arc<[u8]>],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log (rev, resource, namespace, name, kind, value, crc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (e, bytes) in events.iter().zip(encoded) {
                let bytes = self
                    .transformer
                    .transform_to_storage(&e.key, bytes)
                    .map_err(|err| StoreError::Storage(format!("cannot store {}: {err}", e.key)))?;
                let bytes: &[u8] = &bytes;
                let crc = checksum(e.rev, e.kind.code(), &e.key, bytes);
                insert.execute(params![
                    e.rev as i64,
                    e.key.resource,
                    e.key.namespace,
                    e.key.name,
                    e.kind.code(),
                    bytes,
                    i64::from(crc)
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
        if let Some(last) = events.last() {
            self.record(last.rev);
        }
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

/// Adds the checksum column to a log written before checksums, and fills it, in one
/// transaction.
fn add_checksums(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("ALTER TABLE log ADD COLUMN crc INTEGER")?;
    let mut rows = Vec::new();
    {
        let mut select =
            tx.prepare("SELECT rev, resource, namespace, name, kind, value FROM log")?;
        let mut cursor = select.query([])?;
        while let Some(r) = cursor.next()? {
            let rev = r.get::<_, i64>(0)? as u64;
            let key = ObjectKey::new(
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            );
            let value: Vec<u8> = r.get(5)?;
            rows.push((rev, checksum(rev, r.get(4)?, &key, &value)));
        }
        let mut update = tx.prepare("UPDATE log SET crc = ?2 WHERE rev = ?1")?;
        for (rev, crc) in &rows {
            update.execute(params![*rev as i64, i64::from(*crc)])?;
        }
    }
    tx.commit()?;
    tracing::info!(rows = rows.len(), "added checksums to the store's log");
    Ok(())
}

fn decode(bytes: &[u8], rev: i64) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Storage(format!("revision {rev} holds invalid JSON: {e}")))
}

/// What `ferry store check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Rows that passed their checks.
    pub good_rows: u64,
    /// Rows that failed them.
    pub bad_rows: u64,
    /// The newest revision the database holds.
    pub newest: u64,
    /// The newest revision acknowledged to a writer, from the side file (if there is one).
    pub acknowledged: Option<u64>,
    /// The newest revision up to which every row is intact and none is missing.
    pub last_good: u64,
    /// What is wrong, first problem first; empty when the store is intact.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether the store is intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies every row of the database at `path`, its structure and the acknowledged revision,
/// changing nothing.
pub(crate) fn check(path: &Path) -> Result<CheckReport, StoreError> {
    let mut problems = Vec::new();
    let acknowledged = match RevisionFile::read(path) {
        Ok(ack) => ack.map(|a| a.rev),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "there is no database at {}",
            path.display()
        )));
    }
    let conn = connect(path)?;
    let scan = scan(&conn, u64::MAX, |_| Ok(())).unwrap_or_else(|e| Scan {
        first_bad: Some((1, format!("the database cannot be read: {e}"))),
        ..Scan::default()
    });
    let newest = meta(&conn, "revision").unwrap_or(0).max(scan.newest_row);
    let mut last_good = match scan.first_bad {
        Some(_) => scan.last_good(),
        None => newest,
    };
    if let Some((_, p)) = &scan.first_bad {
        problems.push(p.clone());
        if scan.bad_rows > 1 {
            problems.push(format!("{} rows are damaged in all", scan.bad_rows));
        }
    }
    if let Some(ack) = acknowledged
        && ack > newest
    {
        problems.push(format!(
            "revisions {} to {ack} were acknowledged but are missing from the database (a damaged or truncated write-ahead log or database file)",
            newest + 1
        ));
        last_good = last_good.min(newest);
    }
    let structure: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| vec![e.to_string()]);
    if structure != ["ok"] {
        problems.push(format!("SQLite's quick_check: {}", structure.join("; ")));
        last_good = last_good.min(scan.last_good());
    }
    Ok(CheckReport {
        good_rows: scan.good_rows,
        bad_rows: scan.bad_rows,
        newest,
        acknowledged,
        last_good,
        problems,
    })
}

/// What `ferry store recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    /// The store was intact: nothing was changed.
    pub intact: bool,
    /// Every revision up to this one was kept.
    pub last_good: u64,
    /// The newest revision known before the recovery (database or side file).
    pub newest: u64,
    /// Revisions after `last_good` that were dropped (`newest - last_good`).
    pub dropped_revisions: u64,
    /// Rows kept.
    pub kept_rows: u64,
    /// Objects that existed at `last_good` but whose rows up to it had been compacted away
    /// (their newer rows were damaged), so they could not be kept.
    pub lost_objects: u64,
    /// The store's revision after recovery: above every revision handed out before, and the
    /// oldest a watch can resume from (clients list again).
    pub new_revision: u64,
    /// Where the damaged files were moved.
    pub backup: Option<PathBuf>,
}

/// Keeps every revision up to the last good one in a fresh database, moves the damaged files
/// aside into `damaged-<time>/` and puts the fresh database in their place.
pub(crate) fn recover(path: &Path) -> Result<RecoverReport, StoreError> {
    let report = check(path)?;
    let newest = report.newest.max(report.acknowledged.unwrap_or(0));
    if report.is_ok() {
        return Ok(RecoverReport {
            intact: true,
            last_good: report.last_good,
            newest,
            dropped_revisions: 0,
            kept_rows: report.good_rows,
            lost_objects: 0,
            new_revision: newest,
            backup: None,
        });
    }
    let last_good = report.last_good;
    let new_revision = newest + 1;
    let dir = data_dir(path);
    let fresh = path.with_extension("recovering");
    for file in sqlite_files(&fresh) {
        let _ = std::fs::remove_file(file);
    }
    private_options()
        .write(true)
        .truncate(true)
        .open(&fresh)
        .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", fresh.display())))?;
    let mut kept_rows = 0u64;
    let lost_objects;
    {
        let old = connect(path)?;
        let new = Connection::open(&fresh)?;
        new.execute_batch("PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;")?;
        new.execute_batch(SCHEMA)?;
        let tx = new.unchecked_transaction()?;
        let mut kept_keys: HashSet<ObjectKey> = HashSet::new();
        let mut dropped_first: HashMap<ObjectKey, EventType> = HashMap::new();
        {
            let mut insert = tx.prepare(
                "INSERT INTO log (rev, resource, namespace, name, kind, value, crc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let copied = scan(&old, u64::MAX, |row| {
                if row.rev > last_good {
                    dropped_first.entry(row.key).or_insert(row.kind);
                    return Ok(());
                }
                let code = row.kind.code();
                let crc = checksum(row.rev, code, &row.key, &row.value);
                insert.execute(params![
                    row.rev as i64,
                    row.key.resource,
                    row.key.namespace,
                    row.key.name,
                    code,
                    row.value,
                    i64::from(crc)
                ])?;
                kept_rows += 1;
                kept_keys.insert(row.key);
                Ok(())
            });
            if let Err(e) = copied {
                tracing::warn!(error = %e, "the damaged database could not be read to its end");
            }
        }
        lost_objects = dropped_first
            .iter()
            .filter(|(key, kind)| **kind != EventType::Added && !kept_keys.contains(*key))
            .count() as u64;
        for key in ["revision", "compacted"] {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![key, new_revision as i64],
            )?;
        }
        tx.commit()?;
    }
    // Move the damaged files aside: WAL and shared memory first, so the database is never
    // beside a WAL that is not its own; the side file last, so that until the fresh database
    // is in place a start is still refused.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let backup = dir.join(format!("damaged-{stamp}"));
    crate::files::make_private(&backup, &[])?;
    let move_aside = |from: &Path| -> Result<(), StoreError> {
        if !from.exists() {
            return Ok(());
        }
        let to = backup.join(from.file_name().unwrap_or_default());
        std::fs::rename(from, &to).map_err(|e| {
            StoreError::Storage(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })
    };
    let [db, wal, shm] = sqlite_files(path);
    move_aside(&wal)?;
    move_aside(&shm)?;
    move_aside(&db)?;
    std::fs::rename(&fresh, &db).map_err(|e| {
        StoreError::Storage(format!(
            "cannot move {} to {}: {e}",
            fresh.display(),
            db.display()
        ))
    })?;
    let side = RevisionFile::path(path);
    move_aside(&side)?;
    RevisionFile::open(path)?
        .write_synced(Acknowledged {
            rev: new_revision,
            durable: true,
        })
        .map_err(|e| StoreError::Storage(format!("cannot write {}: {e}", side.display())))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(RecoverReport {
        intact: false,
        last_good,
        newest,
        dropped_revisions: newest - last_good,
        kept_rows,
        lost_objects,
        new_revision,
        backup: Some(backup),
    })
}
