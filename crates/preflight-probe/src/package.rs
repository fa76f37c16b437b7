//! Deployment package verification: is every file of the manifest present, of the right size,
//! with the right SHA-256? The most frequent cause of a paused deployment is a package copied
//! incompletely (often the database backups), so this reads every byte, streaming, and reports
//! each file as it is done.
//!
//! Sizes are compared first: a file of the wrong size is reported without hashing it. Reads are
//! 1 MiB at a time, and hashing uses ring's SHA-256 (with the CPU's SHA extensions where
//! present), so throughput tracks `sha256sum`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Most files one request may list.
pub const MAX_FILES: usize = 10_000;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;
const CHUNK: usize = 1 << 20;

/// A file the manifest expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    /// Absolute path on this host.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// What was found for one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileStatus {
    /// Present, right size, right hash.
    Ok,
    /// No such file.
    Missing,
    /// Present but not a regular file (a directory, a device...).
    NotAFile,
    /// Size differs (not hashed). Only whether it is larger than planned is told, never the
    /// size itself: the check must not reveal what a file it was pointed at holds.
    WrongSize { larger: bool },
    /// Size matches, content differs (the observed hash is never reported).
    WrongHash,
    /// The path resolves to a place the package check never reads (see [`forbidden`]).
    Refused { reason: String },
    /// Could not be read (permissions, I/O error).
    Unreadable { error: String },
    /// Stopped before this file was finished.
    Cancelled,
}

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    pub path: String,
    pub expected_size: u64,
    #[serde(flatten)]
    pub status: FileStatus,
    /// Bytes read and hashed for this file.
    pub bytes_hashed: u64,
}

/// A manifest that cannot be checked as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidManifest {
    #[error("files: {0} listed, at most {MAX_FILES} are accepted per request")]
    TooMany(usize),
    #[error("files: the list is empty")]
    Empty,
    #[error(
        "files[{index}].path {path:?} must be absolute, without '..', at most {MAX_PATH} bytes"
    )]
    Path { index: usize, path: String },
    #[error("files[{index}].sha256 {value:?} must be 64 hex digits")]
    Hash { index: usize, value: String },
    #[error("files[{index}].path {path:?}: {reason}")]
    Forbidden {
        index: usize,
        path: String,
        reason: String,
    },
}

/// Places the package check never reads, whatever a plan says: kernel and device trees, and
/// files that hold secrets (password hashes, sudo rules, SSH host keys, TLS private keys).
/// A deployment package is never there; reading them would let a plan learn about them.
pub const FORBIDDEN_PREFIXES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/pki/tls/private",
    "/etc/security/opasswd",
];
/// Path components that mark a private key directory anywhere (`/root/.ssh`, `~/.gnupg`).
const FORBIDDEN_COMPONENTS: &[&str] = &[".ssh", ".gnupg"];

/// Why the package check refuses `path`, if it does: under one of [`FORBIDDEN_PREFIXES`], in a
/// private key directory, or under the agent's own state directory `state_dir` (its key,
/// certificate and configuration). Compared by components, so `/devices` is not `/dev`.
pub fn forbidden(path: &Path, state_dir: Option<&Path>) -> Option<String> {
    if let Some(p) = FORBIDDEN_PREFIXES
        .iter()
        .find(|p| path.starts_with(Path::new(p)))
    {
        return Some(format!(
            "the package check never reads under {p} (system or secret files): list the package's own files"
        ));
    }
    if let Some(c) = path.components().find_map(|c| match c {
        Component::Normal(n) => FORBIDDEN_COMPONENTS
            .iter()
            .find(|f| n == std::ffi::OsStr::new(f)),
        _ => None,
    }) {
        return Some(format!(
            "the package check never reads inside a {c} directory (private keys): list the package's own files"
        ));
    }
    if let Some(dir) = state_dir {
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if path.starts_with(dir) || path.starts_with(&real) {
            return Some(format!(
                "{} is the agent's state directory (its key and certificate): the package check never reads it",
                dir.display()
            ));
        }
    }
    None
}

/// [`validate`], and no path the package check refuses (see [`forbidden`]).
pub fn validate_for(
    files: &[ExpectedFile],
    state_dir: Option<&Path>,
) -> Result<(), InvalidManifest> {
    validate(files)?;
    for (index, f) in files.iter().enumerate() {
        if let Some(reason) = forbidden(Path::new(&f.path), state_dir) {
            return Err(InvalidManifest::Forbidden {
                index,
                path: f.path.chars().take(200).collect(),
                reason,
            });
        }
    }
    Ok(())
}

/// Checks the request before any file is touched.
pub fn validate(files: &[ExpectedFile]) -> Result<(), InvalidManifest> {
    if files.is_empty() {
        return Err(InvalidManifest::Empty);
    }
    if files.len() > MAX_FILES {
        return Err(InvalidManifest::TooMany(files.len()));
    }
    for (index, f) in files.iter().enumerate() {
        let p = Path::new(&f.path);
        if f.path.len() > MAX_PATH
            || !p.is_absolute()
            || f.path.contains('\0')
            || p.components().any(|c| c == Component::ParentDir)
        {
            return Err(InvalidManifest::Path {
                index,
                path: f.path.chars().take(200).collect(),
            });
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidManifest::Hash {
                index,
                value: f.sha256.chars().take(80).collect(),
            });
        }
    }
    Ok(())
}

/// Verifies every file in order, calling `on_file` after each one. Stops early (marking the
/// rest cancelled) once `cancel` is set.
///
/// Paths the check refuses ([`forbidden`], with the agent's `state_dir`) are refused before
/// anything is read, and again after symbolic links are resolved.
pub fn verify(
    files: &[ExpectedFile],
    state_dir: Option<&Path>,
    cancel: &AtomicBool,
    mut on_file: impl FnMut(&FileCheck),
) -> Result<Vec<FileCheck>, InvalidManifest> {
    validate_for(files, state_dir)?;
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (status, bytes_hashed) = if cancel.load(Ordering::Relaxed) {
            (FileStatus::Cancelled, 0)
        } else {
            check_one(f, state_dir, &mut buf, cancel)
        };
        let c = FileCheck {
            path: f.path.clone(),
            expected_size: f.size,
            status,
            bytes_hashed,
        };
        tracing::debug!(path = %c.path, status = ?c.status, "package file checked");
        on_file(&c);
        out.push(c);
    }
    Ok(out)
}

fn check_one(
    f: &ExpectedFile,
    state_dir: Option<&Path>,
    buf: &mut [u8],
    cancel: &AtomicBool,
) -> (FileStatus, u64) {
    // A link from an allowed place into a refused one is refused too; the resolved path is
    // what is opened, so it cannot change in between.
    let real: PathBuf = match std::fs::canonicalize(&f.path) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (FileStatus::Missing, 0),
        Err(e) => {
            return (
                FileStatus::Unreadable {
                    error: e.to_string(),
                },
                0,
            )
        }
    };
    if let Some(reason) = forbidden(&real, state_dir) {
        return (FileStatus::Refused { reason }, 0);
    }
    let meta = match std::fs::metadata(&real) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (FileStatus::Missing, 0),
        Err(e) => {
            return (
                FileStatus::Unreadable {
                    error: e.to_string(),
                },
                0,
            )
        }
    };
    if !meta.is_file() {
        return (FileStatus::NotAFile, 0);
    }
    if meta.len() != f.size {
        return (
            FileStatus::WrongSize {
                larger: meta.len() > f.size,
            },
            0,
        );
    }
    match hash_file(&real, buf, cancel) {
        Ok(None) => (FileStatus::Cancelled, 0),
        Ok(Some((digest, n))) if digest.eq_ignore_ascii_case(&f.sha256) => (FileStatus::Ok, n),
        Ok(Some((_, n))) => (FileStatus::WrongHash, n),
        Err(e) => (
            FileStatus::Unreadable {
                error: e.to_string(),
            },
            0,
        ),
    }
}

/// SHA-256 of a file as hex and the bytes read; `None` when cancelled.
pub fn hash_file(
    path: &Path,
    buf: &mut [u8],
    cancel: &AtomicBool,
) -> io::Result<Option<(String, u64)>> {
    let mut file = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        total += n as u64;
    }
    Ok(Some((hex::encode(ctx.finish()), total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
    }

    #[test]
    fn every_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let good = vec![7u8; 3 * CHUNK + 17];
        std::fs::write(p("good"), &good).unwrap();
        std::fs::write(p("short"), b"abc").unwrap();
        std::fs::write(p("changed"), b"abd").unwrap();
        std::fs::create_dir(p("dir")).unwrap();
        let files = vec![
            ExpectedFile {
                path: p("good"),
                size: good.len() as u64,
                sha256: sha(&good),
            },
            ExpectedFile {
                path: p("short"),
                size: 10,
                sha256: sha(b"abc"),
            },
            ExpectedFile {
                path: p("changed"),
                size: 3,
                sha256: sha(b"abc").to_uppercase(),
            },
            ExpectedFile {
                path: p("missing"),
                size: 1,
                sha256: sha(b"x"),
            },
            ExpectedFile {
                path: p("dir"),
                size: 1,
                sha256: sha(b"x"),
            },
        ];
        let mut seen = 0;
        let r = verify(&files, None, &AtomicBool::new(false), |_| seen += 1).unwrap();
        assert_eq!(seen, 5);
        assert_eq!(r[0].status, FileStatus::Ok);
        assert_eq!(r[0].bytes_hashed, good.len() as u64);
        assert_eq!(r[1].status, FileStatus::WrongSize { larger: false });
        assert_eq!(r[2].status, FileStatus::WrongHash);
        assert_eq!(r[3].status, FileStatus::Missing);
        assert_eq!(r[4].status, FileStatus::NotAFile);
        // Nothing observed is ever reported: neither the size nor the hash of a file.
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains(&sha(b"abd")), "{json}");
        assert!(!json.contains("actual"), "{json}");
        assert!(json.contains("\"larger\":false"), "{json}");
        let cancelled = verify(&files, None, &AtomicBool::new(true), |_| {}).unwrap();
        assert!(cancelled.iter().all(|c| c.status == FileStatus::Cancelled));
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let ok = ExpectedFile {
            path: "/a".into(),
            size: 1,
            sha256: "0".repeat(64),
        };
        assert_eq!(validate(&[]), Err(InvalidManifest::Empty));
        for (bad, needle) in [
            (
                ExpectedFile {
                    path: "rel/a".into(),
                    ..ok.clone()
                },
                "files[1].path",
            ),
            (
                ExpectedFile {
                    path: "/a/../etc/shadow".into(),
                    ..ok.clone()
                },
                "files[1].path",
            ),
            (
                ExpectedFile {
                    sha256: "xyz".into(),
                    ..ok.clone()
                },
                "files[1].sha256",
            ),
            (
                ExpectedFile {
                    sha256: "g".repeat(64),
                    ..ok.clone()
                },
                "files[1].sha256",
            ),
        ] {
            let e = validate(&[ok.clone(), bad]).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let many = vec![ok; MAX_FILES + 1];
        assert!(validate(&many).unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn secret_and_state_paths_are_refused() {
        let state = tempfile::tempdir().unwrap();
        let key = state.path().join("identity.pem");
        std::fs::write(&key, b"secret").unwrap();
        let file = |path: &str| ExpectedFile {
            path: path.into(),
            size: 6,
            sha256: sha(b"secret"),
        };
        let key_path = key.to_str().unwrap();
        for path in [
            key_path,
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/sudoers.d/x",
            "/etc/ssh/ssh_host_ed25519_key",
            "/root/.ssh/id_rsa",
            "/proc/self/environ",
            "/sys/kernel/x",
            "/dev/sda",
        ] {
            let e = validate_for(&[file(path)], Some(state.path()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("files[0].path") && e.contains("never reads"),
                "{e}"
            );
            assert!(
                verify(
                    &[file(path)],
                    Some(state.path()),
                    &AtomicBool::new(false),
                    |_| {}
                )
                .is_err(),
                "{path}"
            );
        }
        // Component-wise: /devices and /etc/sshd-app are not /dev and /etc/ssh.
        assert!(forbidden(Path::new("/devices/x"), None).is_none());
        assert!(forbidden(Path::new("/etc/sshd-app/x"), None).is_none());
        // A link from an allowed place into the state directory is refused once resolved.
        let other = tempfile::tempdir().unwrap();
        let link = other.path().join("pkg.tar.gz");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let r = verify(
            &[file(link.to_str().unwrap())],
            Some(state.path()),
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap();
        assert!(
            matches!(&r[0].status, FileStatus::Refused { reason } if reason.contains("state directory")),
            "{:?}",
            r[0].status
        );
        assert_eq!(r[0].bytes_hashed, 0);
    }
}
