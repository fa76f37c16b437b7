//! A real controller process and real agent processes on loopback addresses, driven through the
//! real `preflight` and `preflight-agent` binaries. Every process is killed when its handle is
//! dropped, also when a test fails.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a controller may take to start. Generous: on a loaded 2-core CI machine, with other
/// tests fsyncing large files, the few fsyncs of an init can take seconds each.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The target directory holding the binaries under test.
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary; fails with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` before the end-to-end tests (the README test command does)",
        p.display()
    );
    p
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `program`, run inside network namespace `ns` (`ip netns exec NS`, which execs the program,
/// so killing the child kills it) when one is given.
pub fn command_in(ns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `preflight serve`.
pub struct Controller {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub url: String,
    pub admin_token: String,
    pub pin: String,
    pub proc: Proc,
    /// The network namespace it runs in (and its CLI commands), if any.
    pub netns: Option<String>,
    /// Every line the controller wrote on stderr so far (its log), across restarts.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Controller {
    /// Starts `preflight serve --init` on a fresh data directory, on 127.0.0.1 with a free port,
    /// with `extra` arguments (e.g. `--heartbeat-interval 1s`).
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_at(None, "127.0.0.1:0", extra)
    }

    /// Starts `preflight serve --init` listening on `listen`, inside network namespace `netns`
    /// when one is given (its CLI commands then run there too).
    pub fn start_at(netns: Option<&str>, listen: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let mut child = command_in(netns, bin("preflight"))
            .args(["serve", "--init", "--listen", listen, "--data"])
            .arg(&data)
            .args(extra)
            .env("PREFLIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning preflight serve")?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let proc = Proc(child);
        let (tx, rx) = mpsc::channel::<String>();
        let tx2 = tx.clone();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("PREFLIGHT_TEST_VERBOSE").is_some() {
                    eprintln!("[controller] {l}");
                }
                if let Ok(mut g) = log2.lock() {
                    g.push(l.clone());
                }
                let _ = tx2.send(l);
            }
        });
        let (mut token, mut pin, mut addr) = (None, None, None);
        let deadline = Instant::now() + START_TIMEOUT;
        while addr.is_none() || token.is_none() || pin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                bail!("controller did not start within {START_TIMEOUT:?} (token {token:?}, pin {pin:?}, addr {addr:?})");
            };
            if let Some(p) = line.strip_prefix("CA pin (sha256): ") {
                pin = Some(p.trim().to_string());
            } else if line.trim_start().starts_with("pfa_") {
                token = Some(line.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("controller listening on ") {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
        }
        let addr: SocketAddr = addr.expect("set above");
        Ok(Self {
            url: format!("https://{addr}"),
            addr,
            admin_token: token.expect("set above"),
            pin: pin.expect("set above"),
            dir,
            proc,
            netns: netns.map(str::to_string),
            log,
        })
    }

    /// Kills the controller with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }

    /// Kills the controller (SIGKILL) and starts it again on the same data directory and
    /// address, as after a crash.
    pub fn restart(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.kill();
        let mut child = Command::new(bin("preflight"))
            .args(["serve", "--listen", &self.addr.to_string(), "--data"])
            .arg(self.data())
            .args(extra)
            .env("PREFLIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning preflight serve")?;
        let stderr = child.stderr.take().expect("piped");
        self.proc = Proc(child);
        let (tx, rx) = mpsc::channel::<String>();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut g) = log.lock() {
                    g.push(l.clone());
                }
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with("controller listening on ") => return Ok(()),
                Ok(l) => seen.push(l),
                // Its stderr closed: it exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "controller exited instead of restarting:\n{}",
                        seen.join("\n")
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "controller did not restart within {:?}:\n{}",
                    START_TIMEOUT,
                    seen.join("\n")
                ),
            }
        }
    }

    /// The controller's data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A `preflight` command pointed at this controller with the admin token.
    pub fn cli(&self) -> Command {
        self.cli_as(&self.admin_token)
    }

    /// A `preflight` command pointed at this controller with `token`.
    pub fn cli_as(&self, token: &str) -> Command {
        let mut c = command_in(self.netns.as_deref(), bin("preflight"));
        c.env("PREFLIGHT_CONTROLLER", &self.url)
            .env("PREFLIGHT_TOKEN", token)
            .env("PREFLIGHT_CA_SHA256", &self.pin)
            .env("PREFLIGHT_CONFIG", "/dev/null")
            .stdin(Stdio::null());
        c
    }

    /// Runs the CLI with `args`; fails with its stderr when it exits non-zero.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self.cli().args(args).output()?;
        ok(&o, &format!("preflight {}", args.join(" ")))
    }

    /// Runs the CLI with `args` and parses its `--output json`.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        Ok(serde_json::from_str(&self.run(&a)?)?)
    }

    /// Like [`Controller::json`] for `harden audit` / `harden verify`, which exit 3 (after
    /// printing their document) when a check is non_compliant: 0 and 3 both give the document.
    pub fn audit_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let o = self.cli().args(&a).output()?;
        if o.status.code() != Some(3) {
            ok(&o, &format!("preflight {}", a.join(" ")))?;
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }

    /// A fresh join token.
    pub fn join_token(&self, ttl: &str) -> anyhow::Result<String> {
        let v = self.json(&["token", "create", "--ttl", ttl])?;
        Ok(v["token"].as_str().context("token in output")?.to_string())
    }

    /// The agent list as JSON objects.
    pub fn agents(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self
            .json(&["agents"])?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until agent `id` is online and returns its listen address.
    pub fn wait_online(&self, id: &str) -> SocketAddr {
        eventually(START_TIMEOUT, &format!("agent {id} online"), || {
            let a = self.agents().ok()?;
            let a = a.iter().find(|a| a["id"] == id && a["online"] == true)?;
            a["listen_addr"].as_str()?.parse().ok()
        })
    }
}

impl Controller {
    /// The controller's log lines so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .map(|g| g.iter().filter(|l| l.contains(needle)).cloned().collect())
            .unwrap_or_default()
    }
}

/// Stdout of a successful command, or an error with its stderr.
pub fn ok(o: &Output, what: &str) -> anyhow::Result<String> {
    if !o.status.success() {
        bail!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// An agent's state directory and, once started, its process.
pub struct Agent {
    pub id: String,
    pub state: PathBuf,
    pub proc: Option<Proc>,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
}

/// `preflight-agent enroll` with these arguments (no defaults added).
pub fn enroll_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(bin("preflight-agent"));
    c.arg("enroll")
        .args(args)
        .stdin(Stdio::null())
        .env("PREFLIGHT_LOG", "warn");
    c
}

impl Agent {
    /// Enrolls agent `id` with a fresh token, state under `base`, listening on `ip` (port 0).
    pub fn enroll(ctl: &Controller, base: &Path, id: &str, ip: &str) -> anyhow::Result<Self> {
        Self::enroll_at(ctl, base, id, ip, None)
    }

    /// Like [`Agent::enroll`], inside network namespace `netns` when one is given (the agent
    /// then also runs there).
    pub fn enroll_at(
        ctl: &Controller,
        base: &Path,
        id: &str,
        ip: &str,
        netns: Option<&str>,
    ) -> anyhow::Result<Self> {
        let token = ctl.join_token("10m")?;
        let state = base.join(id);
        let mut cmd = command_in(netns, bin("preflight-agent"));
        cmd.arg("enroll")
            .stdin(Stdio::null())
            .env("PREFLIGHT_LOG", "warn");
        let o = cmd
            .args([
                "--controller",
                &ctl.url,
                "--token",
                &token,
                "--ca-sha256",
                &ctl.pin,
                "--name",
                id,
                "--listen",
                &format!("{ip}:0"),
                "--state-dir",
            ])
            .arg(&state)
            .output()?;
        ok(&o, &format!("enroll {id}"))?;
        Ok(Self {
            id: id.into(),
            state,
            proc: None,
            netns: netns.map(str::to_string),
        })
    }

    /// Starts `preflight-agent run`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_with::<&str>(&[])
    }

    /// Starts `preflight-agent run` with `extra` arguments (e.g. `--harden-root DIR`).
    pub fn start_with<S: AsRef<OsStr>>(&mut self, extra: &[S]) -> anyhow::Result<()> {
        let verbose = std::env::var_os("PREFLIGHT_TEST_VERBOSE").is_some();
        let child = command_in(self.netns.as_deref(), bin("preflight-agent"))
            .arg("run")
            .arg("--state-dir")
            .arg(&self.state)
            .args(extra)
            .env("PREFLIGHT_LOG", if verbose { "debug" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()?;
        self.proc = Some(Proc(child));
        Ok(())
    }

    /// The agent's identity (certificate chain and key) as stored.
    pub fn identity(&self) -> anyhow::Result<preflight_pki::Identity> {
        let pem = std::fs::read_to_string(self.state.join("identity.pem"))?;
        let at = pem
            .find("-----BEGIN PRIVATE KEY")
            .context("key in identity.pem")?;
        Ok(preflight_pki::Identity {
            cert_pem: pem[..at].to_string(),
            key_pem: pem[at..].to_string(),
        })
    }
}

/// A controller in the namespace of the lab's host 1 (heartbeats every second) and an agent
/// `ns-h<N>` in every host's namespace, on the host's address, all started and online.
pub fn lab_cluster(
    lab: &crate::netns::NetLab,
    base: &Path,
) -> anyhow::Result<(Controller, Vec<Agent>)> {
    let h1 = lab.host(1);
    let ctl = Controller::start_at(
        Some(&h1.name),
        &format!("{}:0", h1.ip),
        &["--heartbeat-interval", "1s"],
    )?;
    let mut agents = Vec::new();
    for h in lab.hosts() {
        let id = format!("ns-h{}", h.number);
        let mut a = Agent::enroll_at(&ctl, base, &id, &h.ip.to_string(), Some(&h.name))?;
        a.start()?;
        agents.push(a);
    }
    for a in &agents {
        ctl.wait_online(&a.id);
    }
    Ok((ctl, agents))
}

/// The CLI as several users of one controller, each by name with their own token. Cloneable
/// and independent of the controller process, which a test may kill and restart meanwhile.
#[derive(Clone)]
pub struct Users {
    pub url: String,
    pub pin: String,
    /// Bearer token by user name.
    pub tokens: std::collections::BTreeMap<String, String>,
}

impl Users {
    /// `preflight ARGS --output json` as user `who`.
    pub fn output(&self, who: &str, args: &[&str]) -> Output {
        Command::new(bin("preflight"))
            .env("PREFLIGHT_CONTROLLER", &self.url)
            .env("PREFLIGHT_TOKEN", &self.tokens[who])
            .env("PREFLIGHT_CA_SHA256", &self.pin)
            .env("PREFLIGHT_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .args(args)
            .args(["--output", "json"])
            .output()
            .expect("preflight runs")
    }

    /// The JSON output of a command that succeeded (was acknowledged), else `None`.
    pub fn try_json(&self, who: &str, args: &[&str]) -> Option<serde_json::Value> {
        let o = self.output(who, args);
        if !o.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&o.stdout).expect("json output"))
    }

    /// [`Users::try_json`] for `harden audit` / `verify`: exit 3 (a check non_compliant, the
    /// document printed) is an answer too.
    pub fn try_audit_json(&self, who: &str, args: &[&str]) -> Option<serde_json::Value> {
        let o = self.output(who, args);
        if !o.status.success() && o.status.code() != Some(3) {
            return None;
        }
        Some(serde_json::from_slice(&o.stdout).expect("json output"))
    }

    /// The JSON output of a command that must succeed.
    #[track_caller]
    pub fn json(&self, who: &str, args: &[&str]) -> serde_json::Value {
        let o = self.output(who, args);
        assert!(
            o.status.success(),
            "{who}: preflight {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("json output")
    }
}
