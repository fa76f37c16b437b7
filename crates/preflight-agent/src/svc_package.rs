//! Agent.VerifyPackage: streams one result per file while the blocking reader works; a caller
//! that goes away stops the reading.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use preflight_probe::package::{self, ExpectedFile, FileCheck, FileStatus};
use preflight_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

/// The stream of per-file results.
pub type EventStream = ReceiverStream<Result<pb::VerifyPackageEvent, Status>>;

/// One file's result on the wire.
pub fn to_pb(c: &FileCheck) -> pb::PackageFileResult {
    let mut r = pb::PackageFileResult {
        path: c.path.clone(),
        expected_size: c.expected_size,
        bytes_hashed: c.bytes_hashed,
        ..Default::default()
    };
    use pb::PackageFileStatus as S;
    let status = match &c.status {
        FileStatus::Ok => S::Ok,
        FileStatus::Missing => S::Missing,
        FileStatus::NotAFile => S::NotAFile,
        FileStatus::WrongSize { larger } => {
            r.set_size_relation(if *larger {
                pb::SizeRelation::Larger
            } else {
                pb::SizeRelation::Smaller
            });
            S::WrongSize
        }
        FileStatus::WrongHash => S::WrongHash,
        FileStatus::Refused { reason } => {
            r.error = reason.clone();
            S::Refused
        }
        FileStatus::Unreadable { error } => {
            r.error = error.clone();
            S::Unreadable
        }
        FileStatus::Cancelled => S::Cancelled,
    };
    r.set_status(status);
    r
}

/// The files of a VerifyPackage request, validated (also called by the fuzz targets): no path
/// under `state_dir` (the agent's key and certificate) or any other place the package check
/// never reads (`package::forbidden`).
pub(crate) fn expected_files(
    r: pb::VerifyPackageRequest,
    state_dir: &Path,
) -> Result<Vec<ExpectedFile>, Status> {
    let files: Vec<ExpectedFile> = r
        .files
        .into_iter()
        .map(|f| ExpectedFile {
            path: f.path,
            size: f.size,
            sha256: f.sha256.to_ascii_lowercase(),
        })
        .collect();
    package::validate_for(&files, Some(state_dir))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(files)
}

pub async fn verify_package(
    req: Request<pb::VerifyPackageRequest>,
    state_dir: &Path,
) -> Result<EventStream, Status> {
    let files = expected_files(req.into_inner(), state_dir)?;
    let state_dir: PathBuf = state_dir.to_path_buf();
    let total = files.len() as u32;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let cancel = Arc::new(AtomicBool::new(false));
    tokio::task::spawn_blocking(move || {
        let mut done = 0u32;
        let r = package::verify(&files, Some(&state_dir), &cancel, |c| {
            done += 1;
            let ev = pb::VerifyPackageEvent {
                file: Some(to_pb(c)),
                done,
                total,
            };
            if tx.blocking_send(Ok(ev)).is_err() {
                // The caller went away: stop reading.
                cancel.store(true, Ordering::Relaxed);
            }
        });
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(Status::invalid_argument(e.to_string())));
        }
    });
    Ok(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each status keeps the word it had as a string, in `--output json` and in the sweep's
    /// findings; a wrong size says only smaller or larger.
    #[test]
    fn statuses_keep_their_words() {
        let cases = [
            (FileStatus::Ok, "ok", ""),
            (FileStatus::Missing, "missing", ""),
            (FileStatus::NotAFile, "not_a_file", ""),
            (
                FileStatus::WrongSize { larger: true },
                "wrong_size",
                "larger",
            ),
            (
                FileStatus::WrongSize { larger: false },
                "wrong_size",
                "smaller",
            ),
            (FileStatus::WrongHash, "wrong_hash", ""),
            (FileStatus::Refused { reason: "r".into() }, "refused", ""),
            (
                FileStatus::Unreadable { error: "e".into() },
                "unreadable",
                "",
            ),
            (FileStatus::Cancelled, "cancelled", ""),
        ];
        for (status, word, relation) in cases {
            let r = to_pb(&FileCheck {
                path: "/opt/app.tar".into(),
                expected_size: 1,
                status,
                bytes_hashed: 0,
            });
            let v = serde_json::to_value(&r).expect("json");
            assert_eq!(v["status"], word);
            assert_eq!(v["size_relation"], relation, "{word}");
        }
    }
}
