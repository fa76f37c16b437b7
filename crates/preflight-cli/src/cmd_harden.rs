//! `preflight harden`, `preflight firewall`, `preflight evidence` (in progress).

use crate::client::Conn;
use crate::Output;

/// Hardening and evidence subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum HardenCmd {
    /// Export or verify hardening evidence.
    Evidence,
}

pub async fn run(_c: HardenCmd, _conn: &Conn, _out: Output) -> anyhow::Result<()> {
    anyhow::bail!("hardening commands are not wired yet")
}
