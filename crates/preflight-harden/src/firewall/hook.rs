//! The catalog's `fw.*` checks backed by the live firewall: [`LiveFirewall`] implements
//! [`catalog::FirewallHook`] with this module's detection and audit.
//!
//! Root prefix semantics: the firewall is kernel state of the host (of its network namespace),
//! not a file of a tree. With the root prefix `/` the hook audits the live ruleset; with any
//! other prefix (a fixture tree, a mounted image) the `fw.*` checks are `not_applicable`, with
//! the reason, because the live ruleset is not that tree's. The allow-list the rules are judged
//! against is the one of the last change confirmed through commit-confirm (kept in the agent's
//! firewall state directory); without one, `fw.allowlist_ports` and `fw.mgmt_source` are
//! `non_compliant`: nothing says which ports should be open.

use std::path::{Path, PathBuf};

use preflight_core::evidence::EvidenceStatus;

use super::audit::{self, check_single_backend, detect_backends, FwCheckResult};
use super::exec::CommandRunner;
use super::manager::read_confirmed_allow_list;
use super::{AllowList, Listener};
use crate::catalog::{self, Root};

/// Where the current listening sockets come from (the probe crate in the agent); `Err` with
/// why when they cannot be listed. A failed listing is never "no listeners": the checks that
/// need them are `unknown`, with the error.
pub type ListenerSource = Box<dyn Fn() -> Result<Vec<Listener>, String> + Send + Sync>;

/// The `fw.*` checks against the live firewall (see the module documentation).
pub struct LiveFirewall {
    runner: CommandRunner,
    state_dir: PathBuf,
    listeners: ListenerSource,
}

const CHECK_IDS: [&str; 4] = [
    "fw.single_backend",
    "fw.default_deny_in",
    "fw.allowlist_ports",
    "fw.mgmt_source",
];

fn expected_of(id: &str) -> &'static str {
    match id {
        "fw.single_backend" => "exactly one of firewalld, nftables, iptables active",
        "fw.default_deny_in" => "input policy drop/reject; lo and established accepted",
        "fw.allowlist_ports" => "every non-loopback listener planned and allowed, or closed",
        "fw.mgmt_source" => "SSH and agent port from management sources only",
        _ => "see CHECKS.md",
    }
}

fn result(
    id: &'static str,
    status: EvidenceStatus,
    observed: String,
    reason: String,
) -> FwCheckResult {
    FwCheckResult {
        check_id: id,
        status,
        observed,
        expected: expected_of(id).to_owned(),
        reason: Some(reason),
        firewall: None,
    }
}

impl LiveFirewall {
    /// A hook running tools through `runner` (the host, or a test namespace), reading the
    /// confirmed allow-list from the firewall state directory `state_dir`, and the listeners
    /// from `listeners`.
    pub fn new(runner: CommandRunner, state_dir: &Path, listeners: ListenerSource) -> Self {
        LiveFirewall {
            runner,
            state_dir: state_dir.to_path_buf(),
            listeners,
        }
    }

    /// Audits one `fw.*` check for the catalog running on `root`.
    pub fn audit_check(&self, root: &Root, id: &str) -> FwCheckResult {
        let Some(id) = CHECK_IDS.iter().copied().find(|c| *c == id) else {
            return FwCheckResult {
                check_id: "fw.unknown",
                status: EvidenceStatus::Unknown,
                observed: String::new(),
                expected: String::new(),
                reason: Some(format!("{id} is not a firewall check")),
                firewall: None,
            };
        };
        if !root.is_host() {
            return result(
                id,
                EvidenceStatus::NotApplicable,
                format!("root prefix {}", root.base().display()),
                format!(
                    "the catalog runs on the root prefix {}, not on this host's /: the live firewall is the host's, not that tree's, so fw.* checks are audited only with the root prefix /",
                    root.base().display()
                ),
            );
        }
        // Read first: without the listening sockets the allow-list cannot be judged, whatever
        // the ruleset says.
        let listeners = if id == "fw.allowlist_ports" {
            match (self.listeners)() {
                Ok(l) => l,
                Err(e) => {
                    return result(
                        id,
                        EvidenceStatus::Unknown,
                        String::new(),
                        format!("cannot list the listening sockets: {e}"),
                    )
                }
            }
        } else {
            Vec::new()
        };
        let states = detect_backends(&self.runner);
        if id == "fw.single_backend" {
            return check_single_backend(&states);
        }
        let backend = match audit::choose_backend(&states) {
            Ok(b) => b,
            Err(e) => {
                return result(id, EvidenceStatus::Unknown, String::new(), e.to_string());
            }
        };
        let confirmed = match read_confirmed_allow_list(&self.state_dir) {
            Ok(l) => l,
            Err(e) => {
                return result(
                    id,
                    EvidenceStatus::Unknown,
                    String::new(),
                    format!("cannot read the confirmed allow-list: {e}"),
                )
            }
        };
        let list = match confirmed {
            Some(l) => l,
            None if id == "fw.default_deny_in" => placeholder(),
            None => {
                return result(
                    id,
                    EvidenceStatus::NonCompliant,
                    format!("no allow-list confirmed on this host ({backend})"),
                    "no firewall allow-list was applied and confirmed by preflight on this host: apply one with `preflight harden apply --agent A --firewall --mgmt-source NET --port PORT/tcp ...`".into(),
                );
            }
        };
        audit::audit(&self.runner, backend, &list, &listeners)
            .into_iter()
            .find(|r| r.check_id == id)
            .unwrap_or_else(|| {
                result(
                    id,
                    EvidenceStatus::Unknown,
                    String::new(),
                    "the firewall audit gave no result for this check".into(),
                )
            })
    }
}

/// An allow-list for the checks that do not read it (`fw.default_deny_in`).
fn placeholder() -> AllowList {
    AllowList {
        mgmt_sources: Vec::new(),
        ssh_port: 22,
        agent_port: 7444,
        controller_addrs: Vec::new(),
        planned: Vec::new(),
        current_listeners: Vec::new(),
    }
}

impl catalog::FirewallHook for LiveFirewall {
    fn audit(&self, root: &Root, check_id: &str) -> catalog::FirewallAudit {
        let r = self.audit_check(root, check_id);
        (r.status, r.observed, r.expected, r.reason, r.firewall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_prefix_other_than_slash_is_not_applicable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::new(dir.path()).expect("root");
        let hook = LiveFirewall::new(
            CommandRunner::host(),
            dir.path(),
            Box::new(|| Ok(Vec::new())),
        );
        for id in CHECK_IDS {
            let r = hook.audit_check(&root, id);
            assert_eq!(r.status, EvidenceStatus::NotApplicable, "{id}: {r:?}");
            assert_eq!(r.check_id, id);
            assert!(
                r.reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("only with the root prefix /"),
                "{r:?}"
            );
        }
        let r = hook.audit_check(&root, "ssh.misc");
        assert_eq!(r.status, EvidenceStatus::Unknown);
    }

    /// A listing of the listening sockets that fails is `unknown` with its error, never an
    /// empty list that would let `fw.allowlist_ports` pass without a listener read.
    #[test]
    fn a_failed_listener_listing_is_unknown_with_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = LiveFirewall::new(
            CommandRunner::host(),
            dir.path(),
            Box::new(|| Err("netlink: permission denied".into())),
        );
        let r = hook.audit_check(&Root::host(), "fw.allowlist_ports");
        assert_eq!(r.status, EvidenceStatus::Unknown, "{r:?}");
        assert_eq!(r.check_id, "fw.allowlist_ports");
        let why = r.reason.unwrap_or_default();
        assert!(
            why.contains("cannot list the listening sockets")
                && why.contains("netlink: permission denied"),
            "{why}"
        );
    }
}
