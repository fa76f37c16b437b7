//! Readiness rules: from what a sweep measured on a server to a verdict (pass, soft failure =
//! a risk, hard failure = the batch cannot go on), with who must fix it and how, in English and
//! Chinese. Pure: the controller gathers the measurements, this module judges them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::net::Proto;
use crate::plan::{Server, Thresholds};
use crate::workflow::{CheckFailure, Party, PauseReason};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// A risk: listed, filed, but not blocking.
    Soft,
    /// Blocking: the batch pauses until it is fixed.
    Hard,
}

impl Verdict {
    /// Stable id.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Soft => "soft",
            Verdict::Hard => "hard",
        }
    }
}

/// One judged check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The server (plan hostname) it concerns.
    pub server: String,
    /// Stable check id, e.g. `reachable`, `identity`, `cores`, `package:/opt/x.tar.gz`.
    pub check: String,
    pub verdict: Verdict,
    /// Who must fix it (meaningful when not passed).
    pub party: Party,
    /// Pause category a failure falls in.
    pub reason: PauseReason,
    /// What was found.
    pub message: String,
    pub message_zh: String,
    /// What to do about it (empty when passed).
    pub fix: String,
    pub fix_zh: String,
    /// The measured figure, for checks against a numeric threshold (IOPS, Mbit/s, µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<u64>,
    /// The threshold it was judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// Unit of both: `iops`, `us` (fdatasync p99), `mbit_per_s`, `cores`, `mib` (memory),
    /// `gib` (free disk), `ms` (clock offset, absolute; the threshold is a maximum).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// What a network check is about, as data (the check id names it too, for people and
    /// the workflow); `None` for the checks of a server by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// Which kind of network check a [`Target`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A required path: from `server` to the planned server `dest`, on `port`.
    Path,
    /// A planned port of `server` itself (`dest` is the server).
    Port,
    /// A declared bandwidth pair, from `server` to `dest` through `port`.
    Bandwidth,
    /// A virtual IP (`server` is its label, `dest` its address).
    Vip,
}

impl TargetKind {
    /// Stable id.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Path => "path",
            TargetKind::Port => "port",
            TargetKind::Bandwidth => "bandwidth",
            TargetKind::Vip => "vip",
        }
    }
}

/// The target of a network finding: from `server` to `dest`, on `port` over `proto` when the
/// check concerns one port (a refused probe request over a range of ports has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub server: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub proto: Proto,
}

impl Target {
    /// The required path `from` → `to`:`port` (TCP); `port` `None` for a range of ports.
    pub fn path(from: &str, to: &str, port: Option<u16>) -> Target {
        Target {
            kind: TargetKind::Path,
            server: from.into(),
            dest: to.into(),
            port,
            proto: Proto::Tcp,
        }
    }

    /// The planned port `port`/`proto` of `server`.
    pub fn port(server: &str, port: u16, proto: Proto) -> Target {
        Target {
            kind: TargetKind::Port,
            server: server.into(),
            dest: server.into(),
            port: Some(port),
            proto,
        }
    }

    /// The bandwidth pair `from` → `to` through `port`.
    pub fn bandwidth(from: &str, to: &str, port: u16) -> Target {
        Target {
            kind: TargetKind::Bandwidth,
            server: from.into(),
            dest: to.into(),
            port: Some(port),
            proto: Proto::Tcp,
        }
    }

    /// The virtual IP `address`, labelled `label`.
    pub fn vip(label: &str, address: &str) -> Target {
        Target {
            kind: TargetKind::Vip,
            server: label.into(),
            dest: address.into(),
            port: None,
            proto: Proto::Tcp,
        }
    }
}

impl Finding {
    /// The finding with its target as data.
    pub fn about(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    fn new(server: &Server, check: impl Into<String>, reason: PauseReason) -> Self {
        Self::labelled(&server.hostname, check, reason)
    }

    fn labelled(label: &str, check: impl Into<String>, reason: PauseReason) -> Self {
        Self {
            server: label.to_string(),
            check: check.into(),
            verdict: Verdict::Pass,
            party: Party::Project,
            reason,
            message: String::new(),
            message_zh: String::new(),
            fix: String::new(),
            fix_zh: String::new(),
            measured: None,
            threshold: None,
            unit: String::new(),
            target: None,
        }
    }

    fn figures(mut self, measured: u64, threshold: u64, unit: &str) -> Self {
        self.measured = Some(measured);
        self.threshold = Some(threshold);
        self.unit = unit.into();
        self
    }

    /// The threshold alone, when nothing could be measured.
    fn limit(mut self, threshold: u64, unit: &str) -> Self {
        self.threshold = Some(threshold);
        self.unit = unit.into();
        self
    }

    fn says(mut self, en: String, zh: String) -> Self {
        self.message = en;
        self.message_zh = zh;
        self
    }

    fn fail(mut self, v: Verdict, party: Party, fix: &str, fix_zh: &str) -> Self {
        self.verdict = v;
        self.party = party;
        self.fix = fix.into();
        self.fix_zh = fix_zh.into();
        self
    }

    /// As the workflow records a failure.
    pub fn to_failure(&self) -> CheckFailure {
        CheckFailure {
            check: format!("{}:{}", self.server, self.check),
            detail: self.message.clone(),
            reason: self.reason,
            party: self.party,
        }
    }
}

/// The agent of the server answered (or did not).
pub fn reachable(server: &Server, error: Option<&str>) -> Finding {
    let f = Finding::new(server, "reachable", PauseReason::RemoteAccess);
    match error {
        None => f.says("agent answered".into(), "代理已响应".into()),
        Some(e) => f
            .says(
                format!(
                    "no agent answered for {} ({}): {e}",
                    server.hostname, server.address
                ),
                format!(
                    "{}（{}）上的代理无响应：{e}",
                    server.hostname, server.address
                ),
            )
            .fail(
                Verdict::Hard,
                Party::Project,
                "install and enroll the agent on this server, or fix the network path to it",
                "在该服务器上安装并注册代理，或修复到该服务器的网络",
            ),
    }
}

/// The server is the one the plan means, by what the host itself reports: its hostname (from
/// the inventory; the short name before the first dot also counts) and the planned address on
/// one of its interfaces. The agent's enrollment name is the operator's word, not the host's,
/// and never counts. A mismatch names both values, planned and reported.
pub fn identity(server: &Server, hostname: &str, addresses: &[String]) -> Finding {
    let f = Finding::new(server, "identity", PauseReason::Planning);
    let addr = server.address.to_string();
    let has_addr = addresses
        .iter()
        .any(|a| a.split('/').next() == Some(addr.as_str()));
    let same_name = hostname.eq_ignore_ascii_case(&server.hostname)
        || hostname
            .split('.')
            .next()
            .is_some_and(|h| h.eq_ignore_ascii_case(&server.hostname));
    let planned = &server.hostname;
    match (has_addr, same_name) {
        (true, true) => f.says(
            format!("{hostname} has {addr}, as planned"),
            format!("{hostname} 已配置地址 {addr}，与规划一致"),
        ),
        (false, _) => {
            let name = if same_name {
                String::new()
            } else {
                format!("; planned hostname {planned:?}, the host reports {hostname:?}")
            };
            let name_zh = if same_name {
                String::new()
            } else {
                format!("；规划主机名为“{planned}”，主机报告的主机名为“{hostname}”")
            };
            f.says(
                format!(
                    "planned address {addr} is not on the host answering for {planned} (it has {}){name}",
                    addresses.join(", ")
                ),
                format!(
                    "规划为 {planned} 的服务器未配置地址 {addr}（实际地址：{}）{name_zh}",
                    addresses.join(", ")
                ),
            )
            .fail(
                Verdict::Hard,
                Party::Integrator,
                "correct the server's address in the plan, or move the address to this server",
                "修正规划中的服务器地址，或将该地址配置到此服务器",
            )
        }
        (true, false) => f
            .says(
                format!("planned hostname {planned:?}, the host at {addr} reports {hostname:?}"),
                format!("{addr} 的主机名是“{hostname}”，规划中为“{planned}”"),
            )
            .fail(
                Verdict::Soft,
                Party::Integrator,
                "correct the hostname in the plan, or rename the host",
                "修正规划中的主机名，或修改服务器主机名",
            ),
    }
}

/// CPU cores and memory against the minima.
pub fn capacity(server: &Server, t: &Thresholds, cores: u64, memory_bytes: u64) -> Vec<Finding> {
    let mib = memory_bytes / (1024 * 1024);
    let mut out = Vec::new();
    let f = Finding::new(server, "cores", PauseReason::Planning)
        .says(
            format!("{cores} cores (minimum {})", t.min_cores),
            format!("CPU {cores} 核（要求至少 {} 核）", t.min_cores),
        )
        .figures(cores, t.min_cores, "cores");
    out.push(if cores < t.min_cores {
        f.fail(
            Verdict::Hard,
            Party::Customer,
            "give the server more CPU cores",
            "为服务器增加 CPU 核数",
        )
    } else {
        f
    });
    let f = Finding::new(server, "memory", PauseReason::Planning)
        .says(
            format!("{mib} MiB memory (minimum {})", t.min_memory_mib),
            format!("内存 {mib} MiB（要求至少 {} MiB）", t.min_memory_mib),
        )
        .figures(mib, t.min_memory_mib, "mib");
    out.push(if mib < t.min_memory_mib {
        f.fail(
            Verdict::Hard,
            Party::Customer,
            "give the server more memory",
            "为服务器增加内存",
        )
    } else {
        f
    });
    out
}

/// Free space on a data directory; `free_bytes` is `None` when no mount holds it.
pub fn disk_free(server: &Server, t: &Thresholds, dir: &str, free_bytes: Option<u64>) -> Finding {
    let f = Finding::new(server, check::disk_free(dir), PauseReason::DiskPerformance);
    match free_bytes {
        None => f
            .limit(t.min_free_disk_gib, "gib")
            .says(
                format!("no filesystem found for {dir}"),
                format!("未找到 {dir} 所在的文件系统"),
            )
            .fail(
                Verdict::Hard,
                Party::Customer,
                "create and mount the data directory",
                "创建并挂载数据目录",
            ),
        Some(b) => {
            let gib = b / (1 << 30);
            let f = f
                .says(
                    format!("{gib} GiB free on {dir} (minimum {})", t.min_free_disk_gib),
                    format!(
                        "{dir} 可用空间 {gib} GiB（要求至少 {} GiB）",
                        t.min_free_disk_gib
                    ),
                )
                .figures(gib, t.min_free_disk_gib, "gib");
            if gib < t.min_free_disk_gib {
                f.fail(
                    Verdict::Hard,
                    Party::Customer,
                    "free or add disk space for the data directory",
                    "清理数据目录所在的磁盘，或为其扩容",
                )
            } else {
                f
            }
        }
    }
}

/// One package file as the agent found it (`status` as in `VerifyPackage`).
pub fn package_file(
    server: &Server,
    path: &str,
    is_backup: bool,
    status: &str,
    detail: &str,
) -> Finding {
    let f = Finding::new(server, check::package(path), PauseReason::Package);
    let what = if is_backup {
        "database backup"
    } else {
        "package file"
    };
    let what_zh = if is_backup {
        "数据库备份"
    } else {
        "部署包文件"
    };
    if status == "ok" {
        return f.says(
            format!("{what} {path} complete"),
            format!("{what_zh} {path} 完整"),
        );
    }
    let (en, zh) = match status {
        "missing" => (
            format!("{what} {path} is missing"),
            format!("{what_zh} {path} 缺失"),
        ),
        // The agent tells only smaller/larger, never the observed size or hash.
        "wrong_size" => {
            let (en, zh) = match detail {
                "larger" => ("larger than planned", "比计划的大"),
                _ => ("smaller than planned", "比计划的小"),
            };
            (
                format!("{what} {path} has the wrong size ({en}): incomplete download"),
                format!("{what_zh} {path} 大小不符（{zh}）：下载不完整"),
            )
        }
        "wrong_hash" => (
            format!("{what} {path} has the wrong SHA-256 (does not match the plan)"),
            format!("{what_zh} {path} 的 SHA-256 与计划不符"),
        ),
        _ => (
            format!("{what} {path}: {status} {detail}"),
            format!("{what_zh} {path}：{status} {detail}"),
        ),
    };
    f.says(en, zh).fail(
        Verdict::Hard,
        Party::Project,
        "download the file again from the release and copy it to the server, then verify",
        "从发布处重新下载该文件并拷贝到服务器，然后重新校验",
    )
}

/// A package file of the wrong size, with the size the plan expects, so the person knows
/// which file is the right one. The agent says only whether it is `smaller` or `larger`
/// (`relation`): a plan must not learn the size of a file it points at.
pub fn package_wrong_size(
    server: &Server,
    path: &str,
    is_backup: bool,
    relation: &str,
    expected: u64,
) -> Finding {
    let mut f = package_file(server, path, is_backup, "wrong_size", relation);
    let (what, what_zh) = if is_backup {
        ("database backup", "数据库备份")
    } else {
        ("package file", "部署包文件")
    };
    let (en, zh) = match relation {
        "larger" => ("larger", "大于"),
        _ => ("smaller", "小于"),
    };
    f.message = format!(
        "{what} {path} has the wrong size: {en} than the {expected} bytes the plan expects (incomplete download?)"
    );
    f.message_zh =
        format!("{what_zh} {path} 大小不符：{zh}计划中的 {expected} 字节（下载不完整？）");
    f
}

/// Clock offset of a server against the controller, in milliseconds.
pub fn clock(server: &Server, t: &Thresholds, offset_ms: i64, synchronized: bool) -> Finding {
    let f = Finding::new(server, "clock", PauseReason::Other)
        .says(
            format!(
                "clock offset {offset_ms} ms (maximum {}), {}",
                t.max_clock_skew_ms,
                if synchronized {
                    "synchronised"
                } else {
                    "not synchronised"
                }
            ),
            format!(
                "时钟偏差 {offset_ms} ms（允许最大 {} ms），{}",
                t.max_clock_skew_ms,
                if synchronized {
                    "已同步"
                } else {
                    "未同步"
                }
            ),
        )
        .figures(offset_ms.unsigned_abs(), t.max_clock_skew_ms, "ms");
    if offset_ms.unsigned_abs() > t.max_clock_skew_ms {
        f.fail(
            Verdict::Hard,
            Party::Customer,
            "synchronise the server's clock (chrony/NTP) with the others",
            "使用 chrony/NTP 同步服务器时钟",
        )
    } else if !synchronized {
        f.fail(
            Verdict::Soft,
            Party::Customer,
            "enable time synchronisation (chrony/NTP)",
            "启用时间同步（chrony/NTP）",
        )
    } else {
        f
    }
}

/// The stable ids of the sweep's checks, built in one place: the judges here and the
/// controller's list of checks it owes (to report the ones it could not run) must agree on
/// every byte, and stored runs and waivers name checks by these ids.
pub mod check {
    use crate::net::Proto;

    use super::DiskMeasure;

    /// `port:8080/tcp`: a planned port on the server itself.
    pub fn port(port: u16, proto: Proto) -> String {
        format!("port:{port}/{proto}")
    }

    /// `path:db-01:5432`, or `path:db-01:80-90` for a range of ports probed in one request.
    pub fn path(to: &str, first: u16, last: u16) -> String {
        if first == last {
            format!("path:{to}:{first}")
        } else {
            format!("path:{to}:{first}-{last}")
        }
    }

    /// `bandwidth:db-01`.
    pub fn bandwidth(to: &str) -> String {
        format!("bandwidth:{to}")
    }

    /// `vip:10.0.0.100`.
    pub fn vip(address: impl std::fmt::Display) -> String {
        format!("vip:{address}")
    }

    /// `package:/opt/pkg/app.tar.gz`.
    pub fn package(path: &str) -> String {
        format!("package:{path}")
    }

    /// `disk_free:/data`.
    pub fn disk_free(dir: &str) -> String {
        format!("disk_free:{dir}")
    }

    /// `disk_randread:/data` and its siblings.
    pub fn disk(what: DiskMeasure, dir: &str) -> String {
        format!("{}:{dir}", what.name())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ids_keep_the_spelling_stored_runs_and_waivers_use() {
            assert_eq!(port(8080, Proto::Tcp), "port:8080/tcp");
            assert_eq!(path("db-01", 5432, 5432), "path:db-01:5432");
            assert_eq!(path("b", 80, 90), "path:b:80-90");
            assert_eq!(bandwidth("db-01"), "bandwidth:db-01");
            assert_eq!(vip("10.0.0.100"), "vip:10.0.0.100");
            assert_eq!(package("/opt/a.tgz"), "package:/opt/a.tgz");
            assert_eq!(disk_free("/data"), "disk_free:/data");
            assert_eq!(disk(DiskMeasure::RandRead, "/d"), "disk_randread:/d");
            assert_eq!(disk(DiskMeasure::RandWrite, "/d"), "disk_randwrite:/d");
            assert_eq!(disk(DiskMeasure::FdatasyncP99, "/d"), "disk_fdatasync:/d");
        }
    }
}

/// A group of checks a sweep may leave out (`preflight sweep --skip NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckGroup {
    /// `package:*`: the planned package files.
    Packages,
    /// `port:*`: the planned ports on each server.
    Ports,
    /// `path:*`: the required paths between servers.
    Paths,
    /// `bandwidth:*`: the planned bandwidth tests.
    Bandwidth,
    /// `disk_*`: the disk benchmarks on the data directories.
    Disk,
    /// `vip:*`: the cluster virtual addresses.
    Vips,
}

impl CheckGroup {
    /// Every group, in the order `--help` lists them.
    pub const ALL: [CheckGroup; 6] = [
        CheckGroup::Packages,
        CheckGroup::Ports,
        CheckGroup::Paths,
        CheckGroup::Bandwidth,
        CheckGroup::Disk,
        CheckGroup::Vips,
    ];

    /// The word people type and stored runs keep: `packages`, `ports`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CheckGroup::Packages => "packages",
            CheckGroup::Ports => "ports",
            CheckGroup::Paths => "paths",
            CheckGroup::Bandwidth => "bandwidth",
            CheckGroup::Disk => "disk",
            CheckGroup::Vips => "vips",
        }
    }

    /// The group of that word, if it names one.
    pub fn from_word(w: &str) -> Option<CheckGroup> {
        CheckGroup::ALL.into_iter().find(|g| g.as_str() == w)
    }
}

impl fmt::Display for CheckGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names of the checks a sweep may leave out, as people type them.
pub const SKIPPABLE: [&str; 6] = ["packages", "ports", "paths", "bandwidth", "disk", "vips"];

#[cfg(test)]
mod check_group_tests {
    use super::*;

    #[test]
    fn every_group_has_its_word_and_skippable_lists_them_all() {
        assert_eq!(CheckGroup::ALL.map(CheckGroup::as_str), SKIPPABLE);
        for g in CheckGroup::ALL {
            assert_eq!(CheckGroup::from_word(g.as_str()), Some(g));
        }
        assert_eq!(CheckGroup::from_word("disks"), None);
    }
}

/// A planned port on a server as its agent found it: `holder` is `None` when nothing listens
/// on it (at the server's address or a wildcard), else who does (`"nginx (pid 812) on
/// 0.0.0.0"`).
pub fn port_free(
    server: &Server,
    port: u16,
    proto: Proto,
    app: &str,
    holder: Option<&str>,
) -> Finding {
    let f = Finding::new(server, check::port(port, proto), PauseReason::NetworkPorts)
        .about(Target::port(&server.hostname, port, proto));
    let addr = server.address;
    match holder {
        None => f.says(
            format!("{proto} port {port} on {addr} is free for {app}"),
            format!("{addr} 的 {proto} 端口 {port} 空闲，可供 {app} 使用"),
        ),
        Some(h) => f
            .says(
                format!("planned {proto} port {port} on {addr} (for {app}) is already held by {h}"),
                format!("规划给 {app} 的 {addr} {proto} 端口 {port} 已被 {h} 占用"),
            )
            .fail(
                Verdict::Hard,
                Party::Customer,
                "the server's owner/operations must stop or move the process holding the port, or the integrator must plan another port",
                "由服务器所有者/运维停止或迁移占用该端口的进程，或由集成开发改用其他端口",
            ),
    }
}

/// One required path (source server → destination address:port) as the probe found it.
/// `outcome` is the connector's (`verified`, `open`, `refused`, `filtered`, `unreachable`,
/// `error`); `held_by` names the process holding the destination port when the probe
/// listener could not bind it (then reaching that process is proof enough of the path, and
/// the held port itself is reported once, by [`port_free`]).
pub fn path(
    from: &Server,
    to: &Server,
    port: u16,
    outcome: &str,
    detail: &str,
    held_by: Option<&str>,
) -> Finding {
    let f = Finding::new(
        from,
        check::path(&to.hostname, port, port),
        PauseReason::NetworkPorts,
    )
    .about(Target::path(&from.hostname, &to.hostname, Some(port)));
    let dst = format!("{} ({}:{port})", to.hostname, to.address);
    let dst_zh = format!("{}（{}:{port}）", to.hostname, to.address);
    match (outcome, held_by) {
        ("verified", _) => f.says(
            format!("reaches {dst}"),
            format!("可以连通 {dst_zh}"),
        ),
        ("open", Some(h)) => f.says(
            format!("reaches {dst} (the port is held by {h}: see the port check)"),
            format!("可以连通 {dst_zh}，端口被 {h} 占用（见端口检查）"),
        ),
        ("open", None) => f
            .says(
                format!("{dst}: something else answered in place of the probe listener ({detail})"),
                format!("{dst_zh}：应答方不是探测监听程序（{detail}）"),
            )
            .fail(
                Verdict::Hard,
                Party::Customer,
                "a device or proxy between the servers intercepts the connection: have the site's network team let it through unchanged",
                "服务器之间的网络设备或代理截获了连接：请现场网络人员直接放行，不要代理或改写该连接",
            ),
        _ => {
            let why = match outcome {
                "refused" => "connection refused (a firewall rejects it)",
                "filtered" => "no answer (filtered by a firewall or security group)",
                "unreachable" => "network unreachable (no route)",
                _ => "the probe failed",
            };
            let why_zh = match outcome {
                "refused" => "连接被拒绝（被防火墙拒绝）",
                "filtered" => "无应答（被防火墙或安全组过滤）",
                "unreachable" => "网络不可达（无路由）",
                _ => "探测失败",
            };
            let d = if detail.is_empty() { String::new() } else { format!(": {detail}") };
            let d_zh = if detail.is_empty() { String::new() } else { format!("（{detail}）") };
            f.says(
                format!("cannot reach {dst}: {why}{d}"),
                format!("无法连通 {dst_zh}：{why_zh}{d_zh}"),
            )
            .fail(
                Verdict::Hard,
                Party::Customer,
                &format!("open tcp port {port} from {} to {} in every firewall and security group between them", from.address, to.address),
                &format!("在两者之间的所有防火墙和安全组中放通 {} 到 {} 的 TCP 端口 {port}", from.address, to.address),
            )
        }
    }
}

/// Bandwidth measured from one server to another through `port`; `mbit` `Err` when the test
/// failed.
pub fn bandwidth(
    from: &Server,
    to: &Server,
    port: u16,
    t: &Thresholds,
    mbit: Result<f64, &str>,
) -> Finding {
    let f = Finding::new(
        from,
        check::bandwidth(&to.hostname),
        PauseReason::NetworkPorts,
    )
    .about(Target::bandwidth(&from.hostname, &to.hostname, port));
    let min = t.min_bandwidth_mbit;
    match mbit {
        Err(e) => f
            .limit(min, "mbit_per_s")
            .says(
                format!("bandwidth to {} could not be measured: {e}", to.hostname),
                format!("到 {} 的带宽无法测量：{e}", to.hostname),
            )
            .fail(
                Verdict::Soft,
                Party::Customer,
                "let the agents' bandwidth test through between the servers, then sweep again",
                "放通两台服务器上代理之间的带宽测试连接，然后重新检查",
            ),
        Ok(m) => {
            let v = m.round().max(0.0) as u64;
            let f = f
                .says(
                    format!("{v} Mbit/s to {} (minimum {min})", to.hostname),
                    format!("到 {} 的带宽 {v} Mbit/s（最低 {min}）", to.hostname),
                )
                .figures(v, min, "mbit_per_s");
            if v < min {
                f.fail(
                    Verdict::Soft,
                    Party::Customer,
                    "check the link speed, NIC negotiation and any rate limit between the servers",
                    "检查服务器之间的链路速率、网卡协商和限速策略",
                )
            } else {
                f
            }
        }
    }
}

/// Which disk measurement a [`disk_bench`] finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMeasure {
    /// 4 KiB random read IOPS (higher is better).
    RandRead,
    /// 4 KiB random write IOPS (higher is better).
    RandWrite,
    /// p99 of write + fdatasync in µs (lower is better).
    FdatasyncP99,
}

impl DiskMeasure {
    /// Every measure, in the order a sweep runs them.
    pub const ALL: [DiskMeasure; 3] = [
        DiskMeasure::RandRead,
        DiskMeasure::RandWrite,
        DiskMeasure::FdatasyncP99,
    ];

    /// The check's name: `disk_randread`, `disk_randwrite`, `disk_fdatasync`.
    pub fn name(self) -> &'static str {
        match self {
            DiskMeasure::RandRead => "disk_randread",
            DiskMeasure::RandWrite => "disk_randwrite",
            DiskMeasure::FdatasyncP99 => "disk_fdatasync",
        }
    }
}

/// A short disk benchmark on a data directory; `value` is `Err` when it could not run.
pub fn disk_bench(
    server: &Server,
    t: &Thresholds,
    dir: &str,
    what: DiskMeasure,
    value: Result<f64, &str>,
) -> Finding {
    let (en, zh, unit, limit) = match what {
        DiskMeasure::RandRead => (
            "4 KiB random read",
            "4 KiB 随机读",
            "iops",
            t.min_randread_iops,
        ),
        DiskMeasure::RandWrite => (
            "4 KiB random write",
            "4 KiB 随机写",
            "iops",
            t.min_randwrite_iops,
        ),
        DiskMeasure::FdatasyncP99 => (
            "write + fdatasync p99",
            "写入 + fdatasync p99",
            "us",
            t.max_fdatasync_p99_us,
        ),
    };
    let f = Finding::new(server, check::disk(what, dir), PauseReason::DiskPerformance);
    let v = match value {
        Err(e) => {
            return f
                .limit(limit, unit)
                .says(
                    format!("{en} on {dir} could not be measured: {e}"),
                    format!("{dir} 的{zh}无法测量：{e}"),
                )
                .fail(
                    Verdict::Soft,
                    Party::Customer,
                    "make the data directory writable for the agent, then sweep again",
                    "确保代理可写入数据目录，然后重新检查",
                )
        }
        Ok(v) => v.round().max(0.0) as u64,
    };
    let (low, cmp, cmp_zh) = if what == DiskMeasure::FdatasyncP99 {
        (v > limit, "maximum", "最大")
    } else {
        (v < limit, "minimum", "最低")
    };
    let shown = if unit == "us" {
        "µs".to_string()
    } else {
        "IOPS".to_string()
    };
    let f = f
        .says(
            format!("{en} on {dir}: {v} {shown} ({cmp} {limit})"),
            format!("{dir} {zh}：{v} {shown}（{cmp_zh} {limit}）"),
        )
        .figures(v, limit, unit);
    if low {
        f.fail(
            Verdict::Soft,
            Party::Customer,
            "give the data directory a faster disk (SSD, no shared or throttled volume), or accept the risk of a slow deployment",
            "为数据目录更换更快的磁盘（SSD，非共享或限速卷），或将部署缓慢作为风险备案",
        )
    } else {
        f
    }
}

/// A cluster virtual IP before the deployment, probed on its ports from a server's agent:
/// `answers` lists `(port, outcome)`. `open` = something serves there (hard); `refused` = some
/// host holds the address (a risk); no answer = free.
pub fn vip(label: &str, address: &str, answers: &[(u16, String)]) -> Finding {
    let f = Finding::labelled(label, check::vip(address), PauseReason::VipMissing)
        .about(Target::vip(label, address));
    let open: Vec<String> = answers
        .iter()
        .filter(|(_, o)| o == "open" || o == "verified")
        .map(|(p, _)| p.to_string())
        .collect();
    let refused = answers.iter().any(|(_, o)| o == "refused");
    if !open.is_empty() {
        f.says(
            format!("VIP already in use: {address} answers on port {}", open.join(", ")),
            format!("虚拟 IP 已被占用：{address} 的端口 {} 有应答", open.join(", ")),
        )
        .fail(
            Verdict::Hard,
            Party::Customer,
            "find and stop whatever holds this address, or have the integrator plan another virtual IP",
            "查明并停用占用该地址的设备或服务，或由集成开发改用其他虚拟 IP",
        )
    } else if refused {
        f.says(
            format!("{address} refuses connections: a host already holds the address"),
            format!("{address} 拒绝连接：已有主机配置了该地址"),
        )
        .fail(
            Verdict::Soft,
            Party::Customer,
            "make sure no other host holds the virtual IP before the deployment",
            "部署前确认没有其他主机占用该虚拟 IP",
        )
    } else {
        f.says(
            format!("virtual IP {address} does not answer yet, as expected"),
            format!("虚拟 IP {address} 尚未应答，符合预期"),
        )
    }
}

/// A check the sweep could not run because an agent refused the controller's request (not
/// because the agent was gone, and not what the check measures): a hard failure for the
/// project team, since the check is still owed, with the refusal as the reason.
pub fn unchecked(
    label: &str,
    check: impl Into<String>,
    reason: PauseReason,
    error: &str,
) -> Finding {
    Finding::labelled(label, check, reason)
        .says(
            format!("could not be checked: the agent refused the sweep's request: {error}"),
            format!("无法检查：代理拒绝了检查请求（{error}）"),
        )
        .fail(
            Verdict::Hard,
            Party::Project,
            "the sweep itself failed here, not the site: fix the cause named (or report it to the preflight maintainers), then sweep again",
            "失败的是检查本身而非现场：按所述原因修复（或报告给 preflight 维护者），然后重新检查",
        )
}

/// A planned check the sweep could not run because the agent of `unreachable` (a server's
/// plan hostname) did not answer: it still appears in the report, as a hard failure for the
/// project team (the agent must be reachable for the check to be owed no more), under the
/// check's own id and pause reason.
pub fn not_checked(
    label: &str,
    check: impl Into<String>,
    reason: PauseReason,
    unreachable: &str,
) -> Finding {
    Finding::labelled(label, check, reason)
        .says(
            format!("not checked: {unreachable} unreachable"),
            format!("未检查：{unreachable} 无法访问"),
        )
        .fail(
            Verdict::Hard,
            Party::Project,
            "bring the server's agent back (see its reachable check), then sweep again",
            "恢复该服务器上的代理（见其 reachable 检查），然后重新检查",
        )
}

/// Counts of each verdict.
pub fn tally(findings: &[Finding]) -> (usize, usize, usize) {
    findings
        .iter()
        .fold((0, 0, 0), |(p, s, h), f| match f.verdict {
            Verdict::Pass => (p + 1, s, h),
            Verdict::Soft => (p, s + 1, h),
            Verdict::Hard => (p, s, h + 1),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server {
            address: "10.0.0.5".parse().unwrap(),
            hostname: "soa-01".into(),
            role: "soa".into(),
            apps: vec![],
            data_dirs: vec!["/data".into()],
        }
    }

    #[test]
    fn chinese_findings_read_naturally() {
        // An address is configured (配置) or taken (占用) on a host, never "held".
        let source = include_str!("readiness.rs");
        let held = ['持', '有'].iter().collect::<String>();
        assert!(
            !source.contains(&held),
            "readiness.rs still says an address is held"
        );
        let v = vip("portal-vip", "10.0.0.100", &[(443, "refused".into())]);
        assert!(
            v.message_zh.contains("已有主机配置了该地址"),
            "{}",
            v.message_zh
        );
        assert!(v.fix_zh.contains("占用"), "{}", v.fix_zh);
        let t = Thresholds::default();
        let c = capacity(&server(), &t, 1, 64 << 20);
        assert!(
            c[0].message_zh.starts_with("CPU 1 核（要求至少"),
            "{}",
            c[0].message_zh
        );
        assert!(
            c[1].message_zh.contains("MiB（要求至少") && c[1].message_zh.ends_with("MiB）"),
            "{}",
            c[1].message_zh
        );
        // A detail from the network is set off in Chinese brackets, not after an English colon.
        let p = path(
            &server(),
            &server(),
            5432,
            "refused",
            "connect: ECONNREFUSED",
            None,
        );
        assert!(
            p.message_zh.contains("（connect: ECONNREFUSED）")
                && !p.message_zh.contains("拒绝）: "),
            "{}",
            p.message_zh
        );
    }

    #[test]
    fn unchecked_is_the_projects_hard_failure() {
        let f = unchecked(
            "soa-01",
            "path:db-01:5432",
            PauseReason::NetworkPorts,
            "too many ports",
        );
        assert_eq!((f.verdict, f.party), (Verdict::Hard, Party::Project));
        assert!(f.message.contains("too many ports") && !f.fix.contains("firewall"));
        assert_eq!(f.to_failure().check, "soa-01:path:db-01:5432");
    }

    /// The host's own name decides, never the agent's enrollment name: a server planned as
    /// `web-01` on a host called `vm` fails, naming both values.
    #[test]
    fn identity_compares_the_plan_with_what_the_host_reports() {
        let mut s = server();
        s.hostname = "web-01".into();
        let f = identity(&s, "vm", &["10.0.0.5/24".into()]);
        assert_eq!((f.verdict, f.party), (Verdict::Soft, Party::Integrator));
        assert!(
            f.message.contains("\"web-01\"") && f.message.contains("\"vm\""),
            "{}",
            f.message
        );
        assert!(
            f.message_zh.contains("“web-01”") && f.message_zh.contains("“vm”"),
            "{}",
            f.message_zh
        );
        assert!(
            f.message.contains("planned hostname") && f.message.contains("reports"),
            "{}",
            f.message
        );
        // Address and name both wrong: both named, hard for the address.
        let f = identity(&s, "vm", &["10.0.0.6/24".into()]);
        assert_eq!(f.verdict, Verdict::Hard);
        assert!(
            f.message.contains("10.0.0.5")
                && f.message.contains("10.0.0.6/24")
                && f.message.contains("\"vm\""),
            "{}",
            f.message
        );
        // The short name of a fully qualified hostname counts.
        assert_eq!(
            identity(&s, "web-01.site.example", &["10.0.0.5/24".into()]).verdict,
            Verdict::Pass
        );
    }

    /// Every numeric check carries its figure, threshold and unit.
    #[test]
    fn numeric_checks_carry_measured_threshold_and_unit() {
        let s = server();
        let t = Thresholds::default();
        let cap = capacity(&s, &t, 8, 16 << 30);
        assert_eq!(
            (cap[0].measured, cap[0].threshold, cap[0].unit.as_str()),
            (Some(8), Some(t.min_cores), "cores")
        );
        assert_eq!(
            (cap[1].measured, cap[1].threshold, cap[1].unit.as_str()),
            (Some(16 * 1024), Some(t.min_memory_mib), "mib")
        );
        let d = disk_free(&s, &t, "/data", Some(100 << 30));
        assert_eq!(
            (d.measured, d.threshold, d.unit.as_str()),
            (Some(100), Some(t.min_free_disk_gib), "gib")
        );
        let none = disk_free(&s, &t, "/data", None);
        assert_eq!(
            (none.measured, none.threshold, none.unit.as_str()),
            (None, Some(t.min_free_disk_gib), "gib")
        );
        let c = clock(&s, &t, -250, true);
        assert_eq!(
            (c.measured, c.threshold, c.unit.as_str()),
            (Some(250), Some(t.max_clock_skew_ms), "ms")
        );
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            (j["measured"].as_u64(), j["unit"].as_str()),
            (Some(250), Some("ms"))
        );
    }

    #[test]
    fn a_check_not_run_for_an_unreachable_agent_is_hard_and_says_so() {
        let f = not_checked(
            "soa-01",
            "path:db-01:5432",
            PauseReason::NetworkPorts,
            "db-01",
        );
        assert_eq!((f.verdict, f.party), (Verdict::Hard, Party::Project));
        assert_eq!(f.message, "not checked: db-01 unreachable");
        assert!(!f.message_zh.is_empty() && !f.fix.is_empty());
        assert_eq!(f.to_failure().check, "soa-01:path:db-01:5432");
    }

    #[test]
    fn verdicts_and_parties() {
        let s = server();
        let t = Thresholds::default();
        assert_eq!(reachable(&s, None).verdict, Verdict::Pass);
        let r = reachable(&s, Some("connection refused"));
        assert_eq!((r.verdict, r.party), (Verdict::Hard, Party::Project));
        assert!(r.message.contains("connection refused") && !r.fix_zh.is_empty());

        let ok = identity(&s, "SOA-01.example", &["10.0.0.5/24".into()]);
        assert_eq!(ok.verdict, Verdict::Pass);
        let moved = identity(&s, "soa-01", &["10.0.0.6/24".into()]);
        assert_eq!(
            (moved.verdict, moved.party),
            (Verdict::Hard, Party::Integrator)
        );
        assert_eq!(
            identity(&s, "other", &["10.0.0.5/24".into()]).verdict,
            Verdict::Soft
        );

        let cap = capacity(&s, &t, 2, 64 << 30);
        assert_eq!(cap[0].verdict, Verdict::Hard);
        assert_eq!(cap[1].verdict, Verdict::Pass);
        assert_eq!(
            disk_free(&s, &t, "/data", Some(10 << 30)).verdict,
            Verdict::Hard
        );
        assert_eq!(
            disk_free(&s, &t, "/data", Some(100 << 30)).verdict,
            Verdict::Pass
        );
        assert_eq!(disk_free(&s, &t, "/data", None).verdict, Verdict::Hard);

        let p = package_file(&s, "/b.dump", true, "missing", "");
        assert_eq!((p.verdict, p.reason), (Verdict::Hard, PauseReason::Package));
        assert!(p.message.contains("database backup") && p.message_zh.contains("数据库备份"));
        assert_eq!(
            package_file(&s, "/a", false, "ok", "").verdict,
            Verdict::Pass
        );

        assert_eq!(clock(&s, &t, 10, true).verdict, Verdict::Pass);
        assert_eq!(clock(&s, &t, 10, false).verdict, Verdict::Soft);
        assert_eq!(
            clock(&s, &t, -(t.max_clock_skew_ms as i64) - 1, true).verdict,
            Verdict::Hard
        );
        let held = port_free(&s, 8080, Proto::Tcp, "gw", Some("nginx (pid 9) on 0.0.0.0"));
        assert_eq!((held.verdict, held.party), (Verdict::Hard, Party::Customer));
        assert!(held.message.contains("8080") && held.message.contains("nginx (pid 9)"));
        assert_eq!(
            port_free(&s, 8080, Proto::Tcp, "gw", None).verdict,
            Verdict::Pass
        );
        let mut d = server();
        d.hostname = "db-01".into();
        d.address = "10.0.0.9".parse().unwrap();
        assert_eq!(
            path(&s, &d, 5432, "verified", "", None).verdict,
            Verdict::Pass
        );
        assert_eq!(
            path(&s, &d, 5432, "open", "", Some("x")).verdict,
            Verdict::Pass
        );
        for bad in ["filtered", "refused", "unreachable", "error"] {
            let f = path(&s, &d, 5432, bad, "", None);
            assert_eq!(
                (f.verdict, f.party),
                (Verdict::Hard, Party::Customer),
                "{bad}"
            );
            assert_eq!(f.check, "path:db-01:5432");
            assert!(f.fix.contains("10.0.0.5 to 10.0.0.9"), "{}", f.fix);
        }
        assert_eq!(path(&s, &d, 5432, "open", "", None).verdict, Verdict::Hard);
        let bw = bandwidth(&s, &d, 5201, &t, Ok(940.4));
        assert_eq!(
            (bw.verdict, bw.measured, bw.threshold),
            (Verdict::Soft, Some(940), Some(1000))
        );
        assert_eq!(
            bandwidth(&s, &d, 5201, &t, Ok(9400.0)).verdict,
            Verdict::Pass
        );
        assert_eq!(bandwidth(&s, &d, 5201, &t, Err("x")).verdict, Verdict::Soft);
        use DiskMeasure as M;
        assert_eq!(
            disk_bench(&s, &t, "/d", M::RandRead, Ok(4999.0)).verdict,
            Verdict::Soft
        );
        assert_eq!(
            disk_bench(&s, &t, "/d", M::RandRead, Ok(5000.0)).verdict,
            Verdict::Pass
        );
        let sync = disk_bench(&s, &t, "/d", M::FdatasyncP99, Ok(12_000.0));
        assert_eq!((sync.verdict, sync.unit.as_str()), (Verdict::Soft, "us"));
        assert_eq!(
            disk_bench(&s, &t, "/d", M::FdatasyncP99, Ok(900.0)).verdict,
            Verdict::Pass
        );
        let v = vip(
            "soa-vip",
            "10.0.0.100",
            &[(80, "filtered".into()), (443, "open".into())],
        );
        assert_eq!((v.verdict, v.server.as_str()), (Verdict::Hard, "soa-vip"));
        assert!(v.message.contains("VIP already in use") && v.message.contains("443"));
        assert_eq!(
            vip("v", "10.0.0.100", &[(80, "refused".into())]).verdict,
            Verdict::Soft
        );
        assert_eq!(
            vip("v", "10.0.0.100", &[(80, "filtered".into())]).verdict,
            Verdict::Pass
        );
        let all = vec![reachable(&s, None), moved, p];
        assert_eq!(tally(&all), (1, 0, 2));
        assert_eq!(all[2].to_failure().check, "soa-01:package:/b.dump");
    }

    #[test]
    fn a_package_file_of_the_wrong_size_names_the_planned_size() {
        let p = package_wrong_size(&server(), "/opt/app.tar.gz", false, "smaller", 5_000);
        assert_eq!((p.verdict, p.reason), (Verdict::Hard, PauseReason::Package));
        assert!(
            p.message
                .contains("smaller than the 5000 bytes the plan expects"),
            "{}",
            p.message
        );
        assert!(
            p.message_zh.contains("小于计划中的 5000 字节"),
            "{}",
            p.message_zh
        );
    }

    #[test]
    fn network_findings_carry_their_target_as_data() {
        let s = server();
        let mut d = server();
        d.hostname = "db-01".into();
        let t = Thresholds::default();
        let p = path(&s, &d, 5432, "refused", "", None);
        assert_eq!(
            p.target,
            Some(Target {
                kind: TargetKind::Path,
                server: "soa-01".into(),
                dest: "db-01".into(),
                port: Some(5432),
                proto: Proto::Tcp,
            })
        );
        let u = port_free(&s, 53, Proto::Udp, "dns", None).target.unwrap();
        assert_eq!(
            (u.kind, u.dest.as_str(), u.port, u.proto),
            (TargetKind::Port, "soa-01", Some(53), Proto::Udp)
        );
        let b = bandwidth(&s, &d, 5201, &t, Err("x")).target.unwrap();
        assert_eq!(
            (b.kind, b.dest.as_str(), b.port),
            (TargetKind::Bandwidth, "db-01", Some(5201))
        );
        let v = vip("web-vip", "10.0.0.100", &[]).target.unwrap();
        assert_eq!(
            (v.kind, v.server.as_str(), v.dest.as_str(), v.port),
            (TargetKind::Vip, "web-vip", "10.0.0.100", None)
        );
        // A server's own checks have none.
        assert_eq!(reachable(&s, None).target, None);
    }

    #[test]
    fn a_target_round_trips_and_an_old_finding_reads_without_one() {
        let s = server();
        let mut d = server();
        d.hostname = "db-01".into();
        let f = path(&s, &d, 5432, "verified", "", None);
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["target"]["kind"], "path");
        assert_eq!(j["target"]["proto"], "tcp");
        let back: Finding = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(back, f);
        let mut old = j;
        old.as_object_mut().unwrap().remove("target");
        let back: Finding = serde_json::from_value(old).unwrap();
        assert_eq!(back.target, None);
        assert_eq!(back.check, "path:db-01:5432");
    }
}
