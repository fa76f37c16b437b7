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
use std::path::{Component, Path};
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
    /// Size differs (not hashed).
    WrongSize { actual: u64 },
    /// Size matches, content differs.
    WrongHash { actual: String },
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
pub fn verify(
    files: &[ExpectedFile],
    cancel: &AtomicBool,
    mut on_file: impl FnMut(&FileCheck),
) -> Result<Vec<FileCheck>, InvalidManifest> {
    validate(files)?;
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (status, bytes_hashed) = if cancel.load(Ordering::Relaxed) {
            (FileStatus::Cancelled, 0)
        } else {
            check_one(f, &mut buf, cancel)
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

fn check_one(f: &ExpectedFile, buf: &mut [u8], cancel: &AtomicBool) -> (FileStatus, u64) {
    let meta = match std::fs::metadata(&f.path) {
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
        return (FileStatus::WrongSize { actual: meta.len() }, 0);
    }
    match hash_file(Path::new(&f.path), buf, cancel) {
        Ok(None) => (FileStatus::Cancelled, 0),
        Ok(Some((digest, n))) if digest.eq_ignore_ascii_case(&f.sha256) => (FileStatus::Ok, n),
        Ok(Some((digest, n))) => (FileStatus::WrongHash { actual: digest }, n),
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
        let r = verify(&files, &AtomicBool::new(false), |_| seen += 1).unwrap();
        assert_eq!(seen, 5);
        assert_eq!(r[0].status, FileStatus::Ok);
        assert_eq!(r[0].bytes_hashed, good.len() as u64);
        assert_eq!(r[1].status, FileStatus::WrongSize { actual: 3 });
        assert_eq!(
            r[2].status,
            FileStatus::WrongHash {
                actual: sha(b"abd")
            }
        );
        assert_eq!(r[3].status, FileStatus::Missing);
        assert_eq!(r[4].status, FileStatus::NotAFile);
        let cancelled = verify(&files, &AtomicBool::new(true), |_| {}).unwrap();
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
}
