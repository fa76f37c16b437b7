//! CPU benchmark: sysbench's `cpu` test, event for event.
//!
//! One event counts the primes below `cpu_max_prime` by trial division exactly as sysbench
//! 1.0's `cpu_execute_event` does: for every `c` in `3..max`, divide by every `l` from 2 while
//! `l <= sqrt(c)` (64-bit integers, the bound compared as a double), stop at the first divisor.
//! Threads repeat events until the time is up; events per second is all events over wall time,
//! so the figure reads directly against `sysbench cpu --cpu-max-prime=N --threads=T run`.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use super::pool::{run_pool, PoolPlan};
use super::{available_cpus, check_duration, BenchError, LatencySummary, Progress, Unit};

/// Largest `cpu_max_prime` accepted: one event at 10^7 already takes seconds.
pub const MAX_PRIME_CAP: u32 = 10_000_000;

/// Largest thread count accepted, as a multiple of the CPUs available.
pub const THREADS_PER_CPU_CAP: u32 = 4;

/// CPU benchmark request as the caller states it (sysbench option names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSpec {
    /// Worker threads (`--threads`); 0 means one per available CPU.
    pub threads: u32,
    /// Upper limit of the prime search (`--cpu-max-prime`, sysbench's usual 20000).
    pub cpu_max_prime: u32,
    /// Measured duration (`--time`).
    pub time: Duration,
    /// Unmeasured run before it (`--warmup-time`).
    pub warmup: Duration,
}

impl Default for CpuSpec {
    fn default() -> Self {
        CpuSpec {
            threads: 1,
            cpu_max_prime: 20_000,
            time: Duration::from_secs(10),
            warmup: Duration::ZERO,
        }
    }
}

/// Validated CPU benchmark parameters; built only by [`CpuSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuParams {
    /// Worker threads.
    pub threads: u32,
    /// Upper limit of the prime search.
    pub cpu_max_prime: u32,
    /// Measured duration, seconds.
    pub time_s: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    #[serde(skip)]
    time: Duration,
    #[serde(skip)]
    warmup: Duration,
}

impl CpuSpec {
    /// Checks every field and resolves `threads = 0` to the CPU count.
    pub fn validate(&self) -> Result<CpuParams, BenchError> {
        let cpus = available_cpus();
        let threads = if self.threads == 0 {
            cpus
        } else {
            self.threads
        };
        let cap = cpus * THREADS_PER_CPU_CAP;
        if threads > cap {
            return Err(BenchError::invalid(
                "threads",
                threads,
                format!("at most {cap} ({THREADS_PER_CPU_CAP} per available CPU)"),
            ));
        }
        if !(3..=MAX_PRIME_CAP).contains(&self.cpu_max_prime) {
            return Err(BenchError::invalid(
                "cpu-max-prime",
                self.cpu_max_prime,
                format!("must be between 3 and {MAX_PRIME_CAP}"),
            ));
        }
        check_duration(self.time, self.warmup)?;
        Ok(CpuParams {
            threads,
            cpu_max_prime: self.cpu_max_prime,
            time_s: self.time.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            time: self.time,
            warmup: self.warmup,
        })
    }
}

/// What a CPU run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// The parameters used.
    pub params: CpuParams,
    /// Events finished in the measured interval, all threads.
    pub events: u64,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Events per second, all threads (sysbench's "events per second").
    pub events_per_s: f64,
    /// Events per thread, to spot a starved thread.
    pub per_thread_events: Vec<u64>,
    /// Time per event.
    pub latency: LatencySummary,
}

/// `c % l` with the 64-bit `div` instruction, as gcc compiles sysbench. LLVM would test whether
/// both operands fit in 32 bits and use the much cheaper 32-bit `div`, which made this event
/// 1.45 times faster than sysbench's on the reference host: a different benchmark.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rem_u64(c: u64, l: u64) -> u64 {
    let rem: u64;
    // SAFETY: `div` reads rdx:rax and the operand and writes only rax and rdx, both declared;
    // rdx is zeroed so the quotient fits, and the caller guarantees l >= 2 (no divide error).
    unsafe {
        std::arch::asm!(
            "div {l}",
            l = in(reg) l,
            inout("rax") c => _,
            inout("rdx") 0u64 => rem,
            options(pure, nomem, nostack),
        );
    }
    rem
}

/// `c % l` where no such code generation gap exists.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn rem_u64(c: u64, l: u64) -> u64 {
    c % l
}

/// One sysbench cpu event: counts primes below `max_prime` the way sysbench does and returns
/// the count (the primes from 3 up, so 2261 for 20000).
///
/// Same arithmetic as sysbench's C: a double square root per candidate, the divisor compared
/// as a double, a 64-bit remainder per trial. The divisor 2 is tested with a bit test, as gcc
/// compiles it; the counts are identical (see the tests).
#[inline(never)]
pub fn count_primes(max_prime: u64) -> u64 {
    // The values stay far below 2^53, so the signed conversions are exact; they compile to a
    // single cvtsi2sd as in sysbench.
    let f = |x: u64| x as i64 as f64;
    let mut n = 0u64;
    let mut c = 3u64;
    while c < max_prime {
        let t = f(c).sqrt();
        let mut l = 2u64;
        if f(l) <= t {
            if c & 1 == 0 {
                // Divisible by 2: composite, the loop would break at l = 2.
                c += 1;
                continue;
            }
            l = 3;
            while f(l) <= t {
                if rem_u64(c, l) == 0 {
                    break;
                }
                l += 1;
            }
        }
        if f(l) > t {
            n += 1;
        }
        c += 1;
    }
    n
}

/// Runs the CPU benchmark. Blocks for warm-up plus time; see the module docs of
/// [`crate::bench`] for the progress and cancel contract.
pub fn run_cpu(
    params: &CpuParams,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
) -> Result<CpuReport, BenchError> {
    let plan = PoolPlan {
        threads: params.threads,
        warmup: params.warmup,
        time: params.time,
        max_events: u64::MAX,
        figure_per_event: 1.0,
        unit: Unit::EventsPerS,
    };
    let max = u64::from(params.cpu_max_prime);
    tracing::debug!(
        threads = params.threads,
        max_prime = max,
        "cpu benchmark starting"
    );
    let out = run_pool(
        &plan,
        progress,
        cancel,
        |_| (),
        |_| {
            black_box(count_primes(black_box(max)));
        },
    )?;
    let elapsed_s = out.elapsed.as_secs_f64();
    Ok(CpuReport {
        params: params.clone(),
        events: out.events,
        elapsed_s,
        events_per_s: if elapsed_s > 0.0 {
            out.events as f64 / elapsed_s
        } else {
            0.0
        },
        per_thread_events: out.per_thread_events,
        latency: out.latency.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_primes_as_sysbench_does() {
        // sysbench starts at 3, so the count is pi(max - 1) - 1.
        assert_eq!(count_primes(10), 3); // 3 5 7
        assert_eq!(count_primes(100), 24);
        assert_eq!(count_primes(20_000), 2261);
        assert_eq!(count_primes(3), 0);
        assert_eq!(count_primes(5), 1); // 3 (4 is even)
    }

    /// sysbench's loop, verbatim, as the reference for the optimised one.
    #[allow(clippy::manual_is_multiple_of)] // verbatim C
    fn sysbench_reference(max_prime: u64) -> u64 {
        let mut n = 0;
        for c in 3..max_prime {
            let t = (c as f64).sqrt();
            let mut l = 2u64;
            while (l as f64) <= t {
                if c % l == 0 {
                    break;
                }
                l += 1;
            }
            if (l as f64) > t {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn matches_the_verbatim_sysbench_loop() {
        for max in [3, 4, 5, 6, 9, 10, 25, 26, 1000, 20_000, 100_003] {
            assert_eq!(count_primes(max), sysbench_reference(max), "max {max}");
        }
        assert_eq!(rem_u64(20_001, 7), 20_001 % 7);
    }

    #[test]
    fn validation_refuses_out_of_range_values() {
        let ok = CpuSpec::default().validate().unwrap();
        assert_eq!(ok.threads, 1);
        let all = CpuSpec {
            threads: 0,
            ..CpuSpec::default()
        }
        .validate()
        .unwrap();
        assert_eq!(all.threads, available_cpus());
        for bad in [
            CpuSpec {
                cpu_max_prime: 2,
                ..CpuSpec::default()
            },
            CpuSpec {
                cpu_max_prime: MAX_PRIME_CAP + 1,
                ..CpuSpec::default()
            },
            CpuSpec {
                threads: available_cpus() * THREADS_PER_CPU_CAP + 1,
                ..CpuSpec::default()
            },
            CpuSpec {
                time: Duration::from_secs(601),
                ..CpuSpec::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} must be refused");
        }
    }
}
