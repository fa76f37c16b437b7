//! preflight-agent: the daemon on every target server, and local subcommands (in progress).

mod cmd_bench;
mod cmd_harden;
mod cmd_ports;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "preflight-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Disk, CPU and memory benchmarks, like fio and sysbench.
    Bench(cmd_bench::Args),
    /// Listening sockets with their processes, like `ss -ltnup`.
    Ports(cmd_ports::Args),
    /// Hardening checks against a root prefix.
    Harden(cmd_harden::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench(a) => cmd_bench::run(a),
        Cmd::Ports(a) => cmd_ports::run(a),
        Cmd::Harden(a) => cmd_harden::run(a),
    }
}
