//! The deployment workflow subcommands (WORKFLOW.md): users, projects, batches, GD, the
//! deployer queue, pause statistics and the dev clock. Every command is a call of the
//! controller's Workflow service; the controller checks roles and stages and says what is
//! allowed when it refuses. `args` holds the command line, `run` the calls; the output is
//! rendered by `preflight_render::workflow`.

mod args;
mod run;

pub use args::*;
pub use run::run;
pub(crate) use run::{attach_plan, reply};
