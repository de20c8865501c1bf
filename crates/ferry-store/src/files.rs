//! The data directory: one owner at a time (an advisory lock), readable by its owner only, and
//! the side file that records the newest acknowledged revision.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The lock file in the data directory, held (`flock`) for as long as the store is open.
pub const LOCK_FILE: &str = "lock";

/// Holds the data directory's lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, or fails with [`StoreError::InUse`] naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let mut file = private_options()
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| storage(&path, "cannot open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::InUse {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(storage(&path, "cannot lock", e)),
        }
        // Record the holder for the message a second process prints.
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| storage(&path, "cannot write", e))?;
        Ok(Self { _file: file })
    }
}

/// Options that create a file readable and writable by its owner only.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates `dir` if needed and makes it (and the given files in it, where they exist)
/// accessible to their owner only: the store holds Secrets.
pub(crate) fn make_private(dir: &Path, files: &[PathBuf]) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| storage(dir, "cannot create", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        set_mode(dir, 0o700)?;
        for file in files {
            match std::fs::metadata(file) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => set_mode(file, 0o600)?,
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = files;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| storage(path, "cannot restrict the permissions of", e))
}

fn storage(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("{what} {}: {e}", path.display()))
}

/// What the side file says: the newest revision the writer acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    /// The revision.
    pub rev: u64,
    /// Whether that writer fsynced every commit (a shortfall after power loss is then damage;
    /// with `Durability::Normal` the newest commits may legitimately be lost).
    pub durable: bool,
}

const MAGIC: &[u8; 4] = b"FRV1";
const RECORD_LEN: usize = 17;

/// The side file beside the database (`<db>.revision`): the newest acknowledged revision,
/// rewritten in place after every commit. SQLite drops a damaged or truncated WAL's frames
/// silently; comparing the database with this file is how the store notices.
pub(crate) struct RevisionFile {
    file: File,
}

impl RevisionFile {
    /// Its path for the database at `db`.
    pub fn path(db: &Path) -> PathBuf {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".revision");
        db.with_file_name(name)
    }

    /// Reads the side file of `db`: `Ok(None)` when there is none (a store from before side
    /// files), an error when it is unreadable or damaged.
    pub fn read(db: &Path) -> Result<Option<Acknowledged>, String> {
        let path = Self::path(db);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if bytes.is_empty() {
            // Created, never written (a crash before the first record).
            return Ok(None);
        }
        decode(&bytes).map(Some).ok_or_else(|| {
            format!(
                "{} is damaged ({} bytes, checksum or format wrong)",
                path.display(),
                bytes.len()
            )
        })
    }

    /// Opens (creating) the side file of `db` for writing.
    pub fn open(db: &Path) -> Result<Self, StoreError> {
        let path = Self::path(db);
        let file = private_options()
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| storage(&path, "cannot open", e))?;
        Ok(Self { file })
    }

    /// Records `ack`, in place, without fsync (the commit it follows was already synced).
    pub fn write(&mut self, ack: Acknowledged) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.write_all_at(&encode(ack), 0)
        }
        #[cfg(not(unix))]
        {
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(&encode(ack))
        }
    }

    /// Records `ack` and syncs it (after a recovery).
    pub fn write_synced(&mut self, ack: Acknowledged) -> std::io::Result<()> {
        self.write(ack)?;
        self.file.set_len(RECORD_LEN as u64)?;
        self.file.sync_all()
    }
}

fn encode(ack: Acknowledged) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&ack.rev.to_le_bytes());
    out[12] = u8::from(ack.durable);
    let crc = crc32fast::hash(&out[..13]);
    out[13..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Acknowledged> {
    if bytes.len() != RECORD_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[13..17].try_into().ok()?);
    if crc != crc32fast::hash(&bytes[..13]) || bytes[12] > 1 {
        return None;
    }
    Some(Acknowledged {
        rev: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
        durable: bytes[12] == 1,
    })
}
