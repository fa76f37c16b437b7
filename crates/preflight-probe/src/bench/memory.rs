//! Memory bandwidth: sequential read, write or copy over a buffer per thread.
//!
//! One event passes over one block (`memory_block_size`, default 256 MiB so the working set is
//! far beyond every cache level); threads repeat events until `memory_total_size` bytes were
//! transferred or the time is up, as `sysbench memory --memory-block-size=256M` does. Reads fold
//! the block into eight 64-bit accumulators (vectorised loads), writes and copies use the C
//! library's `memset` and `memcpy`, which is how real programs move memory. sysbench moves 4
//! bytes per loop step through a `volatile`, so on the same block size these figures are at
//! least as high as sysbench's and closer to what the memory system delivers.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use super::pool::{run_pool, PoolPlan};
use super::{available_cpus, check_duration, BenchError, LatencySummary, Progress, Unit};

/// Smallest block accepted (sysbench's default is 1 KiB; such blocks only measure L1 cache).
pub const MIN_BLOCK: u64 = 1024;

/// Largest block accepted.
pub const MAX_BLOCK: u64 = 16 << 30;

const MIB: f64 = 1024.0 * 1024.0;

/// Memory operation (`--memory-oper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryOper {
    /// Sequential loads.
    Read,
    /// Sequential stores.
    Write,
    /// Block copy between two buffers; bytes copied are counted once.
    Copy,
}

impl std::str::FromStr for MemoryOper {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(MemoryOper::Read),
            "write" => Ok(MemoryOper::Write),
            "copy" => Ok(MemoryOper::Copy),
            _ => Err(BenchError::invalid(
                "memory-oper",
                s,
                "use read, write or copy",
            )),
        }
    }
}

impl std::fmt::Display for MemoryOper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemoryOper::Read => "read",
            MemoryOper::Write => "write",
            MemoryOper::Copy => "copy",
        })
    }
}

/// Memory benchmark request as the caller states it (sysbench option names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySpec {
    /// Worker threads (`--threads`); 0 means one per available CPU.
    pub threads: u32,
    /// Bytes per block, one buffer per thread (`--memory-block-size`).
    pub block_size: u64,
    /// Stop after this many bytes in total (`--memory-total-size`).
    pub total_size: u64,
    /// Operation (`--memory-oper`).
    pub oper: MemoryOper,
    /// Measured duration (`--time`).
    pub time: Duration,
    /// Unmeasured run before it (`--warmup-time`).
    pub warmup: Duration,
}

impl Default for MemorySpec {
    fn default() -> Self {
        MemorySpec {
            threads: 1,
            block_size: 256 << 20,
            total_size: 100 << 30,
            oper: MemoryOper::Read,
            time: Duration::from_secs(10),
            warmup: Duration::ZERO,
        }
    }
}

/// Validated memory benchmark parameters; built only by [`MemorySpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryParams {
    /// Worker threads.
    pub threads: u32,
    /// Bytes per block (one buffer per thread, two for copy).
    pub block_size_bytes: u64,
    /// Byte budget.
    pub total_size_bytes: u64,
    /// Operation.
    pub oper: MemoryOper,
    /// Measured duration, seconds.
    pub time_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    #[serde(skip)]
    time: Duration,
    #[serde(skip)]
    warmup: Duration,
}

impl MemoryParams {
    /// Bytes of buffers the run allocates.
    pub fn footprint(&self) -> u64 {
        let per_thread = match self.oper {
            MemoryOper::Copy => 2 * self.block_size_bytes,
            _ => self.block_size_bytes,
        };
        per_thread.saturating_mul(u64::from(self.threads))
    }
}

impl MemorySpec {
    /// Checks every field and resolves `threads = 0` to the CPU count.
    pub fn validate(&self) -> Result<MemoryParams, BenchError> {
        let cpus = available_cpus();
        let threads = if self.threads == 0 {
            cpus
        } else {
            self.threads
        };
        let cap = cpus * super::cpu::THREADS_PER_CPU_CAP;
        if threads > cap {
            return Err(BenchError::invalid(
                "threads",
                threads,
                format!("at most {cap} (4 per available CPU)"),
            ));
        }
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&self.block_size)
            || !self.block_size.is_multiple_of(64)
        {
            return Err(BenchError::invalid(
                "memory-block-size",
                self.block_size,
                "must be a multiple of 64 bytes between 1k and 16g (256m measures RAM, not caches)",
            ));
        }
        if self.total_size < self.block_size {
            return Err(BenchError::invalid(
                "memory-total-size",
                self.total_size,
                "must be at least one block",
            ));
        }
        check_duration(self.time, self.warmup)?;
        Ok(MemoryParams {
            threads,
            block_size_bytes: self.block_size,
            total_size_bytes: self.total_size,
            oper: self.oper,
            time_s: self.time.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            time: self.time,
            warmup: self.warmup,
        })
    }
}

/// What a memory run measured.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// The parameters used.
    pub params: MemoryParams,
    /// Blocks processed in the measured interval.
    pub events: u64,
    /// Bytes read, written or copied.
    pub bytes: u64,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Bandwidth in MiB (2^20 bytes) per second, all threads.
    pub mib_per_s: f64,
    /// Time per block.
    pub latency: LatencySummary,
}

/// Bytes of memory the kernel says can be allocated without swapping (MemAvailable).
fn mem_available() -> Result<u64, BenchError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| BenchError::io("reading /proc/meminfo", e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| {
            BenchError::io(
                "reading MemAvailable from /proc/meminfo",
                std::io::Error::new(std::io::ErrorKind::InvalidData, "field missing"),
            )
        })
}

struct Buffers {
    src: Vec<u64>,
    dst: Vec<u64>,
    round: u8,
}

fn read_block(buf: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in buf.chunks_exact(8) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a ^= *v;
        }
    }
    acc.iter().fold(0, |x, y| x ^ y)
}

/// Runs the memory benchmark. Refuses when the buffers would exceed half of MemAvailable.
/// Blocks for warm-up plus time; see [`crate::bench`] for the progress and cancel contract.
pub fn run_memory(
    params: &MemoryParams,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<MemoryReport, BenchError> {
    let needed = params.footprint();
    let cap = mem_available()? / 2;
    if needed > cap {
        return Err(BenchError::MemoryOverCap { needed, cap });
    }
    let words = (params.block_size_bytes / 8) as usize;
    let oper = params.oper;
    let plan = PoolPlan {
        threads: params.threads,
        warmup: params.warmup,
        time: params.time,
        max_events: params.total_size_bytes / params.block_size_bytes,
        figure_per_event: params.block_size_bytes as f64 / MIB,
        unit: Unit::MibPerS,
    };
    tracing::debug!(threads = params.threads, block = params.block_size_bytes, %oper,
        "memory benchmark starting");
    let out = run_pool(
        &plan,
        progress,
        cancel,
        |i| {
            // Filled with non-zero data so every page is faulted in before the clock starts
            // and reads cannot be served from the shared zero page.
            let fill = 0x0101_0101_0101_0101u64 * (i as u64 + 1);
            Buffers {
                src: vec![fill; words],
                dst: if oper == MemoryOper::Copy {
                    vec![!fill; words]
                } else {
                    Vec::new()
                },
                round: 0,
            }
        },
        |b| {
            b.round = b.round.wrapping_add(1);
            match oper {
                MemoryOper::Read => {
                    black_box(read_block(black_box(&b.src)));
                }
                MemoryOper::Write => {
                    let bytes = black_box(&mut b.src[..]);
                    // SAFETY: the pointer and length come from a live, exclusively borrowed
                    // Vec<u64>; any byte pattern is a valid u64.
                    unsafe {
                        std::ptr::write_bytes(
                            bytes.as_mut_ptr().cast::<u8>(),
                            b.round,
                            bytes.len() * 8,
                        )
                    };
                }
                MemoryOper::Copy => {
                    b.dst.copy_from_slice(black_box(&b.src));
                    black_box(&b.dst);
                }
            }
        },
    )?;
    let elapsed_s = out.elapsed.as_secs_f64();
    let bytes = out.events * params.block_size_bytes;
    Ok(MemoryReport {
        params: params.clone(),
        events: out.events,
        bytes,
        elapsed_s,
        mib_per_s: if elapsed_s > 0.0 {
            bytes as f64 / MIB / elapsed_s
        } else {
            0.0
        },
        latency: out.latency.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_block_touches_every_word() {
        let mut v = vec![0u64; 1024];
        assert_eq!(read_block(&v), 0);
        v[1023] = 5;
        assert_eq!(read_block(&v), 5);
        v[3] = 5;
        assert_eq!(read_block(&v), 0);
    }

    #[test]
    fn validation_refuses_out_of_range_values() {
        assert!(MemorySpec::default().validate().is_ok());
        for bad in [
            MemorySpec {
                block_size: 512,
                ..MemorySpec::default()
            },
            MemorySpec {
                block_size: 1000,
                ..MemorySpec::default()
            },
            MemorySpec {
                block_size: 32 << 30,
                ..MemorySpec::default()
            },
            MemorySpec {
                total_size: 1 << 20,
                ..MemorySpec::default()
            },
            MemorySpec {
                time: Duration::from_secs(700),
                ..MemorySpec::default()
            },
            MemorySpec {
                threads: 100_000,
                ..MemorySpec::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn oper_parses_its_three_names() {
        for o in [MemoryOper::Read, MemoryOper::Write, MemoryOper::Copy] {
            assert_eq!(o.to_string().parse::<MemoryOper>().unwrap(), o);
        }
        assert!("none".parse::<MemoryOper>().is_err());
    }
}
