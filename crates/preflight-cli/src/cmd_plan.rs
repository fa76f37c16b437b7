//! `preflight plan`: offline plan validation (in progress).

/// Arguments of `preflight plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`preflight plan` is not built yet")
}
