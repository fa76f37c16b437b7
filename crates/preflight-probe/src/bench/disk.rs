//! Disk benchmark: random and sequential IOPS and throughput with O_DIRECT at a real queue
//! depth, and fdatasync latency, as fio measures them.
//!
//! Engines: queue depth 1 uses `pread`/`pwrite` on one thread (fio's `psync`); deeper queues use
//! io_uring with registered buffers (fio's `io_uring` engine), so the device sees exactly
//! `iodepth` requests in flight. Latency is the completion latency of each request (fio's
//! `clat`), kept in a [`LatencyHistogram`].
//!
//! Safety on a production host:
//! - the test file is created with a unique name (`O_EXCL`) in the directory and unlinked as
//!   soon as it is open, so it disappears at the end, on error, on cancel, on Ctrl-C and even
//!   if the process is killed; its space returns when the descriptor closes;
//! - refused before anything is written: a path that is not a directory, a read-only
//!   filesystem, free space below size plus margin, a size over the cap (half the free space
//!   and [`DiskLimits::max_size`]), a duration over 600 s, a second disk benchmark on the host
//!   (an exclusive `flock` on [`DiskLimits::lock_path`]), and O_DIRECT on a filesystem without
//!   it (tmpfs): buffered I/O runs only when the caller sets `direct = false`, and the report
//!   then says `buffered: true`;
//! - a file the caller names with [`DiskTarget::ExistingFile`] is used in place and never
//!   deleted (write modes overwrite its first `size` bytes).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::{
    check_duration, BenchError, FastRng, LatencyHistogram, LatencySummary, Phase, Progress, Unit,
    PROGRESS_INTERVAL,
};

const MIB: f64 = 1024.0 * 1024.0;

/// Default cap on the test file size (the other cap is half the free space).
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// Largest block size accepted.
pub const MAX_BS: u64 = 64 << 20;

/// Largest queue depth accepted.
pub const MAX_IODEPTH: u32 = 256;

/// Free space kept beyond the test file: 256 MiB plus 5 % of the file.
pub fn space_margin(size: u64) -> u64 {
    (256 << 20) + size / 20
}

/// Buffer alignment for O_DIRECT: covers 4 KiB logical sectors.
const ALIGN: usize = 4096;

/// Transparent huge page size on x86-64 and most arm64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// I/O pattern (`--rw`, fio's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RwMode {
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Random mix of reads and writes (`rwmixread` % reads).
    RandRw,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
}

impl RwMode {
    fn random(self) -> bool {
        matches!(self, RwMode::RandRead | RwMode::RandWrite | RwMode::RandRw)
    }
    fn writes(self) -> bool {
        !matches!(self, RwMode::RandRead | RwMode::Read)
    }
}

impl std::str::FromStr for RwMode {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "randread" => Ok(RwMode::RandRead),
            "randwrite" => Ok(RwMode::RandWrite),
            "randrw" => Ok(RwMode::RandRw),
            "read" => Ok(RwMode::Read),
            "write" => Ok(RwMode::Write),
            _ => Err(BenchError::invalid(
                "rw",
                s,
                "use randread, randwrite, randrw, read or write",
            )),
        }
    }
}

impl std::fmt::Display for RwMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RwMode::RandRead => "randread",
            RwMode::RandWrite => "randwrite",
            RwMode::RandRw => "randrw",
            RwMode::Read => "read",
            RwMode::Write => "write",
        })
    }
}

/// Where the benchmark does its I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskTarget {
    /// A new file with a unique name in this directory, written before the measurement and
    /// removed afterwards.
    TempFileIn(PathBuf),
    /// An existing regular file, used in place and never deleted (write modes overwrite its
    /// first `size` bytes). Used to run preflight and fio on the very same file.
    ExistingFile(PathBuf),
}

/// Disk benchmark request as the caller states it (fio option names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Where to do the I/O.
    pub target: DiskTarget,
    /// Pattern (`--rw`).
    pub rw: RwMode,
    /// Bytes per request (`--bs`).
    pub bs: u64,
    /// Requests in flight (`--iodepth`).
    pub iodepth: u32,
    /// Test file size, the region the offsets fall in (`--size`); 0 with an existing file
    /// means the whole file.
    pub size: u64,
    /// Measured duration (`--time`, fio's `runtime`).
    pub time: Duration,
    /// Unmeasured run before it (fio's `ramp_time`).
    pub warmup: Duration,
    /// O_DIRECT (`--direct`); `false` measures through the page cache.
    pub direct: bool,
    /// Run for the whole `time` (fio's `time_based`); otherwise stop after `size` bytes.
    pub time_based: bool,
    /// `fdatasync` after every N writes (fio's `--fdatasync`), 0 for never.
    pub fdatasync: u32,
    /// Percentage of reads in `randrw` (fio's `rwmixread`).
    pub rwmixread: u8,
}

impl DiskSpec {
    /// fio's defaults for a 4 KiB random-read IOPS test: O_DIRECT, queue depth 1, 1 GiB, 10 s.
    pub fn new(target: DiskTarget) -> Self {
        DiskSpec {
            target,
            rw: RwMode::RandRead,
            bs: 4096,
            iodepth: 1,
            size: 1 << 30,
            time: Duration::from_secs(10),
            warmup: Duration::ZERO,
            direct: true,
            time_based: true,
            fdatasync: 0,
            rwmixread: 50,
        }
    }

    /// Checks every field that needs no look at the host; host checks happen in [`run_disk`].
    pub fn validate(&self) -> Result<DiskParams, BenchError> {
        if self.bs == 0 || self.bs > MAX_BS {
            return Err(BenchError::invalid(
                "bs",
                self.bs,
                "must be between 1 and 64m",
            ));
        }
        if self.direct && !self.bs.is_multiple_of(512) {
            return Err(BenchError::invalid(
                "bs",
                self.bs,
                "must be a multiple of 512 with O_DIRECT (or pass --direct=0)",
            ));
        }
        if self.iodepth == 0 || self.iodepth > MAX_IODEPTH {
            return Err(BenchError::invalid(
                "iodepth",
                self.iodepth,
                format!("must be between 1 and {MAX_IODEPTH}"),
            ));
        }
        let whole_existing = matches!(self.target, DiskTarget::ExistingFile(_)) && self.size == 0;
        if !whole_existing && self.size < self.bs {
            return Err(BenchError::invalid(
                "size",
                self.size,
                "must be at least one block (--bs)",
            ));
        }
        if self.fdatasync > 0 && !self.rw.writes() {
            return Err(BenchError::invalid(
                "fdatasync",
                self.fdatasync,
                "needs a write pattern (--rw write, randwrite or randrw)",
            ));
        }
        if self.fdatasync > 0 && self.iodepth > 1 {
            return Err(BenchError::invalid(
                "fdatasync",
                self.fdatasync,
                "is measured at --iodepth=1 (each write then its fdatasync, as databases do)",
            ));
        }
        if self.rwmixread > 100 {
            return Err(BenchError::invalid(
                "rwmixread",
                self.rwmixread,
                "must be 0 to 100",
            ));
        }
        check_duration(self.time, self.warmup)?;
        let path = match &self.target {
            DiskTarget::TempFileIn(p) | DiskTarget::ExistingFile(p) => p,
        };
        if path.as_os_str().is_empty() {
            return Err(BenchError::NotADirectory { path: path.clone() });
        }
        Ok(DiskParams {
            target: self.target.clone(),
            rw: self.rw,
            bs_bytes: self.bs,
            iodepth: self.iodepth,
            size_bytes: self.size,
            time_s: self.time.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            direct: self.direct,
            time_based: self.time_based,
            fdatasync: self.fdatasync,
            rwmixread: self.rwmixread,
            time: self.time,
            warmup: self.warmup,
        })
    }
}

/// Validated disk benchmark parameters; built only by [`DiskSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskParams {
    /// Where the I/O goes.
    pub target: DiskTarget,
    /// Pattern.
    pub rw: RwMode,
    /// Bytes per request.
    pub bs_bytes: u64,
    /// Requests in flight.
    pub iodepth: u32,
    /// Region size in bytes (0: the whole existing file; the report's `size_bytes` is exact).
    pub size_bytes: u64,
    /// Measured duration, seconds.
    pub time_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// O_DIRECT.
    pub direct: bool,
    /// Whole `time` rather than one pass over `size`.
    pub time_based: bool,
    /// fdatasync after every N writes, 0 for never.
    pub fdatasync: u32,
    /// Percentage of reads in randrw.
    pub rwmixread: u8,
    #[serde(skip)]
    time: Duration,
    #[serde(skip)]
    warmup: Duration,
}

/// Host-wide limits, from the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLimits {
    /// Largest test file (the other cap is half the free space).
    pub max_size: u64,
    /// The lock file that keeps two disk benchmarks from running at once on this host.
    pub lock_path: PathBuf,
}

impl Default for DiskLimits {
    /// 64 GiB, and `/run/preflight/bench-disk.lock` as root (the system temp directory
    /// otherwise, where an unprivileged user can create it).
    fn default() -> Self {
        let lock_dir = if nix::unistd::geteuid().is_root() {
            PathBuf::from("/run/preflight")
        } else {
            std::env::temp_dir()
        };
        DiskLimits {
            max_size: DEFAULT_MAX_SIZE,
            lock_path: lock_dir.join("bench-disk.lock"),
        }
    }
}

/// The host-wide disk benchmark lock: an exclusive `flock` held until dropped. The kernel
/// releases it when the process dies, so a crash never leaves the host locked.
#[derive(Debug)]
pub struct DiskLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl DiskLock {
    /// Takes the lock without waiting; [`BenchError::Busy`] when another holder has it.
    pub fn acquire(path: &Path) -> Result<DiskLock, BenchError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BenchError::io(format!("creating lock directory {dir:?}"), e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| BenchError::io(format!("opening lock file {path:?}"), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DiskLock {
                _lock: lock,
                path: path.to_path_buf(),
            }),
            Err((_, Errno::EWOULDBLOCK)) => Err(BenchError::Busy {
                lock: path.to_path_buf(),
            }),
            Err((_, e)) => Err(BenchError::io(format!("locking {path:?}"), e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Counts and latencies of one direction.
#[derive(Debug, Clone, Serialize)]
pub struct IoStats {
    /// Requests completed in the measured interval.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Requests per second.
    pub iops: f64,
    /// MiB (2^20 bytes) per second.
    pub mib_per_s: f64,
    /// Completion latency per request.
    pub latency: LatencySummary,
}

/// The I/O engine of a disk run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// pread/pwrite, one request at a time (queue depth 1).
    Psync,
    /// io_uring with registered buffers (deeper queues).
    IoUring,
}

/// What a disk run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// The parameters used (`size_bytes` resolved to the exact region).
    pub params: DiskParams,
    /// `psync` at queue depth 1, `io_uring` deeper.
    pub engine: Engine,
    /// True when the page cache was in the way (`direct = false`).
    pub buffered: bool,
    /// Filesystem type of the target, e.g. `ext4`.
    pub filesystem: String,
    /// The file the I/O went to (a temporary file is already removed).
    pub file: PathBuf,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Reads and writes per second together.
    pub iops: f64,
    /// MiB per second, reads and writes together.
    pub mib_per_s: f64,
    /// Completion latency of every request.
    pub latency: LatencySummary,
    /// Reads, when the pattern has them.
    pub read: Option<IoStats>,
    /// Writes, when the pattern has them.
    pub write: Option<IoStats>,
    /// Latency of each fdatasync call, when `fdatasync > 0`.
    pub fdatasync: Option<LatencySummary>,
}

/// ramfs, which nix does not name: like tmpfs it keeps files in memory.
const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);

fn fs_name(magic: nix::sys::statfs::FsType) -> String {
    use nix::sys::statfs as s;
    let known = [
        (s::EXT4_SUPER_MAGIC, "ext4"),
        (s::XFS_SUPER_MAGIC, "xfs"),
        (s::BTRFS_SUPER_MAGIC, "btrfs"),
        (s::TMPFS_MAGIC, "tmpfs"),
        (RAMFS_MAGIC, "ramfs"),
        (s::OVERLAYFS_SUPER_MAGIC, "overlay"),
        (s::NFS_SUPER_MAGIC, "nfs"),
        (s::FUSE_SUPER_MAGIC, "fuse"),
        (s::SMB_SUPER_MAGIC, "smb"),
    ];
    known
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("{:#x}", magic.0))
}

/// Filesystem facts about a directory that decide whether the run may go ahead.
struct FsFacts {
    name: String,
    in_memory: bool,
    read_only: bool,
    available: u64,
}

fn fs_facts(dir: &Path) -> Result<FsFacts, BenchError> {
    let sf =
        nix::sys::statfs::statfs(dir).map_err(|e| BenchError::io(format!("statfs {dir:?}"), e))?;
    let sv = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| BenchError::io(format!("statvfs {dir:?}"), e))?;
    let magic = sf.filesystem_type();
    use nix::sys::statfs::TMPFS_MAGIC;
    Ok(FsFacts {
        name: fs_name(magic),
        in_memory: magic == TMPFS_MAGIC || magic == RAMFS_MAGIC,
        read_only: sv.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        available: (sv.blocks_available() as u64).saturating_mul(sv.fragment_size() as u64),
    })
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        // Buffers of 2 MiB and more sit on transparent huge pages when the kernel allows it:
        // a 1 MiB request then spans one or two physical segments instead of 256, which the
        // device queue splits less.
        let align = if len >= HUGE_PAGE { HUGE_PAGE } else { ALIGN };
        let layout = std::alloc::Layout::from_size_align(len.max(ALIGN), align)
            .unwrap_or_else(|_| panic!("buffer of {len} bytes exceeds isize::MAX"));
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        if align == HUGE_PAGE {
            // SAFETY: the range is exactly this allocation; MADV_HUGEPAGE only changes how the
            // kernel backs it, and failure (THP disabled) is harmless, hence ignored.
            unsafe { libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_HUGEPAGE) };
        }
        AlignedBuf { ptr, layout }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr owns `layout.size()` initialised (zeroed) bytes, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: as above, borrowed shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

fn fill_random(buf: &mut [u8], rng: &mut FastRng) {
    for chunk in buf.chunks_mut(8) {
        let v = rng.next_u64().to_ne_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Removes the temporary file's name if it is still there (it is normally unlinked right
/// after creation; this covers the window in between).
struct Unlinker(Option<PathBuf>);

impl Unlinker {
    fn unlink_now(&mut self) -> Result<(), BenchError> {
        if let Some(p) = self.0.take() {
            std::fs::remove_file(&p).map_err(|e| BenchError::io(format!("removing {p:?}"), e))?;
            tracing::debug!(path = ?p, "test file unlinked");
        }
        Ok(())
    }
}

impl Drop for Unlinker {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = ?p, error = %e, "could not remove test file");
            }
        }
    }
}

fn open_flags(direct: bool) -> i32 {
    let mut f = libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if direct {
        f |= libc::O_DIRECT;
    }
    f
}

fn direct_unsupported(path: &Path, fs: &str, in_memory: bool) -> BenchError {
    BenchError::DirectIoUnsupported {
        path: path.to_path_buf(),
        fs: fs.to_string(),
        hint: if in_memory {
            " (it keeps files in memory, so there is no disk to measure)"
        } else {
            ""
        },
    }
}

struct Prepared {
    file: File,
    path: PathBuf,
    size: u64,
    fs: String,
    _unlinker: Unlinker,
}

fn prepare_temp(
    dir: &Path,
    params: &DiskParams,
    limits: &DiskLimits,
    lock_holder: &mut Option<DiskLock>,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<Prepared, BenchError> {
    let meta = std::fs::metadata(dir);
    if !meta.map(|m| m.is_dir()).unwrap_or(false) {
        return Err(BenchError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let facts = fs_facts(dir)?;
    if facts.read_only {
        return Err(BenchError::ReadOnlyFilesystem {
            path: dir.to_path_buf(),
        });
    }
    if params.direct && facts.in_memory {
        return Err(direct_unsupported(dir, &facts.name, true));
    }
    let size = params.size_bytes - params.size_bytes % params.bs_bytes;
    let needed = size.saturating_add(space_margin(size));
    if needed > facts.available {
        return Err(BenchError::InsufficientSpace {
            path: dir.to_path_buf(),
            available: facts.available,
            needed,
        });
    }
    if size > limits.max_size {
        return Err(BenchError::SizeOverCap {
            size,
            cap: limits.max_size,
            why: "the host's fixed cap",
        });
    }
    if size > facts.available / 2 {
        return Err(BenchError::SizeOverCap {
            size,
            cap: facts.available / 2,
            why: "half the free space",
        });
    }
    *lock_holder = Some(DiskLock::acquire(&limits.lock_path)?);

    let mut rng = FastRng::seeded();
    let name = format!(
        ".preflight-bench-{}-{:016x}.tmp",
        std::process::id(),
        rng.next_u64()
    );
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(open_flags(params.direct))
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && params.direct => {
            // Some filesystems refuse O_DIRECT at open and leave no file behind.
            let _ = std::fs::remove_file(&path);
            return Err(direct_unsupported(dir, &facts.name, false));
        }
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            return Err(BenchError::ReadOnlyFilesystem {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(BenchError::io(format!("creating test file {path:?}"), e)),
    };
    let mut unlinker = Unlinker(Some(path.clone()));
    tracing::debug!(path = ?path, size, direct = params.direct, "test file created");
    // Unlinked at once: from here on the kernel frees it whenever the descriptor closes,
    // whatever way the process ends.
    unlinker.unlink_now()?;
    layout_file(
        &file,
        &path,
        size,
        params.direct,
        &mut rng,
        progress,
        cancel,
    )?;
    Ok(Prepared {
        file,
        path,
        size,
        fs: facts.name,
        _unlinker: unlinker,
    })
}

/// Writes the whole file once with non-zero data so reads hit allocated blocks, as fio's
/// "laying out IO file" does.
fn layout_file(
    file: &File,
    path: &Path,
    size: u64,
    direct: bool,
    rng: &mut FastRng,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<(), BenchError> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = AlignedBuf::new(CHUNK as usize);
    fill_random(buf.as_mut_slice(), rng);
    let mut off = 0u64;
    let mut next_report = Instant::now();
    while off < size {
        if cancel.load(Ordering::Relaxed) {
            return Err(BenchError::Cancelled);
        }
        let len = CHUNK.min(size - off) as usize;
        // Vary the data per chunk so no layer can deduplicate it.
        buf.as_mut_slice()[..8].copy_from_slice(&off.to_ne_bytes());
        let n = nix::sys::uio::pwrite(file.as_fd(), &buf.as_slice()[..len], off as i64)
            .map_err(|e| io_error_at("writing", path, off, e, direct))?;
        if n == 0 {
            return Err(BenchError::io(
                format!("laying out {path:?} at offset {off}"),
                std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote nothing"),
            ));
        }
        off += n as u64;
        let now = Instant::now();
        if now >= next_report {
            next_report = now + PROGRESS_INTERVAL;
            progress(Progress {
                phase: Phase::Layout,
                fraction: off as f64 / size as f64,
                current: 0.0,
                unit: Unit::MibPerS,
            });
        }
    }
    nix::unistd::fdatasync(file.as_fd())
        .map_err(|e| BenchError::io(format!("fdatasync {path:?} after layout"), e))?;
    Ok(())
}

fn io_error_at(what: &str, path: &Path, off: u64, e: Errno, direct: bool) -> BenchError {
    let hint = if e == Errno::EINVAL && direct {
        " (O_DIRECT needs --bs aligned to the device's logical block size)"
    } else {
        ""
    };
    BenchError::io(format!("{what} {path:?} at offset {off}{hint}"), e)
}

fn prepare_existing(
    path: &Path,
    params: &DiskParams,
    limits: &DiskLimits,
    lock_holder: &mut Option<DiskLock>,
) -> Result<Prepared, BenchError> {
    let bad = |reason: String| BenchError::BadTestFile {
        path: path.to_path_buf(),
        reason,
    };
    let lmeta = std::fs::symlink_metadata(path).map_err(|e| bad(format!("{e}")))?;
    if lmeta.file_type().is_symlink() {
        return Err(bad("it is a symbolic link: name the file itself".into()));
    }
    if !lmeta.file_type().is_file() {
        let kind = if lmeta.is_dir() {
            "a directory"
        } else if lmeta.file_type().is_block_device() {
            "a block device (only regular files are used, never raw devices)"
        } else {
            "not a regular file"
        };
        return Err(bad(format!("it is {kind}")));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let facts = fs_facts(dir)?;
    if params.rw.writes() && facts.read_only {
        return Err(BenchError::ReadOnlyFilesystem {
            path: dir.to_path_buf(),
        });
    }
    if params.direct && facts.in_memory {
        return Err(direct_unsupported(path, &facts.name, true));
    }
    let file_len = lmeta.len();
    let size = if params.size_bytes == 0 {
        file_len
    } else {
        params.size_bytes
    };
    if size > file_len {
        return Err(bad(format!(
            "it holds {file_len} bytes, fewer than --size {size}: write it first or lower --size"
        )));
    }
    let size = size - size % params.bs_bytes;
    if size == 0 {
        return Err(bad(format!(
            "it is smaller than one block of {} bytes",
            params.bs_bytes
        )));
    }
    *lock_holder = Some(DiskLock::acquire(&limits.lock_path)?);
    let file = OpenOptions::new()
        .read(true)
        .write(params.rw.writes())
        .custom_flags(open_flags(params.direct))
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && params.direct => {
            return Err(direct_unsupported(path, &facts.name, false))
        }
        Err(e) => return Err(BenchError::io(format!("opening {path:?}"), e)),
    };
    Ok(Prepared {
        file,
        path: path.to_path_buf(),
        size,
        fs: facts.name,
        _unlinker: Unlinker(None),
    })
}

/// Picks the next request: direction and offset.
struct Picker {
    rng: FastRng,
    mode: RwMode,
    blocks: u64,
    bs: u64,
    next_seq: u64,
    rwmixread: u64,
}

impl Picker {
    #[inline]
    fn next(&mut self) -> (bool, u64) {
        let is_write = match self.mode {
            RwMode::RandRead | RwMode::Read => false,
            RwMode::RandWrite | RwMode::Write => true,
            RwMode::RandRw => self.rng.below(100) >= self.rwmixread,
        };
        let block = if self.mode.random() {
            self.rng.below(self.blocks)
        } else {
            let b = self.next_seq;
            self.next_seq = if b + 1 >= self.blocks { 0 } else { b + 1 };
            b
        };
        (is_write, block * self.bs)
    }
}

/// Measurement state shared by both engines.
struct Recorder<'a> {
    read: (u64, LatencyHistogram),
    write: (u64, LatencyHistogram),
    sync: LatencyHistogram,
    t0: Instant,
    measure_start: Instant,
    deadline: Instant,
    measuring: bool,
    /// Requests issued since the measurement began, against the size budget.
    issued_bytes: u64,
    budget: u64,
    next_report: Instant,
    unit: Unit,
    bs: u64,
    progress: &'a dyn Fn(Progress),
    cancel: &'a AtomicBool,
    warmup: Duration,
    time: Duration,
}

impl<'a> Recorder<'a> {
    fn new(
        params: &DiskParams,
        size: u64,
        progress: &'a dyn Fn(Progress),
        cancel: &'a AtomicBool,
    ) -> Self {
        let t0 = Instant::now();
        let measure_start = t0 + params.warmup;
        Recorder {
            read: (0, LatencyHistogram::new()),
            write: (0, LatencyHistogram::new()),
            sync: LatencyHistogram::new(),
            t0,
            measure_start,
            deadline: measure_start + params.time,
            measuring: params.warmup.is_zero(),
            issued_bytes: 0,
            budget: if params.time_based { u64::MAX } else { size },
            next_report: t0,
            unit: if params.rw.random() {
                Unit::Iops
            } else {
                Unit::MibPerS
            },
            bs: params.bs_bytes,
            progress,
            cancel,
            warmup: params.warmup,
            time: params.time,
        }
    }

    #[inline]
    fn complete(&mut self, is_write: bool, ns: u64) {
        let d = if is_write {
            &mut self.write
        } else {
            &mut self.read
        };
        d.0 += 1;
        d.1.record(ns);
    }

    /// Called after every completion batch: phase change, progress, and whether to stop
    /// issuing new requests.
    #[inline]
    fn tick(&mut self, now: Instant) -> Result<bool, BenchError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(BenchError::Cancelled);
        }
        if !self.measuring && now >= self.measure_start {
            self.measuring = true;
            self.measure_start = now;
            self.deadline = now + self.time;
            self.read = (0, LatencyHistogram::new());
            self.write = (0, LatencyHistogram::new());
            self.sync.clear();
            self.issued_bytes = 0;
        }
        if now >= self.next_report {
            self.next_report = now + PROGRESS_INTERVAL;
            (self.progress)(self.snapshot(now));
        }
        Ok(self.measuring && (now >= self.deadline || self.issued_bytes >= self.budget))
    }

    fn snapshot(&self, now: Instant) -> Progress {
        if !self.measuring {
            return Progress {
                phase: Phase::Warmup,
                fraction: (now.duration_since(self.t0).as_secs_f64() / self.warmup.as_secs_f64())
                    .min(1.0),
                current: 0.0,
                unit: self.unit,
            };
        }
        let secs = now.duration_since(self.measure_start).as_secs_f64();
        let ios = self.read.0 + self.write.0;
        let rate = if secs > 0.0 { ios as f64 / secs } else { 0.0 };
        let mut fraction = secs / self.time.as_secs_f64();
        if self.budget != u64::MAX {
            fraction = fraction.max(self.issued_bytes as f64 / self.budget as f64);
        }
        Progress {
            phase: Phase::Run,
            fraction: fraction.min(1.0),
            current: if self.unit == Unit::Iops {
                rate
            } else {
                rate * self.bs as f64 / MIB
            },
            unit: self.unit,
        }
    }
}

fn run_psync(
    file: &File,
    path: &Path,
    params: &DiskParams,
    picker: &mut Picker,
    rec: &mut Recorder<'_>,
) -> Result<Instant, BenchError> {
    let bs = params.bs_bytes as usize;
    let mut buf = AlignedBuf::new(bs);
    fill_random(buf.as_mut_slice(), &mut FastRng::seeded());
    let fd = file.as_fd();
    let mut writes = 0u64;
    loop {
        let (is_write, off) = picker.next();
        let a = Instant::now();
        let r = if is_write {
            nix::sys::uio::pwrite(fd, &buf.as_slice()[..bs], off as i64)
        } else {
            nix::sys::uio::pread(fd, &mut buf.as_mut_slice()[..bs], off as i64)
        };
        let n = r.map_err(|e| {
            io_error_at(
                if is_write { "writing" } else { "reading" },
                path,
                off,
                e,
                params.direct,
            )
        })?;
        let mut b = Instant::now();
        if n != bs {
            return Err(short_io(path, off, n, bs));
        }
        rec.complete(is_write, b.duration_since(a).as_nanos() as u64);
        rec.issued_bytes += bs as u64;
        if is_write && params.fdatasync > 0 {
            writes += 1;
            if writes.is_multiple_of(u64::from(params.fdatasync)) {
                nix::unistd::fdatasync(fd)
                    .map_err(|e| BenchError::io(format!("fdatasync {path:?}"), e))?;
                let c = Instant::now();
                rec.sync.record(c.duration_since(b).as_nanos() as u64);
                b = c;
            }
        }
        if rec.tick(b)? {
            return Ok(b);
        }
    }
}

fn short_io(path: &Path, off: u64, n: usize, bs: usize) -> BenchError {
    BenchError::io(
        format!("{path:?} at offset {off}"),
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short transfer of {n} of {bs} bytes"),
        ),
    )
}

/// Requests handed to the kernel per `io_uring_enter` while refilling the queue: an eighth of
/// the queue depth, at least 4.
///
/// This is where the old ceiling was. A virtio or NVMe device that completes a whole batch at
/// once then waits, idle, while the submitting thread builds the next one; submitted in a
/// single call, every request of the batch is prepared (bio, iomap, scheduler insert) before
/// the first reaches the device, and at queue depth 32 that turnaround cost about 20 % of the
/// device's rate. In chunks, the device starts on the first few while the rest are prepared,
/// as with fio's one-request submissions, at an eighth of fio's system calls.
pub(crate) fn submit_chunk(depth: usize) -> usize {
    (depth / 8).max(4)
}

/// Whether the requests pushed so far (`pending`) go to the kernel now, on their own system
/// call: a full chunk does, unless no slot is left, in which case it goes with the wait for
/// completions (one `io_uring_enter` both submits and waits).
#[inline]
fn submit_now(pending: usize, chunk: usize, more_to_come: bool) -> bool {
    pending >= chunk && more_to_come
}

/// Request slots of the io_uring engine: each slot owns one registered buffer and carries at
/// most one request at a time, so at most `depth` requests are ever in flight.
struct Slots {
    start: Vec<Instant>,
    is_write: Vec<bool>,
    off: Vec<u64>,
    free: Vec<usize>,
    in_flight: usize,
}

impl Slots {
    fn new(depth: usize, now: Instant) -> Slots {
        Slots {
            start: vec![now; depth],
            is_write: vec![false; depth],
            off: vec![0; depth],
            free: (0..depth).rev().collect(),
            in_flight: 0,
        }
    }

    /// Whether a new request may start (fewer than `depth` in flight).
    #[inline]
    fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// A free slot for a new request, or None when `depth` requests are in flight.
    #[inline]
    fn take(&mut self, is_write: bool, off: u64) -> Option<usize> {
        let i = self.free.pop()?;
        self.is_write[i] = is_write;
        self.off[i] = off;
        self.in_flight += 1;
        Some(i)
    }

    /// Gives back a slot the kernel did not accept.
    fn untake(&mut self, i: usize) {
        self.in_flight -= 1;
        self.free.push(i);
    }

    /// Marks slots as submitted at `now` (the kernel sees none of them before the call that
    /// follows, so this is the earliest a request can start).
    #[inline]
    fn stamp(&mut self, slots: &[usize], now: Instant) {
        for &i in slots {
            self.start[i] = now;
        }
    }

    /// Completes the request in slot `i` at `now`: its direction, offset and latency in ns.
    #[inline]
    fn finish(&mut self, i: usize, now: Instant) -> (bool, u64, u64) {
        debug_assert!(!self.free.contains(&i), "slot {i} completed twice");
        self.in_flight -= 1;
        self.free.push(i);
        (
            self.is_write[i],
            self.off[i],
            now.duration_since(self.start[i]).as_nanos() as u64,
        )
    }
}

/// A ring set up as fio sets up its own: completions are posted only when the benchmark thread
/// asks for them (`DEFER_TASKRUN`, `SINGLE_ISSUER`), so no completion interrupts the thread
/// while it submits (`COOP_TASKRUN`), and the completion queue is as deep as the submission
/// queue. Each flag is dropped in turn on kernels that refuse it.
fn new_ring(entries: u32) -> std::io::Result<io_uring::IoUring> {
    let mut last = None;
    for level in 0..4 {
        let mut b = io_uring::IoUring::builder();
        if level < 3 {
            b.setup_cqsize(entries);
        }
        if level < 2 {
            b.setup_coop_taskrun();
        }
        if level < 1 {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        match b.build(entries) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL)))
}

fn run_uring(
    file: &File,
    path: &Path,
    params: &DiskParams,
    picker: &mut Picker,
    rec: &mut Recorder<'_>,
) -> Result<Instant, BenchError> {
    use io_uring::{opcode, types};

    let depth = params.iodepth as usize;
    let bs = params.bs_bytes as usize;
    let chunk = submit_chunk(depth);
    // Declared before the ring so that it is dropped after it.
    let mut bufs = AlignedBuf::new(depth * bs);
    let mut ring = new_ring(params.iodepth.next_power_of_two()).map_err(|e| {
        BenchError::io(
            "setting up io_uring (use --iodepth=1 where it is disabled)",
            e,
        )
    })?;
    fill_random(bufs.as_mut_slice(), &mut FastRng::seeded());
    let base = bufs.as_mut_slice().as_mut_ptr();
    let iovecs: Vec<libc::iovec> = (0..depth)
        .map(|i| libc::iovec {
            // SAFETY: i * bs is inside the depth * bs allocation.
            iov_base: unsafe { base.add(i * bs) }.cast(),
            iov_len: bs,
        })
        .collect();
    // SAFETY: the buffers outlive the ring's use of them: every request is reaped before this
    // function returns (see `drain` below), and `bufs` is dropped after `ring`'s requests end.
    unsafe { ring.submitter().register_buffers(&iovecs) }
        .map_err(|e| BenchError::io("registering io_uring buffers", e))?;
    ring.submitter()
        .register_files(&[file.as_raw_fd()])
        .map_err(|e| BenchError::io("registering the test file with io_uring", e))?;
    // Saves a file lookup per io_uring_enter; kernels before 5.18 lack it, which costs nothing.
    let _ = ring.submitter().register_ring_fd();

    let now0 = Instant::now();
    let mut slots = Slots::new(depth, now0);
    // Slots pushed to the submission queue and not yet handed to the kernel.
    let mut pending: Vec<usize> = Vec::with_capacity(depth);
    let mut stopping = false;
    let mut failure: Option<BenchError> = None;
    let mut last = now0;

    let fail = |ring: io_uring::IoUring, bufs: AlignedBuf, e: std::io::Error| {
        // Without a working ring the outstanding requests cannot be reaped, and the kernel
        // may still write into their buffers after the ring closes: leak the buffers rather
        // than hand that memory back to the allocator.
        drop(ring);
        std::mem::forget(bufs);
        BenchError::io("io_uring_enter", e)
    };

    loop {
        if !stopping {
            while slots.has_free() {
                let (is_write, off) = picker.next();
                let Some(i) = slots.take(is_write, off) else {
                    break;
                };
                let ptr = iovecs[i].iov_base.cast::<u8>();
                let entry = if is_write {
                    opcode::WriteFixed::new(types::Fixed(0), ptr, bs as u32, i as u16)
                        .offset(off)
                        .build()
                } else {
                    opcode::ReadFixed::new(types::Fixed(0), ptr, bs as u32, i as u16)
                        .offset(off)
                        .build()
                };
                // SAFETY: the entry points into registered buffer `i`, which no other request
                // uses until this one is reaped.
                if unsafe { ring.submission().push(&entry.user_data(i as u64)) }.is_err() {
                    slots.untake(i);
                    break;
                }
                pending.push(i);
                rec.issued_bytes += bs as u64;
                // A full chunk goes to the kernel now, unless it is the last of this refill:
                // that one goes with the wait below, in the same system call.
                if submit_now(pending.len(), chunk, slots.has_free()) {
                    slots.stamp(&pending, Instant::now());
                    pending.clear();
                    match ring.submit() {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => return Err(fail(ring, bufs, e)),
                    }
                }
            }
        }
        if slots.in_flight == 0 {
            break;
        }
        slots.stamp(&pending, Instant::now());
        pending.clear();
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(fail(ring, bufs, e)),
        }
        let now = Instant::now();
        last = now;
        for cqe in ring.completion() {
            let (is_write, off, ns) = slots.finish(cqe.user_data() as usize, now);
            let res = cqe.result();
            if res < 0 {
                failure.get_or_insert_with(|| {
                    io_error_at(
                        if is_write { "writing" } else { "reading" },
                        path,
                        off,
                        Errno::from_raw(-res),
                        params.direct,
                    )
                });
                stopping = true;
            } else if res as usize != bs {
                failure.get_or_insert_with(|| short_io(path, off, res as usize, bs));
                stopping = true;
            } else {
                rec.complete(is_write, ns);
            }
        }
        if !stopping {
            match rec.tick(now) {
                Ok(true) => stopping = true,
                Ok(false) => {}
                Err(e) => {
                    failure = Some(e);
                    stopping = true;
                }
            }
        }
    }
    // Dropping the ring before the buffers: every request was reaped above.
    drop(ring);
    drop(bufs);
    match failure {
        Some(e) => Err(e),
        None => Ok(last),
    }
}

fn io_stats(n: u64, hist: &LatencyHistogram, bs: u64, secs: f64) -> IoStats {
    let bytes = n * bs;
    IoStats {
        ios: n,
        bytes,
        iops: if secs > 0.0 { n as f64 / secs } else { 0.0 },
        mib_per_s: if secs > 0.0 {
            bytes as f64 / MIB / secs
        } else {
            0.0
        },
        latency: hist.summary(),
    }
}

/// Runs the disk benchmark. Checks the host (directory, filesystem, space, caps, lock), lays
/// out the test file, warms up, measures, and removes the file whatever happens. Blocks for
/// layout plus warm-up plus time; see [`crate::bench`] for the progress and cancel contract.
pub fn run_disk(
    params: &DiskParams,
    limits: &DiskLimits,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<DiskReport, BenchError> {
    let mut lock = None;
    let prepared = match &params.target {
        DiskTarget::TempFileIn(dir) => {
            prepare_temp(dir, params, limits, &mut lock, progress, cancel)?
        }
        DiskTarget::ExistingFile(p) => prepare_existing(p, params, limits, &mut lock)?,
    };
    tracing::debug!(rw = %params.rw, bs = params.bs_bytes, iodepth = params.iodepth,
        size = prepared.size, file = ?prepared.path, "disk benchmark starting");
    let mut picker = Picker {
        rng: FastRng::seeded(),
        mode: params.rw,
        blocks: prepared.size / params.bs_bytes,
        bs: params.bs_bytes,
        next_seq: 0,
        rwmixread: u64::from(params.rwmixread),
    };
    let mut rec = Recorder::new(params, prepared.size, progress, cancel);
    let (engine, end) = if params.iodepth == 1 {
        (
            Engine::Psync,
            run_psync(
                &prepared.file,
                &prepared.path,
                params,
                &mut picker,
                &mut rec,
            )?,
        )
    } else {
        (
            Engine::IoUring,
            run_uring(
                &prepared.file,
                &prepared.path,
                params,
                &mut picker,
                &mut rec,
            )?,
        )
    };
    let secs = end.duration_since(rec.measure_start).as_secs_f64();
    let bs = params.bs_bytes;
    let read = (params.rw != RwMode::RandWrite && params.rw != RwMode::Write)
        .then(|| io_stats(rec.read.0, &rec.read.1, bs, secs));
    let write = params
        .rw
        .writes()
        .then(|| io_stats(rec.write.0, &rec.write.1, bs, secs));
    let mut all = rec.read.1.clone();
    all.merge(&rec.write.1);
    let total = io_stats(rec.read.0 + rec.write.0, &all, bs, secs);
    let mut used = params.clone();
    used.size_bytes = prepared.size;
    progress(Progress {
        phase: Phase::Run,
        fraction: 1.0,
        current: if params.rw.random() {
            total.iops
        } else {
            total.mib_per_s
        },
        unit: rec.unit,
    });
    drop(lock);
    Ok(DiskReport {
        params: used,
        engine,
        buffered: !params.direct,
        filesystem: prepared.fs.clone(),
        file: prepared.path.clone(),
        elapsed_s: secs,
        iops: total.iops,
        mib_per_s: total.mib_per_s,
        latency: total.latency,
        read,
        write,
        fdatasync: (params.fdatasync > 0).then(|| rec.sync.summary()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DiskSpec {
        DiskSpec::new(DiskTarget::TempFileIn(PathBuf::from("/var/tmp")))
    }

    #[test]
    fn validation_refuses_bad_values() {
        assert!(spec().validate().is_ok());
        let cases = [
            DiskSpec { bs: 0, ..spec() },
            DiskSpec { bs: 1000, ..spec() },
            DiskSpec {
                bs: MAX_BS * 2,
                ..spec()
            },
            DiskSpec {
                iodepth: 0,
                ..spec()
            },
            DiskSpec {
                iodepth: 1024,
                ..spec()
            },
            DiskSpec {
                size: 1024,
                ..spec()
            },
            DiskSpec {
                fdatasync: 1,
                ..spec()
            },
            DiskSpec {
                fdatasync: 1,
                rw: RwMode::Write,
                iodepth: 32,
                ..spec()
            },
            DiskSpec {
                rwmixread: 101,
                ..spec()
            },
            DiskSpec {
                time: Duration::from_secs(601),
                ..spec()
            },
            DiskSpec {
                time: Duration::ZERO,
                ..spec()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?} must be refused");
        }
        // Buffered I/O takes any block size, as the etcd fdatasync recipe needs (2300 bytes).
        let etcd = DiskSpec {
            bs: 2300,
            direct: false,
            rw: RwMode::Write,
            fdatasync: 1,
            ..spec()
        };
        assert!(etcd.validate().is_ok());
    }

    #[test]
    fn rw_names_round_trip() {
        for m in [
            RwMode::RandRead,
            RwMode::RandWrite,
            RwMode::RandRw,
            RwMode::Read,
            RwMode::Write,
        ] {
            assert_eq!(m.to_string().parse::<RwMode>().unwrap(), m);
        }
        assert!("rw".parse::<RwMode>().is_err());
    }

    /// Replays the engine's refill loop over `free` free slots: the sizes of the submissions,
    /// the last one being the one that goes with the wait.
    fn refill(free: usize, chunk: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut pending = 0;
        for pushed in 1..=free {
            pending += 1;
            if submit_now(pending, chunk, pushed < free) {
                sizes.push(pending);
                pending = 0;
            }
        }
        sizes.push(pending);
        sizes
    }

    #[test]
    fn refills_go_to_the_kernel_in_chunks_and_the_last_with_the_wait() {
        assert_eq!(submit_chunk(2), 4);
        assert_eq!(submit_chunk(32), 4);
        assert_eq!(submit_chunk(128), 16);
        assert_eq!(submit_chunk(256), 32);
        // A full queue of 32: eight submissions of 4, the eighth with the wait.
        assert_eq!(refill(32, 4), [4; 8]);
        // After a partial reap: full chunks first, the rest with the wait.
        assert_eq!(refill(10, 4), [4, 4, 2]);
        assert_eq!(refill(3, 4), [3]);
        // Nothing reaped (a wake-up without completions): only the wait.
        assert_eq!(refill(0, 4), [0]);
        for depth in [2usize, 8, 32, 100, 128, 256] {
            let chunk = submit_chunk(depth);
            for free in 0..=depth {
                let sizes = refill(free, chunk);
                assert_eq!(
                    sizes.iter().sum::<usize>(),
                    free,
                    "depth {depth} free {free}"
                );
                assert!(sizes.iter().all(|&n| n <= chunk), "{sizes:?}");
                // One system call per chunk: never more than fio's one per request.
                assert!(sizes.len() <= free.div_ceil(chunk).max(1), "{sizes:?}");
            }
        }
    }

    #[test]
    fn slots_keep_at_most_depth_requests_and_time_each_exactly() {
        let t0 = Instant::now();
        let mut s = Slots::new(4, t0);
        let mut taken = Vec::new();
        while s.has_free() {
            taken.push(
                s.take(taken.len() % 2 == 1, 4096 * taken.len() as u64)
                    .unwrap(),
            );
        }
        assert_eq!(s.in_flight, 4);
        assert!(
            s.take(false, 0).is_none(),
            "a fifth request while four are in flight"
        );
        let mut sorted = taken.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [0, 1, 2, 3],
            "each slot (and its buffer) carries one request"
        );
        // Two chunks stamped at different times; each request's latency is measured from the
        // stamp of its own chunk.
        s.stamp(&taken[..2], t0 + Duration::from_micros(10));
        s.stamp(&taken[2..], t0 + Duration::from_micros(30));
        let done = t0 + Duration::from_micros(130);
        let (w, off, ns) = s.finish(taken[0], done);
        assert_eq!((w, off, ns), (false, 0, 120_000));
        let (w, off, ns) = s.finish(taken[3], done);
        assert_eq!((w, off, ns), (true, 3 * 4096, 100_000));
        assert_eq!(s.in_flight, 2);
        // A freed slot is reused with its new request's direction and offset.
        let again = s.take(false, 8192).unwrap();
        assert!(again == taken[0] || again == taken[3]);
        s.stamp(&[again], done);
        assert_eq!(
            s.finish(again, done + Duration::from_nanos(777)),
            (false, 8192, 777)
        );
        // A request the kernel refused gives its slot back.
        let i = s.take(true, 0).unwrap();
        s.untake(i);
        assert_eq!(s.in_flight, 2);
        assert!(s.has_free());
    }

    #[test]
    fn sequential_picker_wraps_and_random_stays_in_range() {
        let mut p = Picker {
            rng: FastRng::seeded(),
            mode: RwMode::Read,
            blocks: 3,
            bs: 4096,
            next_seq: 0,
            rwmixread: 50,
        };
        let offs: Vec<u64> = (0..5).map(|_| p.next().1).collect();
        assert_eq!(offs, [0, 4096, 8192, 0, 4096]);
        p.mode = RwMode::RandRw;
        let mut writes = 0;
        for _ in 0..10_000 {
            let (w, off) = p.next();
            assert!(off < 3 * 4096 && off % 4096 == 0);
            writes += u32::from(w);
        }
        assert!(
            (4000..6000).contains(&writes),
            "{writes} writes of 10000 at rwmixread 50"
        );
    }
}
