//! Human output of preflight results, shared by the agent's local subcommands and the CLI, so
//! a deployer sees the same table whether they ran `preflight-agent inventory` on the server or
//! `preflight inventory AGENT` from the office. Pure: values in, text out.

pub mod bench;
pub mod term;

pub use term::escape_controls;

use preflight_core::timefmt;
use preflight_proto::v1 as pb;

/// A left-aligned text table with a header row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank). Control characters in cells are escaped
    /// ([`term::escape_controls`]), so a host's strings cannot drive the terminal.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(term::clean).collect());
    }

    /// Renders with two spaces between columns.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                l.push_str(c);
                if i + 1 < n {
                    l.push_str(&" ".repeat(width - c.chars().count() + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.header);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// Bytes in binary units: `512 B`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The inventory of one host.
pub fn inventory(inv: &pb::Inventory) -> String {
    let os = inv.os.clone().unwrap_or_default();
    let cpu = inv.cpu.clone().unwrap_or_default();
    let mem = inv.memory.unwrap_or_default();
    let clock = inv.clock.clone().unwrap_or_default();
    let nofile = inv.open_files.unwrap_or_default();
    let mut s = String::new();
    let mut kv = Table::new(&["HOST", &inv.hostname]);
    kv.row(vec![
        "os".into(),
        format!(
            "{} ({} {}, like {})",
            os.pretty_name,
            os.id,
            os.version_id,
            if os.id_like.is_empty() {
                "-"
            } else {
                &os.id_like
            }
        ),
    ]);
    kv.row(vec![
        "kernel".into(),
        format!("{} {}", inv.kernel, inv.arch),
    ]);
    kv.row(vec![
        "cpu".into(),
        format!(
            "{} — {} socket(s), {} cores, {} threads",
            cpu.model, cpu.sockets, cpu.cores, cpu.threads
        ),
    ]);
    kv.row(vec![
        "memory".into(),
        format!(
            "{} total, {} available; swap {} ({} free)",
            bytes(mem.total_bytes),
            bytes(mem.available_bytes),
            bytes(mem.swap_total_bytes),
            bytes(mem.swap_free_bytes)
        ),
    ]);
    kv.row(vec![
        "clock".into(),
        format!(
            "{} ({}, max error {} µs)",
            if clock.synchronized {
                "synchronised"
            } else {
                "NOT synchronised"
            },
            clock.source,
            clock.max_error_us
        ),
    ]);
    kv.row(vec!["selinux".into(), inv.selinux.clone()]);
    kv.row(vec!["uptime".into(), timefmt::ago(inv.uptime_s as i64)]);
    kv.row(vec![
        "open files".into(),
        format!("soft {}, hard {}", nofile.soft, nofile.hard),
    ]);
    if !inv.agent_version.is_empty() {
        kv.row(vec!["agent".into(), inv.agent_version.clone()]);
    }
    s.push_str(&kv.render());
    s.push('\n');
    let mut d = Table::new(&["DISK", "SIZE", "TYPE", "MODEL", "PARTITIONS"]);
    for disk in &inv.disks {
        let parts: Vec<String> = disk
            .partitions
            .iter()
            .map(|p| {
                format!(
                    "{} {}{}",
                    p.name,
                    bytes(p.size_bytes),
                    if p.fs_type.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", p.fs_type)
                    }
                )
            })
            .collect();
        d.row(vec![
            disk.name.clone(),
            bytes(disk.size_bytes),
            if disk.rotational {
                "hdd".into()
            } else {
                "ssd".into()
            },
            disk.model.clone(),
            parts.join(", "),
        ]);
    }
    s.push_str(&d.render());
    s.push('\n');
    let mut m = Table::new(&["MOUNT", "DEVICE", "FS", "SIZE", "USED", "FREE", "USE%"]);
    for mt in &inv.mounts {
        let pct = if mt.size_bytes > 0 {
            format!(
                "{}%",
                (mt.used_bytes as f64 * 100.0 / (mt.used_bytes + mt.free_bytes).max(1) as f64)
                    .ceil()
            )
        } else {
            "-".into()
        };
        m.row(vec![
            mt.mount_point.clone(),
            mt.device.clone(),
            mt.fs_type.clone(),
            bytes(mt.size_bytes),
            bytes(mt.used_bytes),
            bytes(mt.free_bytes),
            pct,
        ]);
    }
    s.push_str(&m.render());
    s.push('\n');
    let mut n = Table::new(&["INTERFACE", "STATE", "MTU", "MAC", "ADDRESSES"]);
    for i in &inv.interfaces {
        n.row(vec![
            i.name.clone(),
            if i.up { "up".into() } else { "down".into() },
            i.mtu.to_string(),
            i.mac.clone(),
            i.addresses.join(" "),
        ]);
    }
    s.push_str(&n.render());
    term::clean(s)
}

/// The agent list, with heartbeat ages relative to `now_ms`.
pub fn agents(list: &[pb::AgentInfo], now_ms: i64) -> String {
    let mut t = Table::new(&[
        "ID",
        "HOSTNAME",
        "ADDRESS",
        "VERSION",
        "LAST HEARTBEAT",
        "STATE",
    ]);
    for a in list {
        let seen = if a.last_heartbeat_unix_ms == 0 {
            "never".to_string()
        } else {
            format!(
                "{} ago",
                timefmt::ago((now_ms - a.last_heartbeat_unix_ms).max(0) / 1000)
            )
        };
        let mut state = if a.revoked {
            "revoked"
        } else if a.online {
            "online"
        } else {
            "offline"
        }
        .to_string();
        if a.outdated && !a.revoked {
            state.push_str(", outdated");
        }
        let mut addr = a.listen_addr.clone();
        if !a.addresses.is_empty() {
            addr = format!("{addr} ({})", a.addresses.join(" "));
        }
        t.row(vec![
            a.id.clone(),
            a.hostname.clone(),
            addr,
            a.version.clone(),
            seen,
            state,
        ]);
    }
    t.render()
}

/// Listening sockets, like `ss -ltnup`: one row per socket.
pub fn ports(sockets: &[pb::ListeningSocket]) -> String {
    let mut t = Table::new(&["PROTO", "FAMILY", "LOCAL", "PORT", "PID", "PROCESS", "USER"]);
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for s in sockets {
        t.row(vec![
            s.proto.clone(),
            s.family.clone(),
            s.address.clone(),
            s.port.to_string(),
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            dash(&s.process),
            dash(&s.user),
        ]);
    }
    t.render()
}

/// Microseconds as a short duration: `84 µs`, `1.3 ms`, `2.00 s`.
fn micros(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A port probe between two agents: one row per port.
pub fn probe(r: &pb::ProbeResponse) -> String {
    let mut out = format!("probe {} -> {} ({})\n", r.from_agent, r.to_agent, r.address);
    let mut t = Table::new(&["PORT", "OUTCOME", "CONNECT", "NOTE"]);
    for p in &r.ports {
        t.row(vec![
            p.port.to_string(),
            p.outcome.clone(),
            p.connect_us.map(micros).unwrap_or_else(|| "-".into()),
            p.note.clone(),
        ]);
    }
    out.push_str(&t.render());
    let count = |o: &str| r.ports.iter().filter(|p| p.outcome == o).count();
    out.push_str(&format!(
        "{} ports: {} verified, {} open, {} refused, {} filtered, {} unreachable\n",
        r.ports.len(),
        count("verified"),
        count("open"),
        count("refused"),
        count("filtered"),
        count("unreachable"),
    ));
    if r.listeners_ttl_ms > 0 {
        out.push_str(&format!(
            "the target's probe listeners stay open for {} s\n",
            r.listeners_ttl_ms / 1000
        ));
    }
    term::clean(out)
}

/// A bandwidth test between two agents: per stream and in total.
pub fn bandwidth(r: &pb::BandwidthResponse) -> String {
    let rep = r.report.clone().unwrap_or_default();
    let (src, dst) = if rep.direction == "reverse" {
        (&r.to_agent, &r.from_agent)
    } else {
        (&r.from_agent, &r.to_agent)
    };
    let mut out = format!(
        "bandwidth {src} -> {dst} (receiver {}), {} stream(s)\n",
        r.address, rep.expected_streams
    );
    let retr = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut t = Table::new(&["STREAM", "MBIT/S", "BYTES", "TIME", "RETRANSMITS"]);
    for s in &rep.streams {
        t.row(vec![
            s.stream.to_string(),
            format!("{:.1}", s.mbit_per_s),
            bytes(s.bytes),
            micros(s.duration_us),
            retr(s.retransmits),
        ]);
    }
    t.row(vec![
        "total".into(),
        format!("{:.1}", rep.total_mbit_per_s),
        bytes(rep.total_bytes),
        micros(rep.duration_us),
        retr(rep.retransmits),
    ]);
    out.push_str(&t.render());
    term::clean(out)
}

/// A sweep report for people: summary, then failures grouped by who must fix them, then every
/// check. `zh` picks the Chinese messages.
pub fn sweep(r: &pb::SweepReport, zh: bool) -> String {
    let mut s = format!(
        "sweep run {} of batch {} — {} (plan {})\n{} passed, {} soft failures (risks), {} hard failures\n",
        r.run_id,
        r.batch,
        r.state,
        &r.plan_digest[..r.plan_digest.len().min(12)],
        r.passed,
        r.soft,
        r.hard
    );
    if !r.skipped.is_empty() {
        s.push_str(&format!("left out: {}\n", r.skipped.join(", ")));
    }
    let failing: Vec<&pb::SweepFinding> =
        r.findings.iter().filter(|f| f.verdict != "pass").collect();
    if !failing.is_empty() {
        let mut parties: Vec<&str> = failing.iter().map(|f| f.party.as_str()).collect();
        parties.sort();
        parties.dedup();
        for p in parties {
            s.push_str(&format!("\nto fix by {p}:\n"));
            for f in failing.iter().filter(|f| f.party == p) {
                let (m, fix) = if zh {
                    (&f.message_zh, &f.fix_zh)
                } else {
                    (&f.message, &f.fix)
                };
                s.push_str(&format!(
                    "  [{}] {} {}: {m}\n        → {fix}\n",
                    f.verdict.to_uppercase(),
                    f.server,
                    f.check
                ));
            }
        }
    }
    let mut t = Table::new(&["SERVER", "CHECK", "VERDICT", "DETAIL"]);
    for f in &r.findings {
        t.row(vec![
            f.server.clone(),
            f.check.clone(),
            f.verdict.clone(),
            if zh {
                f.message_zh.clone()
            } else {
                f.message.clone()
            },
        ]);
    }
    s.push('\n');
    s.push_str(&t.render());
    term::clean(s)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A sweep report as one self-contained HTML page (no external resources), bilingual.
pub fn sweep_html(r: &pb::SweepReport) -> String {
    let mut rows = String::new();
    for f in &r.findings {
        rows.push_str(&format!(
            "<tr class=\"{v}\"><td>{}</td><td>{}</td><td>{v}</td><td>{}<br><span class=zh>{}</span></td><td>{}</td><td>{}<br><span class=zh>{}</span></td></tr>\n",
            esc(&f.server), esc(&f.check), esc(&f.message), esc(&f.message_zh), esc(&f.party), esc(&f.fix), esc(&f.fix_zh), v = esc(&f.verdict)
        ));
    }
    let mut servers: Vec<&str> = r.findings.iter().map(|f| f.server.as_str()).collect();
    servers.sort();
    servers.dedup();
    let mut matrix = String::new();
    for sv in &servers {
        let worst = r
            .findings
            .iter()
            .filter(|f| f.server == *sv)
            .map(|f| match f.verdict.as_str() {
                "hard" => 2,
                "soft" => 1,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let (class, word) = [
            ("pass", "ready 就绪"),
            ("soft", "risks 有风险"),
            ("hard", "blocked 阻塞"),
        ][worst];
        matrix.push_str(&format!(
            "<div class=\"cell {class}\"><b>{}</b><br>{word}</div>",
            esc(sv)
        ));
    }
    let paths = path_matrix(r);
    let bars = measure_bars(r);
    let skipped = if r.skipped.is_empty() {
        String::new()
    } else {
        format!("<br>Left out 未检查: {}", esc(&r.skipped.join(", ")))
    };
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>preflight readiness report {id}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}
tr.hard td{{background:#fdd}}tr.soft td{{background:#ffe9b3}}tr.pass td{{background:#e6f5e6}}.zh{{color:#555}}
.cell{{display:inline-block;margin:4px;padding:8px 12px;border-radius:6px}}.cell.pass{{background:#9d9}}.cell.soft{{background:#fc6}}.cell.hard{{background:#f88}}
table.matrix{{width:auto}}table.matrix td.m{{text-align:center;min-width:3em}}td.m.pass{{background:#9d9}}td.m.soft{{background:#fc6}}td.m.hard{{background:#f88}}td.m.none{{background:#eee;color:#999}}
.bar{{position:relative;height:18px;background:#eee;width:360px;display:inline-block;vertical-align:middle}}.bar .fill{{position:absolute;left:0;top:0;bottom:0}}.bar .fill.pass{{background:#5b5}}.bar .fill.soft{{background:#e90}}.bar .fill.hard{{background:#d44}}
.bar .limit{{position:absolute;top:-3px;bottom:-3px;width:2px;background:#000}}</style>
<h1>Readiness report 就绪检查报告 — batch {batch}</h1>
<p>Run {id}, state {state}; plan {digest}.<br>{passed} passed 通过 · {soft} risks 风险 · {hard} blocking 阻塞{skipped}</p>
<h2>Servers 服务器</h2><div>{matrix}</div>
{paths}{bars}<h2>Checks 检查项</h2>
<table><tr><th>Server 服务器</th><th>Check 检查</th><th>Verdict 结论</th><th>Finding 发现</th><th>Party 责任方</th><th>Fix 处理</th></tr>
{rows}</table></html>\n",
        id = r.run_id,
        batch = esc(&r.batch),
        state = esc(&r.state),
        digest = esc(&r.plan_digest),
        passed = r.passed,
        soft = r.soft,
        hard = r.hard,
    )
}

/// The required paths as a matrix: sources down, destination:port across, each cell colored by
/// the verdict (grey: not tested).
fn path_matrix(r: &pb::SweepReport) -> String {
    let mut sources: Vec<&str> = Vec::new();
    let mut targets: Vec<(String, u32)> = Vec::new();
    let mut cells = std::collections::HashMap::new();
    for f in &r.findings {
        let Some(rest) = f.check.strip_prefix("path:") else {
            continue;
        };
        let Some((dst, port)) = rest.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u32>() else {
            continue;
        };
        if !sources.contains(&f.server.as_str()) {
            sources.push(&f.server);
        }
        let t = (dst.to_string(), port);
        if !targets.contains(&t) {
            targets.push(t.clone());
        }
        cells.insert((f.server.as_str(), t), f);
    }
    if sources.is_empty() {
        return String::new();
    }
    targets.sort();
    let mut h = String::from(
        "<h2>Required paths 网络通路</h2><table class=matrix><tr><th>from 源 \\ to 目标</th>",
    );
    for (d, p) in &targets {
        h.push_str(&format!("<th>{}:{p}</th>", esc(d)));
    }
    h.push_str("</tr>\n");
    for src in &sources {
        h.push_str(&format!("<tr><th>{}</th>", esc(src)));
        for t in &targets {
            match cells.get(&(*src, t.clone())) {
                Some(f) => {
                    let word = match f.verdict.as_str() {
                        "pass" => "open 通",
                        "soft" => "risk 风险",
                        _ => "blocked 不通",
                    };
                    h.push_str(&format!(
                        "<td class=\"m {}\" title=\"{}\">{word}</td>",
                        esc(&f.verdict),
                        esc(&f.message)
                    ));
                }
                None => h.push_str("<td class=\"m none\">—</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

/// Measured IOPS, fdatasync latency and bandwidth as bars against their thresholds (the black
/// mark); the scale is twice the threshold or the measured value, whichever is larger.
fn measure_bars(r: &pb::SweepReport) -> String {
    let mut h = String::new();
    for f in &r.findings {
        let (Some(m), Some(t)) = (f.measured, f.threshold) else {
            continue;
        };
        let scale = (t.saturating_mul(2)).max(m).max(1) as f64;
        let unit = match f.unit.as_str() {
            "iops" => "IOPS",
            "us" => "µs",
            "mbit_per_s" => "Mbit/s",
            u => u,
        };
        let limit = if f.unit == "us" {
            "max 最大"
        } else {
            "min 最低"
        };
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><span class=bar><span class=\"fill {}\" style=\"width:{:.1}%\"></span><span class=limit style=\"left:{:.1}%\"></span></span></td><td>{m} {unit} ({limit} {t})</td></tr>\n",
            esc(&f.server),
            esc(&f.check),
            esc(&f.verdict),
            m as f64 * 100.0 / scale,
            t as f64 * 100.0 / scale,
        ));
    }
    if h.is_empty() {
        return h;
    }
    format!("<h2>Measurements 测量值</h2><table class=matrix><tr><th>Server 服务器</th><th>Check 检查</th><th>against the threshold 对照阈值</th><th>Value 数值</th></tr>\n{h}</table>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_html_draws_the_path_matrix_and_bars() {
        let f = |server: &str, check: &str, verdict: &str, m: Option<u64>| pb::SweepFinding {
            server: server.into(),
            check: check.into(),
            verdict: verdict.into(),
            measured: m,
            threshold: m.map(|_| 5000),
            unit: if m.is_some() {
                "iops".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        let r = pb::SweepReport {
            findings: vec![
                f("web-1", "path:soa-1:8080", "pass", None),
                f("web-1", "path:db-1:5432", "hard", None),
                f("db-1", "disk_randread:/data", "soft", Some(2500)),
            ],
            ..Default::default()
        };
        let h = sweep_html(&r);
        assert!(
            h.contains("<th>db-1:5432</th>") && h.contains("<th>soa-1:8080</th>"),
            "{h}"
        );
        assert!(
            h.contains("class=\"m hard\"") && h.contains("class=\"m pass\""),
            "{h}"
        );
        assert!(h.contains("width:25.0%") && h.contains("left:50.0%"), "{h}");
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "self-contained: {h}"
        );
    }

    #[test]
    fn table_aligns_and_trims() {
        let mut t = Table::new(&["A", "LONG"]);
        t.row(vec!["xyz".into(), "1".into()]);
        t.row(vec!["q".into()]);
        assert_eq!(t.render(), "A    LONG\nxyz  1\nq\n");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    const EVIL: &str = "x\u{1b}]0;x\u{7}\u{1b}[2J";

    fn no_raw_controls(text: &str) {
        assert!(
            !text.chars().any(term::is_unsafe),
            "raw control characters in {text:?}"
        );
    }

    #[test]
    fn ports_escape_control_characters_in_process_names() {
        let t = ports(&[pb::ListeningSocket {
            proto: "tcp".into(),
            family: "ipv4".into(),
            address: "127.0.0.1".into(),
            port: 8080,
            pid: Some(42),
            process: EVIL.into(),
            user: "root\u{202e}".into(),
        }]);
        no_raw_controls(&t);
        assert!(t.contains("x\\x1b]0;x\\x07\\x1b[2J"), "{t}");
        assert!(t.contains("root\\u{202e}"), "{t}");
    }

    #[test]
    fn sweep_text_escapes_control_characters() {
        let r = pb::SweepReport {
            run_id: 1,
            batch: "B1".into(),
            state: "finished".into(),
            hard: 1,
            findings: vec![pb::SweepFinding {
                server: "web-01".into(),
                check: "ports".into(),
                verdict: "hard".into(),
                party: "customer".into(),
                message: format!("port 80 is held by {EVIL}"),
                message_zh: format!("端口 80 被 {EVIL} 占用"),
                fix: "stop it".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for zh in [false, true] {
            let t = sweep(&r, zh);
            no_raw_controls(&t);
            assert!(t.contains("\\x1b[2J"), "{t}");
        }
    }
}
