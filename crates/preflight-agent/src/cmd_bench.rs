//! `preflight-agent bench`: local use, no controller (in progress).

/// Arguments of `preflight-agent bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`preflight-agent bench` is not built yet")
}
