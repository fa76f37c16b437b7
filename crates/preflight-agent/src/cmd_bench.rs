//! `preflight-agent bench disk|cpu|memory`: the host benchmarks for local use, no controller,
//! with fio's and sysbench's option names.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use preflight_args::bench::BenchKind;
use preflight_probe::bench::disk::DiskLimits;
use preflight_probe::bench::{BenchError, Phase, Progress};
use preflight_proto::v1 as pb;
use preflight_render::bench;

use crate::svc_bench::{self, Caller};

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

/// Arguments of `preflight-agent bench`.
#[derive(Debug, clap::Args)]
#[command(long_about = BENCH_LONG, after_long_help = BENCH_LONG)]
pub struct Args {
    #[command(subcommand)]
    kind: BenchKind,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A readable summary.
    Text,
    /// The full result as JSON on stdout.
    Json,
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
            pb.set_message(format!(
                "{:.1} {}",
                p.current,
                bench::unit_label(svc_bench::unit_pb(p.unit))
            ));
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

/// Runs the subcommand: the same request, checks, run and summary as the agent's
/// RunBenchmark, with Ctrl-C as the cancel.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    // Locally a relative directory is the shell's: make it absolute before the shared checks.
    if let BenchKind::Disk(d) = &mut args.kind {
        if let Some(dir) = d.dir.take() {
            d.dir = Some(std::path::absolute(&dir).unwrap_or(dir));
        }
    }
    let limits = DiskLimits::default();
    let checked = svc_bench::validate(args.kind.request(), Caller::Local, &limits)?;
    install_cancel_handler()?;
    let bar = Bar::new();
    let progress = |p: Progress| bar.update(p);
    let is_disk = matches!(checked, svc_bench::Validated::Disk(_));
    let result = svc_bench::run(&checked, &limits, &progress, &CANCEL);
    bar.finish();
    match result {
        Ok(r) => emit(args.output, &r),
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

fn emit(out: Output, r: &pb::BenchmarkResult) -> anyhow::Result<()> {
    use pb::benchmark_result::Kind;
    match out {
        Output::Json => {
            let json = match &r.kind {
                Some(Kind::Disk(d)) => serde_json::to_string_pretty(d)?,
                Some(Kind::Cpu(c)) => serde_json::to_string_pretty(c)?,
                Some(Kind::Memory(m)) => serde_json::to_string_pretty(m)?,
                None => "null".to_string(),
            };
            println!("{json}");
        }
        Output::Text => print!("{}", bench::result(r)),
    }
    Ok(())
}
