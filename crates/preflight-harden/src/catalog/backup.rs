//! Backups taken before every change, with a manifest so that rollback restores each file byte
//! for byte (content, owner, mode) and removes files that did not exist before.
//!
//! Layout: `<backup dir>/<backup id>/manifest.json` and `<backup dir>/<backup id>/files/<n>`.
//! The manifest is rewritten (atomically) after each file is saved and before that file is
//! changed, so an apply interrupted at any point can still be rolled back.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::root::{Entry, FileMeta, Root, RootError};
use super::sha256_hex;

/// Default backup directory on a host.
pub const DEFAULT_BACKUP_DIR: &str = "/var/lib/preflight-agent/backups";

/// A failure to save or restore a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The backup directory could not be used.
    #[error("cannot {op} backup {path}: {source}; check that the backup directory is writable")]
    Io {
        /// What was tried.
        op: &'static str,
        /// Path in the backup directory.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The backup id is malformed or unknown.
    #[error("backup {0} not found; list the backup directory for valid ids")]
    NotFound(String),
    /// The manifest is unreadable.
    #[error("backup manifest {path} is corrupt: {reason}")]
    Corrupt {
        /// Manifest path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A saved file no longer matches its recorded hash.
    #[error("backup copy of {path} does not match its recorded sha256; refusing to restore it")]
    HashMismatch {
        /// In-host path.
        path: String,
    },
    /// A root prefix error while saving or restoring.
    #[error(transparent)]
    Root(#[from] RootError),
}

/// What was at a path before the first change of a backup set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Saved {
    /// Nothing: rollback removes whatever is there.
    Absent,
    /// A regular file, saved as `blob`.
    File {
        /// Blob name under `files/`.
        blob: String,
        /// SHA-256 of the content.
        sha256: String,
        /// Owner and mode.
        meta: FileMeta,
    },
    /// A symlink.
    Symlink {
        /// Its target text.
        target: String,
    },
}

/// One saved path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// In-host path.
    pub path: String,
    /// What was there.
    pub saved: Saved,
    /// The check whose change made the save.
    pub check: String,
}

/// The manifest of one backup set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Backup id (directory name).
    pub id: String,
    /// The root prefix the files belong to.
    pub root: String,
    /// Unix seconds when the set was opened.
    pub created_unix: u64,
    /// Saved paths, in the order they were saved.
    pub entries: Vec<ManifestEntry>,
}

/// A reference to a backup set, as recorded in evidence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupRef {
    /// Backup id.
    pub id: String,
    /// Directory holding it.
    pub dir: String,
}

/// A backup set being filled during one apply.
#[derive(Debug)]
pub struct BackupSet {
    dir: PathBuf,
    manifest: Manifest,
}

fn bio<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        op,
        path: p.display().to_string(),
        source,
    }
}

fn write_file_synced(path: &Path, data: &[u8]) -> Result<(), BackupError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(bio("create", &tmp))?;
    f.write_all(data).map_err(bio("write", &tmp))?;
    f.sync_all().map_err(bio("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(bio("rename", path))?;
    if let Some(d) = path.parent() {
        fs::File::open(d)
            .and_then(|d| d.sync_all())
            .map_err(bio("fsync", d))?;
    }
    Ok(())
}

impl BackupSet {
    /// Opens a new, empty backup set under `backup_dir` (created with mode 0700).
    pub fn create(backup_dir: &Path, root: &Root) -> Result<BackupSet, BackupError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(backup_dir)
            .map_err(bio("create", backup_dir))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "{}-{:09}-{}",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id()
        );
        let dir = backup_dir.join(&id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("files"))
            .map_err(bio("create", &dir))?;
        let set = BackupSet {
            dir,
            manifest: Manifest {
                version: 1,
                id,
                root: root.base().display().to_string(),
                created_unix: now.as_secs(),
                entries: Vec::new(),
            },
        };
        set.persist()?;
        Ok(set)
    }

    /// The reference to record in evidence.
    pub fn reference(&self) -> BackupRef {
        BackupRef {
            id: self.manifest.id.clone(),
            dir: self
                .dir
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// True when nothing was saved.
    pub fn is_empty(&self) -> bool {
        self.manifest.entries.is_empty()
    }

    fn persist(&self) -> Result<(), BackupError> {
        let json = serde_json::to_vec_pretty(&self.manifest).map_err(|e| BackupError::Corrupt {
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        })?;
        write_file_synced(&self.dir.join("manifest.json"), &json)
    }

    /// Saves what is at `path` unless this set already holds it (the first state wins).
    pub fn save(&mut self, root: &Root, path: &str, check: &str) -> Result<(), BackupError> {
        if self.manifest.entries.iter().any(|e| e.path == path) {
            return Ok(());
        }
        let saved = match root.entry(path)? {
            Entry::Missing => Saved::Absent,
            Entry::Symlink(t) if !root.exists(path) => Saved::Symlink { target: t },
            _ => {
                let data = root
                    .read(path)?
                    .ok_or_else(|| BackupError::NotFound(path.to_string()))?;
                let meta = root
                    .meta(path)?
                    .ok_or_else(|| BackupError::NotFound(path.to_string()))?;
                let blob = format!("{}", self.manifest.entries.len());
                write_file_synced(&self.dir.join("files").join(&blob), &data)?;
                Saved::File {
                    blob,
                    sha256: sha256_hex(&data),
                    meta,
                }
            }
        };
        self.manifest.entries.push(ManifestEntry {
            path: path.to_string(),
            saved,
            check: check.to_string(),
        });
        self.persist()
    }

    /// Saves a symlink itself (for changes that create or remove links).
    pub fn save_link(&mut self, root: &Root, path: &str, check: &str) -> Result<(), BackupError> {
        if self.manifest.entries.iter().any(|e| e.path == path) {
            return Ok(());
        }
        let saved = match root.entry(path)? {
            Entry::Missing => Saved::Absent,
            Entry::Symlink(t) => Saved::Symlink { target: t },
            _ => return self.save(root, path, check),
        };
        self.manifest.entries.push(ManifestEntry {
            path: path.to_string(),
            saved,
            check: check.to_string(),
        });
        self.persist()
    }

    /// Removes the set's directory if nothing was saved.
    pub fn discard_if_empty(self) -> Option<BackupRef> {
        if self.is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
            None
        } else {
            Some(self.reference())
        }
    }
}

/// Loads the manifest of a backup id.
pub fn load(backup_dir: &Path, id: &str) -> Result<(PathBuf, Manifest), BackupError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(BackupError::NotFound(id.to_string()));
    }
    let dir = backup_dir.join(id);
    let mpath = dir.join("manifest.json");
    let data = match fs::read(&mpath) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NotFound(id.to_string()))
        }
        r => r.map_err(bio("read", &mpath))?,
    };
    let m: Manifest = serde_json::from_slice(&data).map_err(|e| BackupError::Corrupt {
        path: mpath.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((dir, m))
}

/// Restores every path of a backup set, last saved first. Returns the restored paths.
pub fn restore(root: &Root, backup_dir: &Path, id: &str) -> Result<Vec<String>, BackupError> {
    let (dir, m) = load(backup_dir, id)?;
    let mut done = Vec::new();
    for e in m.entries.iter().rev() {
        match &e.saved {
            Saved::Absent => root.remove(&e.path)?,
            Saved::Symlink { target } => {
                if root.entry(&e.path)? != Entry::Symlink(target.clone()) {
                    root.remove(&e.path)?;
                    root.symlink(&e.path, target)?;
                }
            }
            Saved::File { blob, sha256, meta } => {
                let bpath = dir.join("files").join(blob);
                let data = fs::read(&bpath).map_err(bio("read", &bpath))?;
                if &sha256_hex(&data) != sha256 {
                    return Err(BackupError::HashMismatch {
                        path: e.path.clone(),
                    });
                }
                if let Entry::Symlink(_) = root.entry(&e.path)? {
                    if !root.exists(&e.path) {
                        root.remove(&e.path)?;
                    }
                }
                root.write_atomic(&e.path, &data, *meta)?;
                root.set_meta(&e.path, *meta)?;
            }
        }
        done.push(e.path.clone());
    }
    tracing::debug!(id, files = done.len(), "restored backup");
    Ok(done)
}
