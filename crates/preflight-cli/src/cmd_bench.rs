//! `preflight bench AGENT disk|cpu|memory`: the agent's host benchmarks through the controller,
//! with the same options, checks and summary as `preflight-agent bench` on the server.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use preflight_args::bench::BenchKind;
use preflight_proto::v1 as pb;
use preflight_render::bench;

use crate::client::{status, Conn};
use crate::Output;

const BENCH_LONG: &str = "\
Runs a disk, CPU or memory benchmark on an agent's host, the way fio and sysbench do and with
their option names, and prints a summary, or JSON with --output json (field names carry their
unit: iops, mib_per_s, events_per_s, p99_us; every result carries the parameters used and, for
disk, io_mode direct or buffered). A progress bar is drawn on stderr when it is a terminal.
Ctrl-C cancels the run on the agent, which removes its test file.

The agent checks every option (sizes, --time at most 600 s, --iodepth, --threads, --bs; the
directory must be absolute) and refuses a second disk benchmark on the same host while one runs.

Examples:
  preflight bench db-1 disk /var/lib/data                        # 4k random read, QD1, 10 s
  preflight bench db-1 disk /var/lib/data --rw randwrite --iodepth 32 --time 30
  preflight bench db-1 disk /var/lib/data --rw read --bs 1m --iodepth 32
  preflight bench db-1 disk /var/lib/etcd --rw write --bs 2300 --size 22m --direct 0 \\
      --fdatasync 1 --time-based 0                               # etcd's fdatasync test
  preflight bench db-1 cpu --threads 0                           # all CPUs, max prime 20000
  preflight bench db-1 memory --memory-oper read --threads 0 --output json";

/// Arguments of `preflight bench`.
#[derive(Debug, clap::Args)]
#[command(long_about = BENCH_LONG, after_long_help = BENCH_LONG)]
pub struct Args {
    /// Agent id (see `preflight agents`).
    pub agent: String,
    #[command(subcommand)]
    pub kind: BenchKind,
}

/// Draws the agent's progress on stderr when it is a terminal.
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

    fn update(&self, p: &pb::BenchmarkProgress) {
        let Some(bar) = &self.0 else { return };
        bar.set_prefix(match p.phase() {
            pb::BenchPhase::Layout => "layout",
            pb::BenchPhase::Warmup => "warm-up",
            pb::BenchPhase::Run => "run",
            pb::BenchPhase::Unspecified => "",
        });
        bar.set_position((p.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        if p.phase() == pb::BenchPhase::Run {
            bar.set_message(format!("{:.1} {}", p.current, bench::unit_label(p.unit())));
        } else {
            bar.set_message(String::new());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Reads the event stream until the result.
async fn follow(
    mut stream: tonic::Streaming<pb::BenchmarkEvent>,
    bar: &Bar,
) -> anyhow::Result<pb::BenchmarkResult> {
    use pb::benchmark_event::Event;
    while let Some(ev) = stream.message().await.map_err(status)? {
        match ev.event {
            Some(Event::Progress(p)) => bar.update(&p),
            Some(Event::Result(r)) => return Ok(r),
            None => {}
        }
    }
    anyhow::bail!("the benchmark stream ended without a result")
}

pub async fn run(a: Args, conn: &Conn, out: Output) -> anyhow::Result<()> {
    let mut api = conn.api().await?;
    let req = pb::AgentBenchmarkRequest {
        agent_id: a.agent.clone(),
        request: Some(a.kind.request()),
    };
    let bar = Bar::new();
    let result = tokio::select! {
        r = async {
            let stream = api.run_agent_benchmark(req).await.map_err(status)?.into_inner();
            follow(stream, &bar).await
        } => r,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the call cancels it on the controller and the agent.
            bar.finish();
            eprintln!("benchmark cancelled; the agent removes its test file");
            std::process::exit(130);
        }
    };
    bar.finish();
    let r = result?;
    if out == Output::Json {
        use pb::benchmark_result::Kind;
        let json = match &r.kind {
            Some(Kind::Disk(d)) => serde_json::to_string_pretty(d)?,
            Some(Kind::Cpu(c)) => serde_json::to_string_pretty(c)?,
            Some(Kind::Memory(m)) => serde_json::to_string_pretty(m)?,
            None => "null".to_string(),
        };
        println!("{json}");
    } else {
        print!("{}", bench::result(&r));
    }
    Ok(())
}
