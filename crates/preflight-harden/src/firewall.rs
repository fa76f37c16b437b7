//! Firewall backends (nftables, iptables incl. iptables-nft, firewalld) with commit-confirm.
//!
//! One procedure for every backend (CHECKS.md "Firewall backends"): snapshot → validate →
//! apply atomically → arm the rollback timer → the controller confirms (then the ruleset is
//! persisted) or the timer restores the snapshot. The pending change is written to a state
//! directory before the ruleset is applied, so an agent restarted inside the window rolls back
//! at start-up ([`FirewallManager::recover_on_start`]).
//!
//! Only fixed tools with fixed argument vectors run (see [`exec`]); rulesets are written to
//! files in the state directory and loaded with `nft -f FILE` / `iptables-restore FILE`.
//!
//! - nftables: everything lives in `table inet preflight`; the rendered file first declares and
//!   deletes that table, so one `nft -f` replaces it atomically and re-applying is idempotent.
//!   Rollback restores that table exactly as it was (or deletes it if it did not exist).
//! - iptables: the filter table is replaced atomically by `iptables-restore` (only `*filter` is
//!   in the file, other tables are untouched); our rules live in chain `PREFLIGHT-INPUT`,
//!   jumped to first from `INPUT`. Rollback restores the full `iptables-save` snapshot. Same
//!   for `ip6tables`.
//! - firewalld: runtime rich rules first, `--runtime-to-permanent` on confirm, `--reload`
//!   (drops runtime changes) on rollback. Rendering is unit-tested; untested on a live firewalld.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use preflight_core::net::{PortSpec, Proto};
use serde::{Deserialize, Serialize};

pub mod audit;
pub mod exec;
pub mod hook;
mod manager;
pub mod render;

pub use audit::{audit, choose_backend, detect_backends, BackendState, FwCheckResult};
pub use exec::{CommandRunner, Tool};
pub use hook::LiveFirewall;
pub use manager::{
    read_confirmed_allow_list, ChangeOutcome, FirewallManager, FirewallPlan, PendingChange,
    RollbackReason, DEFAULT_CONFIRM_TIMEOUT,
};

/// Ports never opened, whatever the plan says (FTP, telnet, rpcbind).
pub const FORBIDDEN_PORTS: [u16; 3] = [21, 23, 111];
/// Most planned ports in one allow-list.
pub const MAX_PLANNED: usize = 512;
/// Most source networks per entry.
pub const MAX_SOURCES: usize = 256;
/// Name of the nftables table this module owns.
pub const NFT_TABLE: &str = "preflight";
/// Name of the iptables chain this module owns.
pub const IPT_CHAIN: &str = "PREFLIGHT-INPUT";

/// A firewall backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Native nftables (`nft`).
    Nftables,
    /// iptables / ip6tables, legacy or iptables-nft.
    Iptables,
    /// firewalld (`firewall-cmd`).
    Firewalld,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
            Backend::Firewalld => "firewalld",
        })
    }
}

/// A port the plan allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPort {
    /// Port number (1-65535).
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Allowed source networks; empty means from anywhere.
    pub sources: Vec<IpNet>,
    /// Why it is open (kept in the plan and evidence, not in the ruleset).
    pub reason: String,
}

impl PlannedPort {
    /// The port with its protocol.
    pub fn spec(&self) -> PortSpec {
        PortSpec::single(self.proto, self.port)
    }
}

/// A listening socket on the host (from the probe crate's port listing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Protocol.
    pub proto: Proto,
    /// Bound address (`0.0.0.0` / `::` for all).
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Owning process name, if known.
    pub process: Option<String>,
}

/// The allow-list a ruleset is rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList {
    /// Management networks: SSH and the agent port are allowed from these only.
    pub mgmt_sources: Vec<IpNet>,
    /// SSH port (usually 22).
    pub ssh_port: u16,
    /// Agent gRPC port (default 7444).
    pub agent_port: u16,
    /// Controller addresses: also allowed to SSH and the agent port.
    pub controller_addrs: Vec<IpAddr>,
    /// Ports the deployment plan needs.
    pub planned: Vec<PlannedPort>,
    /// The host's current listeners: not opened by themselves, reported when the plan would
    /// block them.
    pub current_listeners: Vec<Listener>,
}

/// Input refused before anything is rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAllowList {
    /// No management source.
    #[error("mgmt_sources is empty: name at least one management network so SSH and the agent port stay reachable")]
    NoMgmtSources,
    /// Port 0.
    #[error("port 0 in {0} is not a valid port; use 1-65535")]
    PortZero(&'static str),
    /// A forbidden port was planned.
    #[error("port {port}/{proto} is never opened (21 ftp, 23 telnet, 111 rpcbind): remove it from the plan")]
    Forbidden {
        /// The port.
        port: u16,
        /// Its protocol.
        proto: Proto,
    },
    /// Too many entries.
    #[error("{field} has {len} entries, more than the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Entries.
        len: usize,
        /// Cap.
        max: usize,
    },
    /// SSH and agent port are the same.
    #[error("ssh_port and agent_port are both {0}; they must differ")]
    SamePort(u16),
}

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The allow-list was refused.
    #[error("allow-list refused: {0}")]
    InvalidAllowList(#[from] InvalidAllowList),
    /// Other invalid input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A required tool is not installed.
    #[error("{0} is not installed in /usr/sbin, /sbin, /usr/bin or /bin; install it or choose another backend")]
    ToolMissing(&'static str),
    /// A tool failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What happened.
        detail: String,
    },
    /// Validation of the rendered ruleset failed; nothing was applied.
    #[error("the rendered ruleset failed validation, nothing was applied: {0}")]
    Validation(String),
    /// Another change waits for confirmation.
    #[error("change {0} is waiting for confirmation; confirm or roll it back first")]
    ChangePending(String),
    /// No such pending change.
    #[error("no pending firewall change with id {0:?} (it was confirmed, rolled back, or never existed)")]
    NoSuchChange(String),
    /// The confirm came after the deadline.
    #[error("change {0} missed its confirmation deadline and is rolled back")]
    Expired(String),
    /// The state directory could not be used.
    #[error("firewall state {path}: {detail}")]
    State {
        /// The file or directory.
        path: String,
        /// What happened.
        detail: String,
    },
    /// The backend cannot do this.
    #[error("{backend} cannot {what}")]
    Unsupported {
        /// The backend.
        backend: Backend,
        /// The operation.
        what: &'static str,
    },
}

impl AllowList {
    /// Checks the allow-list: management sources present, ports valid, never 21/23/111.
    pub fn validate(&self) -> Result<(), InvalidAllowList> {
        if self.mgmt_sources.is_empty() {
            return Err(InvalidAllowList::NoMgmtSources);
        }
        for (field, len, max) in [
            ("mgmt_sources", self.mgmt_sources.len(), MAX_SOURCES),
            ("controller_addrs", self.controller_addrs.len(), MAX_SOURCES),
            ("planned", self.planned.len(), MAX_PLANNED),
        ] {
            if len > max {
                return Err(InvalidAllowList::TooMany { field, len, max });
            }
        }
        if self.ssh_port == 0 {
            return Err(InvalidAllowList::PortZero("ssh_port"));
        }
        if self.agent_port == 0 {
            return Err(InvalidAllowList::PortZero("agent_port"));
        }
        if self.ssh_port == self.agent_port {
            return Err(InvalidAllowList::SamePort(self.ssh_port));
        }
        for p in [self.ssh_port, self.agent_port] {
            if FORBIDDEN_PORTS.contains(&p) {
                return Err(InvalidAllowList::Forbidden {
                    port: p,
                    proto: Proto::Tcp,
                });
            }
        }
        for p in &self.planned {
            if p.port == 0 {
                return Err(InvalidAllowList::PortZero("planned"));
            }
            if FORBIDDEN_PORTS.contains(&p.port) {
                return Err(InvalidAllowList::Forbidden {
                    port: p.port,
                    proto: p.proto,
                });
            }
            if p.sources.len() > MAX_SOURCES {
                return Err(InvalidAllowList::TooMany {
                    field: "planned.sources",
                    len: p.sources.len(),
                    max: MAX_SOURCES,
                });
            }
        }
        Ok(())
    }

    /// Sources allowed to reach SSH and the agent port: the management networks and the
    /// controller addresses, deduplicated and sorted.
    pub fn admin_sources(&self) -> Vec<IpNet> {
        let mut set: BTreeSet<IpNet> = self.mgmt_sources.iter().map(IpNet::trunc).collect();
        set.extend(self.controller_addrs.iter().map(|a| IpNet::from(*a)));
        set.into_iter().collect()
    }

    /// Non-loopback listeners the ruleset would block (neither planned nor SSH/agent).
    pub fn blocked_listeners(&self) -> Vec<Listener> {
        self.current_listeners
            .iter()
            .filter(|l| !l.addr.is_loopback())
            .filter(|l| !self.allows(l.proto, l.port))
            .cloned()
            .collect()
    }

    /// Whether the allow-list opens `port`/`proto` from some source.
    pub fn allows(&self, proto: Proto, port: u16) -> bool {
        (proto == Proto::Tcp && (port == self.ssh_port || port == self.agent_port))
            || self
                .planned
                .iter()
                .any(|p| p.proto == proto && p.port == port)
    }
}
