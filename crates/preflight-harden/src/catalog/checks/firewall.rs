//! `fw.*`: listed in the catalog with their references; audited by the [`FirewallHook`] in the
//! catalog's context, never by these placeholders (`catalog::run_audit` routes them).
//!
//! [`FirewallHook`]: crate::catalog::FirewallHook

use super::super::{Ctx, Outcome, Policy, Unk};

pub(super) fn expected(_: &Policy) -> String {
    "see CHECKS.md".into()
}

pub(super) fn audit(_: &Ctx) -> Result<Outcome, Unk> {
    Err(Unk("firewall backend not wired".into()))
}
