//! Acceptance: the inventory says what lscpu, lsblk, df, free, uname, ip and /etc/os-release
//! say on this machine. Nothing is installed; util-linux, coreutils, procps and iproute2 are on
//! every Debian. Values that move between reads (used/free space, addresses while other tests
//! make interfaces) are read before and after the inventory and compared with that in mind.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use preflight_probe::inventory::{collect, parse_cpu_list, Inventory};

/// Runs a fixed tool with fixed arguments in the C locale and returns its stdout.
fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running {tool}"))?;
    ensure!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn inventory() -> Result<Inventory> {
    collect().context("collecting the inventory")
}

#[test]
fn cpu_matches_lscpu() -> Result<()> {
    let inv = inventory()?;
    let text = run("lscpu", &[])?;
    let fields: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let num = |k: &str| -> Result<u32> {
        fields
            .get(k)
            .with_context(|| format!("lscpu printed no {k:?}"))?
            .parse()
            .with_context(|| format!("lscpu {k:?} is not a number"))
    };
    assert_eq!(Some(&inv.cpu.model.as_str()), fields.get("Model name"));
    let sockets = num("Socket(s)")?;
    assert_eq!(inv.cpu.sockets, sockets);
    assert_eq!(inv.cpu.cores, num("Core(s) per socket")? * sockets);
    let online = fields
        .get("On-line CPU(s) list")
        .context("lscpu printed no on-line list")?;
    assert_eq!(
        inv.cpu.threads as usize,
        parse_cpu_list(online).map_err(anyhow::Error::msg)?.len()
    );
    if !fields.contains_key("Off-line CPU(s) list") {
        assert_eq!(inv.cpu.threads, num("CPU(s)")?);
    }
    Ok(())
}

/// Parses `KEY="value"` pairs as `lsblk -P` prints them.
fn lsblk_pairs(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = line.trim();
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(key.trim().to_string(), after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn disks_match_lsblk() -> Result<()> {
    let inv = inventory()?;
    let text = run(
        "lsblk",
        &["-b", "-d", "-n", "-P", "-o", "NAME,SIZE,ROTA,MODEL"],
    )?;
    let mut want = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let p = lsblk_pairs(line);
        let name = p.get("NAME").context("lsblk line without NAME")?.clone();
        let size: u64 = p.get("SIZE").context("no SIZE")?.parse()?;
        let rota = p.get("ROTA").context("no ROTA")? == "1";
        let model = p
            .get("MODEL")
            .cloned()
            .unwrap_or_default()
            .trim()
            .to_string();
        want.insert(name, (size, rota, model));
    }
    let got: BTreeMap<String, (u64, bool, String)> = inv
        .disks
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                (d.size_bytes, d.rotational, d.model.clone()),
            )
        })
        .collect();
    ensure!(!want.is_empty(), "lsblk listed no disks");
    assert_eq!(got, want);
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DfRow {
    fs_type: String,
    size: u64,
    used: u64,
    avail: u64,
}

fn df() -> Result<BTreeMap<String, DfRow>> {
    let text = run("df", &["-B1", "--output=target,fstype,size,used,avail"])?;
    let mut out = BTreeMap::new();
    for line in text.lines().skip(1) {
        // The last four columns have no spaces; the mount point may.
        let cols: Vec<&str> = line.split_whitespace().collect();
        ensure!(cols.len() >= 5, "short df line {line:?}");
        let n = cols.len();
        let mut target = line.trim_end();
        for _ in 0..4 {
            let cut = target
                .rfind(char::is_whitespace)
                .with_context(|| format!("short df line {line:?}"))?;
            target = target[..cut].trim_end();
        }
        let target = target.trim().to_string();
        out.insert(
            target,
            DfRow {
                fs_type: cols[n - 4].to_string(),
                size: cols[n - 3].parse()?,
                used: cols[n - 2].parse()?,
                avail: cols[n - 1].parse()?,
            },
        );
    }
    Ok(out)
}

/// Space may move between reads; the inventory must lie between the two df readings, give or
/// take this much.
const SLACK: u64 = 16 << 20;

fn between(v: u64, a: u64, b: u64) -> bool {
    v + SLACK >= a.min(b) && v <= a.max(b) + SLACK
}

#[test]
fn mounts_match_df() -> Result<()> {
    for attempt in 1..=3 {
        let before = df()?;
        let inv = inventory()?;
        let after = df()?;
        let same_set = |a: &BTreeMap<String, DfRow>, b: &BTreeMap<String, DfRow>| {
            a.keys().collect::<BTreeSet<_>>() == b.keys().collect::<BTreeSet<_>>()
        };
        if !same_set(&before, &after) {
            eprintln!("mount table changed during attempt {attempt}, retrying");
            continue;
        }
        assert!(before.contains_key("/"), "df shows no / mount: {before:?}");
        let got: BTreeSet<&str> = inv.mounts.iter().map(|m| m.mount_point.as_str()).collect();
        let want: BTreeSet<&str> = before.keys().map(String::as_str).collect();
        assert_eq!(got, want, "mount points differ from df");
        for m in &inv.mounts {
            let (a, b) = (&before[&m.mount_point], &after[&m.mount_point]);
            assert_eq!(m.fs_type, a.fs_type, "{}", m.mount_point);
            assert_eq!(m.size_bytes, a.size, "size of {}", m.mount_point);
            assert!(
                between(m.used_bytes, a.used, b.used),
                "used of {}: {} vs df {}..{}",
                m.mount_point,
                m.used_bytes,
                a.used,
                b.used
            );
            assert!(
                between(m.free_bytes, a.avail, b.avail),
                "free of {}: {} vs df {}..{}",
                m.mount_point,
                m.free_bytes,
                a.avail,
                b.avail
            );
        }
        return Ok(());
    }
    bail!("the mount table kept changing while df ran")
}

#[test]
fn os_and_kernel_match_uname_and_os_release() -> Result<()> {
    let inv = inventory()?;
    assert_eq!(inv.kernel, run("uname", &["-r"])?.trim());
    assert_eq!(inv.arch, run("uname", &["-m"])?.trim());
    assert_eq!(inv.hostname, run("uname", &["-n"])?.trim());
    // Let the shell interpret os-release, as os-release(5) intends, independently of our parser.
    let sourced = run(
        "sh",
        &[
            "-c",
            ". /etc/os-release; printf '%s\\n' \"$ID\" \"$ID_LIKE\" \"$VERSION_ID\" \"$PRETTY_NAME\"",
        ],
    )?;
    let lines: Vec<&str> = sourced.lines().collect();
    ensure!(lines.len() == 4, "unexpected shell output {sourced:?}");
    assert_eq!(inv.os.id, lines[0]);
    assert_eq!(inv.os.id_like, lines[1]);
    assert_eq!(inv.os.version_id, lines[2]);
    assert_eq!(inv.os.pretty_name, lines[3]);
    assert!(!inv.os.id.is_empty(), "os-release has an ID on Debian");
    Ok(())
}

#[test]
fn memory_and_limits_match_free_and_ulimit() -> Result<()> {
    let inv = inventory()?;
    let free = run("free", &["-b"])?;
    let row = |name: &str| -> Result<u64> {
        let line = free
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("free printed no {name} row"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no total")?
            .parse()?)
    };
    assert_eq!(inv.memory.total_bytes, row("Mem:")?);
    assert_eq!(inv.memory.swap_total_bytes, row("Swap:")?);
    assert!(inv.memory.available_bytes <= inv.memory.total_bytes);
    assert!(inv.memory.swap_free_bytes <= inv.memory.swap_total_bytes);

    let limits = run("sh", &["-c", "ulimit -Sn; ulimit -Hn"])?;
    let parse = |s: &str| -> Result<u64> {
        Ok(if s == "unlimited" {
            u64::MAX
        } else {
            s.parse()?
        })
    };
    let l: Vec<&str> = limits.lines().collect();
    ensure!(l.len() == 2, "unexpected ulimit output {limits:?}");
    assert_eq!(inv.open_files.soft, parse(l[0])?);
    assert_eq!(inv.open_files.hard, parse(l[1])?);
    assert!(inv.uptime_s > 0);
    assert!(inv.collected_at_unix_ms > 1_600_000_000_000);
    assert!(["enforcing", "permissive", "disabled", "absent"].contains(&inv.selinux.as_str()));
    assert_eq!(inv.clock.source, "adjtimex");
    Ok(())
}

/// (interface, CIDR) pairs as `ip -o addr show` prints them.
fn ip_addresses() -> Result<BTreeSet<(String, String)>> {
    let text = run("ip", &["-o", "addr", "show"])?;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        ensure!(cols.len() >= 4, "short ip line {line:?}");
        let name = cols[1].split('@').next().unwrap_or(cols[1]).to_string();
        out.insert((name, cols[3].to_string()));
    }
    Ok(out)
}

#[test]
fn interfaces_match_ip() -> Result<()> {
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP: no ip tool (iproute2) to compare with");
        return Ok(());
    }
    for attempt in 1..=3 {
        let before = ip_addresses()?;
        let inv = inventory()?;
        let after = ip_addresses()?;
        if before != after {
            eprintln!("addresses changed during attempt {attempt}, retrying");
            continue;
        }
        let got: BTreeSet<(String, String)> = inv
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(|a| (i.name.clone(), a.clone())))
            .collect();
        assert_eq!(got, before);
        let lo = inv
            .interfaces
            .iter()
            .find(|i| i.name == "lo")
            .context("no loopback interface")?;
        assert!(lo.up && lo.mtu > 0);
        return Ok(());
    }
    bail!("addresses kept changing while ip ran")
}
