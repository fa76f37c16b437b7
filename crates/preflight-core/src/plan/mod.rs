//! The deployment plan of a batch: servers, required paths, virtual IPs, thresholds and the
//! package manifest, parsed from TOML or from a spreadsheet's CSV export and validated.
//!
//! Everything here is pure: callers pass `(file_name, text)` and get either a validated
//! [`Plan`] or an [`InvalidPlan`] holding every error found, each naming the file, line, column
//! and field. The format is documented by `deploy/examples/plan.toml`.
//!
//! CSV import: [`Plan::from_csv`] makes a plan of the listed servers with default thresholds and
//! nothing else; [`Plan::from_toml_with_csv_servers`] merges a CSV server list into a TOML plan
//! (the TOML may then hold no `[[servers]]` at all, or some: both lists are validated together,
//! so paths and virtual IPs in the TOML can name servers and roles from the CSV).

mod complete;
mod csv_in;
mod error;
mod ports;
mod toml_in;
mod toml_out;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::net::Proto;

pub use complete::{facts_only_incomplete, facts_only_incomplete_zh, DATABASE_NAMES};
pub use error::{InvalidPlan, Location, PlanError, PlanErrorKind};
pub use ports::PortRange;

/// Largest plan text accepted, in bytes.
pub const MAX_PLAN_BYTES: usize = 4 * 1024 * 1024;
/// Largest plan a batch can have attached, as canonical TOML ([`Plan::to_toml`]), in bytes:
/// the controller keeps it.
pub const MAX_ATTACHED_PLAN_BYTES: usize = 1024 * 1024;
/// Most servers in one plan.
pub const MAX_SERVERS: usize = 500;
/// Most planned ports (counted after expanding ranges) on one server.
pub const MAX_PORTS_PER_SERVER: usize = 1024;
/// Most apps on one server.
pub const MAX_APPS_PER_SERVER: usize = 64;
/// Most data directories on one server.
pub const MAX_DATA_DIRS: usize = 16;
/// Most entries in each of the lists paths, vips, bandwidth, packages, management sources.
pub const MAX_ENTRIES: usize = 10_000;
/// Most (from, to, port) triples once every required path is expanded.
pub const MAX_EXPANDED_PATHS: usize = 200_000;
/// Most virtual IPs in one plan: one per cluster of a batch, with room to spare. A sweep
/// probes every port of every VIP from the servers' agents, so the bound keeps a plan from
/// making the fleet scan a network.
pub const MAX_VIPS: usize = 16;
/// Most ports (after expanding ranges) on one virtual IP: a cluster fronts a few services
/// (web 80/443, an application's handful), not a range.
pub const MAX_VIP_PORTS: usize = 32;
/// Prefix of the network around each server's address that counts as the batch's own (a VIP
/// must lie in one): a /24 for IPv4, a /64 for IPv6.
pub const BATCH_NET_PREFIX_V4: u8 = 24;
/// See [`BATCH_NET_PREFIX_V4`].
pub const BATCH_NET_PREFIX_V6: u8 = 64;
/// Most errors reported for one plan.
pub const MAX_ERRORS: usize = 200;
/// Longest free-text value (names, notes), in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest file path, in bytes.
pub const MAX_PATH: usize = 4096;
/// Most items in one port array.
pub(crate) const MAX_PORT_ITEMS: usize = 4096;

/// A validated plan. Construct it with [`Plan::from_toml`], [`Plan::from_csv`] or
/// [`Plan::from_toml_with_csv_servers`]; the serde derives exist for storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Project and batch this plan is for.
    pub batch: BatchInfo,
    /// Every server of the batch, in file order; addresses and hostnames are unique.
    pub servers: Vec<Server>,
    /// Required network paths as declared (see [`Plan::expanded_paths`]).
    pub paths: Vec<RequiredPath>,
    /// Cluster virtual IPs.
    pub vips: Vec<VirtualIp>,
    /// The machine the deployer works from, if declared.
    pub jump_host: Option<JumpHost>,
    /// Who may reach SSH and the agent port.
    pub management: Management,
    /// Pass/fail limits of the sweep (see [`Plan::thresholds_for`] for a server's own).
    pub thresholds: Thresholds,
    /// Complete thresholds of the roles that override some (`[thresholds.roles.ROLE]`).
    pub role_thresholds: BTreeMap<String, Thresholds>,
    /// Pairs of servers between which bandwidth is measured.
    pub bandwidth: Vec<BandwidthPair>,
    /// Files of the deployment package that must be present before the deployment.
    pub packages: Vec<PackageFile>,
}

/// Project and batch metadata, free text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// Project name.
    pub project: Option<String>,
    /// Batch name or number.
    pub batch: Option<String>,
    /// Who wrote the plan (the integrator responsible for it).
    pub integrator: Option<String>,
    /// Anything else.
    pub notes: Option<String>,
}

/// One target server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// The address the agent is reached on and that identity checks compare.
    pub address: IpAddr,
    /// Host name (compared case-insensitively; stored as written).
    pub hostname: String,
    /// Role such as `nginx`, `soa`, `db`; paths and virtual IPs may name it.
    pub role: String,
    /// Applications with their ports.
    pub apps: Vec<App>,
    /// Absolute directories whose disk is benchmarked and whose free space is checked.
    pub data_dirs: Vec<String>,
}

/// An application on a server and the ports it will listen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Application name.
    pub name: String,
    /// Transport protocol of its ports.
    pub protocol: Proto,
    /// Normalized (sorted, merged) port ranges.
    pub ports: Vec<PortRange>,
}

/// A planned port on a server, as returned by [`Server::planned_ports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedPort<'a> {
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub protocol: Proto,
    /// App that will listen on it.
    pub app: &'a str,
}

/// One end of a required path: every server of a role, or one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Every server with this role.
    Role(String),
    /// One server, by hostname (references by address are resolved to the hostname).
    Server(String),
}

impl Endpoint {
    /// Whether `server` is one of the servers this endpoint stands for.
    pub fn matches(&self, server: &Server) -> bool {
        match self {
            Endpoint::Role(r) => &server.role == r,
            Endpoint::Server(h) => server.hostname.eq_ignore_ascii_case(h),
        }
    }
}

/// A network path the deployment needs, as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequiredPath {
    /// Source servers.
    pub from: Endpoint,
    /// Destination servers.
    pub to: Endpoint,
    /// Destination ports.
    pub ports: Vec<PortRange>,
    /// Protocol of the ports.
    pub protocol: Proto,
}

/// One concrete (source, destination, port) of a required path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpandedPath<'a> {
    /// Source server.
    pub from: &'a Server,
    /// Destination server.
    pub to: &'a Server,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Proto,
}

/// A cluster virtual IP shared by several servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    /// Optional name, e.g. `soa-vip`.
    pub name: Option<String>,
    /// The virtual address; it must not answer before the deployment.
    pub address: IpAddr,
    /// Hostnames of the servers sharing it.
    pub members: Vec<String>,
    /// Ports served on it.
    pub ports: Vec<PortRange>,
    /// Protocol of the ports.
    pub protocol: Proto,
}

/// Kind of the deployer's jump host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JumpHostKind {
    /// A Windows machine.
    Windows,
    /// A Linux desktop.
    LinuxDesktop,
}

/// The machine the deployer works from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JumpHost {
    /// Its address as the servers see it.
    pub address: IpAddr,
    /// What it is.
    pub kind: JumpHostKind,
}

/// Management access: the sources allowed to reach SSH and the agent port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Management {
    /// Allowed source networks (host bits zero).
    pub sources: Vec<IpNet>,
    /// SSH port on the servers.
    pub ssh_port: u16,
    /// Agent port on the servers.
    pub agent_port: u16,
}

impl Default for Management {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            ssh_port: 22,
            agent_port: 7444,
        }
    }
}

/// Pass/fail limits of a sweep. Every field has a default (see [`Thresholds::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Minimum 4 KiB random read IOPS on each data directory.
    pub min_randread_iops: u64,
    /// Minimum 4 KiB random write IOPS on each data directory.
    pub min_randwrite_iops: u64,
    /// Maximum p99 latency of write + fdatasync, in microseconds.
    pub max_fdatasync_p99_us: u64,
    /// Minimum bandwidth between declared pairs, in Mbit/s.
    pub min_bandwidth_mbit: u64,
    /// Minimum CPU cores.
    pub min_cores: u64,
    /// Minimum memory, in MiB.
    pub min_memory_mib: u64,
    /// Minimum free space on each data directory, in GiB.
    pub min_free_disk_gib: u64,
    /// Maximum clock difference between servers, in milliseconds.
    pub max_clock_skew_ms: u64,
    /// Maximum age of a readiness report that gates the workflow, in minutes.
    pub report_max_age_minutes: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_randread_iops: 5_000,
            min_randwrite_iops: 2_000,
            max_fdatasync_p99_us: 10_000,
            min_bandwidth_mbit: 1_000,
            min_cores: 4,
            min_memory_mib: 8_192,
            min_free_disk_gib: 50,
            max_clock_skew_ms: 500,
            report_max_age_minutes: 240,
        }
    }
}

/// A pair of servers between which bandwidth is measured (from sends, to receives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthPair {
    /// Sending server's hostname.
    pub from: String,
    /// Receiving server's hostname.
    pub to: String,
    /// The receiver's TCP port: `port` as written, else the lowest port a required path opens
    /// from `from` to `to` (on a customer network only planned ports are open).
    pub port: u16,
}

/// What to do when a backup's database already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExists {
    /// Drop and restore over it.
    Overwrite,
    /// Rename the existing database, then restore.
    Rename,
}

/// Kind of a package file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    /// Application artifact.
    App,
    /// Database backup to restore.
    DbBackup {
        /// Database it restores to.
        database: String,
        /// Decision if that database already exists.
        on_exists: OnExists,
    },
}

/// One file of the deployment package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFile {
    /// Absolute path on the server.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// App file or database backup.
    pub kind: PackageKind,
    /// Servers that must hold it; `None` means every server.
    pub on: Option<Endpoint>,
}

impl Plan {
    /// Parses and validates a TOML plan.
    pub fn from_toml(file_name: &str, text: &str) -> Result<Plan, InvalidPlan> {
        validate::build(file_name, text, None)
    }

    /// Parses a CSV server list (header row: ip, hostname, role, apps, ports, data_dirs) into a
    /// plan with those servers, default thresholds and nothing else.
    pub fn from_csv(file_name: &str, text: &str) -> Result<Plan, InvalidPlan> {
        validate::build_csv_only(file_name, text)
    }

    /// Parses a TOML plan and adds the servers of a CSV server list to its own, then validates
    /// the whole.
    pub fn from_toml_with_csv_servers(
        toml_file: &str,
        toml_text: &str,
        csv_file: &str,
        csv_text: &str,
    ) -> Result<Plan, InvalidPlan> {
        validate::build(toml_file, toml_text, Some((csv_file, csv_text)))
    }

    /// SHA-256 (64 lowercase hex digits) of the plan's canonical JSON encoding, so that a
    /// readiness report can name the plan version it checked. Two plans have the same digest
    /// exactly when they are equal.
    pub fn digest(&self) -> String {
        // Canonical: struct fields serialize in declaration order and every collection is a
        // Vec in file order, so equal plans give equal bytes. The prefix versions the encoding.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"preflight-plan/v1\n");
        ctx.update(&json);
        hex::encode(ctx.finish().as_ref())
    }

    /// The server with this hostname (case-insensitive) or address.
    pub fn server(&self, name_or_address: &str) -> Option<&Server> {
        let addr: Option<IpAddr> = name_or_address.parse().ok();
        self.servers
            .iter()
            .find(|s| Some(s.address) == addr || s.hostname.eq_ignore_ascii_case(name_or_address))
    }

    /// Every required path expanded to (from server, to server, port) triples, without
    /// duplicates and without a server talking to itself, ordered by source and destination in
    /// plan order, then by protocol and port. At most [`MAX_EXPANDED_PATHS`] for a validated
    /// plan.
    pub fn expanded_paths(&self) -> Vec<ExpandedPath<'_>> {
        let mut seen = BTreeSet::new();
        let ends = |e: &Endpoint| -> Vec<usize> {
            self.servers
                .iter()
                .enumerate()
                .filter(|(_, s)| e.matches(s))
                .map(|(i, _)| i)
                .collect()
        };
        for p in &self.paths {
            let to = ends(&p.to);
            for from in ends(&p.from) {
                for &to in to.iter().filter(|&&t| t != from) {
                    for r in &p.ports {
                        for port in r.ports() {
                            seen.insert((from, to, p.protocol, port));
                        }
                    }
                }
            }
        }
        seen.into_iter()
            .map(|(from, to, protocol, port)| ExpandedPath {
                from: &self.servers[from],
                to: &self.servers[to],
                port,
                protocol,
            })
            .collect()
    }

    /// Every server with its planned ports (see [`Server::planned_ports`]), in plan order.
    pub fn planned_ports(&self) -> Vec<(&Server, Vec<PlannedPort<'_>>)> {
        self.servers
            .iter()
            .map(|s| (s, s.planned_ports()))
            .collect()
    }

    /// Package files a server must hold.
    pub fn packages_for<'a>(&'a self, server: &'a Server) -> impl Iterator<Item = &'a PackageFile> {
        self.packages
            .iter()
            .filter(move |p| p.on.as_ref().is_none_or(|e| e.matches(server)))
    }

    /// Thresholds that apply to a server: its role's, if the plan overrides some for the role,
    /// else the plan's.
    pub fn thresholds_for(&self, server: &Server) -> &Thresholds {
        self.role_thresholds
            .get(&server.role)
            .unwrap_or(&self.thresholds)
    }

    /// The batch's own networks: the /24 (IPv4) or /64 (IPv6) around each server's address,
    /// sorted, without duplicates. Virtual IPs must lie in them.
    pub fn networks(&self) -> Vec<IpNet> {
        batch_networks(self.servers.iter().map(|s| s.address))
    }

    /// Distinct roles, sorted.
    pub fn roles(&self) -> BTreeSet<&str> {
        self.servers.iter().map(|s| s.role.as_str()).collect()
    }
}

impl Server {
    /// Every port its apps will listen on, sorted by port and protocol.
    pub fn planned_ports(&self) -> Vec<PlannedPort<'_>> {
        let mut out: Vec<PlannedPort<'_>> = self
            .apps
            .iter()
            .flat_map(|a| {
                a.ports.iter().flat_map(move |r| {
                    r.ports().map(move |port| PlannedPort {
                        port,
                        protocol: a.protocol,
                        app: a.name.as_str(),
                    })
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// The /24 (IPv4) or /64 (IPv6) around each address, sorted, without duplicates.
pub fn batch_networks(addresses: impl Iterator<Item = IpAddr>) -> Vec<IpNet> {
    let nets: BTreeSet<IpNet> = addresses
        .filter_map(|a| {
            let prefix = match a {
                IpAddr::V4(_) => BATCH_NET_PREFIX_V4,
                IpAddr::V6(_) => BATCH_NET_PREFIX_V6,
            };
            IpNet::new(a, prefix).ok().map(|n| n.trunc())
        })
        .collect();
    nets.into_iter().collect()
}
