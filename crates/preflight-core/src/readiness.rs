//! Readiness rules: from what a sweep measured on a server to a verdict (pass, soft failure =
//! a risk, hard failure = the batch cannot go on), with who must fix it and how, in English and
//! Chinese. Pure: the controller gathers the measurements, this module judges them.

use serde::{Deserialize, Serialize};

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
}

impl Finding {
    fn new(server: &Server, check: impl Into<String>, reason: PauseReason) -> Self {
        Self {
            server: server.hostname.clone(),
            check: check.into(),
            verdict: Verdict::Pass,
            party: Party::Project,
            reason,
            message: String::new(),
            message_zh: String::new(),
            fix: String::new(),
            fix_zh: String::new(),
        }
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

/// The server is the one the plan means: address, and name — the host's own name or the agent
/// id it was enrolled under (an operator who enrolls `soa-01` on a host called `localhost`
/// has mapped it deliberately).
pub fn identity(server: &Server, hostname: &str, agent_id: &str, addresses: &[String]) -> Finding {
    let f = Finding::new(server, "identity", PauseReason::Planning);
    let addr = server.address.to_string();
    let has_addr = addresses
        .iter()
        .any(|a| a.split('/').next() == Some(addr.as_str()));
    let same_name = agent_id.eq_ignore_ascii_case(&server.hostname)
        || hostname.eq_ignore_ascii_case(&server.hostname)
        || hostname
            .split('.')
            .next()
            .is_some_and(|h| h.eq_ignore_ascii_case(&server.hostname));
    match (has_addr, same_name) {
        (true, true) => f.says(
            format!("{hostname} holds {addr}, as planned"),
            format!("{hostname} 持有 {addr}，与规划一致"),
        ),
        (false, _) => f
            .says(
                format!(
                    "the server answering for {} does not hold {addr} (it has {})",
                    server.hostname,
                    addresses.join(", ")
                ),
                format!(
                    "{} 对应的服务器没有地址 {addr}（实际为 {}）",
                    server.hostname,
                    addresses.join(", ")
                ),
            )
            .fail(
                Verdict::Hard,
                Party::Integrator,
                "correct the server's address in the plan, or move the address to this server",
                "修正规划中的服务器地址，或将该地址配置到此服务器",
            ),
        (true, false) => f
            .says(
                format!(
                    "{addr} is host {hostname:?}, the plan says {:?}",
                    server.hostname
                ),
                format!(
                    "{addr} 的主机名为 {hostname:?}，规划为 {:?}",
                    server.hostname
                ),
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
    let f = Finding::new(server, "cores", PauseReason::Planning).says(
        format!("{cores} cores (minimum {})", t.min_cores),
        format!("{cores} 核（最低 {}）", t.min_cores),
    );
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
    let f = Finding::new(server, "memory", PauseReason::Planning).says(
        format!("{mib} MiB memory (minimum {})", t.min_memory_mib),
        format!("内存 {mib} MiB（最低 {}）", t.min_memory_mib),
    );
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
    let f = Finding::new(
        server,
        format!("disk_free:{dir}"),
        PauseReason::DiskPerformance,
    );
    match free_bytes {
        None => f
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
            let f = f.says(
                format!("{gib} GiB free on {dir} (minimum {})", t.min_free_disk_gib),
                format!("{dir} 可用 {gib} GiB（最低 {}）", t.min_free_disk_gib),
            );
            if gib < t.min_free_disk_gib {
                f.fail(
                    Verdict::Hard,
                    Party::Customer,
                    "free or add disk space for the data directory",
                    "为数据目录清理或扩容磁盘",
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
    let f = Finding::new(server, format!("package:{path}"), PauseReason::Package);
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
        "wrong_size" => (
            format!("{what} {path} has the wrong size ({detail} bytes): incomplete download"),
            format!("{what_zh} {path} 大小不符（{detail} 字节）：下载不完整"),
        ),
        "wrong_hash" => (
            format!("{what} {path} has the wrong SHA-256 ({detail})"),
            format!("{what_zh} {path} 的 SHA-256 不符（{detail}）"),
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

/// Clock offset of a server against the controller, in milliseconds.
pub fn clock(server: &Server, t: &Thresholds, offset_ms: i64, synchronized: bool) -> Finding {
    let f = Finding::new(server, "clock", PauseReason::Other).says(
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
            "时钟偏差 {offset_ms} ms（最大 {}），{}",
            t.max_clock_skew_ms,
            if synchronized {
                "已同步"
            } else {
                "未同步"
            }
        ),
    );
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
    fn verdicts_and_parties() {
        let s = server();
        let t = Thresholds::default();
        assert_eq!(reachable(&s, None).verdict, Verdict::Pass);
        let r = reachable(&s, Some("connection refused"));
        assert_eq!((r.verdict, r.party), (Verdict::Hard, Party::Project));
        assert!(r.message.contains("connection refused") && !r.fix_zh.is_empty());

        let ok = identity(&s, "SOA-01.example", "x", &["10.0.0.5/24".into()]);
        assert_eq!(ok.verdict, Verdict::Pass);
        let moved = identity(&s, "soa-01", "soa-01", &["10.0.0.6/24".into()]);
        assert_eq!(
            (moved.verdict, moved.party),
            (Verdict::Hard, Party::Integrator)
        );
        assert_eq!(
            identity(&s, "other", "x", &["10.0.0.5/24".into()]).verdict,
            Verdict::Soft
        );
        let by_id = identity(&s, "localhost", "soa-01", &["10.0.0.5/24".into()]);
        assert_eq!(by_id.verdict, Verdict::Pass);

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
        let all = vec![reachable(&s, None), moved, p];
        assert_eq!(tally(&all), (1, 0, 2));
        assert_eq!(all[2].to_failure().check, "soa-01:package:/b.dump");
    }
}
