//! Real firewall changes through the controller, inside network namespaces (root only): the
//! controller in h1, the agent in h2, an outside host in h3. An allow-list keeps the controller
//! and SSH reachable and blocks an unplanned port; a ruleset that cuts the controller off is
//! rolled back by the agent itself within the confirm deadline + 5 s. Once with the backend the
//! agent picks in a fresh namespace (nftables), once with iptables(-nft) rules preloaded.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use preflight_tests::cluster::bin;
use preflight_tests::netns::{root_available, ChildGuard, NetHost, NetLab};

const AGENT_PORT: u16 = 7444;

/// Can `from` open a TCP connection to `to` within a second?
fn reachable(from: &NetHost, to: SocketAddr) -> Result<bool> {
    let h = from
        .run_in(move || Ok(TcpStream::connect_timeout(&to, Duration::from_millis(800)).is_ok()))?;
    h.join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Lab {
    lab: NetLab,
    _ctl: ChildGuard,
    _agent: ChildGuard,
    _dir: tempfile::TempDir,
    url: String,
    token: String,
    pin: String,
    _listeners: Vec<TcpListener>,
}

impl Lab {
    fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        self.cli_as(&self.token, args)
    }

    fn cli_as(&self, token: &str, args: &[&str]) -> Result<std::process::Output> {
        Ok(self
            .lab
            .host(1)
            .command(bin("preflight").to_str().context("utf-8 path")?)
            .args(args)
            .env("PREFLIGHT_CONTROLLER", &self.url)
            .env("PREFLIGHT_TOKEN", token)
            .env("PREFLIGHT_CA_SHA256", &self.pin)
            .env("PREFLIGHT_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .output()?)
    }

    fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        self.json_as(&self.token, args)
    }

    fn json_as(&self, token: &str, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let o = self.cli_as(token, &a)?;
        // `harden audit` / `verify` exit 3 after printing their document when a check is
        // non_compliant: that is an answer here.
        let audit = args.first() == Some(&"harden") && o.status.code() == Some(3);
        if !o.status.success() && !audit {
            bail!(
                "preflight {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}

/// Controller in h1, agent fw-01 in h2 (catalog root: an empty temp dir), listeners on the
/// agent host: 22 (SSH stand-in), 8080 (planned), 9999 (unplanned).
fn setup(preload_iptables: bool) -> Result<Lab> {
    let lab = NetLab::new(3)?;
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    if preload_iptables {
        h2.exec("iptables", &["-A", "INPUT", "-p", "icmp", "-j", "ACCEPT"])?;
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut c = h1.command(bin("preflight").to_str().context("path")?);
    c.args(["serve", "--init", "--heartbeat-interval", "1s", "--listen"])
        .arg(format!("{}:7443", h1.ip))
        .arg("--data")
        .arg(&data)
        .env("PREFLIGHT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ctl = h1.spawn(&mut c)?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = ctl.0.stdout.take().context("stdout")?;
    let err = ctl.0.stderr.take().context("stderr")?;
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if std::env::var_os("PREFLIGHT_TEST_VERBOSE").is_some() {
                eprintln!("[controller] {l}");
            }
            let _ = tx2.send(l);
        }
    });
    let (mut token, mut pin, mut listening) = (None, None, false);
    let end = Instant::now() + Duration::from_secs(30);
    while token.is_none() || pin.is_none() || !listening {
        let l = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .context("controller did not start within 30 s")?;
        if let Some(p) = l.strip_prefix("CA pin (sha256): ") {
            pin = Some(p.trim().to_string());
        } else if l.trim_start().starts_with("pfa_") {
            token = Some(l.trim().to_string());
        } else if l.starts_with("controller listening on ") {
            listening = true;
        }
    }
    let url = format!("https://{}:7443", h1.ip);
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc"))?;
    let mut lab = Lab {
        lab,
        _ctl: ctl,
        _agent: ChildGuard(Command::new("true").spawn()?),
        url,
        token: token.context("token")?,
        pin: pin.context("pin")?,
        _listeners: Vec::new(),
        _dir: dir,
    };
    let v = lab.json(&["token", "create", "--ttl", "10m"])?;
    let join = v["token"].as_str().context("token")?.to_string();
    let state = lab._dir.path().join("agent");
    let o = h2
        .command(bin("preflight-agent").to_str().context("path")?)
        .args([
            "enroll",
            "--controller",
            &lab.url,
            "--token",
            &join,
            "--ca-sha256",
            &lab.pin,
            "--name",
            "fw-01",
            "--listen",
        ])
        .arg(format!("{}:{AGENT_PORT}", h2.ip))
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()?;
    if !o.status.success() {
        bail!("enroll: {}", String::from_utf8_lossy(&o.stderr));
    }
    let verbose = std::env::var_os("PREFLIGHT_TEST_VERBOSE").is_some();
    let mut a = h2.command(bin("preflight-agent").to_str().context("path")?);
    a.arg("run")
        .arg("--state-dir")
        .arg(&state)
        .arg("--harden-root")
        .arg(&root)
        .env("PREFLIGHT_LOG", if verbose { "debug" } else { "warn" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    lab._agent = h2.spawn(&mut a)?;
    let ip = h2.ip;
    lab._listeners = h2
        .run_in(move || {
            [22u16, 8080, 9999]
                .iter()
                .map(|p| Ok(TcpListener::bind((ip, *p))?))
                .collect::<Result<Vec<_>>>()
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
    wait_until(Duration::from_secs(30), "agent fw-01 online", || {
        let v = lab.json(&["agents"])?;
        Ok(v.as_array()
            .is_some_and(|a| a.iter().any(|x| x["id"] == "fw-01" && x["online"] == true)))
    })?;
    Ok(lab)
}

fn scenario(preload_iptables: bool, want_backend: &str) -> Result<()> {
    let lab = setup(preload_iptables)?;
    let (h1, h2, h3) = (lab.lab.host(1), lab.lab.host(2), lab.lab.host(3));
    let at = |p: u16| SocketAddr::from((h2.ip, p));
    assert!(
        reachable(h1, at(9999))?,
        "before: the unplanned port is open"
    );

    // 1. An allow-list for the controller's network: confirmed over a new connection.
    let mgmt = format!("{}/32", h1.ip);
    let v = lab.json(&[
        "harden",
        "apply",
        "--agent",
        "fw-01",
        "--yes",
        "--check",
        "fw.allowlist_ports",
        "--firewall",
        "--mgmt-source",
        &mgmt,
        "--port",
        "8080/tcp",
        "--confirm-timeout",
        "20",
    ]);
    let v = match v {
        Ok(v) => v,
        Err(e) => bail!("apply with the allow-list: {e:#}"),
    };
    let res = &v["apply"]["results"][0];
    let backend = res["firewall_change"]["backend"].as_str().unwrap_or("");
    if backend != want_backend {
        eprintln!("SKIP: the agent chose the {backend:?} backend here, not {want_backend}");
        return Ok(());
    }
    assert_eq!(res["firewall"], "confirmed", "{v}");
    assert!(
        reachable(h1, at(AGENT_PORT))?,
        "controller cut off from the agent port"
    );
    assert!(
        reachable(h1, at(22))?,
        "SSH cut off from the management network"
    );
    assert!(reachable(h1, at(8080))?, "planned port blocked");
    assert!(!reachable(h1, at(9999))?, "unplanned port still open");
    assert!(!reachable(h3, at(22))?, "SSH open to a non-management host");
    assert!(reachable(h3, at(8080))?, "planned port closed to others");
    // The controller still reaches the agent through the new rules.
    lab.json(&[
        "harden",
        "audit",
        "--agent",
        "fw-01",
        "--check",
        "ssh.max_auth_tries",
    ])?;

    // 1b. A batch whose attached plan (kept by the controller) puts 8080 and 9100 on fw-01:
    // the confirmed allow-list lacks 9100/tcp, and the harden gate's fact names it; once
    // `firewall allow` opens it, the allow-list covers the plan.
    let user = |name: &str, role: &str| -> Result<String> {
        let v = lab.json(&["user", "add", name, "--role", role])?;
        Ok(v["token"].as_str().context("token")?.to_string())
    };
    let (pat, ian) = (user("pat", "project")?, user("ian", "integrator")?);
    lab.json(&[
        "project", "add", "P1", "--name", "p", "--line", "gov", "--budget", "B-1",
    ])?;
    lab.json_as(
        &pat,
        &["batch", "create", "FW1", "--project", "P1", "--title", "fw"],
    )?;
    for who in [&pat, &ian, &pat] {
        lab.json_as(who, &["batch", "advance", "FW1"])?;
    }
    let plan = lab._dir.path().join("fw-plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[[servers]]\naddress = \"{}\"\nhostname = \"fw-01\"\nrole = \"app\"\napps = [{{ name = \"web\", ports = \"8080\" }}, {{ name = \"metrics\", ports = \"9100\" }}]\n",
            h2.ip
        ),
    )?;
    lab.json_as(
        &ian,
        &["plan", "attach", "FW1", plan.to_str().context("path")?],
    )?;
    let fw_fact = || -> Result<serde_json::Value> {
        let v = lab.json(&["batch", "show", "FW1"])?;
        Ok(v["batch"]["hardening"]["hosts"]["fw-01"].clone())
    };
    let h = fw_fact()?;
    assert_eq!(h["firewall_covers_planned_ports"], false, "{h}");
    assert_eq!(
        h["firewall_missing_ports"],
        serde_json::json!(["9100/tcp"]),
        "{h}"
    );
    // `harden status --batch` shows what the gate sees.
    let st = lab.json(&["harden", "status", "--batch", "FW1"])?;
    assert_eq!(
        st["hosts"][0]["firewall_missing_ports"],
        serde_json::json!(["9100/tcp"]),
        "{st}"
    );
    let o = lab.cli(&[
        "firewall", "allow", "fw-01", "9100/tcp", "--reason", "metrics",
    ])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until(
        Duration::from_secs(10),
        "the allow-list covering the plan",
        || {
            let h = fw_fact()?;
            Ok(h["firewall_covers_planned_ports"] == true
                && h.get("firewall_missing_ports").is_none())
        },
    )?;

    // 2. Management sources that exclude the controller: no confirmation arrives, and the
    // agent restores the previous rules by itself.
    let t0 = Instant::now();
    let bad = format!("{}/32", h3.ip);
    let o = lab.cli(&[
        "harden",
        "apply",
        "--agent",
        "fw-01",
        "--yes",
        "--check",
        "fw.allowlist_ports",
        "--firewall",
        "--mgmt-source",
        &bad,
        "--port",
        "8080/tcp",
        "--confirm-timeout",
        "5",
    ])?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a change that cuts the controller off was confirmed"
    );
    assert!(err.contains("not confirmed"), "{err}");
    wait_until(
        Duration::from_secs(10).saturating_sub(t0.elapsed()),
        "the agent port reachable again (deadline + 5 s)",
        || reachable(h1, at(AGENT_PORT)),
    )?;
    assert!(reachable(h1, at(22))?);
    assert!(
        !reachable(h1, at(9999))?,
        "the earlier confirmed rules should be back"
    );
    lab.json(&[
        "harden",
        "audit",
        "--agent",
        "fw-01",
        "--check",
        "ssh.max_auth_tries",
    ])?;

    // 3. `firewall allow` opens one more port through the same procedure, with evidence.
    let o = lab.cli(&[
        "firewall", "allow", "fw-01", "9999/tcp", "--reason", "test app",
    ])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(reachable(h1, at(9999))?);
    let p = lab._dir.path().join("fw.json");
    let o = lab.cli(&[
        "evidence",
        "export",
        "--agent",
        "fw-01",
        "-o",
        p.to_str().context("path")?,
    ])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = std::fs::read_to_string(&p)?;
    assert!(
        bundle.contains("9999/tcp from anywhere (test app)"),
        "allow evidence missing"
    );
    assert!(Path::new(&p).exists());

    // 4. The catalog's fw.* checks: through the controller, on the agent's fixture root, they
    // are not applicable (that tree is not the host); run locally on the host (root /) they
    // audit the live ruleset against the confirmed allow-list, now with 9999 allowed.
    let v = lab.json(&[
        "harden",
        "audit",
        "--agent",
        "fw-01",
        "--check",
        "fw.allowlist_ports",
        "--check",
        "fw.default_deny_in",
    ])?;
    for c in v["results"][0]["checks"].as_array().context("checks")? {
        assert_eq!(c["status"], "not_applicable", "{c}");
    }
    let live = local_fw_audit(&lab)?;
    for id in FW_CHECKS {
        assert_eq!(
            live.get(id).map(|(s, _)| s.as_str()),
            Some("compliant"),
            "{id}: {live:?}"
        );
    }
    // A listener nobody planned makes the live audit non-compliant, naming it.
    let ip = h2.ip;
    let _extra = h2
        .run_in(move || Ok(TcpListener::bind((ip, 5555))?))?
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??;
    let live = local_fw_audit(&lab)?;
    let (st, why) = live
        .get("fw.allowlist_ports")
        .context("fw.allowlist_ports")?;
    assert_eq!(st, "non_compliant", "{live:?}");
    assert!(why.contains("5555/tcp"), "{why}");
    Ok(())
}

const FW_CHECKS: [&str; 4] = [
    "fw.single_backend",
    "fw.default_deny_in",
    "fw.allowlist_ports",
    "fw.mgmt_source",
];

/// `preflight-agent harden audit --root / --check fw.*` run on the agent's host (h2), with
/// the agent's state directory: id -> (status, reason).
fn local_fw_audit(lab: &Lab) -> Result<std::collections::BTreeMap<String, (String, String)>> {
    let mut c = lab
        .lab
        .host(2)
        .command(bin("preflight-agent").to_str().context("path")?);
    c.args([
        "harden",
        "audit",
        "--root",
        "/",
        "--output",
        "json",
        "--state-dir",
    ])
    .arg(lab._dir.path().join("agent"));
    for id in FW_CHECKS {
        c.args(["--check", id]);
    }
    let o = c.stdin(Stdio::null()).output()?;
    if !o.status.success() {
        bail!("local audit: {}", String::from_utf8_lossy(&o.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(v.as_array()
        .context("array")?
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or("").to_string(),
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect())
}

#[test]
fn nftables_allowlist_confirm_and_self_rollback() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    scenario(false, "nftables")
}

#[test]
fn iptables_allowlist_confirm_and_self_rollback() -> Result<()> {
    if let Some(why) = root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    let have = Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIP: iptables is not installed");
        return Ok(());
    }
    scenario(true, "iptables")
}
