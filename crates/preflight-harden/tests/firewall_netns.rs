//! Real firewall tests inside network namespaces created by the test: namespace A plays the
//! controller/operator, namespace B the hardened host; a veth pair with 10.x addresses joins
//! them. Root only: without root, `ip` or `nft` every test prints `SKIP: ...` and returns.
//!
//! The firewall manager drives namespace B through `ip netns exec` (its `CommandRunner`);
//! the test's own sockets are created by threads that `setns` into A or B.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use preflight_core::evidence::EvidenceStatus;
use preflight_core::net::Proto;
use preflight_harden::firewall::{
    AllowList, Backend, ChangeOutcome, CommandRunner, FirewallError, FirewallManager, Listener,
    PlannedPort, RollbackReason,
};

const SSH: u16 = 22;
const AGENT: u16 = 7444;
const PLANNED: u16 = 8080;
const UNPLANNED: u16 = 9999;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(600);

fn skip_reason(backend: Backend) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    let has = |p: &str| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(p).is_file())
    };
    if !has("ip") {
        return Some("`ip` (iproute2) is not installed".into());
    }
    let tools: &[&str] = match backend {
        Backend::Nftables => &["nft"],
        Backend::Iptables => &["iptables-save", "iptables-restore"],
        Backend::Firewalld => &["firewall-cmd"],
    };
    tools
        .iter()
        .find(|t| !has(t))
        .map(|t| format!("`{t}` is not installed"))
}

macro_rules! skip_unless_ready {
    ($backend:expr) => {
        if let Some(why) = skip_reason($backend) {
            eprintln!("SKIP: {why}");
            return Ok(());
        }
    };
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn in_ns(ns: &str, tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, tool])
        .args(args)
        .output()
        .context("run ip netns exec")?;
    if !out.status.success() {
        bail!(
            "{tool} {} in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two namespaces joined by a veth pair; removed on drop, also when a test panics.
struct NetPair {
    a: String,
    b: String,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
    a_ip6: Ipv6Addr,
    b_ip6: Ipv6Addr,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl NetPair {
    fn new() -> Result<Self> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let pair = NetPair {
            a: format!("pffw-a-{tag}"),
            b: format!("pffw-b-{tag}"),
            a_ip: Ipv4Addr::new(10, 213, n as u8, 1),
            b_ip: Ipv4Addr::new(10, 213, n as u8, 2),
            a_ip6: Ipv6Addr::new(0xfd00, 0x213, n as u16, 0, 0, 0, 0, 1),
            b_ip6: Ipv6Addr::new(0xfd00, 0x213, n as u16, 0, 0, 0, 0, 2),
        };
        // From here on Drop cleans up whatever was created.
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        let (va, vb) = (format!("pfa{tag}"), format!("pfb{tag}"));
        ip(&[
            "link", "add", &va, "netns", &pair.a, "type", "veth", "peer", "name", &vb, "netns",
            &pair.b,
        ])?;
        for (ns, dev, addr, addr6) in [
            (&pair.a, &va, pair.a_ip, pair.a_ip6),
            (&pair.b, &vb, pair.b_ip, pair.b_ip6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            // nodad: usable at once, no duplicate address detection delay.
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Whether a TCP connection from A to B:`port` succeeds.
    fn reachable(&self, port: u16) -> bool {
        let target = SocketAddr::from((self.b_ip, port));
        in_netns(&self.a, move || {
            TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).is_ok()
        })
        .unwrap_or(false)
    }

    /// Whether a TCP connection from A to B:`port` over IPv6 succeeds.
    fn reachable6(&self, port: u16) -> bool {
        let target = SocketAddr::from((self.b_ip6, port));
        in_netns(&self.a, move || {
            TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).is_ok()
        })
        .unwrap_or(false)
    }

    fn runner(&self) -> CommandRunner {
        CommandRunner::in_netns(&self.b).expect("valid namespace name")
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting the namespaces removes the veth pair and every rule inside them.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: the fd is valid for the duration of the call; setns only changes the network
        // namespace of this short-lived thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// TCP listeners inside B that accept and close connections until dropped.
struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    fn start(ns: &str, ports: &[u16]) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            // "::" is dual-stack on Linux (bindv6only=0): IPv4 and IPv6 in one socket.
            let l = in_netns(ns, move || TcpListener::bind(("::", port)))??;
            l.set_nonblocking(true)?;
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => drop(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn good_list(p: &NetPair) -> AllowList {
    AllowList {
        mgmt_sources: vec![format!("{}/32", p.a_ip).parse().expect("net")],
        ssh_port: SSH,
        agent_port: AGENT,
        controller_addrs: vec![p.a_ip.into()],
        planned: vec![PlannedPort {
            port: PLANNED,
            proto: Proto::Tcp,
            sources: vec![],
            reason: "web app".into(),
        }],
        current_listeners: vec![],
    }
}

/// An allow-list that leaves the controller (namespace A) outside the management sources.
fn cutoff_list() -> AllowList {
    AllowList {
        mgmt_sources: vec!["10.99.0.0/24".parse().expect("net")],
        ssh_port: SSH,
        agent_port: AGENT,
        controller_addrs: vec![],
        planned: vec![],
        current_listeners: vec![],
    }
}

fn listener(port: u16) -> Listener {
    Listener {
        proto: Proto::Tcp,
        addr: "0.0.0.0".parse().expect("ip"),
        port,
        process: Some(format!("test-{port}")),
    }
}

fn snapshot(p: &NetPair, backend: Backend) -> Result<String> {
    match backend {
        Backend::Iptables => Ok(in_ns(&p.b, "iptables-save", &[])?
            .lines()
            .filter(|l| !l.starts_with('#'))
            // Packet counters of chain policies change with traffic; compare the rules.
            .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
                (true, Some(i)) => format!("{}\n", &l[..i]),
                _ => format!("{l}\n"),
            })
            .collect()),
        _ => in_ns(&p.b, "nft", &["list", "ruleset"]),
    }
}

/// Polls until A reaches B:`port` or `limit` passes; returns the time it took.
fn wait_reachable(p: &NetPair, port: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if p.reachable(port) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn allowlist_keeps_controller_and_ssh(backend: Backend) -> Result<()> {
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[SSH, AGENT, PLANNED, UNPLANNED])?;
    for port in [SSH, AGENT, PLANNED, UNPLANNED] {
        assert!(
            p.reachable(port),
            "before hardening {port} must be reachable (test setup)"
        );
    }
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    let mut list = good_list(&p);
    list.current_listeners = [SSH, AGENT, PLANNED, UNPLANNED].map(listener).to_vec();
    let plan = fw.plan(&list)?;
    assert_eq!(
        plan.blocked_listeners
            .iter()
            .map(|l| l.port)
            .collect::<Vec<_>>(),
        vec![UNPLANNED]
    );
    assert!(
        plan.diff_vs_current.contains(&format!("dport {PLANNED}"))
            || plan.diff_vs_current.contains(&format!("--dport {PLANNED}"))
    );
    let change = fw.apply_with_confirm(&plan, Duration::from_secs(20))?;
    assert!(
        state.path().join("pending.json").exists(),
        "pending state is on disk while unconfirmed"
    );
    fw.confirm(&change.id)?;
    assert!(!state.path().join("pending.json").exists());
    assert_eq!(fw.outcome(&change.id), Some(ChangeOutcome::Confirmed));

    for port in [SSH, AGENT, PLANNED] {
        assert!(
            p.reachable(port),
            "{backend}: {port} must stay reachable from the controller"
        );
    }
    assert!(
        !p.reachable(UNPLANNED),
        "{backend}: unplanned port {UNPLANNED} must be blocked"
    );

    // Audit: compliant with the planned listeners, non-compliant once the unplanned one counts.
    let planned_listeners = [SSH, AGENT, PLANNED].map(listener);
    let results = fw.audit(&list, &planned_listeners);
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r.status, EvidenceStatus::Compliant, "{backend}: {r:?}");
    }
    let with_unplanned = [SSH, AGENT, PLANNED, UNPLANNED].map(listener);
    let r = fw
        .audit(&list, &with_unplanned)
        .into_iter()
        .find(|r| r.check_id == "fw.allowlist_ports")
        .expect("check");
    assert_eq!(r.status, EvidenceStatus::NonCompliant);
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("9999/tcp (test-9999) is not in the plan"),
        "{r:?}"
    );

    // Re-applying the same allow-list changes nothing.
    let before = snapshot(&p, backend)?;
    let again = fw.apply_with_confirm(&fw.plan(&list)?, Duration::from_secs(20))?;
    fw.confirm(&again.id)?;
    assert_eq!(
        snapshot(&p, backend)?,
        before,
        "{backend}: re-apply must be idempotent"
    );

    // An integrator opens one more port later through the same procedure.
    let (plan, change) = fw.allow_port(
        UNPLANNED,
        Proto::Tcp,
        vec![],
        "app deployed after hardening",
        Duration::from_secs(20),
    )?;
    assert!(plan.blocked_listeners.is_empty());
    fw.confirm(&change.id)?;
    assert!(
        p.reachable(UNPLANNED),
        "{backend}: allowed port must be reachable"
    );
    assert!(p.reachable(AGENT));
    Ok(())
}

fn cutoff_is_rolled_back_by_timer(backend: Backend) -> Result<()> {
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[SSH, AGENT])?;
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    // First a good, confirmed ruleset: rollback must restore exactly this one.
    let good = fw.apply_with_confirm(&fw.plan(&good_list(&p))?, Duration::from_secs(20))?;
    fw.confirm(&good.id)?;
    let before = snapshot(&p, backend)?;
    assert!(p.reachable(AGENT));

    let deadline = Duration::from_secs(3);
    let started = Instant::now();
    let change = fw.apply_with_confirm(&fw.plan(&cutoff_list())?, deadline)?;
    assert!(
        !p.reachable(AGENT),
        "{backend}: the bad ruleset must cut the controller off (test setup)"
    );
    let back =
        wait_reachable(&p, AGENT, deadline + Duration::from_secs(6)).map(|_| started.elapsed());
    let took = back
        .unwrap_or_else(|| panic!("{backend}: connectivity did not return within deadline + 6 s"));
    eprintln!(
        "{backend}: controller reachable again {:.2} s after apply (deadline {} s)",
        took.as_secs_f64(),
        deadline.as_secs()
    );
    assert!(
        took <= deadline + Duration::from_secs(5),
        "{backend}: rollback took {took:?}"
    );
    assert!(p.reachable(SSH));
    assert_eq!(
        fw.outcome(&change.id),
        Some(ChangeOutcome::RolledBack(RollbackReason::Timeout))
    );
    assert_eq!(
        snapshot(&p, backend)?,
        before,
        "{backend}: the snapshot is restored exactly"
    );
    assert!(!state.path().join("pending.json").exists());
    assert!(matches!(
        fw.confirm(&change.id),
        Err(FirewallError::Expired(_))
    ));
    Ok(())
}

fn confirm_disarms_timer(backend: Backend) -> Result<()> {
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[AGENT, UNPLANNED])?;
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    let deadline = Duration::from_secs(2);
    let change = fw.apply_with_confirm(&fw.plan(&good_list(&p))?, deadline)?;
    fw.confirm(&change.id)?;
    let applied = snapshot(&p, backend)?;
    // Waiting past the deadline is the point of this test: nothing may happen.
    std::thread::sleep(deadline + Duration::from_millis(1500));
    assert_eq!(
        snapshot(&p, backend)?,
        applied,
        "{backend}: a confirmed ruleset must stay"
    );
    assert!(!p.reachable(UNPLANNED));
    assert!(p.reachable(AGENT));
    assert_eq!(fw.outcome(&change.id), Some(ChangeOutcome::Confirmed));
    assert!(matches!(
        fw.confirm(&change.id),
        Err(FirewallError::NoSuchChange(_))
    ));
    Ok(())
}

fn restart_mid_window_rolls_back(backend: Backend) -> Result<()> {
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[AGENT])?;
    let before = snapshot(&p, backend)?;
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    let change = fw.apply_with_confirm(&fw.plan(&cutoff_list())?, Duration::from_secs(120))?;
    assert!(!p.reachable(AGENT));
    drop(fw); // the agent dies inside the window
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    assert!(matches!(
        fw.apply_with_confirm(&fw.plan(&good_list(&p))?, Duration::from_secs(20)),
        Err(FirewallError::ChangePending(_))
    ));
    let recovered = fw.recover_on_start()?;
    assert_eq!(
        recovered,
        Some((
            change.id.clone(),
            ChangeOutcome::RolledBack(RollbackReason::Startup)
        ))
    );
    assert!(
        p.reachable(AGENT),
        "{backend}: start-up rollback restores connectivity"
    );
    if backend == Backend::Nftables {
        assert_eq!(
            snapshot(&p, backend)?,
            before,
            "our table did not exist before, so it is gone"
        );
    } else {
        let after = snapshot(&p, backend)?;
        assert!(
            !after.contains("PREFLIGHT-INPUT") && after.contains(":INPUT ACCEPT"),
            "{after}"
        );
    }
    assert_eq!(fw.recover_on_start()?, None, "nothing left to recover");
    Ok(())
}

#[test]
fn nft_allowlist_keeps_controller_and_ssh_and_blocks_unplanned() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    allowlist_keeps_controller_and_ssh(Backend::Nftables)
}

#[test]
fn nft_cutoff_is_rolled_back_by_timer() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    cutoff_is_rolled_back_by_timer(Backend::Nftables)
}

#[test]
fn nft_confirm_disarms_timer() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    confirm_disarms_timer(Backend::Nftables)
}

#[test]
fn nft_restart_mid_window_rolls_back_at_start() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    restart_mid_window_rolls_back(Backend::Nftables)
}

#[test]
fn nft_validation_failure_changes_nothing() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    let p = NetPair::new()?;
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(Backend::Nftables, state.path(), p.runner())?;
    let mut plan = fw.plan(&good_list(&p))?;
    plan.rendered.push_str("this is not nft syntax\n");
    assert!(
        fw.apply_with_confirm(&plan, Duration::from_secs(5))
            .is_err(),
        "a tampered plan is refused"
    );
    let mut bad = good_list(&p);
    bad.planned.push(PlannedPort {
        port: 23,
        proto: Proto::Tcp,
        sources: vec![],
        reason: "telnet".into(),
    });
    assert!(matches!(
        fw.plan(&bad),
        Err(FirewallError::InvalidAllowList(_))
    ));
    assert_eq!(in_ns(&p.b, "nft", &["list", "ruleset"])?, "");
    assert!(!state.path().join("pending.json").exists());
    Ok(())
}

#[test]
fn iptables_allowlist_keeps_controller_and_ssh_and_blocks_unplanned() -> Result<()> {
    skip_unless_ready!(Backend::Iptables);
    allowlist_keeps_controller_and_ssh(Backend::Iptables)
}

#[test]
fn iptables_cutoff_is_rolled_back_by_timer() -> Result<()> {
    skip_unless_ready!(Backend::Iptables);
    cutoff_is_rolled_back_by_timer(Backend::Iptables)
}

#[test]
fn iptables_confirm_disarms_timer() -> Result<()> {
    skip_unless_ready!(Backend::Iptables);
    confirm_disarms_timer(Backend::Iptables)
}

#[test]
fn iptables_restart_mid_window_rolls_back_at_start() -> Result<()> {
    skip_unless_ready!(Backend::Iptables);
    restart_mid_window_rolls_back(Backend::Iptables)
}

#[test]
fn detection_flags_two_active_backends() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    if let Some(why) = skip_reason(Backend::Iptables) {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    let p = NetPair::new()?;
    let runner = p.runner();
    let active = |runner: &CommandRunner| -> Vec<Backend> {
        preflight_harden::firewall::detect_backends(runner)
            .into_iter()
            .filter(|s| s.active())
            .map(|s| s.backend)
            .collect()
    };
    assert_eq!(
        active(&runner),
        Vec::<Backend>::new(),
        "a fresh namespace has no firewall"
    );
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(Backend::Nftables, state.path(), p.runner())?;
    let c = fw.apply_with_confirm(&fw.plan(&good_list(&p))?, Duration::from_secs(20))?;
    fw.confirm(&c.id)?;
    assert_eq!(active(&runner), vec![Backend::Nftables]);
    let single = |fw: &FirewallManager| {
        fw.audit(&good_list(&p), &[])
            .into_iter()
            .find(|r| r.check_id == "fw.single_backend")
            .expect("check")
    };
    assert_eq!(single(&fw).status, EvidenceStatus::Compliant);
    // Someone adds an iptables rule next to our nftables table.
    in_ns(
        &p.b,
        "iptables",
        &[
            "-A", "INPUT", "-p", "tcp", "--dport", "5555", "-j", "ACCEPT",
        ],
    )?;
    assert_eq!(active(&runner), vec![Backend::Nftables, Backend::Iptables]);
    let r = single(&fw);
    assert_eq!(r.status, EvidenceStatus::NonCompliant);
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("nftables, iptables are all active"),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn confirmed_ruleset_is_persisted_and_loadable() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    let p = NetPair::new()?;
    let state = tempfile::tempdir()?;
    let persisted = state.path().join("persist").join("preflight.nft");
    std::fs::create_dir_all(persisted.parent().expect("parent"))?;
    let mut fw =
        FirewallManager::with_runner(Backend::Nftables, &state.path().join("fw"), p.runner())?;
    fw.set_persist_paths(Some(persisted.clone()), None)?;
    let c = fw.apply_with_confirm(&fw.plan(&good_list(&p))?, Duration::from_secs(20))?;
    assert!(
        !persisted.exists(),
        "nothing is persisted before confirmation"
    );
    fw.confirm(&c.id)?;
    let loaded = in_ns(&p.b, "nft", &["list", "table", "inet", "preflight"])?;
    // The persisted file is what a boot would load: it must pass `nft -c` and reproduce the table.
    in_ns(&p.b, "nft", &["-c", "-f", &persisted.to_string_lossy()])?;
    in_ns(&p.b, "nft", &["-f", &persisted.to_string_lossy()])?;
    assert_eq!(
        in_ns(&p.b, "nft", &["list", "table", "inet", "preflight"])?,
        loaded
    );
    assert_eq!(fw.confirmed_allow_list()?, Some(good_list(&p)));
    // Later ports go through the same rules: never 23.
    assert!(matches!(
        fw.allow_port(23, Proto::Tcp, vec![], "telnet", Duration::from_secs(20)),
        Err(FirewallError::InvalidAllowList(_))
    ));
    assert!(fw.pending().is_none());
    Ok(())
}

#[test]
fn nft_failed_timed_rollback_is_retried() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[AGENT])?;
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(Backend::Nftables, state.path(), p.runner())?;
    let good = fw.apply_with_confirm(&fw.plan(&good_list(&p))?, Duration::from_secs(20))?;
    fw.confirm(&good.id)?;
    let change = fw.apply_with_confirm(&fw.plan(&cutoff_list())?, Duration::from_secs(1))?;
    // Hide the snapshot so the timed rollback fails.
    let snap = state.path().join(format!("{}.before.table.nft", change.id));
    let hidden = state.path().join("hidden");
    std::fs::rename(&snap, &hidden)?;
    let failed = Instant::now();
    while !matches!(
        fw.outcome(&change.id),
        Some(ChangeOutcome::RollbackFailed(_))
    ) {
        assert!(
            failed.elapsed() < Duration::from_secs(5),
            "the timer must have tried by now"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !p.reachable(AGENT),
        "still cut off while the rollback cannot run"
    );
    assert!(
        matches!(fw.confirm(&change.id), Err(FirewallError::Expired(_))),
        "a failed rollback cannot be confirmed"
    );
    std::fs::rename(&hidden, &snap)?;
    let took =
        wait_reachable(&p, AGENT, Duration::from_secs(8)).expect("the retry restores the snapshot");
    eprintln!(
        "nft: retry restored connectivity {:.2} s after the snapshot came back",
        took.as_secs_f64()
    );
    assert_eq!(
        fw.outcome(&change.id),
        Some(ChangeOutcome::RolledBack(RollbackReason::Timeout))
    );
    assert!(!state.path().join("pending.json").exists());
    Ok(())
}

fn ipv6_mgmt_source_and_neighbour_discovery(backend: Backend) -> Result<()> {
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[AGENT, UNPLANNED])?;
    assert!(
        wait_reachable6(&p, AGENT),
        "IPv6 setup: agent port reachable before hardening"
    );
    let state = tempfile::tempdir()?;
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    let list = AllowList {
        mgmt_sources: vec![format!("{}/128", p.a_ip6).parse().expect("net")],
        ..cutoff_list()
    };
    let c = fw.apply_with_confirm(&fw.plan(&list)?, Duration::from_secs(20))?;
    fw.confirm(&c.id)?;
    // Forget the neighbours so the next connection needs ICMPv6 neighbour discovery through
    // the new ruleset.
    ip(&["-n", &p.a, "neigh", "flush", "all"])?;
    ip(&["-n", &p.b, "neigh", "flush", "all"])?;
    assert!(
        p.reachable6(AGENT),
        "{backend}: agent port over IPv6 from the management source"
    );
    assert!(
        !p.reachable6(UNPLANNED),
        "{backend}: unplanned port blocked over IPv6"
    );
    assert!(
        !p.reachable(AGENT),
        "{backend}: IPv4 source outside the management sources is blocked"
    );
    Ok(())
}

fn wait_reachable6(p: &NetPair, port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if p.reachable6(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn nft_ipv6_mgmt_source_and_neighbour_discovery() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    ipv6_mgmt_source_and_neighbour_discovery(Backend::Nftables)
}

#[test]
fn iptables_ipv6_mgmt_source_and_neighbour_discovery() -> Result<()> {
    skip_unless_ready!(Backend::Iptables);
    ipv6_mgmt_source_and_neighbour_discovery(Backend::Iptables)
}

/// Kills and reaps the helper process on drop, also when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `fw_apply_and_hang` example, which `cargo test` builds next to the test binaries.
fn helper_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe
        .parent()?
        .parent()?
        .join("examples")
        .join("fw_apply_and_hang");
    path.is_file().then_some(path)
}

fn killed_agent_rolls_back_at_start(backend: Backend, name: &str) -> Result<()> {
    let Some(helper) = helper_binary() else {
        eprintln!("SKIP: examples/fw_apply_and_hang is not built (cargo test builds it)");
        return Ok(());
    };
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[AGENT])?;
    let state = tempfile::tempdir()?;
    let mut child = KillOnDrop(
        Command::new(helper)
            .arg(&p.b)
            .arg(state.path())
            .args([name, "10.99.0.0/24", "300"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("start helper")?,
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().context("helper stdout")?),
        &mut line,
    )?;
    let id = line.trim().to_owned();
    assert_eq!(id.len(), 32, "helper printed the change id, got {line:?}");
    assert!(
        !p.reachable(AGENT),
        "{backend}: the helper's ruleset cuts the controller off"
    );
    // SIGKILL: no destructor, no timer, only the state on disk survives.
    child.0.kill()?;
    child.0.wait()?;
    assert!(
        !p.reachable(AGENT),
        "{backend}: still cut off while no agent runs"
    );
    let fw = FirewallManager::with_runner(backend, state.path(), p.runner())?;
    let started = Instant::now();
    let recovered = fw.recover_on_start()?;
    assert_eq!(
        recovered,
        Some((id, ChangeOutcome::RolledBack(RollbackReason::Startup)))
    );
    assert!(
        p.reachable(AGENT),
        "{backend}: start-up rollback restores connectivity"
    );
    eprintln!(
        "{backend}: start-up rollback took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn nft_killed_agent_rolls_back_at_start() -> Result<()> {
    skip_unless_ready!(Backend::Nftables);
    killed_agent_rolls_back_at_start(Backend::Nftables, "nftables")
}

#[test]
fn iptables_killed_agent_rolls_back_at_start() -> Result<()> {
    skip_unless_ready!(Backend::Iptables);
    killed_agent_rolls_back_at_start(Backend::Iptables, "iptables")
}

/// The catalog's `fw.*` checks through the live hook passed in: with the root prefix `/`
/// they audit the namespace's ruleset against the confirmed allow-list; with another prefix
/// they are not applicable.
#[test]
fn nft_live_hook_audits_the_ruleset_only_with_root_slash() -> Result<()> {
    use preflight_core::evidence::EvidenceStatus;
    use preflight_harden::catalog::{self, Policy, Root};
    use preflight_harden::firewall::LiveFirewall;
    skip_unless_ready!(Backend::Nftables);
    let p = NetPair::new()?;
    let _l = Listeners::start(&p.b, &[SSH, AGENT, PLANNED])?;
    let state = tempfile::tempdir()?;
    let fw_ids = [
        "fw.single_backend",
        "fw.default_deny_in",
        "fw.allowlist_ports",
        "fw.mgmt_source",
    ];
    let hook = LiveFirewall::new(
        p.runner(),
        state.path(),
        Box::new(|| Ok([SSH, AGENT, PLANNED].map(listener).to_vec())),
    );
    let audit = |root: &Root| -> Vec<(String, EvidenceStatus, String)> {
        catalog::audit(root, &Policy::default(), &hook, &fw_ids)
            .into_iter()
            .map(|r| (r.id, r.status, r.reason.unwrap_or_default()))
            .collect()
    };
    // Before any change: nothing loaded, no allow-list.
    let before = audit(&Root::host());
    assert_eq!(before.len(), 4);
    for (id, st, why) in &before {
        assert_eq!(*st, EvidenceStatus::NonCompliant, "{id}: {why}");
    }
    assert!(before[2].2.contains("no firewall allow-list"), "{before:?}");
    // A fixture tree is not this namespace: not applicable, whatever the ruleset.
    let tree = tempfile::tempdir()?;
    for (id, st, why) in audit(&Root::new(tree.path())?) {
        assert_eq!(st, EvidenceStatus::NotApplicable, "{id}");
        assert!(why.contains("only with the root prefix /"), "{why}");
    }
    // After a confirmed allow-list: all four compliant.
    let fw = FirewallManager::with_runner(Backend::Nftables, state.path(), p.runner())?;
    let change = fw.apply_with_confirm(&fw.plan(&good_list(&p))?, Duration::from_secs(20))?;
    fw.confirm(&change.id)?;
    for (id, st, why) in audit(&Root::host()) {
        assert_eq!(st, EvidenceStatus::Compliant, "{id}: {why}");
    }
    // A ruleset that opens SSH to everyone is caught.
    in_ns(
        &p.b,
        "nft",
        &[
            "insert",
            "rule",
            "inet",
            "preflight",
            "input",
            "tcp",
            "dport",
            "22",
            "accept",
        ],
    )?;
    let after = audit(&Root::host());
    assert_eq!(after[3].1, EvidenceStatus::NonCompliant, "{after:?}");
    assert!(
        after[3].2.contains("22/tcp is allowed from anywhere"),
        "{after:?}"
    );
    Ok(())
}
