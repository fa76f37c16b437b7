//! Human output of preflight results, shared by the agent's local subcommands and the CLI, so
//! a deployer sees the same table whether they ran `preflight-agent inventory` on the server or
//! `preflight inventory AGENT` from the office. Pure: values in, text out.

pub mod bench;
pub mod tz;
pub mod workflow;

pub use tz::{time, Zone};
pub mod term;

pub use term::escape_controls;

use maud::{html, Markup, PreEscaped, DOCTYPE};
use preflight_core::timefmt;
use preflight_proto::v1 as pb;

/// A left-aligned text table with a header row. Columns are aligned by display width, so a
/// Chinese character (two columns on a terminal) does not push the next column out.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Display width of a cell on a terminal (CJK characters take two columns).
pub fn width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// A cell as printed: the one place every cell's text passes through before it is measured
/// and written (so an escape for control characters applies to all tables at once).
fn shown(c: &str) -> String {
    c.replace(['\n', '\r', '\t'], " ")
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
        let cells = |r: &[String]| -> Vec<String> { r.iter().take(n).map(|c| shown(c)).collect() };
        let header = cells(&self.header);
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| cells(r)).collect();
        let mut w: Vec<usize> = header.iter().map(|h| width(h)).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(width(c));
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, wi) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                l.push_str(c);
                if i + 1 < n {
                    l.push_str(&" ".repeat(wi - width(c) + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header);
        for r in &rows {
            line(r);
        }
        out
    }
}

/// `s` padded with spaces to `w` display columns (for fixed-width lines outside a [`Table`]).
pub fn pad(s: &str, w: usize) -> String {
    let mut o = s.to_string();
    o.push_str(&" ".repeat(w.saturating_sub(width(s))));
    o
}

/// Language of human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Chinese (中文).
    Zh,
}

impl Lang {
    /// `Lang::Zh` for `true`.
    pub fn from_zh(zh: bool) -> Lang {
        if zh {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    /// The text for this language.
    pub fn pick<'a>(self, en: &'a str, zh: &'a str) -> &'a str {
        match self {
            Lang::En => en,
            Lang::Zh => zh,
        }
    }
}

/// A finding's verdict as its word (`pass`, `soft`, `hard`; empty when unset).
fn verdict_of(f: &pb::SweepFinding) -> &'static str {
    match f.verdict() {
        pb::Verdict::Pass => "pass",
        pb::Verdict::Soft => "soft",
        pb::Verdict::Hard => "hard",
        pb::Verdict::Unspecified => "",
    }
}

/// A finding's party as its word (`customer`; empty when unset).
fn party_of(f: &pb::SweepFinding) -> String {
    word::<pb::WorkflowParty>(f.party)
}

/// A run's state as its word (`running`, `finished`, `interrupted`, `cancelled`).
pub fn state_of(r: &pb::SweepReport) -> &'static str {
    match r.state() {
        pb::SweepState::Running => "running",
        pb::SweepState::Finished => "finished",
        pb::SweepState::Interrupted => "interrupted",
        pb::SweepState::Cancelled => "cancelled",
        pb::SweepState::Unspecified => "",
    }
}

/// A verdict (`pass`, `soft`, `hard`) as shown.
pub fn verdict_word(v: &str, lang: Lang) -> String {
    match (v, lang) {
        ("pass", Lang::Zh) => "通过".into(),
        ("soft", Lang::Zh) => "风险".into(),
        ("hard", Lang::Zh) => "阻塞".into(),
        ("not_checked", Lang::Zh) => "未检查".into(),
        (v, _) => v.into(),
    }
}

/// A hardening status (`non_compliant`) as shown.
pub fn status_word(st: &str, lang: Lang) -> String {
    match (st, lang) {
        ("compliant", Lang::Zh) => "符合".into(),
        ("non_compliant", Lang::Zh) => "不符合".into(),
        ("not_applicable", Lang::Zh) => "不适用".into(),
        ("unknown", Lang::Zh) => "无法判定".into(),
        (st, _) => st.into(),
    }
}

/// A party id (`integrator`) as shown: the id in English, the Chinese name in Chinese.
pub fn party_word(p: &str, lang: Lang) -> String {
    match (lang, p.parse::<preflight_core::workflow::Party>()) {
        (Lang::Zh, Ok(party)) => party.zh().into(),
        _ => p.into(),
    }
}

/// A role id (`integrator`) as shown.
pub fn role_word(r: &str, lang: Lang) -> String {
    if lang == Lang::En {
        return r.into();
    }
    match r {
        "admin" => "管理员",
        "dispatcher" => "调度",
        "project" => "项目组",
        "integrator" => "集成开发",
        "deployer" => "部署人员",
        "perf_checker" => "性能检测人员",
        "reviewer" => "评审人员",
        "delivery_lead" => "交付负责人",
        "gd" => "GD",
        "auditor" => "审计人员",
        "system" => "系统",
        other => other,
    }
    .into()
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
    kv.row(vec![
        "selinux".into(),
        preflight_proto::json::name::<pb::SelinuxMode>(inv.selinux),
    ]);
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

/// A proto enum value as its word (`tcp`, `in_use`; empty when unset), as `--output json`
/// shows it.
fn word<E: TryFrom<i32> + std::fmt::Debug>(v: i32) -> String {
    preflight_proto::json::name::<E>(v)
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
            word::<pb::Protocol>(s.proto),
            word::<pb::AddressFamily>(s.family),
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
            word::<pb::ProbeOutcome>(p.outcome),
            p.connect_us.map(micros).unwrap_or_else(|| "-".into()),
            p.note.clone(),
        ]);
    }
    out.push_str(&t.render());
    let count = |o: pb::ProbeOutcome| r.ports.iter().filter(|p| p.outcome() == o).count();
    out.push_str(&format!(
        "{} ports: {} verified, {} open, {} refused, {} filtered, {} unreachable\n",
        r.ports.len(),
        count(pb::ProbeOutcome::Verified),
        count(pb::ProbeOutcome::Open),
        count(pb::ProbeOutcome::Refused),
        count(pb::ProbeOutcome::Filtered),
        count(pb::ProbeOutcome::Unreachable),
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
    let mut out = bandwidth_head(
        r,
        rep.direction() == pb::BandwidthDirection::Reverse,
        rep.expected_streams,
    );
    // iperf3-like: one line per second of the test, all streams together.
    for (i, b) in rep.per_second_bytes.iter().enumerate() {
        out.push_str(&bandwidth_second(i as u32, *b));
    }
    out.push_str(&bandwidth_tail(r));
    out
}

/// The first line of a bandwidth test: who sends to whom, through which receiver address
/// (`r`'s report is not needed: a live test prints this before it has one).
pub fn bandwidth_head(r: &pb::BandwidthResponse, reverse: bool, streams: u32) -> String {
    let (src, dst) = if reverse {
        (&r.to_agent, &r.from_agent)
    } else {
        (&r.from_agent, &r.to_agent)
    };
    term::clean(format!(
        "bandwidth {src} -> {dst} (receiver {}), {streams} stream(s)\n",
        r.address
    ))
}

/// One iperf3-like line: the bytes moved in second `i` of a test (0-based).
pub fn bandwidth_second(i: u32, b: u64) -> String {
    format!(
        "  {:>2}-{:<2} s  {:>10}  {:>8.1} Mbit/s\n",
        i,
        i + 1,
        bytes(b),
        b as f64 * 8.0 / 1e6
    )
}

/// The per-stream table and the total of a bandwidth test.
pub fn bandwidth_tail(r: &pb::BandwidthResponse) -> String {
    let rep = r.report.clone().unwrap_or_default();
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
    t.render()
}

/// A sweep report for people (see [`sweep_in`]), times in the display zone.
pub fn sweep(r: &pb::SweepReport, zh: bool) -> String {
    sweep_in(r, Lang::from_zh(zh), &tz::display_zone())
}

/// Whether the run counts as the batch's readiness, and why, as one sentence.
fn counts(r: &pb::SweepReport, lang: Lang) -> String {
    if r.recorded {
        return match lang {
            Lang::En => format!(
                "yes: the readiness of batch {} (the attached plan, every check ran)",
                r.batch
            ),
            Lang::Zh => format!(
                "是：批次 {} 的就绪结论（检查的是已挂接的方案，所有检查项都已执行）",
                r.batch
            ),
        };
    }
    if state_of(r) == "running" {
        return lang
            .pick("not yet: the run is still going", "尚未：检查仍在进行")
            .into();
    }
    if state_of(r) != "finished" {
        return match lang {
            Lang::En => format!("no: the run ended {}", state_of(r)),
            Lang::Zh => format!("否：检查未正常结束（{}）", state_word(state_of(r), lang)),
        };
    }
    match lang {
        Lang::En if !r.not_recorded.is_empty() => format!("no: {}", r.not_recorded),
        Lang::Zh if !r.not_recorded_zh.is_empty() => format!("否：{}", r.not_recorded_zh),
        Lang::Zh if !r.not_recorded.is_empty() => "否：原因见英文报告（--lang en）".into(),
        Lang::En => format!(
            "no: there is no workflow batch {}, the run is a free-standing check",
            r.batch
        ),
        Lang::Zh => format!("否：不存在批次 {}，本次为独立检查", r.batch),
    }
}

/// A run state as shown.
fn state_word(s: &str, lang: Lang) -> String {
    match (s, lang) {
        ("finished", Lang::Zh) => "已完成".into(),
        ("running", Lang::Zh) => "进行中".into(),
        ("interrupted", Lang::Zh) => "已中断".into(),
        ("cancelled", Lang::Zh) => "已取消".into(),
        (s, _) => s.into(),
    }
}

/// The first screen of a report: what was checked, when, by whom, whether it counts.
fn first_screen(r: &pb::SweepReport, lang: Lang, zone: &Zone) -> Vec<(String, String)> {
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut add = |en: &str, zh: &str, v: String| kv.push((lang.pick(en, zh).into(), v));
    if !r.project.is_empty() {
        add("project", "项目", r.project.clone());
    }
    add("batch", "批次", r.batch.clone());
    add(
        "run",
        "运行编号",
        match lang {
            Lang::En => format!("{} ({})", r.run_id, state_of(r)),
            Lang::Zh => format!("{}（{}）", r.run_id, state_word(state_of(r), lang)),
        },
    );
    add("plan", "部署方案", r.plan_digest.clone());
    if r.started_at_ms > 0 {
        let mut t = zone.show_both(r.started_at_ms);
        if r.finished_at_ms >= r.started_at_ms {
            let secs = (r.finished_at_ms - r.started_at_ms) / 1000;
            t.push_str(&match lang {
                Lang::En => format!(", took {}", timefmt::ago(secs)),
                Lang::Zh => format!("，耗时 {}", timefmt::ago(secs)),
            });
        }
        add("time", "时间", t);
    }
    if !r.started_by.is_empty() {
        add(
            "run by",
            "执行人",
            match lang {
                Lang::En => format!("{} ({})", r.started_by, word::<pb::Role>(r.started_by_role)),
                Lang::Zh => format!(
                    "{}（{}）",
                    r.started_by,
                    role_word(&word::<pb::Role>(r.started_by_role), lang)
                ),
            },
        );
    }
    add("readiness", "就绪结论", counts(r, lang));
    add(
        "result",
        "结果",
        match lang {
            Lang::En => format!(
                "{} passed, {} soft failures (risks), {} hard failures",
                r.passed, r.soft, r.hard
            ),
            Lang::Zh => format!(
                "{} 项通过，{} 项风险（软性不通过），{} 项阻塞（硬性不通过）",
                r.passed, r.soft, r.hard
            ),
        },
    );
    if !r.skipped.is_empty() {
        let words: Vec<String> = r
            .skipped
            .iter()
            .map(|&g| preflight_proto::json::name::<pb::CheckGroup>(g))
            .collect();
        add("left out", "未检查", words.join(lang.pick(", ", "、")));
    }
    kv
}

/// A sweep report for people: the first screen (project, batch, plan, time in UTC and the
/// display zone, who ran it, whether it counts as the batch's readiness and why), the
/// failures grouped by the party that must fix them with their fixes, a per-server summary,
/// then every check (pass rows name no party).
pub fn sweep_in(r: &pb::SweepReport, lang: Lang, zone: &Zone) -> String {
    let mut s = String::new();
    s.push_str(&match lang {
        Lang::En => format!("Readiness report — batch {}\n", r.batch),
        Lang::Zh => format!("就绪检查报告 — 批次 {}\n", r.batch),
    });
    let kv = first_screen(r, lang, zone);
    let kw = kv.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    for (k, v) in &kv {
        s.push_str(&format!("  {}  {v}\n", pad(k, kw)));
    }
    let failing: Vec<&pb::SweepFinding> = r
        .findings
        .iter()
        .filter(|f| verdict_of(f) != "pass")
        .collect();
    if !failing.is_empty() {
        s.push_str(lang.pick(
            "\nTo fix, by party (hard failures block the batch; soft ones are risks to list)\n",
            "\n待处理问题（按责任方；阻塞项必须解决，风险项需登记为风险）\n",
        ));
        let mut parties: Vec<String> = failing.iter().map(|f| party_of(f)).collect();
        parties.sort();
        parties.dedup();
        for p in parties {
            s.push_str(&format!("\n  {}:\n", party_word(&p, lang)));
            let mut of: Vec<&&pb::SweepFinding> =
                failing.iter().filter(|f| party_of(f) == p).collect();
            // Hard before soft, then as the run found them.
            of.sort_by_key(|f| verdict_of(f) != "hard");
            for f in of {
                let (m, fix) = match lang {
                    Lang::En => (&f.message, &f.fix),
                    Lang::Zh => (&f.message_zh, &f.fix_zh),
                };
                let tag = match lang {
                    Lang::En => verdict_of(f).to_uppercase(),
                    Lang::Zh => verdict_word(verdict_of(f), lang),
                };
                s.push_str(&format!(
                    "    [{tag}] {} {}: {m}\n      → {fix}\n",
                    f.server, f.check
                ));
            }
        }
    }
    if !r.servers.is_empty() {
        s.push_str(lang.pick("\nServers\n", "\n服务器\n"));
        let mut t = Table::new(&[
            lang.pick("SERVER", "服务器"),
            lang.pick("ADDRESS", "地址"),
            lang.pick("ROLE", "角色"),
            lang.pick("OS", "操作系统"),
            lang.pick("CPU", "CPU"),
            lang.pick("MEMORY", "内存"),
            lang.pick("DISKS", "磁盘"),
        ]);
        for v in &r.servers {
            let answered = !v.agent.is_empty();
            let dash = || "-".to_string();
            t.row(vec![
                v.server.clone(),
                v.address.clone(),
                v.role.clone(),
                if answered {
                    v.os.clone()
                } else {
                    lang.pick("(agent did not answer)", "（代理未响应）").into()
                },
                if answered {
                    match lang {
                        Lang::En => format!("{} threads", v.cpu_threads),
                        Lang::Zh => format!("{} 线程", v.cpu_threads),
                    }
                } else {
                    dash()
                },
                if answered {
                    bytes(v.memory_bytes)
                } else {
                    dash()
                },
                if answered { disks(&v.disks) } else { dash() },
            ]);
        }
        s.push_str(&t.render());
    }
    s.push_str(lang.pick("\nAll checks\n", "\n全部检查项\n"));
    let mut t = Table::new(&[
        lang.pick("SERVER", "服务器"),
        lang.pick("CHECK", "检查项"),
        lang.pick("VERDICT", "结论"),
        lang.pick("PARTY", "责任方"),
        lang.pick("DETAIL", "详情"),
    ]);
    for f in &r.findings {
        t.row(vec![
            f.server.clone(),
            f.check.clone(),
            verdict_word(verdict_of(f), lang),
            if verdict_of(f) == "pass" {
                String::new()
            } else {
                party_word(&party_of(f), lang)
            },
            lang.pick(&f.message, &f.message_zh).to_string(),
        ]);
    }
    s.push_str(&t.render());
    term::clean(s)
}

/// The report's style sheet (the page is self-contained: no external resources).
const SWEEP_CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
table.first{width:auto}table.first th{white-space:nowrap;background:#f4f4f4}li.hard b{color:#b00}li.soft b{color:#a60}li{margin-bottom:.6em}
tr.hard td{background:#fdd}tr.soft td{background:#ffe9b3}tr.pass td{background:#e6f5e6}.zh{color:#555}
.cell{display:inline-block;margin:4px;padding:8px 12px;border-radius:6px}.cell.pass{background:#9d9}.cell.soft{background:#fc6}.cell.hard{background:#f88}
table.matrix{width:auto}table.matrix td.m{text-align:center;min-width:3em}td.m.pass{background:#9d9}td.m.soft{background:#fc6}td.m.hard{background:#f88}td.m.none{background:#eee;color:#999}
.bar{position:relative;height:18px;background:#eee;width:360px;display:inline-block;vertical-align:middle}.bar .fill{position:absolute;left:0;top:0;bottom:0}.bar .fill.pass{background:#5b5}.bar .fill.soft{background:#e90}.bar .fill.hard{background:#d44}
.bar .limit{position:absolute;top:-3px;bottom:-3px;width:2px;background:#000}";

/// English, then the Chinese below it.
fn bilingual(en: &str, zh: &str) -> Markup {
    html! { (en) br; span.zh { (zh) } }
}

/// The parties of `failing`, each once, in order; and a party's findings, hard before soft,
/// then as the run found them.
fn by_party<'a>(failing: &[&'a pb::SweepFinding]) -> Vec<(String, Vec<&'a pb::SweepFinding>)> {
    let mut parties: Vec<String> = failing.iter().map(|f| party_of(f)).collect();
    parties.sort();
    parties.dedup();
    parties
        .into_iter()
        .map(|p| {
            let mut of: Vec<&pb::SweepFinding> = failing
                .iter()
                .copied()
                .filter(|f| party_of(f) == p)
                .collect();
            of.sort_by_key(|f| verdict_of(f) != "hard");
            (p, of)
        })
        .collect()
}

/// A sweep report as one self-contained HTML page (no external resources), bilingual, times
/// in UTC and the display zone.
pub fn sweep_html(r: &pb::SweepReport) -> String {
    sweep_html_in(r, &tz::display_zone())
}

/// [`sweep_html`] with the zone given. The page opens with the same first screen as the text
/// report, then the blockers by party with their fixes, the servers, the matrices and bars,
/// and every check (pass rows name no party). maud escapes every value.
pub fn sweep_html_in(r: &pb::SweepReport, zone: &Zone) -> String {
    let en = first_screen(r, Lang::En, zone);
    let zh = first_screen(r, Lang::Zh, zone);
    let failing: Vec<&pb::SweepFinding> = r
        .findings
        .iter()
        .filter(|f| verdict_of(f) != "pass")
        .collect();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            meta charset="utf-8";
            title { "preflight readiness report " (r.run_id) }
            style { (PreEscaped(SWEEP_CSS)) }
            h1 { "Readiness report 就绪检查报告 — batch 批次 " (r.batch) }
            table.first {
                @for ((k, v), (kz, vz)) in en.iter().zip(zh.iter()) {
                    tr {
                        th { (k) " " (kz) }
                        td { @if v == vz { (v) } @else { (bilingual(v, vz)) } }
                    }
                }
            }
            p { (r.passed) " passed 通过 · " (r.soft) " risks 风险 · " (r.hard) " blocking 阻塞" }
            @if !failing.is_empty() {
                h2 { "To fix, by party 待处理问题（按责任方）" }
                @for (p, of) in by_party(&failing) {
                    h3 { (p) " " (party_word(&p, Lang::Zh)) }
                    ul {
                        @for f in of {
                            li class=(verdict_of(f)) {
                                b { (verdict_of(f).to_uppercase()) " " (verdict_word(verdict_of(f), Lang::Zh)) }
                                " " (f.server) " " (f.check) ": " (bilingual(&f.message, &f.message_zh))
                                br; "→ " (f.fix) br; span.zh { "→ " (f.fix_zh) }
                            }
                        }
                    }
                }
            }
            h2 { "Servers 服务器" }
            (server_summary(r))
            div { (server_cells(r)) }
            (path_matrix(r))
            (measure_bars(r))
            h2 { "All checks 全部检查项" }
            table {
                tr {
                    th { "Server 服务器" } th { "Check 检查项" } th { "Verdict 结论" }
                    th { "Finding 发现" } th { "Party 责任方" } th { "Fix 处理办法" }
                }
                @for f in &r.findings {
                    @let passed = verdict_of(f) == "pass";
                    tr class=(verdict_of(f)) {
                        td { (f.server) }
                        td { (f.check) }
                        td { (verdict_of(f)) " " (verdict_word(verdict_of(f), Lang::Zh)) }
                        td { (bilingual(&f.message, &f.message_zh)) }
                        @let party = party_of(f);
                        td { @if !passed { (bilingual(&party, &party_word(&party, Lang::Zh))) } }
                        td { @if !passed { (bilingual(&f.fix, &f.fix_zh)) } }
                    }
                }
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

/// One cell per server, colored by its worst verdict.
fn server_cells(r: &pb::SweepReport) -> Markup {
    let mut servers: Vec<&str> = r.findings.iter().map(|f| f.server.as_str()).collect();
    servers.sort();
    servers.dedup();
    html! {
        @for sv in servers {
            @let worst = r
                .findings
                .iter()
                .filter(|f| f.server == sv)
                .map(|f| match verdict_of(f) {
                    "hard" => 2,
                    "soft" => 1,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            @let (class, word) = [
                ("pass", "ready 就绪"),
                ("soft", "risks 有风险"),
                ("hard", "blocked 阻塞"),
            ][worst];
            div class={ "cell " (class) } { b { (sv) } br; (word) }
        }
    }
}

/// A server's disks as both reports show them: `sda 1.8 TiB hdd, nvme0n1 894.3 GiB ssd`.
fn disks(d: &[pb::SweepDisk]) -> String {
    d.iter()
        .map(|d| {
            let kind = if d.rotational { "hdd" } else { "ssd" };
            format!("{} {} {kind}", d.name, bytes(d.size_bytes))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What each planned server's inventory showed.
fn server_summary(r: &pb::SweepReport) -> Markup {
    if r.servers.is_empty() {
        return html! {};
    }
    html! {
        table {
            tr {
                th { "Server 服务器" } th { "Address 地址" } th { "Role 角色" } th { "OS 操作系统" }
                th { "CPU" } th { "Memory 内存" } th { "Disks 磁盘" }
            }
            @for v in &r.servers {
                tr {
                    td { (v.server) } td { (v.address) } td { (v.role) }
                    @if v.agent.is_empty() {
                        td colspan="4" { "agent did not answer 代理未响应" }
                    } @else {
                        td { (bilingual(&v.os, &v.kernel)) }
                        td { (v.cpu_threads) " threads 线程" br; span.zh { (v.cpu_model) } }
                        td { (bytes(v.memory_bytes)) }
                        td {
                            (disks(&v.disks))
                        }
                    }
                }
            }
        }
    }
}

/// The required paths as a matrix: sources down, destination:port across, each cell colored by
/// the verdict (grey: not tested).
fn path_matrix(r: &pb::SweepReport) -> Markup {
    let mut sources: Vec<&str> = Vec::new();
    let mut targets: Vec<(String, u32)> = Vec::new();
    let mut cells = std::collections::HashMap::new();
    for f in &r.findings {
        // Paths of one port (a refused request over a range of ports has no cell).
        let Some((path, port)) = f.target.as_ref().and_then(|t| {
            (t.kind == pb::TargetKind::Path as i32)
                .then_some(t.port)
                .flatten()
                .map(|p| (t, p))
        }) else {
            continue;
        };
        if !sources.contains(&path.server.as_str()) {
            sources.push(&path.server);
        }
        let t = (path.dest.clone(), port);
        if !targets.contains(&t) {
            targets.push(t.clone());
        }
        cells.insert((path.server.as_str(), t), f);
    }
    if sources.is_empty() {
        return html! {};
    }
    targets.sort();
    html! {
        h2 { "Required paths 网络通路" }
        table.matrix {
            tr {
                th { "from 源 \\ to 目标" }
                @for (d, p) in &targets { th { (d) ":" (p) } }
            }
            @for src in &sources {
                tr {
                    th { (src) }
                    @for t in &targets {
                        @match cells.get(&(*src, t.clone())) {
                            Some(f) => {
                                @let word = match verdict_of(f) {
                                    "pass" => "open 通",
                                    "soft" => "risk 风险",
                                    _ => "blocked 不通",
                                };
                                td class={ "m " (verdict_of(f)) } title=(f.message) { (word) }
                            }
                            None => { td class="m none" { "—" } }
                        }
                    }
                }
            }
        }
    }
}

/// Measured IOPS, fdatasync latency and bandwidth as bars against their thresholds (the black
/// mark); the scale is twice the threshold or the measured value, whichever is larger.
fn measure_bars(r: &pb::SweepReport) -> Markup {
    let measured: Vec<(&pb::SweepFinding, u64, u64)> = r
        .findings
        .iter()
        .filter_map(|f| Some((f, f.measured?, f.threshold?)))
        .collect();
    if measured.is_empty() {
        return html! {};
    }
    html! {
        h2 { "Measurements 测量值" }
        table.matrix {
            tr { th { "Server 服务器" } th { "Check 检查" } th { "against the threshold 对照阈值" } th { "Value 数值" } }
            @for (f, m, t) in measured {
                @let scale = (t.saturating_mul(2)).max(m).max(1) as f64;
                @let unit = match f.unit() {
                    pb::MeasureUnit::Iops => "IOPS".to_string(),
                    pb::MeasureUnit::Us => "µs".to_string(),
                    pb::MeasureUnit::MbitPerS => "Mbit/s".to_string(),
                    _ => word::<pb::MeasureUnit>(f.unit),
                };
                @let limit = if matches!(f.unit(), pb::MeasureUnit::Us | pb::MeasureUnit::Ms) { "max 最大" } else { "min 最低" };
                tr {
                    td { (f.server) }
                    td { (f.check) }
                    td {
                        span.bar {
                            span class={ "fill " (verdict_of(f)) } style=(format!("width:{:.1}%", m as f64 * 100.0 / scale)) {}
                            span.limit style=(format!("left:{:.1}%", t as f64 * 100.0 / scale)) {}
                        }
                    }
                    td { (m) " " (unit) " (" (limit) " " (t) ")" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict by its word, as tests write it.
    fn v(word: &str) -> i32 {
        pb::Verdict::from_str_name(&format!("VERDICT_{}", word.to_uppercase()))
            .expect("a verdict word") as i32
    }

    #[test]
    fn sweep_html_draws_the_path_matrix_and_bars() {
        let f = |server: &str, check: &str, verdict: &str, m: Option<u64>| pb::SweepFinding {
            server: server.into(),
            check: check.into(),
            verdict: v(verdict),
            // The matrix reads the target, never the check id.
            target: check.strip_prefix("path:").map(|rest| {
                let (dest, port) = rest.split_once(':').unwrap();
                pb::FindingTarget {
                    kind: pb::TargetKind::Path as i32,
                    server: server.into(),
                    dest: dest.into(),
                    port: Some(port.parse().unwrap()),
                    proto: pb::Protocol::Tcp as i32,
                }
            }),
            measured: m,
            threshold: m.map(|_| 5000),
            unit: if m.is_some() {
                pb::MeasureUnit::Iops as i32
            } else {
                0
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
        assert!(h.contains("<td>2500 IOPS (min 最低 5000)</td>"), "{h}");
        // A path finding without a target (or over a range of ports) has no cell.
        let r = pb::SweepReport {
            findings: vec![pb::SweepFinding {
                target: None,
                ..f("web-1", "path:soa-1:8080", "pass", None)
            }],
            ..Default::default()
        };
        assert!(!sweep_html(&r).contains("Required paths"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "self-contained: {h}"
        );
    }

    fn report() -> pb::SweepReport {
        let f = |server: &str, check: &str, verdict: &str, party: &str| pb::SweepFinding {
            server: server.into(),
            check: check.into(),
            verdict: v(verdict),
            party: pb::WorkflowParty::from_str_name(&format!(
                "WORKFLOW_PARTY_{}",
                party.to_uppercase()
            ))
            .expect("a party word") as i32,
            message: format!("{check} on {server}"),
            message_zh: format!("{server} 的{check}"),
            fix: format!("fix {check}"),
            fix_zh: format!("处理{check}"),
            ..Default::default()
        };
        pb::SweepReport {
            run_id: 7,
            batch: "B1".into(),
            project: "portal".into(),
            plan_digest: "3f1c2a9b".into(),
            started_at_ms: 1_796_348_755_000,
            finished_at_ms: 1_796_348_797_000,
            state: pb::SweepState::Finished as i32,
            passed: 1,
            soft: 1,
            hard: 1,
            started_by: "ian".into(),
            started_by_role: pb::Role::Integrator as i32,
            recorded: true,
            findings: vec![
                f("web-1", "identity", "pass", "integrator"),
                f("db-1", "package", "hard", "integrator"),
                f("web-1", "clock", "soft", "customer"),
            ],
            servers: vec![
                pb::SweepServer {
                    server: "web-1".into(),
                    address: "10.0.0.1".into(),
                    role: "nginx".into(),
                    agent: "web-1".into(),
                    os: "Rocky Linux 9.4".into(),
                    cpu_threads: 8,
                    memory_bytes: 16 << 30,
                    disks: vec![pb::SweepDisk {
                        name: "vda".into(),
                        size_bytes: 100 << 30,
                        rotational: false,
                    }],
                    ..Default::default()
                },
                pb::SweepServer {
                    server: "db-1".into(),
                    address: "10.0.0.3".into(),
                    role: "db".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_first_screen_says_what_when_who_and_whether_it_counts() {
        let z = Zone::named("Asia/Shanghai").unwrap();
        let out = sweep_in(&report(), Lang::En, &z);
        let first: String = out.lines().take(11).collect::<Vec<_>>().join("\n");
        assert_eq!(
            first,
            "Readiness report — batch B1
  project    portal
  batch      B1
  run        7 (finished)
  plan       3f1c2a9b
  time       2026-12-04 01:45:55 UTC (2026-12-04 09:45:55 +08:00 Asia/Shanghai), took 42s
  run by     ian (integrator)
  readiness  yes: the readiness of batch B1 (the attached plan, every check ran)
  result     1 passed, 1 soft failures (risks), 1 hard failures

To fix, by party (hard failures block the batch; soft ones are risks to list)"
        );
        // Then the blockers by party, the servers, every check; in that order.
        let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s} missing: {out}"));
        assert!(at("  customer:") < at("Servers") && at("  integrator:") < at("Servers"));
        assert!(at("[HARD] db-1 package") < at("Servers"));
        assert!(at("→ fix package") < at("Servers"));
        assert!(at("Servers") < at("All checks"));
        assert!(out.contains("web-1   10.0.0.1  nginx  Rocky Linux 9.4         8 threads  16.0 GiB  vda 100.0 GiB ssd"), "{out}");
        assert!(out.contains("(agent did not answer)"), "{out}");
        // A pass row names no party.
        let pass = out
            .lines()
            .find(|l| l.starts_with("web-1   identity"))
            .unwrap();
        assert_eq!(
            pass,
            "web-1   identity  pass                 identity on web-1"
        );
    }

    #[test]
    fn the_first_screen_in_chinese() {
        let mut r = report();
        r.recorded = false;
        r.not_recorded = "checks were skipped: disk".into();
        r.not_recorded_zh = "跳过了检查项 disk，不计入批次的就绪结论".into();
        r.skipped = vec![
            pb::CheckGroup::Disk as i32,
            pb::CheckGroup::Bandwidth as i32,
        ];
        let out = sweep_in(&r, Lang::Zh, &Zone::utc());
        let first: String = out.lines().take(10).collect::<Vec<_>>().join("\n");
        assert_eq!(
            first,
            "就绪检查报告 — 批次 B1
  项目      portal
  批次      B1
  运行编号  7（已完成）
  部署方案  3f1c2a9b
  时间      2026-12-04 01:45:55 UTC，耗时 42s
  执行人    ian（集成开发）
  就绪结论  否：跳过了检查项 disk，不计入批次的就绪结论
  结果      1 项通过，1 项风险（软性不通过），1 项阻塞（硬性不通过）
  未检查    disk、bandwidth"
        );
        assert!(
            out.contains("  客户/现场:") && out.contains("[阻塞] db-1 package"),
            "{out}"
        );
        assert!(
            !out.contains("hard") && !out.contains("integrator"),
            "{out}"
        );
    }

    #[test]
    fn the_html_report_opens_with_the_first_screen() {
        let z = Zone::named("Asia/Shanghai").unwrap();
        let h = sweep_html_in(&report(), &z);
        let at = |s: &str| h.find(s).unwrap_or_else(|| panic!("{s} missing: {h}"));
        assert!(at("<th>project 项目</th><td>portal</td>") < at("To fix, by party"));
        assert!(at("run by 执行人") < at("To fix, by party"));
        assert!(h.contains("09:45:55 +08:00 Asia/Shanghai"));
        assert!(at("To fix, by party") < at("<h2>Servers"));
        assert!(at("<h2>Servers") < at("All checks"));
        assert!(h.contains("<td>Rocky Linux 9.4<br>"), "{h}");
        // The pass row: verdict, finding, and empty party and fix cells.
        assert!(h.contains("<td>pass 通过</td><td>identity on web-1<br><span class=\"zh\">web-1 的identity</span></td><td></td><td></td></tr>"), "{h}");
    }

    #[test]
    fn chinese_cells_align_by_display_width() {
        let mut t = Table::new(&["检查项", "结论", "X"]);
        t.row(vec!["ssh".into(), "符合".into(), "1".into()]);
        t.row(vec!["密码策略".into(), "不符合".into(), "2".into()]);
        let out = t.render();
        assert_eq!(
            out,
            "检查项    结论    X\nssh       符合    1\n密码策略  不符合  2\n"
        );
        // Every third column starts at the same terminal column.
        let cols: Vec<usize> = out
            .lines()
            .map(|l| width(&l[..l.rfind(' ').unwrap() + 1]))
            .collect();
        assert!(cols.iter().all(|c| *c == cols[0]), "{cols:?}");
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
            proto: pb::Protocol::Tcp as i32,
            family: pb::AddressFamily::Ipv4 as i32,
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
            state: pb::SweepState::Finished as i32,
            hard: 1,
            findings: vec![pb::SweepFinding {
                server: "web-01".into(),
                check: "ports".into(),
                verdict: v("hard"),
                party: pb::WorkflowParty::Customer as i32,
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

    #[test]
    fn the_html_report_escapes_what_agents_and_plans_say() {
        let mut r = report();
        r.batch = "B<1>".into();
        r.findings[1].message = "<script>alert(1)</script> & \"quoted\"".into();
        r.findings[1].server = "db<1>".into();
        r.servers[0].os = "<b>os</b>".into();
        let h = sweep_html_in(&r, &Zone::utc());
        assert!(!h.contains("<script>") && !h.contains("<b>os</b>"), "{h}");
        assert!(
            h.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"),
            "{h}"
        );
        assert!(h.contains("batch 批次 B&lt;1&gt;</h1>"), "{h}");
        assert!(h.contains("<b>db&lt;1&gt;</b>"), "{h}");
        assert!(
            h.starts_with("<!DOCTYPE html><html lang=\"en\"><meta charset=\"utf-8\">"),
            "{h}"
        );
        assert!(h.ends_with("</table></html>\n"), "{h}");
    }
}
