//! The benchmark options, shared by `preflight-agent bench` (local) and `preflight bench AGENT`
//! (through the controller): the same fio and sysbench option names turn into the same wire
//! request on both paths. The results print through `preflight_render::bench`.
//!
//! Parsing here is only syntax (a size, a duration, a known `--rw`); every range and cap is
//! checked by the agent, which is the one place that knows the host.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::Subcommand;
use preflight_core::units;
use preflight_proto::v1 as pb;

const DISK_LONG: &str = "\
Disk IOPS, throughput and latency on the filesystem holding DIR, like fio.

A test file with a unique name is created in DIR, written once (--size bytes), measured for
--time and removed at the end, on error, on Ctrl-C and when the caller cancels. Queue depth 1
uses pread/pwrite (fio's psync engine), deeper queues use io_uring. O_DIRECT is the default so
the page cache is out of the way; tmpfs has no disk and is refused unless --direct 0 asks for
buffered I/O (the result then says buffered).

Refused: DIR not a directory (through the controller: not an absolute path), a read-only
filesystem, free space below --size plus a margin, --size over half the free space or 64 GiB,
--time over 600 s, another disk benchmark running on this host.

Examples (on the server: `preflight-agent bench disk ...`; from anywhere: `preflight bench
AGENT disk ...`):
  bench disk /data --rw randread --bs 4k --iodepth 1 --time 10
  bench disk /data --rw randrw --rwmixread 70 --iodepth 32
  bench disk /data --rw write --bs 1m --iodepth 32 --size 4g
  bench disk /var/lib/etcd --rw write --bs 2300 --size 22m --direct 0 --fdatasync 1 \\
      --time-based 0                                     # etcd's fdatasync test
  preflight-agent bench disk --filename /data/fio.dat --rw randread --iodepth 32

Compare with: fio --name=t --directory=/data --rw=randread --bs=4k --iodepth=32 \\
  --ioengine=io_uring --direct=1 --size=1g --runtime=10 --time_based";

const CPU_LONG: &str = "\
sysbench's cpu test, event for event: each event counts the primes below --cpu-max-prime by
trial division, and the figure is events per second over all threads.

Examples (`preflight-agent bench cpu ...` on the server, `preflight bench AGENT cpu ...`):
  bench cpu                          # 1 thread, like sysbench cpu run
  bench cpu --threads 0 --time 30    # every CPU

Compare with: sysbench cpu --cpu-max-prime=20000 --threads=1 --time=10 run";

const MEMORY_LONG: &str = "\
Memory bandwidth in MiB/s: sequential read, write or copy over one --memory-block-size buffer
per thread, until --memory-total-size bytes or --time. The 256 MiB default is far larger than
any cache, so the figure is the RAM's; sysbench's own 1 KiB default only measures L1 cache.

Examples (`preflight-agent bench memory ...` on the server, `preflight bench AGENT memory ...`):
  bench memory --memory-oper read
  bench memory --memory-oper write --threads 0
  bench memory --memory-oper copy --memory-block-size 512m

Compare with: sysbench memory --memory-block-size=256M --memory-total-size=100G \\
  --memory-oper=read --threads=1 run";

/// Which benchmark, with its options (fio's and sysbench's names).
#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// Disk IOPS, MiB/s and latency, or fdatasync latency, like fio.
    #[command(long_about = DISK_LONG)]
    Disk(DiskArgs),
    /// CPU events per second, like `sysbench cpu`.
    #[command(long_about = CPU_LONG)]
    Cpu(CpuArgs),
    /// Memory bandwidth in MiB/s, like `sysbench memory`.
    #[command(long_about = MEMORY_LONG)]
    Memory(MemoryArgs),
}

/// Options of the disk benchmark.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// Directory on the disk to measure; a temporary test file is made there and removed.
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    pub dir: Option<PathBuf>,
    /// Use this existing regular file instead of a temporary one (never deleted; write
    /// patterns overwrite its first --size bytes). Local `preflight-agent bench` only.
    #[arg(long)]
    pub filename: Option<PathBuf>,
    /// I/O pattern: randread, randwrite, randrw, read or write.
    #[arg(long, default_value = "randread", value_parser = rw_arg())]
    pub rw: pb::DiskRw,
    /// Bytes per request, e.g. 4k, 1m, 2300.
    #[arg(long, default_value = "4k", value_parser = size_arg)]
    pub bs: u64,
    /// Requests in flight (1 uses pread/pwrite, more uses io_uring).
    #[arg(long, default_value_t = 1)]
    pub iodepth: u32,
    /// Test file size, e.g. 1g (with --filename: 0 means the whole file).
    #[arg(long, default_value = "1g", value_parser = size_arg)]
    pub size: u64,
    /// Measured duration: seconds, or 30s, 2m, 500ms (at most 600 s with --warmup).
    #[arg(long, default_value = "10", value_parser = duration_arg)]
    pub time: Duration,
    /// Unmeasured warm-up before it (fio's ramp_time).
    #[arg(long, alias = "ramp_time", alias = "ramp-time", default_value = "0", value_parser = duration_arg)]
    pub warmup: Duration,
    /// 1: O_DIRECT, bypassing the page cache; 0: buffered (the result says so).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub direct: u8,
    /// 1: run for the whole --time; 0: stop after writing or reading --size bytes once.
    #[arg(long, alias = "time_based", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub time_based: u8,
    /// fdatasync after every N writes and report its latency (needs --iodepth 1).
    #[arg(long, default_value_t = 0)]
    pub fdatasync: u32,
    /// Percentage of reads with --rw randrw.
    #[arg(long, default_value_t = 50)]
    pub rwmixread: u8,
}

/// Options of the CPU benchmark.
#[derive(Debug, clap::Args)]
pub struct CpuArgs {
    /// Worker threads; 0 means one per CPU.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Upper limit of the prime search per event.
    #[arg(long, default_value_t = 20_000)]
    pub cpu_max_prime: u32,
    /// Measured duration: seconds, or 30s, 2m.
    #[arg(long, default_value = "10", value_parser = duration_arg)]
    pub time: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, alias = "warmup-time", default_value = "0", value_parser = duration_arg)]
    pub warmup: Duration,
}

/// Options of the memory benchmark.
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Worker threads, each with its own buffer; 0 means one per CPU.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Buffer per thread, e.g. 256m.
    #[arg(long, default_value = "256m", value_parser = size_arg)]
    pub memory_block_size: u64,
    /// Stop after this many bytes in total, e.g. 100g.
    #[arg(long, default_value = "100g", value_parser = size_arg)]
    pub memory_total_size: u64,
    /// Operation: read, write or copy.
    #[arg(long, default_value = "write", value_parser = memory_oper_arg())]
    pub memory_oper: pb::MemoryOper,
    /// Measured duration: seconds, or 30s, 2m.
    #[arg(long, default_value = "10", value_parser = duration_arg)]
    pub time: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, alias = "warmup-time", default_value = "0", value_parser = duration_arg)]
    pub warmup: Duration,
}

/// Parses a size as fio and sysbench write them (see [`preflight_core::units::parse_size`]).
pub fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size(s).map_err(|reason| format!("{s:?}: {reason}"))
}

/// Parses a duration as fio writes it (see [`preflight_core::units::parse_duration`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|reason| format!("{s:?}: {reason}"))
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn path_string(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `--rw`: fio's words, listed in `--help` and completions.
fn rw_arg() -> impl TypedValueParser<Value = pb::DiskRw> {
    clap::builder::PossibleValuesParser::new(["randread", "randwrite", "randrw", "read", "write"])
        .map(|w| {
            pb::DiskRw::from_str_name(&format!("DISK_RW_{}", w.to_ascii_uppercase()))
                .expect("every possible value is a DiskRw")
        })
}

/// `--memory-oper`: sysbench's words.
fn memory_oper_arg() -> impl TypedValueParser<Value = pb::MemoryOper> {
    clap::builder::PossibleValuesParser::new(["read", "write", "copy"]).map(|w| {
        pb::MemoryOper::from_str_name(&format!("MEMORY_OPER_{}", w.to_ascii_uppercase()))
            .expect("every possible value is a MemoryOper")
    })
}

impl BenchKind {
    /// The wire request for these options, unchecked: the agent validates every field.
    pub fn request(&self) -> pb::BenchmarkRequest {
        use pb::benchmark_request::Kind;
        let kind = match self {
            BenchKind::Disk(a) => Kind::Disk(pb::DiskBenchmark {
                directory: path_string(&a.dir),
                filename: path_string(&a.filename),
                rw: a.rw as i32,
                bs_bytes: a.bs,
                iodepth: a.iodepth,
                size_bytes: a.size,
                time_ms: ms(a.time),
                warmup_ms: ms(a.warmup),
                direct: a.direct == 1,
                time_based: a.time_based == 1,
                fdatasync: a.fdatasync,
                rwmixread: u32::from(a.rwmixread),
            }),
            BenchKind::Cpu(a) => Kind::Cpu(pb::CpuBenchmark {
                threads: a.threads,
                cpu_max_prime: a.cpu_max_prime,
                time_ms: ms(a.time),
                warmup_ms: ms(a.warmup),
            }),
            BenchKind::Memory(a) => Kind::Memory(pb::MemoryBenchmark {
                threads: a.threads,
                block_size_bytes: a.memory_block_size,
                total_size_bytes: a.memory_total_size,
                oper: a.memory_oper as i32,
                time_ms: ms(a.time),
                warmup_ms: ms(a.warmup),
            }),
        };
        pb::BenchmarkRequest { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        kind: BenchKind,
    }

    #[test]
    fn fio_option_names_become_the_wire_request() {
        let cli = Cli::try_parse_from([
            "t",
            "disk",
            "/data",
            "--rw",
            "randwrite",
            "--bs",
            "4k",
            "--iodepth",
            "32",
            "--size",
            "64m",
            "--time",
            "2s",
            "--direct",
            "0",
        ])
        .unwrap();
        let Some(pb::benchmark_request::Kind::Disk(d)) = cli.kind.request().kind else {
            panic!("disk request expected");
        };
        assert_eq!(d.directory, "/data");
        assert_eq!(d.rw, pb::DiskRw::Randwrite as i32);
        assert_eq!((d.bs_bytes, d.iodepth, d.size_bytes), (4096, 32, 64 << 20));
        assert_eq!(d.time_ms, 2000);
        assert!(!d.direct && d.time_based);
    }

    #[test]
    fn bad_sizes_and_durations_are_refused_by_the_parser() {
        assert!(Cli::try_parse_from(["t", "disk", "/d", "--size", "1x"]).is_err());
        assert!(Cli::try_parse_from(["t", "cpu", "--time", "5w"]).is_err());
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    }
}
