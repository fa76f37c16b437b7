//! File access confined to a root prefix.
//!
//! Every path a check reads or writes is an absolute path *inside* the host (`/etc/shadow`) and
//! is resolved component by component under the prefix. Absolute symlink targets are taken
//! relative to the prefix (as a chroot would), and a relative target that climbs above the prefix
//! is refused with [`RootError::Escape`]. Writes are atomic (temporary file, fsync, rename, fsync
//! of the directory) and keep the owner, mode and SELinux label of the file they replace.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest file a check reads or writes (shadow files of big hosts stay well below it).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most symlinks followed while resolving one path.
const MAX_SYMLINKS: usize = 40;

/// A failure to access a file under the root prefix.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The prefix itself is unusable.
    #[error("root prefix {path} is not a usable directory: {reason}; pass an existing directory with --root")]
    BadPrefix {
        /// The prefix given.
        path: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The path given is not absolute or contains `..` above the root.
    #[error("path {0} must be absolute and stay inside the root prefix")]
    BadPath(String),
    /// A symlink points outside the prefix.
    #[error("path {path} is refused: symlink {link} points outside the root prefix; remove or fix the link")]
    Escape {
        /// The path asked for.
        path: String,
        /// The offending link, relative to the prefix.
        link: String,
    },
    /// Too many symlinks.
    #[error("path {0} has more than 40 nested symlinks; fix the symlink loop")]
    SymlinkLoop(String),
    /// A file exceeds [`MAX_FILE_BYTES`].
    #[error(
        "file {path} has {size} bytes, more than the {max} bytes a check reads; inspect it by hand"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// An I/O error.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was tried.
        op: &'static str,
        /// The path, relative to the prefix.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Owner, group and permission bits of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMeta {
    /// Permission bits (incl. setuid/setgid/sticky).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// What is at a path (without following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Missing,
    /// A regular file.
    File(FileMeta),
    /// A directory.
    Dir,
    /// A symlink with its target text.
    Symlink(String),
    /// Something else (device, socket, fifo).
    Other,
}

/// A root prefix under which all file access happens (default `/`).
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io<'a>(op: &'static str, path: &'a str) -> impl FnOnce(std::io::Error) -> RootError + 'a {
    move |source| RootError::Io {
        op,
        path: path.to_string(),
        source,
    }
}

impl Root {
    /// Opens a root prefix; it must be an existing directory.
    pub fn new(path: impl AsRef<Path>) -> Result<Root, RootError> {
        let p = path.as_ref();
        let base = fs::canonicalize(p).map_err(|e| RootError::BadPrefix {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?;
        if !base.is_dir() {
            return Err(RootError::BadPrefix {
                path: p.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        Ok(Root { base })
    }

    /// The host's own root, `/`.
    pub fn host() -> Root {
        Root {
            base: PathBuf::from("/"),
        }
    }

    /// True when the prefix is `/`: only then are live state and validation tools used.
    pub fn is_host(&self) -> bool {
        self.base == Path::new("/")
    }

    /// The prefix directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Splits an absolute in-host path into normal components, refusing `..` above the root.
    fn components(path: &str) -> Result<Vec<String>, RootError> {
        if !path.starts_with('/') || path.contains('\0') {
            return Err(RootError::BadPath(path.to_string()));
        }
        let mut out: Vec<String> = Vec::new();
        for c in Path::new(path).components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    if out.pop().is_none() {
                        return Err(RootError::BadPath(path.to_string()));
                    }
                }
                Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
                Component::Prefix(_) => return Err(RootError::BadPath(path.to_string())),
            }
        }
        Ok(out)
    }

    /// Resolves an in-host absolute path to a real path under the prefix, following every
    /// symlink (also a final one when `follow_last`). Returns the in-host path and the real path.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<(String, PathBuf), RootError> {
        let mut todo: Vec<String> = Self::components(path)?;
        todo.reverse();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0usize;
        while let Some(comp) = todo.pop() {
            if comp == "." {
                continue;
            }
            if comp == ".." {
                if done.pop().is_none() {
                    let link = format!("/{}", done.join("/"));
                    return Err(RootError::Escape {
                        path: path.to_string(),
                        link,
                    });
                }
                continue;
            }
            let mut real = self.base.clone();
            for d in &done {
                real.push(d);
            }
            real.push(&comp);
            let is_last = todo.is_empty();
            match fs::symlink_metadata(&real) {
                Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(RootError::SymlinkLoop(path.to_string()));
                    }
                    let target = fs::read_link(&real).map_err(io("read link", path))?;
                    let t = target.as_os_str().to_string_lossy().into_owned();
                    let link_path = format!("/{}/{}", done.join("/"), comp).replace("//", "/");
                    if t.starts_with('/') {
                        done.clear();
                    }
                    // A relative target that climbs above the prefix is an escape.
                    let mut depth = done.len() as i64;
                    for c in t.split('/').filter(|c| !c.is_empty() && *c != ".") {
                        depth += if c == ".." { -1 } else { 1 };
                        if depth < 0 {
                            return Err(RootError::Escape {
                                path: path.to_string(),
                                link: link_path,
                            });
                        }
                    }
                    let mut parts: Vec<String> = t
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect();
                    parts.reverse();
                    todo.extend(parts);
                }
                _ => done.push(comp),
            }
        }
        let mut real = self.base.clone();
        for d in &done {
            real.push(d);
        }
        Ok((format!("/{}", done.join("/")), real))
    }

    /// What is at a path, following symlinks except a final one.
    pub fn entry(&self, path: &str) -> Result<Entry, RootError> {
        let (_, real) = self.resolve(path, false)?;
        match fs::symlink_metadata(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(io("inspect", path)(e)),
            Ok(m) if m.file_type().is_symlink() => {
                let t = fs::read_link(&real).map_err(io("read link", path))?;
                Ok(Entry::Symlink(t.to_string_lossy().into_owned()))
            }
            Ok(m) if m.is_file() => Ok(Entry::File(FileMeta {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })),
            Ok(m) if m.is_dir() => Ok(Entry::Dir),
            Ok(_) => Ok(Entry::Other),
        }
    }

    /// True if the path resolves (following symlinks) to an existing file or directory.
    pub fn exists(&self, path: &str) -> bool {
        matches!(self.resolve(path, true), Ok((_, real)) if real.exists())
    }

    /// True if the path (following symlinks) is a directory.
    pub fn is_dir(&self, path: &str) -> bool {
        matches!(self.resolve(path, true), Ok((_, real)) if real.is_dir())
    }

    /// Metadata of a regular file (following symlinks), `None` if missing.
    pub fn meta(&self, path: &str) -> Result<Option<FileMeta>, RootError> {
        let (_, real) = self.resolve(path, true)?;
        match fs::metadata(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("inspect", path)(e)),
            Ok(m) => Ok(Some(FileMeta {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })),
        }
    }

    /// Reads a file, `None` if it does not exist. Capped at [`MAX_FILE_BYTES`].
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RootError> {
        let (_, real) = self.resolve(path, true)?;
        let m = match fs::metadata(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("inspect", path)(e)),
            Ok(m) => m,
        };
        if !m.is_file() {
            return Err(io("read", path)(std::io::Error::other(
                "not a regular file",
            )));
        }
        if m.len() > MAX_FILE_BYTES {
            return Err(RootError::TooLarge {
                path: path.to_string(),
                size: m.len(),
                max: MAX_FILE_BYTES,
            });
        }
        fs::read(&real).map(Some).map_err(io("read", path))
    }

    /// Lists the names in a directory (sorted), empty if it does not exist.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, RootError> {
        let (_, real) = self.resolve(dir, true)?;
        let rd = match fs::read_dir(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Vec::new()),
            Err(e) => return Err(io("list", dir)(e)),
            Ok(rd) => rd,
        };
        let mut names = Vec::new();
        for e in rd.take(10_000) {
            let e = e.map_err(io("list", dir))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Atomically replaces (or creates) a file: temporary file in the same directory, fsync,
    /// rename, fsync of the directory. An existing file keeps its owner, mode and SELinux label;
    /// a new one gets `new_meta`. A final symlink is followed, so the link itself stays.
    pub fn write_atomic(
        &self,
        path: &str,
        content: &[u8],
        new_meta: FileMeta,
    ) -> Result<(), RootError> {
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(RootError::TooLarge {
                path: path.to_string(),
                size: content.len() as u64,
                max: MAX_FILE_BYTES,
            });
        }
        let (_, real) = self.resolve(path, true)?;
        let dir = real
            .parent()
            .ok_or_else(|| RootError::BadPath(path.to_string()))?
            .to_path_buf();
        let name = real
            .file_name()
            .ok_or_else(|| RootError::BadPath(path.to_string()))?
            .to_string_lossy()
            .into_owned();
        let (meta, label) = match fs::metadata(&real) {
            Ok(m) => (
                FileMeta {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                },
                get_selinux_label(&real),
            ),
            Err(_) => (new_meta, None),
        };
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.preflight-{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create temporary file for", path))?;
            f.write_all(content).map_err(io("write", path))?;
            std::os::unix::fs::fchown(&f, Some(meta.uid), Some(meta.gid))
                .map_err(io("set owner of", path))?;
            f.set_permissions(fs::Permissions::from_mode(meta.mode))
                .map_err(io("set mode of", path))?;
            if let Some(l) = &label {
                set_selinux_label(&tmp, l);
            }
            f.sync_all().map_err(io("fsync", path))?;
            fs::rename(&tmp, &real).map_err(io("rename into", path))?;
            fsync_dir(&dir).map_err(io("fsync directory of", path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        tracing::debug!(path, bytes = content.len(), "wrote file atomically");
        result
    }

    /// Sets mode and owner of an existing file (following symlinks).
    pub fn set_meta(&self, path: &str, meta: FileMeta) -> Result<(), RootError> {
        let (_, real) = self.resolve(path, true)?;
        std::os::unix::fs::chown(&real, Some(meta.uid), Some(meta.gid))
            .map_err(io("set owner of", path))?;
        fs::set_permissions(&real, fs::Permissions::from_mode(meta.mode))
            .map_err(io("set mode of", path))?;
        tracing::debug!(path, mode = format!("{:o}", meta.mode), "set file metadata");
        Ok(())
    }

    /// Creates a symlink at `path` (its parent directory must exist), replacing nothing.
    pub fn symlink(&self, path: &str, target: &str) -> Result<(), RootError> {
        let (_, real) = self.resolve(path, false)?;
        std::os::unix::fs::symlink(target, &real).map_err(io("create symlink", path))?;
        if let Some(d) = real.parent() {
            fsync_dir(d).map_err(io("fsync directory of", path))?;
        }
        tracing::debug!(path, target, "created symlink");
        Ok(())
    }

    /// Removes a file or symlink (not following a final symlink); missing is fine.
    pub fn remove(&self, path: &str) -> Result<(), RootError> {
        let (_, real) = self.resolve(path, false)?;
        match fs::remove_file(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", path)(e)),
            Ok(()) => {
                if let Some(d) = real.parent() {
                    fsync_dir(d).map_err(io("fsync directory of", path))?;
                }
                tracing::debug!(path, "removed file");
                Ok(())
            }
        }
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

const SELINUX_XATTR: &[u8] = b"security.selinux\0";

fn get_selinux_label(path: &Path) -> Option<Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `c` and the attribute name are NUL-terminated; `buf` is valid for `buf.len()`
    // bytes for the duration of the call.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            SELINUX_XATTR.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn set_selinux_label(path: &Path, label: &[u8]) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` and the attribute name are NUL-terminated; `label` is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            SELINUX_XATTR.as_ptr().cast(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(path = %path.display(), "could not copy the SELinux label");
    }
}
