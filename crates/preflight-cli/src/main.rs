//! preflight: the controller daemon (`preflight serve`) and the operator CLI (in progress).

mod cmd_plan;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "preflight", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a deployment plan (TOML or CSV) offline.
    Plan(cmd_plan::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Plan(a) => cmd_plan::run(a),
    }
}
