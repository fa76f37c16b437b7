//! Network namespaces for multi-host tests: a lab of N hosts on one bridge, each host its own
//! network namespace with one veth interface and an address in 10.77.1.0/24.
//!
//! Everything a lab creates lives inside namespaces it created: the bridge sits in a dedicated
//! bridge namespace, each veth pair is created there with its peer moved straight into a host
//! namespace, and nothing is added to the caller's namespace. Deleting the namespaces therefore
//! deletes every link too. [`NetLab`]'s `Drop` kills any process still inside its namespaces and
//! deletes them, also when a test panics; [`cleanup_stale`] removes what crashed runs left.
//!
//! Namespace names are `pf-<pid>-<random>-br` and `pf-<pid>-<random>-h<i>`, unique per lab.
//!
//! This file depends only on std, `anyhow` and `libc`, so other crates' tests can include it
//! with `#[path = ".../tests/src/netns.rs"] mod netns;` without a dependency on this crate.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace a lab creates.
pub const PREFIX: &str = "pf-";
/// Most hosts in one lab (addresses .1 to .N of one /24).
pub const MAX_HOSTS: usize = 32;
const NETNS_DIR: &str = "/run/netns";

/// Returns `None` when namespace tests can run, or the reason they must be skipped (not root,
/// `ip` or `nft` missing). Callers print `SKIP: <reason>` to stderr and return.
pub fn root_available() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespace tests need root (run as root to include them)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 nftables)"
            ));
        }
    }
    None
}

/// One simulated host: a network namespace with `lo` and `eth0` up and one IPv4 address.
#[derive(Debug, Clone)]
pub struct NetHost {
    /// Namespace name (`pf-...-h<i>`).
    pub name: String,
    /// 1-based host number (`h1` is 1).
    pub number: usize,
    /// Address of `eth0` (10.77.1.<number>/24).
    pub ip: Ipv4Addr,
}

impl NetHost {
    /// A command that runs `program` inside this host's namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args..` inside the namespace and waits; fails (with its stderr) unless it
    /// exits 0.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} in {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Starts `cmd` (from [`NetHost::command`]) and returns a guard that kills it on drop.
    pub fn spawn(&self, cmd: &mut Command) -> Result<ChildGuard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning a process in {}", self.name))?;
        Ok(ChildGuard(child))
    }

    /// Runs `f` on a new thread whose network namespace is this host's: sockets it creates
    /// (including those of a tokio runtime built on that thread) live in the namespace.
    pub fn run_in<R, F>(&self, f: F) -> Result<std::thread::JoinHandle<Result<R>>>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R> + Send + 'static,
    {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let name = self.name.clone();
        Ok(std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: `file` is an open namespace file for the whole call; setns only changes
            // the namespace of the calling thread, which is this fresh thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns into {name}: {}", std::io::Error::last_os_error());
            }
            drop(file);
            f()
        }))
    }
}

/// A child process killed (and reaped) when the guard is dropped.
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bridge and N hosts, each in its own network namespace, removed on drop.
#[derive(Debug)]
pub struct NetLab {
    id: String,
    bridge_ns: String,
    hosts: Vec<NetHost>,
    /// Every namespace created so far, in creation order (the cleanup list).
    created: Vec<String>,
}

impl NetLab {
    /// Creates the bridge namespace and `n_hosts` host namespaces (1..=[`MAX_HOSTS`]) wired to
    /// it. On error everything created so far is removed before returning.
    pub fn new(n_hosts: usize) -> Result<NetLab> {
        if n_hosts == 0 || n_hosts > MAX_HOSTS {
            bail!("n_hosts {n_hosts} is out of range: use 1 to {MAX_HOSTS}");
        }
        let id = format!("{PREFIX}{}-{}", std::process::id(), unique_suffix());
        let mut lab = NetLab {
            bridge_ns: format!("{id}-br"),
            id,
            hosts: Vec::new(),
            created: Vec::new(),
        };
        // From here on, an early return drops `lab`, which deletes what was created.
        lab.add_ns(&lab.bridge_ns.clone())?;
        let br = lab.bridge_ns.clone();
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for number in 1..=n_hosts {
            let name = format!("{}-h{number}", lab.id);
            lab.add_ns(&name)?;
            let host = NetHost {
                name: name.clone(),
                number,
                ip: Ipv4Addr::new(10, 77, 1, number as u8),
            };
            let port = format!("vh{number}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            lab.hosts.push(host);
        }
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_string());
        Ok(())
    }

    /// Host `number`, 1-based (`host(1)` is `h1`). Panics when out of range: a test bug.
    pub fn host(&self, number: usize) -> &NetHost {
        assert!(
            number >= 1 && number <= self.hosts.len(),
            "host({number}): lab has hosts 1..={}",
            self.hosts.len()
        );
        &self.hosts[number - 1]
    }

    /// All hosts, `h1` first.
    pub fn hosts(&self) -> &[NetHost] {
        &self.hosts
    }

    /// Every namespace this lab created (bridge and hosts).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// The lab's unique name prefix (`pf-<pid>-<random>`).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = delete_namespace(ns) {
                eprintln!("netns cleanup: {e:#}");
            }
        }
    }
}

/// Kills every process inside `ns` (they can only be ours: we created it) and deletes it;
/// deleting the namespace also deletes its interfaces.
fn delete_namespace(ns: &str) -> Result<()> {
    for _ in 0..50 {
        let pids = Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .context("ip netns pids")?;
        let pids: Vec<i32> = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill has no memory effects; the pid was just listed inside our namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(&["netns", "del", ns])
}

/// Deletes namespaces left by crashed runs: every `pf-<pid>-...` namespace whose pid is no
/// longer alive. Namespaces of live processes (concurrent test runs) are left alone. Returns
/// the names removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        delete_namespace(&name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// Runs `f` on a fresh lab of `hosts` hosts (after removing what crashed runs left), then
/// deletes the lab and checks that none of its namespaces remains, also when `f` failed.
pub fn with_lab(hosts: usize, f: impl FnOnce(&NetLab) -> Result<()>) -> Result<()> {
    cleanup_stale()?;
    let lab = NetLab::new(hosts)?;
    let names = lab.namespaces().to_vec();
    let result = f(&lab);
    drop(lab);
    for n in &names {
        assert!(!namespace_exists(n), "namespace {n} left behind");
    }
    result
}

/// True when a namespace of that name exists.
pub fn namespace_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A short suffix unique across processes (random) and within one (counter).
fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut b = [0u8; 3];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map(|_| u32::from_be_bytes([0, b[0], b[1], b[2]]))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        });
    format!(
        "{:06x}{}",
        random & 0xff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every 20 ms until it returns `Ok(Some(v))` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
