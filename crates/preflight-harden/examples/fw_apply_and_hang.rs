//! Test helper for the firewall netns tests: applies an allow-list with commit-confirm inside a
//! network namespace, prints the change id, then waits to be killed, as an agent that dies
//! inside the confirmation window would.
//!
//! Usage: `fw_apply_and_hang NETNS STATE_DIR BACKEND MGMT_CIDR TIMEOUT_SECS`
//! (BACKEND is `nftables` or `iptables`).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use preflight_harden::firewall::{AllowList, Backend, CommandRunner, FirewallManager};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [netns, state_dir, backend, mgmt, timeout] = args.as_slice() else {
        bail!("usage: fw_apply_and_hang NETNS STATE_DIR BACKEND MGMT_CIDR TIMEOUT_SECS");
    };
    let backend = match backend.as_str() {
        "nftables" => Backend::Nftables,
        "iptables" => Backend::Iptables,
        other => bail!("backend {other:?} must be nftables or iptables"),
    };
    let timeout: u64 = timeout
        .parse()
        .context("TIMEOUT_SECS must be a number of seconds")?;
    let fw = FirewallManager::with_runner(
        backend,
        Path::new(state_dir),
        CommandRunner::in_netns(netns)?,
    )?;
    let list = AllowList {
        mgmt_sources: vec![mgmt
            .parse()
            .context("MGMT_CIDR must be a network like 10.0.0.0/24")?],
        ssh_port: 22,
        agent_port: 7444,
        controller_addrs: vec![],
        planned: vec![],
        current_listeners: vec![],
    };
    let change = fw.apply_with_confirm(&fw.plan(&list)?, Duration::from_secs(timeout))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", change.id)?;
    out.flush()?;
    drop(out);
    // Hang until killed; bounded so a forgotten helper cannot live forever.
    std::thread::sleep(Duration::from_secs(timeout.min(600)));
    Ok(())
}
