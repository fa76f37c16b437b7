//! preflight-agent: the small daemon on every target server (`enroll`, then `run`), and local
//! subcommands a deployer can use on a server without any controller, like sysbench or ss.
//! It exposes typed endpoints only: it never runs a command it was sent.

// Every `print!`/`println!`/`eprint!`/`eprintln!` of this crate goes through
// `preflight_render::term`: control characters from hosts are escaped in text output (JSON is
// written exactly), and a reader that went away (`| head`) ends the process quietly.
#[allow(unused_macros)]
macro_rules! print {
    ($($t:tt)*) => { ::preflight_render::term::out(format_args!($($t)*), false) };
}
#[allow(unused_macros)]
macro_rules! println {
    () => { ::preflight_render::term::out(format_args!(""), true) };
    ($($t:tt)*) => { ::preflight_render::term::out(format_args!($($t)*), true) };
}
#[allow(unused_macros)]
macro_rules! eprint {
    ($($t:tt)*) => { ::preflight_render::term::err(format_args!($($t)*), false) };
}
#[allow(unused_macros)]
macro_rules! eprintln {
    () => { ::preflight_render::term::err(format_args!(""), true) };
    ($($t:tt)*) => { ::preflight_render::term::err(format_args!($($t)*), true) };
}

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use preflight_agent::{
    cmd_bench, cmd_harden, cmd_package, cmd_ports, convert, enroll, error_chain, run, Output,
};

#[derive(Parser)]
#[command(
    name = "preflight-agent",
    version,
    about = "preflight agent: readiness checks, benchmarks and hardening on this server",
    long_about = "preflight agent: readiness checks, benchmarks and hardening on this server.\n\n\
On a managed server: `enroll` once with the line `preflight token create` prints, then `run` \
(the systemd unit does this). Without a controller, the local subcommands (inventory, bench, \
ports, harden) work on their own."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PREFLIGHT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll this server with a controller (once): makes a key here, gets a certificate.
    Enroll(enroll::Args),
    /// Serve the Agent service over mutual TLS and heartbeat to the controller.
    Run(run::Args),
    /// Show this host's inventory (no controller needed).
    Inventory {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Disk, CPU and memory benchmarks, like fio and sysbench.
    Bench(cmd_bench::Args),
    /// Listening sockets with their processes, like `ss -ltnup`.
    Ports(cmd_ports::Args),
    /// Hardening checks against a root prefix.
    Harden(cmd_harden::Args),
    /// Verify the deployment package on this host against the plan's manifest.
    Package(cmd_package::Args),
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PREFLIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: logs in files and journald stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // A small, fixed pool: the agent idles most of the time, and blocking work (benchmarks,
    // hashing) goes to the blocking pool.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

fn local_inventory(output: Output) -> anyhow::Result<()> {
    let inv = convert::inventory(preflight_probe::inventory::collect()?);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&inv)?),
        Output::Text => print!("{}", preflight_render::inventory(&inv)),
    }
    Ok(())
}

fn main() -> ExitCode {
    preflight_pki::install_crypto_provider();
    let cli = Cli::parse();
    // The local subcommands each take `--output`; with JSON, standard output is written exactly.
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--output=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--output" && w[1] == "json");
    preflight_render::term::set_json(json);
    // Local commands end quietly when their reader goes away (`| head`); `run` (the daemon)
    // and `enroll` keep SIGPIPE ignored.
    if !matches!(cli.cmd, Cmd::Run(_) | Cmd::Enroll(_)) {
        preflight_render::term::default_sigpipe();
    }
    init_tracing(cli.log_format);
    let r = match cli.cmd {
        Cmd::Enroll(a) => runtime().and_then(|rt| rt.block_on(enroll::run(a))),
        Cmd::Run(a) => runtime().and_then(|rt| rt.block_on(run::run(a))),
        Cmd::Inventory { output } => local_inventory(output),
        Cmd::Bench(a) => cmd_bench::run(a),
        Cmd::Ports(a) => cmd_ports::run(a),
        Cmd::Harden(a) => cmd_harden::run(a),
        Cmd::Package(a) => cmd_package::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
