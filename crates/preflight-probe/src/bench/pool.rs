//! A timed pool of worker threads that repeat one event, shared by the CPU and memory
//! benchmarks (sysbench's execution model: N threads loop over events until the time or the
//! event budget runs out; events per second is events over wall time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::{BenchError, LatencyHistogram, Phase, Progress, Unit, PROGRESS_INTERVAL};

/// How often the coordinating thread wakes to report progress and notice a cancel (the
/// workers see the cancel flag after their current event).
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// What the pool measured.
pub(crate) struct PoolOutcome {
    /// Events finished inside the measured interval.
    pub events: u64,
    /// Measured interval: from the end of the warm-up until the last worker stopped.
    pub elapsed: Duration,
    /// Duration of each measured event.
    pub latency: LatencyHistogram,
    /// Events per worker, for fairness checks.
    pub per_thread_events: Vec<u64>,
}

/// The shape of a pooled run.
pub(crate) struct PoolPlan {
    pub threads: u32,
    pub warmup: Duration,
    pub time: Duration,
    /// Stop once this many measured events were started (u64::MAX: time only).
    pub max_events: u64,
    /// Multiplies events per second into the progress figure (e.g. MiB per event).
    pub figure_per_event: f64,
    pub unit: Unit,
}

#[repr(align(64))]
#[derive(Default)]
struct PaddedCounter(AtomicU64);

/// Runs `event` on `plan.threads` threads, each with state made by `setup` on that thread
/// (so memory is first touched by the thread that uses it) before the clock starts.
pub(crate) fn run_pool<S, Setup, Event>(
    plan: &PoolPlan,
    progress: &dyn Fn(Progress),
    cancel: &AtomicBool,
    setup: Setup,
    event: Event,
) -> Result<PoolOutcome, BenchError>
where
    Setup: Fn(usize) -> S + Sync,
    Event: Fn(&mut S) + Sync,
{
    let threads = plan.threads as usize;
    let stop = AtomicBool::new(false);
    let claimed = AtomicU64::new(0);
    let counters: Vec<PaddedCounter> = (0..threads).map(|_| PaddedCounter::default()).collect();
    let barrier = Barrier::new(threads + 1);
    let finished = AtomicU64::new(0);

    let coordinator = std::thread::current();
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (stop, claimed, counters, barrier, finished, cancel) =
                (&stop, &claimed, &counters, &barrier, &finished, cancel);
            let (setup, event, coordinator) = (&setup, &event, &coordinator);
            handles.push(scope.spawn(move || {
                let mut state = setup(i);
                let mut hist = LatencyHistogram::new();
                barrier.wait();
                let t0 = Instant::now();
                let measure_start = t0 + plan.warmup;
                let deadline = measure_start + plan.time;
                let mut counted = 0u64;
                loop {
                    // Workers watch the caller's flag themselves, so the coordinator need not
                    // wake often to relay it and take CPU time from them.
                    if stop.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let a = Instant::now();
                    let measured = a >= measure_start;
                    if measured
                        && plan.max_events != u64::MAX
                        && claimed.fetch_add(1, Ordering::Relaxed) >= plan.max_events
                    {
                        break;
                    }
                    event(&mut state);
                    let b = Instant::now();
                    if b >= measure_start {
                        hist.record(b.duration_since(a).as_nanos() as u64);
                        counted += 1;
                        counters[i].0.store(counted, Ordering::Relaxed);
                    }
                    if b >= deadline {
                        break;
                    }
                }
                let end = Instant::now();
                finished.fetch_add(1, Ordering::Release);
                coordinator.unpark();
                (counted, hist, end)
            }));
        }

        barrier.wait();
        let t0 = Instant::now();
        let measure_start = t0 + plan.warmup;
        let mut next_report = t0;
        let mut cancelled = false;
        while finished.load(Ordering::Acquire) < threads as u64 {
            if cancel.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                cancelled = true;
                break;
            }
            let now = Instant::now();
            if now >= next_report {
                next_report = now + PROGRESS_INTERVAL;
                progress(snapshot(plan, &counters, &claimed, t0, measure_start, now));
            }
            // Woken early by a finishing worker.
            std::thread::park_timeout(CANCEL_POLL);
        }

        // Workers may have seen the flag and stopped before the loop above did.
        cancelled |= cancel.load(Ordering::Relaxed);
        let mut out = PoolOutcome {
            events: 0,
            elapsed: Duration::ZERO,
            latency: LatencyHistogram::new(),
            per_thread_events: Vec::with_capacity(threads),
        };
        let mut last_end = measure_start;
        for h in handles {
            // A worker only panics on a bug; propagate it instead of reporting a bogus figure.
            let (counted, hist, end) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            out.events += counted;
            out.latency.merge(&hist);
            out.per_thread_events.push(counted);
            last_end = last_end.max(end);
        }
        if cancelled {
            return Err(BenchError::Cancelled);
        }
        out.elapsed = last_end.saturating_duration_since(measure_start);
        progress(Progress {
            phase: Phase::Run,
            fraction: 1.0,
            current: rate(out.events, out.elapsed) * plan.figure_per_event,
            unit: plan.unit,
        });
        Ok(out)
    })
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        events as f64 / s
    } else {
        0.0
    }
}

fn snapshot(
    plan: &PoolPlan,
    counters: &[PaddedCounter],
    claimed: &AtomicU64,
    t0: Instant,
    measure_start: Instant,
    now: Instant,
) -> Progress {
    if now < measure_start {
        let done = now.duration_since(t0).as_secs_f64();
        return Progress {
            phase: Phase::Warmup,
            fraction: (done / plan.warmup.as_secs_f64()).min(1.0),
            current: 0.0,
            unit: plan.unit,
        };
    }
    let elapsed = now.duration_since(measure_start);
    let events: u64 = counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
    let mut fraction = elapsed.as_secs_f64() / plan.time.as_secs_f64();
    if plan.max_events != u64::MAX && plan.max_events > 0 {
        let by_count = claimed.load(Ordering::Relaxed) as f64 / plan.max_events as f64;
        fraction = fraction.max(by_count);
    }
    Progress {
        phase: Phase::Run,
        fraction: fraction.min(1.0),
        current: rate(events, elapsed) * plan.figure_per_event,
        unit: plan.unit,
    }
}
