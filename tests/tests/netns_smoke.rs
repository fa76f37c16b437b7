//! Smoke test of the namespace harness: three hosts on a bridge, a TCP connection from h1 to a
//! process started in h2 with `ip netns exec`, and nothing left behind after the lab is dropped.
//! Root only: prints `SKIP: ...` and passes otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use preflight_tests::netns::{cleanup_stale, namespace_exists, root_available, NetLab};

const HELPER_ENV: &str = "PF_NETNS_SMOKE_LISTEN";
const GREETING: &[u8] = b"hello from h2\n";

/// Not a test of its own: when the smoke test re-executes this binary inside h2 with
/// `PF_NETNS_SMOKE_LISTEN=ADDR`, this listens there, says READY, answers one connection and
/// exits. Without the variable it returns at once.
#[test]
fn helper_listen_once() -> Result<()> {
    let Ok(addr) = std::env::var(HELPER_ENV) else {
        return Ok(());
    };
    let listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    println!("READY");
    std::io::stdout().flush()?;
    let (mut s, _) = listener.accept()?;
    s.write_all(GREETING)?;
    Ok(())
}

#[test]
fn three_hosts_on_a_bridge() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    let removed = cleanup_stale()?;
    if !removed.is_empty() {
        eprintln!("removed stale namespaces: {removed:?}");
    }
    let lab = NetLab::new(3)?;
    let names = lab.namespaces().to_vec();
    ensure!(names.len() == 4, "bridge plus three hosts: {names:?}");
    ensure!(names.iter().all(|n| namespace_exists(n)));

    // Only lo and eth0 in a host, with the lab address.
    let out = lab.host(2).exec("ip", &["-o", "-4", "addr", "show"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("lo") && text.contains("eth0") && text.contains("10.77.1.2/24"),
        "{text}"
    );

    let addr = SocketAddr::from((lab.host(2).ip, 7070));
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("test binary path is utf-8")?;
    let mut cmd = lab.host(2).command(exe);
    cmd.args([
        "--exact",
        "helper_listen_once",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(HELPER_ENV, addr.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut helper = lab.host(2).spawn(&mut cmd)?;
    let stdout = helper.0.stdout.take().context("helper stdout")?;
    // Wait (bounded) for the helper to listen: read lines on a thread with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("READY") {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .context("helper in h2 never said READY")?;

    // Connect from h1 through the bridge.
    let got = lab
        .host(1)
        .run_in(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("h1 thread panicked"))??;
    ensure!(got == GREETING, "got {:?}", String::from_utf8_lossy(&got));

    // The lab added nothing to the caller's namespace.
    let here = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()?;
    let here = String::from_utf8_lossy(&here.stdout);
    ensure!(
        !here.contains("10.77.1."),
        "lab address leaked into the caller's namespace: {here}"
    );

    drop(helper);
    drop(lab);
    for n in &names {
        ensure!(!namespace_exists(n), "namespace {n} left behind");
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    let list = String::from_utf8_lossy(&list.stdout);
    ensure!(
        names.iter().all(|n| !list.contains(n.as_str())),
        "ip netns list still shows the lab: {list}"
    );
    Ok(())
}

#[test]
fn a_panicking_test_still_cleans_up() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    let names = std::thread::spawn(|| -> Vec<String> {
        let lab = NetLab::new(1).expect("lab");
        let names = lab.namespaces().to_vec();
        // Unwinding drops the lab; smuggle the names out through the panic payload.
        std::panic::panic_any(names);
    })
    .join()
    .err()
    .and_then(|p| p.downcast::<Vec<String>>().ok())
    .context("the thread should have panicked with the namespace names")?;
    ensure!(!names.is_empty());
    for n in names.iter() {
        ensure!(!namespace_exists(n), "namespace {n} survived a panic");
    }
    Ok(())
}

#[test]
fn cleanup_stale_removes_namespaces_of_dead_runs_only() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    // A pid that existed and is gone: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn()?;
    let dead_pid = child.id();
    child.wait()?;
    let stale = format!("pf-{dead_pid}-deadbeef0-h1");
    let live = NetLab::new(1)?;
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()?;
    ensure!(ok.success(), "ip netns add {stale}");
    let cleaned = cleanup_stale();
    let stale_gone = !namespace_exists(&stale);
    if !stale_gone {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &stale])
            .status();
    }
    cleaned?;
    ensure!(stale_gone, "cleanup_stale left {stale} behind");
    ensure!(
        live.namespaces().iter().all(|n| namespace_exists(n)),
        "cleanup_stale removed a live run's namespace"
    );
    Ok(())
}
