//! `preflight ports`, `preflight probe`, `preflight bandwidth` (in progress).

use crate::client::Conn;
use crate::Output;

/// Network readiness subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum NetCmd {
    /// Listening sockets of an agent's host, with their processes.
    Ports {
        /// Agent id.
        agent: String,
    },
}

pub async fn run(_c: NetCmd, _conn: &Conn, _out: Output) -> anyhow::Result<()> {
    anyhow::bail!("network readiness is not wired yet")
}
