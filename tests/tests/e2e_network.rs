//! Network readiness end to end on loopback, through the real binaries: `preflight ports`
//! against `ss`, `preflight probe` between two agents on 127.0.0.61 and 127.0.0.62 (verified,
//! open for an unrelated process, refused for a closed port, listeners gone after their TTL),
//! `preflight bandwidth` both ways, and bad input naming the field. Runs without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use preflight_tests::cluster::{eventually, Agent, Controller};
use serde_json::Value;

#[path = "../../crates/preflight-probe/tests/support/ss.rs"]
mod ss_view;

use ss_view::{ss, ss_all, Key, SsView};

/// `preflight ports AGENT --output json` as (proto, address, port) -> pid.
fn agent_ports(ctl: &Controller, agent: &str) -> Result<BTreeMap<Key, Option<u32>>> {
    let v = ctl.json(&["ports", agent])?;
    let mut m = BTreeMap::new();
    for s in v.as_array().context("an array")? {
        let key = (
            s["proto"].as_str().context("proto")?.to_string(),
            s["address"].as_str().context("address")?.parse()?,
            u16::try_from(s["port"].as_u64().context("port")?)?,
        );
        m.insert(key, s["pid"].as_u64().map(|p| p as u32));
    }
    Ok(m)
}

/// Compares the agent's listing with ss's: same sockets, and our pid the lowest of ss's.
fn compare(ours: &BTreeMap<Key, Option<u32>>, ss: &SsView) -> Result<()> {
    let a: BTreeSet<&Key> = ours.keys().collect();
    let b: BTreeSet<&Key> = ss.keys().collect();
    ensure!(
        a == b,
        "socket sets differ: only ours {:?}, only ss {:?}",
        a.difference(&b).collect::<Vec<_>>(),
        b.difference(&a).collect::<Vec<_>>()
    );
    for (k, pid) in ours {
        let want = ss[k].iter().next().copied();
        ensure!(*pid == want, "{k:?}: pid {pid:?}, ss says {:?}", ss[k]);
    }
    Ok(())
}

fn cluster(base: &std::path::Path, agents: &[(&str, &str)]) -> Result<(Controller, Vec<Agent>)> {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"])?;
    let mut out = Vec::new();
    for (id, ip) in agents {
        let mut a = Agent::enroll(&ctl, base, id, ip)?;
        a.start()?;
        out.push(a);
    }
    for (id, _) in agents {
        ctl.wait_online(id);
    }
    Ok((ctl, out))
}

fn probe(ctl: &Controller, args: &[&str]) -> Result<BTreeMap<u64, Value>> {
    let mut a = vec!["probe"];
    a.extend(args);
    let v = ctl.json(&a)?;
    Ok(v["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .map(|p| (p["port"].as_u64().unwrap_or(0), p.clone()))
        .collect())
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// True when something listens on `ip:port` (TCP), per ss.
fn tcp_listening(ip: &str, port: u16) -> bool {
    let ip: IpAddr = ip.parse().expect("ip");
    ss(&["-H", "-ltn"], Some("tcp"))
        .expect("ss")
        .contains_key(&("tcp".into(), ip, port))
}

#[test]
fn ports_probe_ttl_and_bandwidth_between_loopback_agents() -> Result<()> {
    let base = tempfile::tempdir()?;
    let (a_ip, b_ip) = ("127.0.0.61", "127.0.0.62");
    let (ctl, _agents) = cluster(base.path(), &[("net-a", a_ip), ("net-b", b_ip)])?;
    let me = std::process::id();

    // --- ports: our own TCP and UDP sockets, and the whole set, as ss sees it.
    let tcp = TcpListener::bind((b_ip, 0))?;
    let udp = UdpSocket::bind((b_ip, 0))?;
    let tcp_key: Key = ("tcp".into(), b_ip.parse()?, tcp.local_addr()?.port());
    let udp_key: Key = ("udp".into(), b_ip.parse()?, udp.local_addr()?.port());
    let mut last = Err(anyhow::anyhow!("not compared"));
    for _ in 0..5 {
        // Other processes open and close sockets meanwhile: compare only when ss saw the same
        // set before and after our listing.
        let before = ss_all()?;
        let ours = agent_ports(&ctl, "net-b")?;
        let after = ss_all()?;
        ensure!(
            ours.get(&tcp_key) == Some(&Some(me)),
            "our tcp listener {tcp_key:?} with pid {me} is missing: {ours:?}"
        );
        ensure!(
            ours.get(&udp_key) == Some(&Some(me)),
            "our udp socket {udp_key:?} with pid {me} is missing"
        );
        if before != after {
            continue;
        }
        last = compare(&ours, &before);
        if last.is_ok() {
            break;
        }
    }
    last.context("preflight ports equals ss -ltnup + ss -lunp")?;
    let text = ctl.run(&["ports", "net-b"])?;
    assert!(text.starts_with("PROTO"), "{text}");
    assert!(text.contains(&tcp_key.2.to_string()), "{text}");

    // --- probe: a free port, one served by an unrelated process (this test), one closed
    // (bound but not listening, so nothing can be opened there and the kernel resets), and the
    // target agent's own port.
    let free = free_port(b_ip);
    let served = TcpListener::bind((b_ip, 0))?;
    let served_port = served.local_addr()?.port();
    std::thread::spawn(move || {
        // Accept and hang up, like a service that speaks another protocol.
        for c in served.incoming() {
            drop(c);
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let closed_sock = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(b_ip.parse().expect("ip"), 0))?;
        anyhow::Ok(s)
    })?;
    let closed = closed_sock.local_addr()?.port();
    let own: SocketAddr = ctl.wait_online("net-b");
    let ports = format!("{free},{served_port},{closed},{}", own.port());
    let r = probe(
        &ctl,
        &[
            "--from",
            "net-a",
            "--to",
            "net-b",
            "--ports",
            &ports,
            "--timeout",
            "1s",
        ],
    )?;
    let outcome = |p: u16| {
        r[&u64::from(p)]["outcome"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(outcome(free), "verified", "{r:?}");
    assert_eq!(outcome(served_port), "open", "{r:?}");
    let note = r[&u64::from(served_port)]["note"].as_str().unwrap_or("");
    assert!(
        note.contains(&format!("pid {me}")),
        "in-use port names its owner: {note}"
    );
    assert_eq!(r[&u64::from(served_port)]["listener"], "in_use");
    assert_eq!(outcome(closed), "refused", "{r:?}");
    assert_eq!(outcome(own.port()), "open", "{r:?}");
    assert_eq!(r[&u64::from(own.port())]["listener"], "forbidden");
    assert!(r[&u64::from(free)]["connect_us"].as_u64().is_some());
    // Closed after the probe.
    assert!(
        !tcp_listening(b_ip, free),
        "probe listener on {free} still open"
    );

    // The table, for people.
    let text = ctl.run(&[
        "probe",
        "--from",
        "net-a",
        "--to",
        "net-b",
        "--ports",
        &free.to_string(),
    ])?;
    assert!(
        text.contains("verified") && text.contains("CONNECT"),
        "{text}"
    );

    // --- TTL: kept listeners stay until their TTL and are gone after it, without a close.
    let kept = free_port(b_ip);
    let v = ctl.json(&[
        "probe",
        "--from",
        "net-a",
        "--to",
        "net-b",
        "--ports",
        &kept.to_string(),
        "--timeout",
        "200ms",
        "--keep",
        "1s",
    ])?;
    let started = Instant::now();
    assert_eq!(v["ports"][0]["outcome"], "verified", "{v}");
    let ttl = Duration::from_millis(v["listeners_ttl_ms"].as_u64().context("ttl")?);
    assert!(
        ttl >= Duration::from_secs(1) && ttl <= Duration::from_secs(30),
        "{ttl:?}"
    );
    assert!(
        tcp_listening(b_ip, kept),
        "kept listener is open before its ttl"
    );
    eventually(
        ttl + Duration::from_secs(5),
        "the kept listener to close at its ttl",
        || (!tcp_listening(b_ip, kept)).then_some(()),
    );
    assert!(
        started.elapsed() + Duration::from_secs(1) >= ttl,
        "closed after {:?}, before its ttl {ttl:?}",
        started.elapsed()
    );

    // --- bandwidth, both ways.
    for reverse in [false, true] {
        let mut args = vec![
            "bandwidth",
            "--from",
            "net-a",
            "--to",
            "net-b",
            "--duration",
            "1",
            "--streams",
            "2",
        ];
        if reverse {
            args.push("--reverse");
        }
        let v = ctl.json(&args)?;
        let rep = &v["report"];
        assert_eq!(
            rep["direction"],
            if reverse { "reverse" } else { "forward" },
            "{v}"
        );
        assert!(rep["total_mbit_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
        assert!(rep["total_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
        let streams = rep["streams"].as_array().context("streams")?;
        assert_eq!(streams.len(), 2, "{v}");
        assert!(
            streams.iter().all(|s| s["bytes"].as_u64().unwrap_or(0) > 0),
            "{v}"
        );
        assert!(
            rep["retransmits"].is_u64(),
            "retransmits from TCP_INFO: {v}"
        );
        assert_eq!(
            v["address"].as_str().unwrap_or("").split(':').next(),
            Some(b_ip)
        );
    }
    let text = ctl.run(&[
        "bandwidth",
        "--from",
        "net-a",
        "--to",
        "net-b",
        "--duration",
        "1",
    ])?;
    assert!(text.contains("total") && text.contains("MBIT/S"), "{text}");
    drop((tcp, udp, closed_sock));
    Ok(())
}

/// Asserts the command failed with one `error:` line containing every needle.
fn fails_with(ctl: &Controller, args: &[&str], needles: &[&str]) {
    let o = ctl.cli().args(args).output().expect("running preflight");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: expected {n:?} in {err}");
    }
}

#[test]
fn network_bad_input_is_invalid_argument_naming_the_field() -> Result<()> {
    let base = tempfile::tempdir()?;
    let (ctl, _agents) = cluster(base.path(), &[("net-c", "127.0.0.63")])?;
    let probe = |ports: &str| {
        vec![
            "probe".to_string(),
            "--from".into(),
            "net-c".into(),
            "--to".into(),
            "net-c".into(),
            "--ports".into(),
            ports.into(),
        ]
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            probe("0"),
            vec!["invalid argument", "ports: 0 is out of range"],
        ),
        (
            probe("70000"),
            vec!["invalid argument", "ports: 70000 is out of range"],
        ),
        (
            probe("9000-8000"),
            vec!["invalid argument", "ports: range 9000-8000 is reversed"],
        ),
        (
            probe("1-2000"),
            vec!["invalid argument", "ports: more than 1024"],
        ),
        (probe("80,,81"), vec!["invalid argument", "ports"]),
        (
            [probe("80"), vec!["--timeout".into(), "31s".into()]].concat(),
            vec!["invalid argument", "timeout_ms"],
        ),
        (
            [probe("80"), vec!["--keep".into(), "11m".into()]].concat(),
            vec!["invalid argument", "keep_ms"],
        ),
        (
            [probe("80"), vec!["--to-addr".into(), "192.0.2.1".into()]].concat(),
            vec![
                "invalid argument",
                "to_addr 192.0.2.1 is not an address of agent net-c",
            ],
        ),
        (
            [probe("80"), vec!["--to-addr".into(), "not-an-ip".into()]].concat(),
            vec!["invalid argument", "to_addr"],
        ),
        (
            vec!["probe", "--from", "nope", "--to", "net-c", "--ports", "80"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec!["not found", "from_agent", "nope"],
        ),
        (
            vec!["probe", "--from", "net-c", "--to", "ghost", "--ports", "80"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec!["not found", "to_agent", "ghost"],
        ),
        (
            [
                "bandwidth",
                "--from",
                "net-c",
                "--to",
                "net-c",
                "--duration",
                "61",
            ]
            .map(String::from)
            .to_vec(),
            vec!["invalid argument", "duration_s 61 is out of range"],
        ),
        (
            [
                "bandwidth",
                "--from",
                "net-c",
                "--to",
                "net-c",
                "--streams",
                "17",
            ]
            .map(String::from)
            .to_vec(),
            vec!["invalid argument", "streams 17 is out of range"],
        ),
        (
            [
                "bandwidth",
                "--from",
                "net-c",
                "--to",
                "net-c",
                "--to-addr",
                "192.0.2.1",
            ]
            .map(String::from)
            .to_vec(),
            vec!["invalid argument", "to_addr 192.0.2.1"],
        ),
        (
            ["bandwidth", "--from", "ghost", "--to", "net-c"]
                .map(String::from)
                .to_vec(),
            vec!["not found", "from_agent"],
        ),
        (
            ["ports", "ghost"].map(String::from).to_vec(),
            vec!["not found", "ghost"],
        ),
    ];
    for (args, needles) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&ctl, &args, needles);
    }
    Ok(())
}

/// Issue 13 item 12: `preflight bandwidth --port N` listens on that port of the target (on a
/// customer network only planned ports are open), both ways; the agent's own port is refused,
/// naming the flag's field.
#[test]
fn bandwidth_through_a_given_port() -> Result<()> {
    let base = tempfile::tempdir()?;
    let (a_ip, b_ip) = ("127.0.0.65", "127.0.0.66");
    let (ctl, _agents) = cluster(base.path(), &[("bwp-a", a_ip), ("bwp-b", b_ip)])?;
    for reverse in [false, true] {
        let port = free_port(b_ip).to_string();
        let mut args = vec![
            "bandwidth",
            "--from",
            "bwp-a",
            "--to",
            "bwp-b",
            "--duration",
            "1",
            "--port",
            &port,
        ];
        if reverse {
            args.push("--reverse");
        }
        let v = ctl.json(&args)?;
        assert_eq!(
            v["address"].as_str(),
            Some(format!("{b_ip}:{port}").as_str()),
            "{v}"
        );
        assert!(v["report"]["total_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
        let per_second = v["report"]["per_second_bytes"]
            .as_array()
            .context("per_second_bytes")?;
        assert!(
            !per_second.is_empty() && per_second[0].as_u64().unwrap_or(0) > 0,
            "{v}"
        );
    }
    // Text: iperf3-like lines, one per second, before the per-stream table.
    let port = free_port(b_ip).to_string();
    let text = ctl.run(&[
        "bandwidth",
        "--from",
        "bwp-a",
        "--to",
        "bwp-b",
        "--duration",
        "2",
        "--port",
        &port,
    ])?;
    let seconds: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" s  ") && l.ends_with("Mbit/s"))
        .collect();
    assert!(
        seconds.len() >= 2 && seconds[0].trim_start().starts_with("0-1"),
        "{text}"
    );
    let own = ctl.wait_online("bwp-b").port().to_string();
    fails_with(
        &ctl,
        &[
            "bandwidth",
            "--from",
            "bwp-a",
            "--to",
            "bwp-b",
            "--duration",
            "1",
            "--port",
            &own,
        ],
        &["port", "the agent's own port"],
    );
    Ok(())
}

/// `preflight bandwidth` prints each iperf3-like line as its second completes (issue 13 item
/// 12): with a 3 s test, the `0-1 s` line is on stdout while the CLI still runs, a second or
/// more before the summary table, and the lines come in order, then the table's total.
#[test]
fn bandwidth_lines_arrive_as_each_second_completes() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let base = tempfile::tempdir()?;
    let (a_ip, b_ip) = ("127.0.0.67", "127.0.0.68");
    let (ctl, _agents) = cluster(base.path(), &[("bwl-a", a_ip), ("bwl-b", b_ip)])?;
    for reverse in [false, true] {
        let port = free_port(b_ip).to_string();
        let mut args = vec![
            "bandwidth",
            "--from",
            "bwl-a",
            "--to",
            "bwl-b",
            "--duration",
            "3",
            "--port",
            &port,
        ];
        if reverse {
            args.push("--reverse");
        }
        let mut child = ctl
            .cli()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send((line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines: Vec<(String, Instant)> = Vec::new();
        let mut running_at_first_second = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((line, at)) => {
                    if running_at_first_second.is_none() && line.trim_start().starts_with("0-1 ") {
                        running_at_first_second = Some(child.try_wait()?.is_none());
                    }
                    lines.push((line, at));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    anyhow::bail!("no end of output within 60 s: {lines:?}");
                }
            }
        }
        reader.join().expect("reader thread");
        let o = child.wait_with_output()?;
        let text: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        ensure!(
            o.status.success(),
            "reverse={reverse}: {}\n{text:#?}",
            String::from_utf8_lossy(&o.stderr)
        );
        ensure!(
            running_at_first_second == Some(true),
            "reverse={reverse}: the 0-1 s line came only when the CLI ended: {text:#?}"
        );
        let when = |prefix: &str| {
            lines
                .iter()
                .position(|(l, _)| l.trim_start().starts_with(prefix))
                .map(|i| (i, lines[i].1))
        };
        let (i0, t0) = when("0-1 ").context("0-1 s line")?;
        let (i1, _) = when("1-2 ").context("1-2 s line")?;
        let (i2, _) = when("2-3 ").context("2-3 s line")?;
        let (it, tt) = when("total").context("total row")?;
        ensure!(
            text[0].starts_with("bandwidth ") && i0 < i1 && i1 < i2 && i2 < it,
            "reverse={reverse}: {text:#?}"
        );
        ensure!(
            text[i0].ends_with("Mbit/s") && !text[i0].contains(" 0 B "),
            "reverse={reverse}: {text:#?}"
        );
        // Seconds 1 and 2 of the test separate the first line from the summary.
        ensure!(
            tt.duration_since(t0) >= Duration::from_millis(1500),
            "reverse={reverse}: 0-1 s line only {:?} before the total: {text:#?}",
            tt.duration_since(t0)
        );
    }
    // JSON stays one document at the end, with the per-second bytes.
    let port = free_port(b_ip).to_string();
    let v = ctl.json(&[
        "bandwidth",
        "--from",
        "bwl-a",
        "--to",
        "bwl-b",
        "--duration",
        "2",
        "--port",
        &port,
    ])?;
    let per_second = v["report"]["per_second_bytes"]
        .as_array()
        .context("per_second_bytes")?;
    ensure!(per_second.len() >= 2, "{v}");
    ensure!(
        v["address"].as_str() == Some(format!("{b_ip}:{port}").as_str()),
        "{v}"
    );
    Ok(())
}
