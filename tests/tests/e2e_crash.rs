//! Crash safety of the controller under a mixed load: readiness sweeps over two real agents,
//! hardening audits whose signed records are appended to the evidence log, and workflow
//! transitions all run at once while the controller is killed with SIGKILL at a random moment,
//! then restarted on the same data directory. After every restart:
//! - the store opens (a refusal to start must be an explicit message, never a panic);
//! - no acknowledged record is lost: every sweep the CLI reported is stored `finished`, every
//!   acknowledged workflow event is in its batch's history, and the evidence log holds at least
//!   the records the CLI reported appended; no sweep is left `running`;
//! - the evidence chain verifies offline (`evidence export` + `evidence verify`);
//! - workflow invariants hold: the controller replays its history at start-up and refuses to
//!   start on any difference, histories only grow, and every batch is in exactly one stage.
//!
//! Iterations: `PREFLIGHT_CRASH_ITERATIONS` (default 10); `bench/crash.sh` runs 100. The seed
//! of the kill times is printed; `PREFLIGHT_CRASH_SEED` replays one.
//! (`e2e_workflow_restart` covers the workflow alone, with kills placed through a sequence.)

#[path = "../../crates/preflight-harden/tests/support/tree.rs"]
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use preflight_tests::cluster::{bin, Agent, Controller, Users as Cli};
use serde_json::Value;

fn iterations() -> usize {
    std::env::var("PREFLIGHT_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn fixture_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/preflight-harden/tests/fixtures")
        .join(name)
}

fn hostname() -> String {
    String::from_utf8(Command::new("hostname").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// A small xorshift generator: the kill times, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the CLI reported as done, across all iterations.
#[derive(Default)]
struct Acked {
    sweeps: BTreeSet<u64>,
    /// Evidence records appended, per agent.
    evidence: BTreeMap<String, u64>,
    /// (batch, seq, kind) of acknowledged workflow events.
    events: Vec<(String, u64, String)>,
}

/// Runs sweeps until one is not acknowledged (the controller died) or `stop`.
fn sweeps(cli: &Cli, plan: &Path, stop: &AtomicBool, acked: &Mutex<Acked>) {
    while !stop.load(Ordering::Relaxed) {
        // A plan with failures exits non-zero after printing the stored report: the report is
        // the acknowledgement.
        let o = cli.output(
            "admin",
            &[
                "sweep",
                "--batch",
                "crash",
                "--plan",
                plan.to_str().unwrap(),
                // Quick sweeps, many per iteration: the disk benchmark takes seconds.
                "--skip",
                "disk",
            ],
        );
        let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) else {
            return;
        };
        let (Some(id), Some("finished")) = (v["run_id"].as_u64(), v["state"].as_str()) else {
            panic!("a sweep printed a report that is not finished: {v}");
        };
        acked.lock().unwrap().sweeps.insert(id);
    }
}

/// Audits the agents in turn until one is not acknowledged or `stop`.
fn audits(cli: &Cli, agents: &[&str], stop: &AtomicBool, acked: &Mutex<Acked>) {
    for a in agents.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // One check per audit: the export and verify after every iteration stay quick after
        // hundreds of audits (a full audit adds about 60-110 KB).
        let Some(v) = cli.try_audit_json(
            "admin",
            &[
                "harden",
                "audit",
                "--agent",
                a,
                "--check",
                "ssh.permit_root_login",
            ],
        ) else {
            return;
        };
        let n = v["results"][0]["evidence_appended"]
            .as_u64()
            .unwrap_or_else(|| panic!("audit output without evidence_appended: {v}"));
        *acked
            .lock()
            .unwrap()
            .evidence
            .entry(a.to_string())
            .or_default() += n;
    }
}

/// Drives new batches through transitions until a command is not acknowledged or `stop`.
fn transitions(cli: &Cli, prefix: &str, stop: &AtomicBool, acked: &Mutex<Acked>) {
    for n in 0.. {
        let id = format!("{prefix}-{n}");
        let steps: [(&str, Vec<&str>); 5] = [
            (
                "pat",
                vec!["batch", "create", &id, "--project", "P1", "--title", "t"],
            ),
            ("pat", vec!["batch", "advance", &id]),
            ("ian", vec!["batch", "advance", &id]),
            (
                "ian",
                vec![
                    "batch", "pause", &id, "--reason", "package", "--text", "missing",
                ],
            ),
            ("pat", vec!["batch", "resolve", &id, "--note", "fixed"]),
        ];
        for (who, args) in steps {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(v) = cli.try_json(who, &args) else {
                return;
            };
            let mut a = acked.lock().unwrap();
            for e in v.as_array().expect("events") {
                a.events.push((
                    e["batch"].as_str().unwrap_or_default().to_string(),
                    e["seq"].as_u64().expect("seq"),
                    e["kind"]["kind"].as_str().expect("kind").to_string(),
                ));
            }
        }
    }
}

fn evidence_verifies(cli: &Cli, agent: &str, dir: &Path) -> u64 {
    let bundle = dir.join(format!("{agent}.json"));
    let o = cli.output(
        "admin",
        &[
            "evidence",
            "export",
            "--agent",
            agent,
            "--format",
            "json",
            "-o",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "evidence export {agent}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Pin the key export reports (unpinned, verify exits 4).
    let report: Value = serde_json::from_slice(&o.stdout).expect("export report JSON");
    let key = report["controller_key_sha256"].as_str().unwrap_or_default();
    let o = Command::new(bin("preflight"))
        .args(["evidence", "verify", "--controller-key-sha256", key])
        .arg(&bundle)
        .env("PREFLIGHT_CONFIG", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("OK: "),
        "evidence of {agent} does not verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    v["records"].as_array().map_or(0, |r| r.len() as u64)
}

#[test]
fn controller_killed_during_sweeps_transitions_and_evidence_appends() {
    let iterations = iterations();
    let seed = std::env::var("PREFLIGHT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {iterations} iterations, PREFLIGHT_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let mut ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let names = ["crash-a", "crash-b"];
    let ips = ["127.0.0.51", "127.0.0.52"];
    let mut agents = Vec::new();
    for (name, ip) in names.iter().zip(ips) {
        let mut a = Agent::enroll(&ctl, base.path(), name, ip).unwrap();
        let root = base.path().join(format!("{name}-root"));
        tree::copy_fixture(&fixture_src("debian12"), &root).unwrap();
        a.start_with(&["--harden-root", root.to_str().unwrap()])
            .unwrap();
        agents.push(a);
    }
    for name in names {
        ctl.wait_online(name);
    }
    // A plan over both agents with thresholds any test machine meets.
    let host = hostname();
    let mut plan = String::from("[batch]\nproject = \"crash\"\nbatch = \"crash\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n\n");
    for (i, ip) in ips.iter().enumerate() {
        plan.push_str(&format!(
            "[[servers]]\naddress = \"{ip}\"\nhostname = \"{host}-{i}\"\nrole = \"app\"\ndata_dirs = [\"{}\"]\n\n",
            base.path().display()
        ));
    }
    let plan_path = base.path().join("plan.toml");
    std::fs::write(&plan_path, plan).unwrap();

    let mut cli = Cli {
        url: ctl.url.clone(),
        pin: ctl.pin.clone(),
        tokens: [("admin".to_string(), ctl.admin_token.clone())]
            .into_iter()
            .collect(),
    };
    for (name, role) in [("pat", "project"), ("ian", "integrator")] {
        let v = cli.json("admin", &["user", "add", name, "--role", role]);
        cli.tokens
            .insert(name.into(), v["token"].as_str().expect("token").into());
    }
    cli.json(
        "admin",
        &[
            "project", "add", "P1", "--name", "p", "--line", "gov", "--budget", "B1",
        ],
    );

    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut seen: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let started = Instant::now();
    let mut survived = 0;
    for i in 0..iterations {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = vec![
            {
                let (cli, stop, acked, plan) =
                    (cli.clone(), stop.clone(), acked.clone(), plan_path.clone());
                std::thread::spawn(move || sweeps(&cli, &plan, &stop, &acked))
            },
            {
                let (cli, stop, acked) = (cli.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || audits(&cli, &names, &stop, &acked))
            },
            {
                let (cli, stop, acked) = (cli.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || transitions(&cli, &format!("K{i}"), &stop, &acked))
            },
        ];
        // Kill at a random moment while all three run.
        std::thread::sleep(Duration::from_millis(150 + rng.below(1200)));
        ctl.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("worker");
        }

        // Restart on the same data directory and address.
        if let Err(e) = ctl.restart(&["--heartbeat-interval", "1s"]) {
            let msg = format!("{e:#}");
            assert!(
                !msg.contains("panicked"),
                "iteration {i} (seed {seed}): the controller panicked at start-up: {msg}"
            );
            panic!("iteration {i} (seed {seed}): the controller refused to start: {msg}");
        }

        let a = acked.lock().unwrap();
        // Sweeps: every acknowledged run stored finished; none left running.
        let runs = cli.json("admin", &["sweeps"]);
        let runs: BTreeMap<u64, String> = runs
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| {
                (
                    r["run_id"].as_u64().expect("run_id"),
                    r["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for id in &a.sweeps {
            assert_eq!(
                runs.get(id).map(String::as_str),
                Some("finished"),
                "iteration {i} (seed {seed}): acknowledged sweep {id} lost: {runs:?}"
            );
        }
        assert!(
            runs.values().all(|s| s != "running"),
            "iteration {i}: a sweep left running after restart: {runs:?}"
        );
        // Evidence: verifies, and holds at least what was acknowledged.
        for name in names {
            let want = a.evidence.get(name).copied().unwrap_or(0);
            // Nothing acknowledged for this agent yet (the kill came before its first audit
            // answered): there is nothing to hold, and possibly no evidence to export at all.
            if want == 0 {
                continue;
            }
            let have = evidence_verifies(&cli, name, base.path());
            assert!(
                have >= want,
                "iteration {i} (seed {seed}): {name} has {have} evidence records, {want} were acknowledged"
            );
        }
        // Workflow: acknowledged events kept, histories only grow, one stage per batch.
        let list = cli.json("admin", &["batch", "list"]);
        let list = list.as_array().expect("batches");
        let mut histories: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for b in list {
            let id = b["id"].as_str().expect("id");
            assert!(b["stage"].is_string(), "iteration {i}: {b}");
            let v = cli.json("admin", &["batch", "show", id]);
            let h: Vec<(u64, String)> = v["history"]
                .as_array()
                .expect("history")
                .iter()
                .map(|e| {
                    (
                        e["seq"].as_u64().expect("seq"),
                        e["kind"]["kind"].as_str().expect("kind").to_string(),
                    )
                })
                .collect();
            assert!(
                histories.insert(id.to_string(), h).is_none(),
                "iteration {i}: batch {id} listed twice"
            );
        }
        for (batch, seq, kind) in &a.events {
            let h = histories.get(batch).unwrap_or_else(|| {
                panic!("iteration {i} (seed {seed}): acknowledged batch {batch} lost")
            });
            assert!(
                h.iter().any(|(s, k)| s == seq && k == kind),
                "iteration {i} (seed {seed}): acknowledged event {seq} {kind} of {batch} lost: {h:?}"
            );
        }
        for (batch, old) in &seen {
            let new = &histories[batch];
            assert!(
                new.starts_with(old),
                "iteration {i}: history of {batch} shrank or changed: {old:?} -> {new:?}"
            );
        }
        seen = histories;
        survived += 1;
        drop(a);
        // The agents reconnect to the restarted controller.
        for name in names {
            ctl.wait_online(name);
        }
    }
    let a = acked.lock().unwrap();
    eprintln!(
        "crash test: {survived}/{iterations} iterations survived in {:?}; acknowledged and kept: {} sweeps, {} evidence records, {} workflow events",
        started.elapsed(),
        a.sweeps.len(),
        a.evidence.values().sum::<u64>(),
        a.events.len()
    );
    assert_eq!(survived, iterations);
    assert!(
        !a.sweeps.is_empty() && !a.events.is_empty() && a.evidence.values().sum::<u64>() > 0,
        "the load did not run: nothing acknowledged"
    );
    drop(agents);
}
