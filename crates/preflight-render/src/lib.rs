//! Human output of preflight results, shared by the agent's local subcommands and the CLI, so
//! a deployer sees the same table whether they ran `preflight-agent inventory` on the server or
//! `preflight inventory AGENT` from the office. Pure: values in, text out.

pub mod bench;

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

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
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
    s
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
        let state = if a.revoked {
            "revoked"
        } else if a.online {
            "online"
        } else {
            "offline"
        };
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
            state.into(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_trims() {
        let mut t = Table::new(&["A", "LONG"]);
        t.row(vec!["xyz".into(), "1".into()]);
        t.row(vec!["q".into()]);
        assert_eq!(t.render(), "A    LONG\nxyz  1\nq\n");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
