//! The deployment workflow subcommands (in progress).

use crate::client::Conn;
use crate::Output;

/// Workflow subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum WorkflowCmd {
    /// Deployment batches.
    Batch,
}

pub async fn run(_c: WorkflowCmd, _conn: &Conn, _out: Output) -> anyhow::Result<()> {
    anyhow::bail!("the workflow commands are not wired yet")
}
