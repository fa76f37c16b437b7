//! Crash consistency of the workflow: the controller is killed with SIGKILL during and between
//! transitions, 20 times, and restarted on the same data directory each time. After every
//! restart the store opens (the controller replays the history and checks it against the
//! stored batches before serving), no acknowledged transition is lost, every batch's history
//! only grew, every batch is in exactly one stage, and the deployer queue keeps the three-class
//! order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use preflight_tests::cluster::{Controller, Users as Cli};
use serde_json::Value;

const ITERATIONS: usize = 20;

/// An acknowledged event: batch, seq, kind.
type Acked = (String, u64, String);

/// Drives batch `id` forward; returns the events of every acknowledged command, stopping at the
/// first failure (the controller was killed).
fn drive(cli: &Cli, id: &str, variant: usize, plan: &str) -> Vec<Acked> {
    let mut steps: Vec<(&str, Vec<&str>)> = vec![
        (
            "pat",
            vec!["batch", "create", id, "--project", "P1", "--title", "t"],
        ),
        ("pat", vec!["batch", "advance", id]),
        ("ian", vec!["batch", "advance", id]),
        ("pat", vec!["batch", "advance", id]),
        ("ian", vec!["plan", "attach", id, plan]),
        ("ian", vec!["batch", "advance", id]),
        ("pat", vec!["batch", "confirm-plan", id]),
        ("admin", vec!["dev", "record", "readiness", id]),
        ("pat", vec!["batch", "advance", id]),
        ("dan", vec!["assign", id, "--deployer", "amy"]),
    ];
    let pause = vec![
        "batch",
        "pause",
        id,
        "--reason",
        "package",
        "--text",
        "backup missing",
    ];
    match variant % 3 {
        0 => steps.push(("amy", vec!["batch", "advance", id])),
        1 => {
            steps.push(("amy", pause));
            steps.push(("pat", vec!["batch", "resolve", id, "--note", "fixed"]));
        }
        _ => steps.push(("amy", pause)),
    }
    let mut acked = Vec::new();
    for (who, args) in steps {
        let Some(v) = cli.try_json(who, &args) else {
            break;
        };
        for e in v.as_array().expect("events") {
            acked.push((
                e["batch"].as_str().unwrap_or_default().to_string(),
                e["seq"].as_u64().expect("seq"),
                e["kind"]["kind"].as_str().expect("kind").to_string(),
            ));
        }
    }
    acked
}

fn class_rank(c: &str) -> u8 {
    match c {
        "deploying" => 0,
        "queued" => 1,
        "paused" => 2,
        other => panic!("unknown queue class {other}"),
    }
}

#[test]
fn killed_controller_restarts_consistent() {
    let mut ctl = Controller::start(&["--dev-clock"]).expect("controller");
    let mut cli = Cli {
        url: ctl.url.clone(),
        pin: ctl.pin.clone(),
        tokens: [("admin".to_string(), ctl.admin_token.clone())]
            .into_iter()
            .collect(),
    };
    for (name, role) in [
        ("pat", "project"),
        ("ian", "integrator"),
        ("dan", "dispatcher"),
        ("amy", "deployer"),
    ] {
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
    cli.json("admin", &["deployer", "add", "amy"]);
    let clock = cli.json("admin", &["dev", "clock", "set", "2026-06-01T08:00:00Z"]);
    let offset = clock["offset_ms"].as_i64().expect("offset");

    // A complete plan, so the batches pass the `plan` stage (the controller judges it).
    let plan_dir = tempfile::tempdir().expect("temp dir");
    let plan = plan_dir.path().join("plan.toml");
    std::fs::write(&plan, preflight_tests::complete_plan("10.0.0.5")).expect("plan written");
    let plan = plan.to_str().expect("utf-8 path").to_string();
    let mut acked_all: Vec<Acked> = Vec::new();
    let mut seen: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let started = Instant::now();
    let mut interrupted = 0;
    for i in 0..ITERATIONS {
        let id = format!("R{i}");
        let worker = {
            let cli = cli.clone();
            let (id, plan) = (id.clone(), plan.clone());
            std::thread::spawn(move || drive(&cli, &id, i, &plan))
        };
        if i % 2 == 0 {
            // During transitions: kill while the worker is issuing commands, at a point that
            // moves through the sequence from one iteration to the next.
            std::thread::sleep(Duration::from_millis(100 + (i as u64 * 137) % 600));
            ctl.kill();
            let acked = worker.join().expect("worker");
            let last = ["advanced", "resolved", "paused"][i % 3];
            let complete = acked.len() >= 11 && acked.last().is_some_and(|(_, _, k)| k == last);
            if !complete {
                interrupted += 1;
            }
            acked_all.extend(acked);
        } else {
            // Between transitions: every command acknowledged, then killed.
            let acked = worker.join().expect("worker");
            assert!(
                acked.iter().any(|(_, _, k)| k == "assigned"),
                "iteration {i}: the whole sequence ran: {acked:?}"
            );
            acked_all.extend(acked);
            ctl.kill();
        }
        // Restart on the same data directory: the store opens and replays consistently.
        ctl.restart(&["--dev-clock"]).expect("restart");

        // The dev clock's offset survived.
        let c = cli.json("admin", &["dev", "clock", "show"]);
        assert_eq!(c["offset_ms"].as_i64(), Some(offset), "iteration {i}: {c}");

        // Every batch in exactly one stage.
        let list = cli.json("admin", &["batch", "list"]);
        let list = list.as_array().expect("batches");
        let ids: BTreeSet<&str> = list.iter().map(|b| b["id"].as_str().expect("id")).collect();
        assert_eq!(ids.len(), list.len(), "iteration {i}: duplicate batch ids");
        for b in list {
            assert!(b["stage"].is_string(), "iteration {i}: {b}");
        }
        // No acknowledged transition lost; histories only grow.
        let mut histories: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for id in &ids {
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
                h.windows(2).all(|w| w[0].0 < w[1].0),
                "iteration {i}: history of {id} out of order: {h:?}"
            );
            histories.insert(id.to_string(), h);
        }
        for (batch, seq, kind) in &acked_all {
            let h = histories
                .get(batch)
                .unwrap_or_else(|| panic!("iteration {i}: acknowledged batch {batch} lost"));
            assert!(
                h.iter().any(|(s, k)| s == seq && k == kind),
                "iteration {i}: acknowledged event {seq} {kind} of {batch} lost: {h:?}"
            );
        }
        for (batch, old) in &seen {
            let new = histories
                .get(batch)
                .unwrap_or_else(|| panic!("iteration {i}: batch {batch} disappeared"));
            assert!(
                new.starts_with(old),
                "iteration {i}: history of {batch} shrank or changed: {old:?} -> {new:?}"
            );
        }
        seen = histories;
        // The queue keeps the three-class order.
        let q = cli.json("admin", &["queue", "--deployer", "amy"]);
        let list = q["amy"].as_array().expect("queue");
        let key = |e: &Value| {
            (
                class_rank(e["class"].as_str().expect("class")),
                e["since"].as_i64().expect("since"),
            )
        };
        assert!(
            list.windows(2).all(|w| key(&w[0]) <= key(&w[1])),
            "iteration {i}: queue breaks the three-class rule: {q}"
        );
    }
    let acked_count = acked_all.len();
    eprintln!(
        "{ITERATIONS} kills ({interrupted} in the middle of a command sequence), {acked_count} acknowledged events kept, {:?}",
        started.elapsed()
    );
    assert!(
        interrupted >= 1,
        "no kill landed during a sequence of commands"
    );
    assert!(
        acked_count >= ITERATIONS * 5,
        "too few commands ran: {acked_count}"
    );
}

/// A pause that crosses 15 days while the controller is down is escalated at start-up, before
/// the controller serves anything (not on the 30-second timer).
#[test]
fn pause_due_while_down_escalates_at_start_up() {
    let mut ctl = Controller::start(&["--dev-clock"]).expect("controller");
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
    cli.json(
        "pat",
        &["batch", "create", "X", "--project", "P1", "--title", "t"],
    );
    cli.json("pat", &["batch", "advance", "X"]);
    cli.json("ian", &["batch", "advance", "X"]);
    cli.json(
        "ian",
        &[
            "batch",
            "pause",
            "X",
            "--reason",
            "site_busy",
            "--text",
            "nobody on site",
        ],
    );
    // Put the controller's clock just short of the boundary, then stop it.
    let paused_at = cli.json("admin", &["batch", "show", "X"])["batch"]["pause"]["at"]
        .as_i64()
        .expect("pause time");
    let now = cli.json("admin", &["dev", "clock", "show"])["now_ms"]
        .as_i64()
        .expect("now");
    let short = (paused_at + 15 * 86_400_000 - 1_500 - now) / 1000;
    let v = cli.json("admin", &["dev", "clock", "advance", &format!("{short}s")]);
    assert_eq!(v["escalated"], serde_json::json!([]), "{v}");
    let show = cli.json("admin", &["batch", "show", "X"]);
    assert_eq!(show["batch"]["stage"], "problem_handling");
    let due = show["escalates_after"].as_i64().expect("escalation time");
    ctl.kill();
    // The dev clock runs on while the controller is down; wait until it is past the boundary.
    let offset_at_kill = v["offset_ms"].as_i64().expect("offset");
    let system_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64
    };
    preflight_tests::cluster::eventually(Duration::from_secs(5), "clock past the boundary", || {
        (system_ms() + offset_at_kill > due + 10).then_some(())
    });
    ctl.restart(&["--dev-clock"]).expect("restart");
    // The very first read after start-up sees the escalation.
    let show = cli.json("admin", &["batch", "show", "X"]);
    assert_eq!(show["batch"]["stage"], "gd_confirm", "{show}");
    let last = show["history"].as_array().and_then(|h| h.last()).cloned();
    assert_eq!(last.map(|e| e["by"]["kind"].clone()), Some("system".into()));
}
