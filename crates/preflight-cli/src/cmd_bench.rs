//! `preflight bench AGENT disk|cpu|memory` (in progress).

use crate::client::Conn;
use crate::Output;

/// Arguments of `preflight bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent id (see `preflight agents`).
    pub agent: String,
}

pub async fn run(_a: Args, _conn: &Conn, _out: Output) -> anyhow::Result<()> {
    anyhow::bail!("`preflight bench` is not wired yet")
}
