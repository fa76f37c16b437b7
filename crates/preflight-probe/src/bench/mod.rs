//! Host benchmarks: disk IOPS, throughput and fdatasync latency ([`disk`]), CPU prime counting
//! as sysbench's `cpu` test ([`cpu`]) and memory bandwidth ([`memory`]).
//!
//! Every benchmark is one blocking function with the same shape, so the agent's gRPC service and
//! its local `bench` subcommand drive them alike:
//!
//! ```text
//! let params = DiskSpec { .. }.validate()?;              // static checks, no I/O
//! let report = run_disk(&params, &DiskLimits::default(), &|p: Progress| .., &cancel)?;
//! ```
//!
//! - the params type is only built by `validate`, so a run never sees an unchecked value;
//! - `progress` is called from the calling thread about ten times a second with the fraction
//!   done and the figure so far;
//! - `cancel` is polled at least every few milliseconds; once set the function cleans up and
//!   returns [`BenchError::Cancelled`];
//! - the report is `serde::Serialize`, its field names carry their unit (`iops`, `mib_per_s`,
//!   `events_per_s`, `p99_us`) and it embeds the params used.
//!
//! Run these on a dedicated thread (`std::thread::spawn` or `tokio::task::spawn_blocking`):
//! they keep the calling thread busy for the whole duration.

pub mod cpu;
pub mod disk;
mod histogram;
pub mod memory;
mod pool;

use std::path::PathBuf;
use std::time::Duration;

use preflight_core::units;
use serde::Serialize;

pub use histogram::{LatencyHistogram, LatencySummary};

/// Longest run accepted by any benchmark.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// Interval between two progress callbacks.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Which part of a benchmark is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Writing the test file before the measurement.
    Layout,
    /// Running without recording, so caches and queues reach a steady state.
    Warmup,
    /// Measuring.
    Run,
}

/// Unit of a benchmark's headline figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Requests per second (random disk I/O).
    Iops,
    /// MiB (2^20 bytes) per second (sequential disk I/O, memory).
    MibPerS,
    /// Events per second (CPU).
    EventsPerS,
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// What is running.
    pub phase: Phase,
    /// Fraction of this phase done, 0.0 to 1.0.
    pub fraction: f64,
    /// The benchmark's headline figure so far (IOPS, MiB/s or events/s), 0 during layout.
    pub current: f64,
    /// Unit of `current`.
    pub unit: Unit,
}

/// Why a benchmark was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A parameter is out of range or malformed.
    #[error("invalid {name} {value:?}: {reason}")]
    InvalidParam {
        /// Option name as the CLI spells it, e.g. `bs`.
        name: &'static str,
        /// The rejected value.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// The benchmark directory does not exist or is not a directory.
    #[error("{path:?} is not a directory: name an existing directory on the disk to measure")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The filesystem holding the directory is mounted read-only.
    #[error("filesystem of {path:?} is read-only: choose a directory on a writable filesystem")]
    ReadOnlyFilesystem {
        /// The path given.
        path: PathBuf,
    },
    /// Not enough free space for the test file plus a safety margin.
    #[error(
        "not enough free space in {path:?}: {available} bytes available, {needed} needed \
         (file size plus margin): choose a smaller --size or another directory"
    )]
    InsufficientSpace {
        /// The directory.
        path: PathBuf,
        /// Bytes available to the agent.
        available: u64,
        /// File size plus margin.
        needed: u64,
    },
    /// The requested file size exceeds the cap.
    #[error("size {size} bytes is over the cap of {cap} bytes ({why}): choose a smaller --size")]
    SizeOverCap {
        /// Requested size.
        size: u64,
        /// The cap that applied.
        cap: u64,
        /// Which cap: the fixed one or half of the free space.
        why: &'static str,
    },
    /// The requested duration exceeds the cap.
    #[error("duration {secs} s is over the cap of {cap_secs} s: choose a shorter --time")]
    DurationOverCap {
        /// Requested duration (run plus warm-up), seconds.
        secs: u64,
        /// The cap, seconds.
        cap_secs: u64,
    },
    /// The memory the benchmark needs is over its cap.
    #[error(
        "memory benchmark needs {needed} bytes but at most {cap} may be used (half of MemAvailable): \
         lower --memory-block-size or --threads"
    )]
    MemoryOverCap {
        /// Bytes needed.
        needed: u64,
        /// The cap.
        cap: u64,
    },
    /// Another disk benchmark holds the host-wide lock.
    #[error(
        "another disk benchmark is running on this host (lock {lock:?} is held): wait for it to \
         finish"
    )]
    Busy {
        /// The lock file.
        lock: PathBuf,
    },
    /// The filesystem does not do direct I/O.
    #[error(
        "filesystem {fs} at {path:?} does not support O_DIRECT{hint}: pass --direct=0 to measure \
         buffered I/O (the result then says buffered)"
    )]
    DirectIoUnsupported {
        /// The directory or file.
        path: PathBuf,
        /// Filesystem type name, e.g. `tmpfs`.
        fs: String,
        /// Extra explanation.
        hint: &'static str,
    },
    /// An existing file named with `filename` cannot be used.
    #[error("{path:?} cannot be used as the test file: {reason}")]
    BadTestFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path when there is one.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The caller set the cancel flag.
    #[error("benchmark cancelled")]
    Cancelled,
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        BenchError::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        BenchError::InvalidParam {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Parses a size as fio and sysbench write them (see [`preflight_core::units::parse_size`]).
pub fn parse_size(s: &str) -> Result<u64, BenchError> {
    units::parse_size(s).map_err(|reason| BenchError::invalid("size", s, reason))
}

/// Parses a duration as fio writes it (see [`preflight_core::units::parse_duration`]).
pub fn parse_duration(s: &str) -> Result<Duration, BenchError> {
    units::parse_duration(s).map_err(|reason| BenchError::invalid("time", s, reason))
}

/// Checks a run length (measurement plus warm-up) against [`MAX_DURATION`].
pub(crate) fn check_duration(time: Duration, warmup: Duration) -> Result<(), BenchError> {
    if time.is_zero() {
        return Err(BenchError::invalid(
            "time",
            format!("{}s", time.as_secs_f64()),
            "must be at least 1 ms",
        ));
    }
    let total = time.saturating_add(warmup);
    if total > MAX_DURATION {
        return Err(BenchError::DurationOverCap {
            secs: total.as_secs_f64().ceil() as u64,
            cap_secs: MAX_DURATION.as_secs(),
        });
    }
    Ok(())
}

/// Number of CPUs this process may run on, at least 1.
pub fn available_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Small, fast pseudo-random generator (xorshift64*): offsets and write patterns need speed and
/// spread, not cryptographic quality.
#[derive(Debug, Clone)]
pub(crate) struct FastRng(u64);

impl FastRng {
    pub(crate) fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x1234_5678);
        let mix = t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        FastRng(mix | 1)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift (no modulo bias worth mentioning here).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_and_durations_name_the_option() {
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(
            parse_size("4x").unwrap_err().to_string(),
            "invalid size \"4x\": unknown suffix: use k, m, g or t (powers of 1024)"
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("5w").unwrap_err().to_string(),
            "invalid time \"5w\": unknown unit: use ms, s, m, h or d, e.g. 30s, 15m, 1h, 7d"
        );
    }

    #[test]
    fn durations_over_the_cap_are_refused() {
        assert!(check_duration(Duration::from_secs(600), Duration::ZERO).is_ok());
        let err = check_duration(Duration::from_secs(600), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(
            err,
            BenchError::DurationOverCap {
                secs: 601,
                cap_secs: 600
            }
        ));
        assert!(err.to_string().contains("601 s"));
        assert!(check_duration(Duration::ZERO, Duration::ZERO).is_err());
    }

    #[test]
    fn rng_below_stays_in_range_and_spreads() {
        let mut r = FastRng::seeded();
        let mut seen = [0u32; 16];
        for _ in 0..16_000 {
            let v = r.below(16);
            assert!(v < 16);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }
}
