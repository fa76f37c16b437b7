//! CPU and memory benchmarks: short real runs, cancellation, and refusals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use preflight_probe::bench::cpu::{run_cpu, CpuSpec};
use preflight_probe::bench::memory::{run_memory, MemoryOper, MemorySpec};
use preflight_probe::bench::{BenchError, Phase, Progress};

#[test]
fn cpu_run_counts_events_on_every_thread() {
    let params = CpuSpec {
        threads: 2,
        cpu_max_prime: 2000,
        time: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
    }
    .validate()
    .unwrap();
    let seen = Mutex::new(Vec::new());
    let report = run_cpu(
        &params,
        &|p| seen.lock().unwrap().push(p),
        &AtomicBool::new(false),
    )
    .expect("cpu run");
    assert!(report.events > 0 && report.events_per_s > 0.0);
    assert_eq!(report.per_thread_events.len(), 2);
    assert!(report.per_thread_events.iter().all(|&e| e > 0));
    assert_eq!(report.per_thread_events.iter().sum::<u64>(), report.events);
    assert!(
        (0.45..2.0).contains(&report.elapsed_s),
        "elapsed {}",
        report.elapsed_s
    );
    assert_eq!(report.latency.samples, report.events);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["events_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(json["params"]["cpu_max_prime"], 2000);
    let seen = seen.into_inner().unwrap();
    assert!(seen.iter().any(|p| p.phase == Phase::Warmup));
    assert!(seen
        .last()
        .is_some_and(|p| p.phase == Phase::Run && p.fraction == 1.0));
}

#[test]
fn cpu_run_stops_promptly_when_cancelled() {
    let params = CpuSpec {
        time: Duration::from_secs(60),
        ..CpuSpec::default()
    }
    .validate()
    .unwrap();
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    let on_progress = |p: Progress| {
        if p.phase == Phase::Run && p.current > 0.0 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let err = run_cpu(&params, &on_progress, &cancel).unwrap_err();
    assert!(matches!(err, BenchError::Cancelled));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn memory_operations_report_bandwidth() {
    for oper in [MemoryOper::Read, MemoryOper::Write, MemoryOper::Copy] {
        let params = MemorySpec {
            threads: 1,
            block_size: 16 << 20,
            total_size: 1 << 30,
            oper,
            time: Duration::from_millis(300),
            warmup: Duration::ZERO,
        }
        .validate()
        .unwrap();
        let report = run_memory(&params, &|_| {}, &AtomicBool::new(false)).expect("memory run");
        assert!(report.mib_per_s > 0.0, "{oper}");
        assert_eq!(report.bytes, report.events * (16 << 20));
        assert!(report.bytes <= 1 << 30, "{oper}: total size is a budget");
    }
}

#[test]
fn memory_total_size_ends_the_run_before_the_time() {
    let params = MemorySpec {
        block_size: 4 << 20,
        total_size: 40 << 20,
        oper: MemoryOper::Read,
        time: Duration::from_secs(60),
        ..MemorySpec::default()
    }
    .validate()
    .unwrap();
    let start = Instant::now();
    let report = run_memory(&params, &|_| {}, &AtomicBool::new(false)).expect("memory run");
    assert_eq!(report.events, 10);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn memory_over_half_of_available_is_refused() {
    let avail_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemAvailable");
    // Two copy buffers of 16 GiB per thread on enough threads to exceed half of MemAvailable.
    let threads = ((avail_kib * 1024) / (32u64 << 30) + 1) as u32;
    let spec = MemorySpec {
        threads,
        block_size: 16 << 30,
        total_size: 16 << 30,
        oper: MemoryOper::Copy,
        ..MemorySpec::default()
    };
    match spec.validate() {
        // More threads than the thread cap: refused there, which is just as safe.
        Err(BenchError::InvalidParam { name, .. }) => assert_eq!(name, "threads"),
        Ok(params) => {
            let err = run_memory(&params, &|_| {}, &AtomicBool::new(false)).unwrap_err();
            assert!(matches!(err, BenchError::MemoryOverCap { .. }), "{err}");
        }
        Err(other) => panic!("unexpected {other}"),
    }
}
