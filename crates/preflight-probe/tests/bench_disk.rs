//! Disk benchmark against real files: runs that measure, runs that are cancelled, and every
//! refusal the agent promises before touching a production disk.
//!
//! Temporary directories live under the target directory (`CARGO_TARGET_TMPDIR`), which is on
//! a real filesystem, because /tmp may be tmpfs where O_DIRECT is refused. Each test uses its
//! own lock file so the tests can run in parallel; the lock test holds one on purpose.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use preflight_probe::bench::disk::{
    run_disk, space_margin, DiskLimits, DiskLock, DiskReport, DiskSpec, DiskTarget, Engine, RwMode,
};
use preflight_probe::bench::{BenchError, Phase, Progress};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under the target dir")
}

/// Limits with a lock file private to this test directory.
fn limits(dir: &Path) -> DiskLimits {
    DiskLimits {
        lock_path: dir.with_extension("lock"),
        ..DiskLimits::default()
    }
}

fn small(dir: &Path, rw: RwMode, iodepth: u32) -> DiskSpec {
    DiskSpec {
        rw,
        iodepth,
        size: 64 << 20,
        time: Duration::from_secs(2),
        ..DiskSpec::new(DiskTarget::TempFileIn(dir.to_path_buf()))
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read test dir")
        .map(|e| e.expect("dir entry").path())
        .collect()
}

fn run(spec: &DiskSpec, limits: &DiskLimits) -> Result<DiskReport, BenchError> {
    let params = spec.validate()?;
    run_disk(&params, limits, &|_| {}, &AtomicBool::new(false))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn small_random_read_run_measures_and_leaves_no_file() {
    let dir = tempdir();
    let phases = Mutex::new(Vec::new());
    let params = small(dir.path(), RwMode::RandRead, 1).validate().unwrap();
    let report = run_disk(
        &params,
        &limits(dir.path()),
        &|p: Progress| phases.lock().unwrap().push(p),
        &AtomicBool::new(false),
    )
    .expect("disk run");
    let read = report.read.as_ref().expect("read stats");
    assert!(read.iops > 0.0, "{report:?}");
    assert!(read.latency.p50_us > 0.0 && read.latency.p99_us >= read.latency.p50_us);
    assert!(read.latency.max_us >= read.latency.p99_us);
    assert!(report.write.is_none());
    assert_eq!(report.engine, Engine::Psync);
    assert!(!report.buffered);
    assert_eq!(report.params.size_bytes, 64 << 20);
    assert!(
        (1.9..4.0).contains(&report.elapsed_s),
        "elapsed {}",
        report.elapsed_s
    );
    assert!(
        entries(dir.path()).is_empty(),
        "test file left behind: {:?}",
        entries(dir.path())
    );
    let phases = phases.into_inner().unwrap();
    assert!(phases
        .iter()
        .any(|p| p.phase == Phase::Run && p.current > 0.0));
    assert!(phases.iter().all(|p| (0.0..=1.0).contains(&p.fraction)));
    // JSON carries the units in the field names and the parameters used.
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["read"]["iops"].as_f64().unwrap() > 0.0);
    assert!(json["read"]["latency"]["p99_us"].is_number());
    assert_eq!(json["params"]["rw"], "randread");
    assert_eq!(json["params"]["bs_bytes"], 4096);
    assert_eq!(json["engine"], "psync");
}

#[test]
fn queue_depth_32_mixed_run_uses_io_uring_and_counts_both_directions() {
    let dir = tempdir();
    let report =
        run(&small(dir.path(), RwMode::RandRw, 32), &limits(dir.path())).expect("disk run");
    assert_eq!(report.engine, Engine::IoUring);
    let (r, w) = (report.read.unwrap(), report.write.unwrap());
    assert!(r.iops > 0.0 && w.iops > 0.0);
    assert!((report.iops - (r.iops + w.iops)).abs() < 1.0);
    assert!(entries(dir.path()).is_empty());
}

/// The io_uring engine submits in chunks and reaps in batches: every completion still lands
/// in the latency histogram exactly once, whatever the queue depth.
#[test]
fn deep_queues_record_every_completion_exactly_once() {
    for (rw, iodepth) in [(RwMode::RandWrite, 128), (RwMode::RandRead, 8)] {
        let dir = tempdir();
        let spec = DiskSpec {
            time: Duration::from_secs(1),
            ..small(dir.path(), rw, iodepth)
        };
        let report = run(&spec, &limits(dir.path())).expect("disk run");
        assert_eq!(report.engine, Engine::IoUring);
        let s = if rw == RwMode::RandWrite {
            report.write.as_ref().unwrap()
        } else {
            report.read.as_ref().unwrap()
        };
        assert!(s.ios > 0, "{report:?}");
        assert_eq!(s.latency.samples, s.ios, "one latency sample per request");
        assert_eq!(report.latency.samples, s.ios);
        assert_eq!(s.bytes, s.ios * 4096);
        assert!((s.iops - s.ios as f64 / report.elapsed_s).abs() < 1.0);
        assert!(s.latency.min_us > 0.0 && s.latency.min_us <= s.latency.p50_us);
        assert!(s.latency.p99_us <= s.latency.max_us);
        assert!(entries(dir.path()).is_empty());
    }
}

#[test]
fn sequential_write_reports_throughput() {
    let dir = tempdir();
    let spec = DiskSpec {
        bs: 1 << 20,
        time: Duration::from_secs(1),
        ..small(dir.path(), RwMode::Write, 4)
    };
    let report = run(&spec, &limits(dir.path())).expect("disk run");
    let w = report.write.unwrap();
    assert!(w.mib_per_s > 0.0);
    assert_eq!(w.bytes, w.ios << 20);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn fdatasync_test_stops_after_size_and_reports_sync_latency() {
    // The etcd recipe, scaled down: 2300-byte buffered writes, each followed by fdatasync.
    let dir = tempdir();
    let spec = DiskSpec {
        rw: RwMode::Write,
        bs: 2300,
        size: 2300 * 200,
        direct: false,
        fdatasync: 1,
        time_based: false,
        time: Duration::from_secs(60),
        ..DiskSpec::new(DiskTarget::TempFileIn(dir.path().to_path_buf()))
    };
    let report = run(&spec, &limits(dir.path())).expect("disk run");
    assert!(report.buffered);
    let w = report.write.unwrap();
    assert_eq!(w.ios, 200, "one pass over size");
    let sync = report.fdatasync.expect("fdatasync latency");
    assert_eq!(sync.samples, 200);
    assert!(sync.p50_us > 0.0 && sync.p99_us >= sync.p50_us && sync.max_us >= sync.p99_us);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn cancelled_midway_returns_cancelled_and_leaves_no_file() {
    for depth in [1, 32] {
        let dir = tempdir();
        let cancel = AtomicBool::new(false);
        let params = DiskSpec {
            time: Duration::from_secs(30),
            ..small(dir.path(), RwMode::RandWrite, depth)
        }
        .validate()
        .unwrap();
        let started = std::time::Instant::now();
        // Cancel from the progress callback once the measurement is under way.
        let on_progress = |p: Progress| {
            if p.phase == Phase::Run && p.current > 0.0 {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let err = run_disk(&params, &limits(dir.path()), &on_progress, &cancel).unwrap_err();
        assert!(matches!(err, BenchError::Cancelled), "depth {depth}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cancel took {:?}",
            started.elapsed()
        );
        assert!(
            entries(dir.path()).is_empty(),
            "depth {depth}: file left behind"
        );
    }
}

#[test]
fn cancelled_during_layout_leaves_no_file() {
    let dir = tempdir();
    let cancel = AtomicBool::new(false);
    let params = small(dir.path(), RwMode::RandRead, 1).validate().unwrap();
    let on_progress = |p: Progress| {
        if p.phase == Phase::Layout {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let err = run_disk(&params, &limits(dir.path()), &on_progress, &cancel).unwrap_err();
    assert!(matches!(err, BenchError::Cancelled), "{err}");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn refuses_a_path_that_is_not_a_directory() {
    let dir = tempdir();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for path in [file.clone(), dir.path().join("missing")] {
        let spec = small(&path, RwMode::RandRead, 1);
        let err = run(&spec, &limits(dir.path())).unwrap_err();
        assert!(
            matches!(err, BenchError::NotADirectory { .. }),
            "{path:?}: {err}"
        );
        assert!(err.to_string().contains("is not a directory"));
    }
    assert_eq!(entries(dir.path()), vec![file]);
}

#[test]
fn refuses_free_space_below_size_plus_margin() {
    let dir = tempdir();
    let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
    let available = st.blocks_available() as u64 * st.fragment_size() as u64;
    // Fits in the free space, but not together with the margin.
    let size = (available - space_margin(available) / 2) & !4095;
    let spec = DiskSpec {
        size,
        ..small(dir.path(), RwMode::RandRead, 1)
    };
    let err = run(&spec, &limits(dir.path())).unwrap_err();
    assert!(matches!(err, BenchError::InsufficientSpace { .. }), "{err}");
    assert!(err.to_string().contains("not enough free space"));
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn refuses_sizes_over_the_caps() {
    let dir = tempdir();
    // The fixed cap.
    let tight = DiskLimits {
        max_size: 32 << 20,
        ..limits(dir.path())
    };
    let err = run(&small(dir.path(), RwMode::RandRead, 1), &tight).unwrap_err();
    assert!(
        matches!(err, BenchError::SizeOverCap { cap, .. } if cap == 32 << 20),
        "{err}"
    );
    // Half the free space (with the fixed cap out of the way).
    let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
    let available = st.blocks_available() as u64 * st.fragment_size() as u64;
    let size = (available / 2 + (available / 4).min(8 << 30)) & !4095;
    let loose = DiskLimits {
        max_size: u64::MAX,
        ..limits(dir.path())
    };
    let spec = DiskSpec {
        size,
        ..small(dir.path(), RwMode::RandRead, 1)
    };
    let err = run(&spec, &loose).unwrap_err();
    assert!(
        matches!(err, BenchError::SizeOverCap { why, .. } if why.contains("half")),
        "{err}"
    );
    // The 64 GiB default.
    assert_eq!(DiskLimits::default().max_size, 64 << 30);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn refuses_durations_over_600_seconds() {
    let dir = tempdir();
    let spec = DiskSpec {
        time: Duration::from_secs(590),
        warmup: Duration::from_secs(20),
        ..small(dir.path(), RwMode::RandRead, 1)
    };
    let err = spec.validate().unwrap_err();
    assert!(
        matches!(
            err,
            BenchError::DurationOverCap {
                secs: 610,
                cap_secs: 600
            }
        ),
        "{err}"
    );
}

#[test]
fn refuses_a_second_disk_benchmark_while_one_runs() {
    let dir = tempdir();
    let lim = limits(dir.path());
    let held = DiskLock::acquire(&lim.lock_path).expect("first holder");
    let err = run(&small(dir.path(), RwMode::RandRead, 1), &lim).unwrap_err();
    assert!(matches!(err, BenchError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("another disk benchmark"));
    assert!(entries(dir.path()).is_empty());
    drop(held);

    // A running benchmark holds the lock for its whole run.
    let cancel = AtomicBool::new(false);
    let params = DiskSpec {
        time: Duration::from_secs(30),
        ..small(dir.path(), RwMode::RandRead, 1)
    }
    .validate()
    .unwrap();
    let second: Mutex<Option<Result<DiskLock, BenchError>>> = Mutex::new(None);
    let on_progress = |p: Progress| {
        if p.phase == Phase::Run {
            let mut s = second.lock().unwrap();
            if s.is_none() {
                *s = Some(DiskLock::acquire(&lim.lock_path));
                cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    let err = run_disk(&params, &lim, &on_progress, &cancel).unwrap_err();
    assert!(matches!(err, BenchError::Cancelled));
    let second = second.into_inner().unwrap().expect("tried while running");
    assert!(matches!(second, Err(BenchError::Busy { .. })), "{second:?}");
    // Released afterwards.
    DiskLock::acquire(&lim.lock_path).expect("free after the run");
}

/// A tmpfs mounted by the test, unmounted in Drop even when the test fails.
struct TmpfsMount(tempfile::TempDir);

impl TmpfsMount {
    fn new(options: &str) -> TmpfsMount {
        let dir = tempdir();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
        .expect("mount tmpfs");
        TmpfsMount(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn refuses_a_read_only_filesystem() {
    if !is_root() {
        eprintln!("SKIP: mounting a read-only tmpfs needs root");
        return;
    }
    let m = TmpfsMount::new("ro,size=1m");
    let err = run(&small(m.path(), RwMode::RandRead, 1), &limits(m.path())).unwrap_err();
    assert!(
        matches!(err, BenchError::ReadOnlyFilesystem { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("read-only"));
}

#[test]
fn tmpfs_is_refused_for_o_direct_and_runs_buffered_only_when_asked() {
    let shm = Path::new("/dev/shm");
    let on_tmpfs = nix::sys::statfs::statfs(shm)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false);
    let mount;
    let dir = if is_root() {
        mount = TmpfsMount::new("size=512m");
        mount.path().to_path_buf()
    } else if on_tmpfs {
        shm.to_path_buf()
    } else {
        eprintln!("SKIP: no tmpfs at /dev/shm and not root to mount one");
        return;
    };
    let lock_dir = tempdir();
    let lim = limits(lock_dir.path());
    let spec = DiskSpec {
        size: 16 << 20,
        time: Duration::from_millis(500),
        ..small(&dir, RwMode::RandRead, 1)
    };
    let err = run(&spec, &lim).unwrap_err();
    match &err {
        BenchError::DirectIoUnsupported { fs, .. } => assert_eq!(fs, "tmpfs"),
        other => panic!("expected DirectIoUnsupported, got {other}"),
    }
    assert!(err.to_string().contains("--direct=0"));
    let buffered = DiskSpec {
        direct: false,
        ..spec
    };
    let report = run(&buffered, &lim).expect("buffered run");
    assert!(report.buffered);
    assert_eq!(report.filesystem, "tmpfs");
    assert!(report.read.unwrap().iops > 0.0);
    assert!(entries(&dir)
        .iter()
        .all(|p| !p.to_string_lossy().contains(".preflight-bench-")));
}

#[test]
fn existing_file_is_used_in_place_and_kept() {
    let dir = tempdir();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![7u8; 8 << 20]).unwrap();
    let spec = DiskSpec {
        size: 0,
        time: Duration::from_millis(500),
        ..DiskSpec::new(DiskTarget::ExistingFile(file.clone()))
    };
    let report = run(&spec, &limits(dir.path())).expect("run on existing file");
    assert_eq!(report.params.size_bytes, 8 << 20);
    assert!(report.read.unwrap().iops > 0.0);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        8 << 20,
        "file kept intact"
    );

    // Larger than the file, a symlink, a directory: refused.
    let too_big = DiskSpec {
        size: 16 << 20,
        ..spec.clone()
    };
    assert!(matches!(
        run(&too_big, &limits(dir.path())),
        Err(BenchError::BadTestFile { .. })
    ));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let via_link = DiskSpec {
        target: DiskTarget::ExistingFile(link),
        ..spec.clone()
    };
    assert!(matches!(
        run(&via_link, &limits(dir.path())),
        Err(BenchError::BadTestFile { .. })
    ));
    let on_dir = DiskSpec {
        target: DiskTarget::ExistingFile(dir.path().to_path_buf()),
        ..spec
    };
    assert!(matches!(
        run(&on_dir, &limits(dir.path())),
        Err(BenchError::BadTestFile { .. })
    ));
    assert!(file.exists());
}
