//! `preflight-agent harden`: local use, no controller (in progress).

/// Arguments of `preflight-agent harden`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`preflight-agent harden` is not built yet")
}
