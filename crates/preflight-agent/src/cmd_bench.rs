//! `preflight-agent bench disk|cpu|memory`: the host benchmarks for local use, no controller,
//! with fio's and sysbench's option names.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use preflight_probe::bench::cpu::{run_cpu, CpuReport, CpuSpec};
use preflight_probe::bench::disk::{
    run_disk, DiskLimits, DiskReport, DiskSpec, DiskTarget, RwMode,
};
use preflight_probe::bench::memory::{run_memory, MemoryOper, MemoryReport, MemorySpec};
use preflight_probe::bench::{
    parse_duration, parse_size, BenchError, LatencySummary, Phase, Progress,
};

const BENCH_LONG: &str = "\
Measures this host the way fio and sysbench do, with their option names, without installing
either. Each benchmark prints a readable summary, or JSON with --output json (field names carry
their unit: iops, mib_per_s, events_per_s, p99_us). A progress bar is drawn on stderr when it is
a terminal. Ctrl-C stops a run cleanly and removes its test file.

Examples:
  preflight-agent bench disk /var/lib/data                       # 4k random read, QD1, 10 s
  preflight-agent bench disk /var/lib/data --rw randwrite --iodepth 32 --time 30
  preflight-agent bench disk /var/lib/data --rw read --bs 1m --iodepth 32
  preflight-agent bench disk /var/lib/etcd --rw write --bs 2300 --size 22m --direct 0 \\
      --fdatasync 1 --time-based 0                               # etcd's fdatasync test
  preflight-agent bench cpu --threads 0                          # all CPUs, max prime 20000
  preflight-agent bench memory --memory-oper read --threads 0 --output json";

const DISK_LONG: &str = "\
Disk IOPS, throughput and latency on the filesystem holding DIR, like fio.

A test file with a unique name is created in DIR, written once (--size bytes), measured for
--time and removed at the end, on error and on Ctrl-C. Queue depth 1 uses pread/pwrite (fio's
psync engine), deeper queues use io_uring. O_DIRECT is the default so the page cache is out of
the way; tmpfs has no disk and is refused unless --direct 0 asks for buffered I/O (the result
then says buffered).

Refused: DIR not a directory, a read-only filesystem, free space below --size plus a margin,
--size over half the free space or 64 GiB, --time over 600 s, another disk benchmark running
on this host.

Examples:
  preflight-agent bench disk /data --rw randread --bs 4k --iodepth 1 --time 10
  preflight-agent bench disk /data --rw randrw --rwmixread 70 --iodepth 32
  preflight-agent bench disk /data --rw write --bs 1m --iodepth 32 --size 4g
  preflight-agent bench disk /var/lib/etcd --rw write --bs 2300 --size 22m --direct 0 \\
      --fdatasync 1 --time-based 0
  preflight-agent bench disk --filename /data/fio.dat --rw randread --iodepth 32

Compare with: fio --name=t --directory=/data --rw=randread --bs=4k --iodepth=32 \\
  --ioengine=io_uring --direct=1 --size=1g --runtime=10 --time_based";

const CPU_LONG: &str = "\
sysbench's cpu test, event for event: each event counts the primes below --cpu-max-prime by
trial division, and the figure is events per second over all threads.

Examples:
  preflight-agent bench cpu                          # 1 thread, like sysbench cpu run
  preflight-agent bench cpu --threads 0 --time 30    # every CPU

Compare with: sysbench cpu --cpu-max-prime=20000 --threads=1 --time=10 run";

const MEMORY_LONG: &str = "\
Memory bandwidth in MiB/s: sequential read, write or copy over one --memory-block-size buffer
per thread, until --memory-total-size bytes or --time. The 256 MiB default is far larger than
any cache, so the figure is the RAM's; sysbench's own 1 KiB default only measures L1 cache.

Examples:
  preflight-agent bench memory --memory-oper read
  preflight-agent bench memory --memory-oper write --threads 0
  preflight-agent bench memory --memory-oper copy --memory-block-size 512m

Compare with: sysbench memory --memory-block-size=256M --memory-total-size=100G \\
  --memory-oper=read --threads=1 run";

/// Arguments of `preflight-agent bench`.
#[derive(Debug, clap::Args)]
#[command(long_about = BENCH_LONG, after_long_help = BENCH_LONG)]
pub struct Args {
    #[command(subcommand)]
    kind: Kind,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A readable summary.
    Text,
    /// The full report as JSON on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
enum Kind {
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

fn size_arg(s: &str) -> Result<u64, BenchError> {
    parse_size(s)
}

fn duration_arg(s: &str) -> Result<Duration, BenchError> {
    parse_duration(s)
}

#[derive(Debug, clap::Args)]
struct DiskArgs {
    /// Directory on the disk to measure; a temporary test file is made there and removed.
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    dir: Option<PathBuf>,
    /// Use this existing regular file instead of a temporary one (never deleted; write
    /// patterns overwrite its first --size bytes).
    #[arg(long)]
    filename: Option<PathBuf>,
    /// I/O pattern.
    #[arg(long, default_value = "randread", value_parser = ["randread", "randwrite", "randrw", "read", "write"])]
    rw: String,
    /// Bytes per request, e.g. 4k, 1m, 2300.
    #[arg(long, default_value = "4k", value_parser = size_arg)]
    bs: u64,
    /// Requests in flight (1 uses pread/pwrite, more uses io_uring).
    #[arg(long, default_value_t = 1)]
    iodepth: u32,
    /// Test file size, e.g. 1g (with --filename: 0 means the whole file).
    #[arg(long, default_value = "1g", value_parser = size_arg)]
    size: u64,
    /// Measured duration: seconds, or 30s, 2m, 500ms.
    #[arg(long, default_value = "10", value_parser = duration_arg)]
    time: Duration,
    /// Unmeasured warm-up before it (fio's ramp_time).
    #[arg(long, alias = "ramp_time", alias = "ramp-time", default_value = "0", value_parser = duration_arg)]
    warmup: Duration,
    /// 1: O_DIRECT, bypassing the page cache; 0: buffered (the result says so).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    direct: u8,
    /// 1: run for the whole --time; 0: stop after writing or reading --size bytes once.
    #[arg(long, alias = "time_based", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    time_based: u8,
    /// fdatasync after every N writes and report its latency (needs --iodepth 1).
    #[arg(long, default_value_t = 0)]
    fdatasync: u32,
    /// Percentage of reads with --rw randrw.
    #[arg(long, default_value_t = 50)]
    rwmixread: u8,
}

#[derive(Debug, clap::Args)]
struct CpuArgs {
    /// Worker threads; 0 means one per CPU.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Upper limit of the prime search per event.
    #[arg(long, default_value_t = 20_000)]
    cpu_max_prime: u32,
    /// Measured duration: seconds, or 30s, 2m.
    #[arg(long, default_value = "10", value_parser = duration_arg)]
    time: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, alias = "warmup-time", default_value = "0", value_parser = duration_arg)]
    warmup: Duration,
}

#[derive(Debug, clap::Args)]
struct MemoryArgs {
    /// Worker threads, each with its own buffer; 0 means one per CPU.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Buffer per thread, e.g. 256m.
    #[arg(long, default_value = "256m", value_parser = size_arg)]
    memory_block_size: u64,
    /// Stop after this many bytes in total, e.g. 100g.
    #[arg(long, default_value = "100g", value_parser = size_arg)]
    memory_total_size: u64,
    /// Operation.
    #[arg(long, default_value = "write", value_parser = ["read", "write", "copy"])]
    memory_oper: String,
    /// Measured duration: seconds, or 30s, 2m.
    #[arg(long, default_value = "10", value_parser = duration_arg)]
    time: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, alias = "warmup-time", default_value = "0", value_parser = duration_arg)]
    warmup: Duration,
}

/// Set by the SIGINT/SIGTERM handler; the running benchmark polls it and cleans up.
static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe.
    CANCEL.store(true, Ordering::Relaxed);
}

fn install_cancel_handler() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an AtomicBool, which is async-signal-safe, and
        // replaces no handler another part of this process relies on.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

/// Draws progress on stderr when it is a terminal.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new() -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb = ProgressBar::new(1000);
        let style = ProgressStyle::with_template("{prefix:>8} [{bar:40}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        pb.set_style(style);
        Bar(Some(pb))
    }

    fn update(&self, p: Progress) {
        let Some(pb) = &self.0 else { return };
        pb.set_prefix(match p.phase {
            Phase::Layout => "layout",
            Phase::Warmup => "warm-up",
            Phase::Run => "run",
        });
        pb.set_position((p.fraction * 1000.0) as u64);
        if p.phase == Phase::Run {
            pb.set_message(format!("{:.1} {}", p.current, unit_label(p.unit)));
        } else {
            pb.set_message(String::new());
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

fn unit_label(unit: &str) -> &str {
    match unit {
        "iops" => "IOPS",
        "mib_per_s" => "MiB/s",
        "events_per_s" => "events/s",
        other => other,
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    install_cancel_handler()?;
    let bar = Bar::new();
    let progress = |p: Progress| bar.update(p);
    let out = args.output;
    let is_disk = matches!(args.kind, Kind::Disk(_));
    let result = match args.kind {
        Kind::Disk(d) => disk(d, &progress).map(|r| emit(out, &r, print_disk)),
        Kind::Cpu(c) => cpu(c, &progress).map(|r| emit(out, &r, print_cpu)),
        Kind::Memory(m) => memory(m, &progress).map(|r| emit(out, &r, print_memory)),
    };
    bar.finish();
    match result {
        Ok(printed) => printed,
        Err(BenchError::Cancelled) => {
            if is_disk {
                eprintln!("benchmark cancelled; its test file is removed");
            } else {
                eprintln!("benchmark cancelled");
            }
            std::process::exit(130);
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

fn disk(a: DiskArgs, progress: &dyn Fn(Progress)) -> Result<DiskReport, BenchError> {
    let target = match (a.filename, a.dir) {
        (Some(f), _) => DiskTarget::ExistingFile(f),
        (None, Some(d)) => DiskTarget::TempFileIn(d),
        // clap requires one of them.
        (None, None) => DiskTarget::TempFileIn(PathBuf::new()),
    };
    let spec = DiskSpec {
        rw: a.rw.parse::<RwMode>()?,
        bs: a.bs,
        iodepth: a.iodepth,
        size: a.size,
        time: a.time,
        warmup: a.warmup,
        direct: a.direct == 1,
        time_based: a.time_based == 1,
        fdatasync: a.fdatasync,
        rwmixread: a.rwmixread,
        ..DiskSpec::new(target)
    };
    let params = spec.validate()?;
    run_disk(&params, &DiskLimits::default(), progress, &CANCEL)
}

fn cpu(a: CpuArgs, progress: &dyn Fn(Progress)) -> Result<CpuReport, BenchError> {
    let params = CpuSpec {
        threads: a.threads,
        cpu_max_prime: a.cpu_max_prime,
        time: a.time,
        warmup: a.warmup,
    }
    .validate()?;
    run_cpu(&params, progress, &CANCEL)
}

fn memory(a: MemoryArgs, progress: &dyn Fn(Progress)) -> Result<MemoryReport, BenchError> {
    let params = MemorySpec {
        threads: a.threads,
        block_size: a.memory_block_size,
        total_size: a.memory_total_size,
        oper: a.memory_oper.parse::<MemoryOper>()?,
        time: a.time,
        warmup: a.warmup,
    }
    .validate()?;
    run_memory(&params, progress, &CANCEL)
}

fn emit<R: serde::Serialize>(out: Output, r: &R, text: fn(&R) -> String) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(r)?),
        Output::Text => print!("{}", text(r)),
    }
    Ok(())
}

fn human_size(b: u64) -> String {
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

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "latency us: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  (mean {:.1}, {} samples)",
        l.p50_us, l.p95_us, l.p99_us, l.max_us, l.mean_us, l.samples
    )
}

fn print_disk(r: &DiskReport) -> String {
    let p = &r.params;
    let mut s = format!(
        "disk {} bs={} iodepth={} size={} time={}s{} on {} ({}, {})\n",
        p.rw,
        human_size(p.bs_bytes),
        p.iodepth,
        human_size(p.size_bytes),
        p.time_s,
        if p.warmup_s > 0.0 {
            format!(" warmup={}s", p.warmup_s)
        } else {
            String::new()
        },
        r.filesystem,
        r.engine,
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
    if let Some(f) = &r.fdatasync {
        s += &format!("  fdatasync {}\n", latency_line(f));
    }
    s
}

fn print_cpu(r: &CpuReport) -> String {
    format!(
        "cpu threads={} cpu-max-prime={} time={}s\n  events per second: {:.2}  ({} events in {:.2} s)\n  per event {}\n",
        r.params.threads,
        r.params.cpu_max_prime,
        r.params.time_s,
        r.events_per_s,
        r.events,
        r.elapsed_s,
        latency_line(&r.latency)
    )
}

fn print_memory(r: &MemoryReport) -> String {
    format!(
        "memory {} threads={} block={} time={}s\n  {:.1} MiB/s  ({} MiB in {:.2} s)\n  per block {}\n",
        r.params.oper,
        r.params.threads,
        human_size(r.params.block_size_bytes),
        r.params.time_s,
        r.mib_per_s,
        r.bytes >> 20,
        r.elapsed_s,
        latency_line(&r.latency)
    )
}
