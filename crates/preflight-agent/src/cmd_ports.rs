//! `preflight-agent ports`: local use, no controller (in progress).

/// Arguments of `preflight-agent ports`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`preflight-agent ports` is not built yet")
}
