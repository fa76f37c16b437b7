//! Benchmark results as people read them, shared by `preflight-agent bench` (local) and
//! `preflight bench AGENT` (through the controller): the same result prints the same way on
//! both paths. The options that make the request are `preflight_args::bench`.

use preflight_proto::v1 as pb;

/// A unit as people read it: `iops` is `IOPS`, `mib_per_s` is `MiB/s` (empty when unset).
pub fn unit_label(unit: pb::BenchUnit) -> &'static str {
    match unit {
        pb::BenchUnit::Iops => "IOPS",
        pb::BenchUnit::MibPerS => "MiB/s",
        pb::BenchUnit::EventsPerS => "events/s",
        pb::BenchUnit::Unspecified => "",
    }
}

/// A size the way the options take it: `4k`, `1g`, `2300`.
pub fn option_size(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("t", 1 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ];
    for (u, m) in UNITS {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{u}", b / m);
        }
    }
    b.to_string()
}

fn latency_line(l: &Option<pb::BenchLatency>) -> String {
    let l = l.unwrap_or_default();
    format!(
        "latency us: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  (mean {:.1}, {} samples)",
        l.p50_us, l.p95_us, l.p99_us, l.max_us, l.mean_us, l.samples
    )
}

fn warmup(s: f64) -> String {
    if s > 0.0 {
        format!(" warmup={s}s")
    } else {
        String::new()
    }
}

/// A disk result for people.
pub fn disk(r: &pb::DiskResult) -> String {
    let p = r.params.clone().unwrap_or_default();
    let mut s = format!(
        "disk {} bs={} iodepth={} size={} time={}s{} on {} ({}, {})\n",
        preflight_proto::json::name::<pb::DiskRw>(p.rw),
        option_size(p.bs_bytes),
        p.iodepth,
        option_size(p.size_bytes),
        p.time_s,
        warmup(p.warmup_s),
        r.filesystem,
        preflight_proto::json::name::<pb::DiskEngine>(r.engine),
        if r.buffered {
            "BUFFERED through the page cache"
        } else {
            "O_DIRECT"
        },
    );
    for (name, st) in [("read", &r.read), ("write", &r.write)] {
        if let Some(st) = st {
            s += &format!(
                "  {name:<5} IOPS {:>10.0}  {:>9.1} MiB/s  {}\n",
                st.iops,
                st.mib_per_s,
                latency_line(&st.latency)
            );
        }
    }
    if r.fdatasync.is_some() {
        s += &format!("  fdatasync {}\n", latency_line(&r.fdatasync));
    }
    s
}

/// A CPU result for people.
pub fn cpu(r: &pb::CpuResult) -> String {
    let p = r.params.unwrap_or_default();
    format!(
        "cpu threads={} cpu-max-prime={} time={}s{}\n  events per second: {:.2}  ({} events in {:.2} s)\n  per event {}\n",
        p.threads,
        p.cpu_max_prime,
        p.time_s,
        warmup(p.warmup_s),
        r.events_per_s,
        r.events,
        r.elapsed_s,
        latency_line(&r.latency)
    )
}

/// A memory result for people.
pub fn memory(r: &pb::MemoryResult) -> String {
    let p = r.params.unwrap_or_default();
    format!(
        "memory {} threads={} block={} time={}s{}\n  {:.1} MiB/s  ({} MiB in {:.2} s)\n  per block {}\n",
        preflight_proto::json::name::<pb::MemoryOper>(p.oper),
        p.threads,
        option_size(p.block_size_bytes),
        p.time_s,
        warmup(p.warmup_s),
        r.mib_per_s,
        r.bytes >> 20,
        r.elapsed_s,
        latency_line(&r.latency)
    )
}

/// Any benchmark result for people.
pub fn result(r: &pb::BenchmarkResult) -> String {
    use pb::benchmark_result::Kind;
    match &r.kind {
        Some(Kind::Disk(d)) => disk(d),
        Some(Kind::Cpu(c)) => cpu(c),
        Some(Kind::Memory(m)) => memory(m),
        None => "empty benchmark result\n".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_print_their_units() {
        let r = pb::BenchmarkResult {
            kind: Some(pb::benchmark_result::Kind::Cpu(pb::CpuResult {
                params: Some(pb::CpuParamsUsed {
                    threads: 2,
                    cpu_max_prime: 20_000,
                    time_s: 10.0,
                    warmup_s: 0.0,
                }),
                events: 12_345,
                elapsed_s: 10.0,
                events_per_s: 1234.5,
                ..Default::default()
            })),
        };
        let s = result(&r);
        assert!(s.contains("threads=2 cpu-max-prime=20000"), "{s}");
        assert!(s.contains("events per second: 1234.50"), "{s}");
    }

    #[test]
    fn a_disk_result_names_its_engine_and_units_read_as_people_write_them() {
        let d = pb::DiskResult {
            params: Some(pb::DiskParamsUsed {
                rw: pb::DiskRw::Randread as i32,
                bs_bytes: 4096,
                iodepth: 32,
                ..Default::default()
            }),
            filesystem: "ext4".into(),
            engine: pb::DiskEngine::IoUring as i32,
            io_mode: pb::DiskIoMode::Direct as i32,
            ..Default::default()
        };
        let s = disk(&d);
        assert!(s.contains("on ext4 (io_uring, O_DIRECT)"), "{s}");
        assert_eq!(unit_label(pb::BenchUnit::MibPerS), "MiB/s");
        assert_eq!(unit_label(pb::BenchUnit::Iops), "IOPS");
        assert_eq!(unit_label(pb::BenchUnit::EventsPerS), "events/s");
    }
}
