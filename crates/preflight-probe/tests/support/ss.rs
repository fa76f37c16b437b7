//! What `ss -ltnup` / `ss -lunp` show: (proto, address, port) → the pids holding the socket,
//! to compare listings with. Depends only on std and `anyhow`, so the end-to-end tests
//! (another crate) include it with `#[path = ".../crates/preflight-probe/tests/support/ss.rs"]`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// (proto, address, port) of one socket.
pub type Key = (String, IpAddr, u16);
/// What ss says about one socket: the pids of the processes holding it.
pub type SsView = BTreeMap<Key, BTreeSet<u32>>;

pub fn ss(args: &[&str], only: Option<&str>) -> Result<SsView> {
    let out = Command::new("ss")
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .context("running ss")?;
    ensure!(out.status.success(), "ss {args:?} failed");
    let text = String::from_utf8(out.stdout)?;
    let mut view = SsView::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // With one protocol selected ss leaves the Netid column out.
        let (proto, cols) = match cols.first().copied() {
            Some(p @ ("tcp" | "udp")) => (p, &cols[1..]),
            _ => (
                only.with_context(|| format!("no netid in {line:?}"))?,
                &cols[..],
            ),
        };
        ensure!(cols.len() >= 5, "short ss line {line:?}");
        let (address, port) = parse_ss_local(cols[3])?;
        let pids = cols[5..]
            .join(" ")
            .split("pid=")
            .skip(1)
            .filter_map(|rest| rest.split(',').next()?.parse::<u32>().ok())
            .collect();
        view.insert((proto.to_string(), address, port), pids);
    }
    Ok(view)
}

/// `127.0.0.1:80`, `[::1]:80`, `*:80`, `127.0.0.53%lo:53`.
fn parse_ss_local(field: &str) -> Result<(IpAddr, u16)> {
    let (addr, port) = field
        .rsplit_once(':')
        .with_context(|| format!("no port in {field:?}"))?;
    let port: u16 = port.parse().with_context(|| format!("port in {field:?}"))?;
    let addr = addr.split('%').next().unwrap_or(addr);
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip = if addr == "*" {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        addr.parse()
            .with_context(|| format!("address in {field:?}"))?
    };
    Ok((ip, port))
}

pub fn ss_all() -> Result<SsView> {
    let mut view = ss(&["-H", "-ltnup"], None)?;
    view.extend(ss(&["-H", "-lunp"], Some("udp"))?);
    Ok(view)
}
