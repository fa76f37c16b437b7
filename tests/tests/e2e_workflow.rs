//! The deployment workflow end to end: a real controller with `--dev-clock`, driven only
//! through the `preflight` binary with one token per role.

use std::collections::HashMap;
use std::process::Output;

use preflight_tests::cluster::{ok, Controller};
use serde_json::Value;

const DAY_MS: i64 = 86_400_000;

/// A controller with one user per role.
struct Office {
    ctl: Controller,
    tokens: HashMap<&'static str, String>,
}

const PEOPLE: &[(&str, &str)] = &[
    ("pat", "project"),
    ("ian", "integrator"),
    ("dan", "dispatcher"),
    ("amy", "deployer"),
    ("rita", "reviewer"),
    ("lee", "delivery_lead"),
    ("gina", "gd"),
    ("aud", "auditor"),
];

impl Office {
    fn new(extra: &[&str]) -> Office {
        let ctl = Controller::start(extra).expect("controller starts");
        let mut tokens = HashMap::new();
        tokens.insert("admin", ctl.admin_token.clone());
        let mut o = Office { ctl, tokens };
        for (name, role) in PEOPLE {
            let v = o.json("admin", &["user", "add", name, "--role", role]);
            let t = v["token"].as_str().expect("token printed").to_string();
            o.tokens.insert(name, t);
        }
        o
    }

    fn output(&self, who: &str, args: &[&str]) -> Output {
        self.ctl
            .cli_as(&self.tokens[who])
            .args(args)
            .output()
            .expect("preflight runs")
    }

    #[track_caller]
    fn run(&self, who: &str, args: &[&str]) -> String {
        let o = self.output(who, args);
        ok(&o, &format!("{who}: preflight {}", args.join(" "))).unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    fn json(&self, who: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        serde_json::from_str(&self.run(who, &a)).expect("json output")
    }

    /// Runs a command that must fail; returns its one-line error.
    #[track_caller]
    fn refused(&self, who: &str, args: &[&str], needles: &[&str]) -> String {
        let o = self.output(who, args);
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert!(
            !o.status.success(),
            "{who}: preflight {} succeeded, expected a refusal",
            args.join(" ")
        );
        assert!(err.starts_with("error: "), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in {err:?}");
        }
        err
    }

    fn stage(&self, batch: &str) -> String {
        self.json("aud", &["batch", "show", batch])["batch"]["stage"]
            .as_str()
            .expect("stage")
            .to_string()
    }

    fn clock(&self, time: &str) {
        self.run("admin", &["dev", "clock", "set", time]);
    }

    fn queue(&self, deployer: &str) -> String {
        let out = self.run("dan", &["queue", "--deployer", deployer]);
        let first = out.lines().next().expect("a line");
        first
            .strip_prefix(&format!("deployer {deployer}: "))
            .unwrap_or_else(|| panic!("queue line: {out}"))
            .to_string()
    }

    /// Creates a batch of project `p` and drives it to stage `assign` through the CLI.
    fn to_assign(&self, id: &str, p: &str) {
        self.run(
            "pat",
            &["batch", "create", id, "--project", p, "--title", id],
        );
        self.to_plan(id);
        let plan = self.ctl.dir.path().join("complete-plan.toml");
        std::fs::write(&plan, preflight_tests::complete_plan("10.0.0.5")).unwrap();
        self.run("ian", &["plan", "attach", id, plan.to_str().unwrap()]);
        self.run("ian", &["batch", "advance", id]);
        self.run("pat", &["batch", "confirm-plan", id]);
        self.run("admin", &["dev", "record", "readiness", id]);
        self.run("pat", &["batch", "advance", id]);
        assert_eq!(self.stage(id), "assign");
    }

    /// From `apply` to `plan`.
    fn to_plan(&self, id: &str) {
        self.run("pat", &["batch", "advance", id]);
        self.run("ian", &["batch", "advance", id]);
        self.run("pat", &["batch", "advance", id]);
        assert_eq!(self.stage(id), "plan");
    }

    fn setup(&self) {
        self.run(
            "admin",
            &[
                "project",
                "add",
                "P1",
                "--name",
                "Tax portal",
                "--line",
                "gov",
                "--budget",
                "B-2026-7",
            ],
        );
        self.run("admin", &["deployer", "add", "amy"]);
    }
}

/// WORKFLOW.md's worked example: on 18 June A and B are being deployed, C and D paused, E and
/// F queued; A finishes, so the order is B-E-F-C-D; on 19 June H is queued at 08:30 and D
/// returns from its pause at 09:00: B-E-F-H-D-C.
#[test]
fn worked_queue_example_prints_befcd_then_befhdc() {
    let o = Office::new(&["--dev-clock"]);
    o.setup();
    o.clock("2026-06-16T09:00:00Z");
    for id in ["A", "B", "C", "D", "E", "F", "H"] {
        o.to_assign(id, "P1");
    }
    for (i, id) in ["A", "B", "C", "D", "E", "F"].iter().enumerate() {
        o.clock(&format!("2026-06-17T08:0{i}:00Z"));
        o.run("dan", &["assign", id, "--deployer", "amy"]);
    }
    o.clock("2026-06-17T09:00:00Z");
    o.run("amy", &["batch", "advance", "A"]);
    o.clock("2026-06-17T10:00:00Z");
    o.run("amy", &["batch", "advance", "B"]);
    for (id, t) in [("C", "08:00"), ("D", "09:00")] {
        o.clock(&format!("2026-06-18T{t}:00Z"));
        o.run(
            "amy",
            &[
                "batch",
                "pause",
                id,
                "--reason",
                "package",
                "--text",
                "database backup files missing",
            ],
        );
    }
    assert_eq!(o.queue("amy"), "A-B-E-F-C-D");
    // A finishes on 18 June.
    o.clock("2026-06-18T17:00:00Z");
    o.run("admin", &["dev", "record", "hardening", "A"]);
    o.run("amy", &["batch", "advance", "A"]);
    assert_eq!(o.stage("A"), "integrate");
    let first = o.queue("amy");
    println!("19 June, before H and D: {first}");
    assert_eq!(first, "B-E-F-C-D");
    o.clock("2026-06-19T08:30:00Z");
    o.run("dan", &["assign", "H", "--deployer", "amy"]);
    o.clock("2026-06-19T09:00:00Z");
    o.run(
        "pat",
        &["batch", "resolve", "D", "--note", "backup files uploaded"],
    );
    let second = o.queue("amy");
    println!("19 June 09:00: {second}");
    assert_eq!(second, "B-E-F-H-D-C");
    // The JSON says the same, with the classes of the three-class rule.
    let q = o.json("aud", &["queue", "--deployer", "amy"]);
    let classes: Vec<&str> = q["amy"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["class"].as_str().expect("class"))
        .collect();
    assert_eq!(
        classes,
        [
            "deploying",
            "queued",
            "queued",
            "queued",
            "queued",
            "paused"
        ]
    );
    // D went back to the deployer who paused it, at its place behind earlier-queued batches.
    let d = o.json("aud", &["batch", "show", "D"]);
    assert_eq!(d["held_by"]["value"], "amy");
    assert_eq!(d["queue"]["position"], 5);
    // `batch show` names the stage in both languages, the holder, the gates and the history.
    let text = o.run("aud", &["batch", "show", "D"]);
    for needle in [
        "assign (部署人员安排)",
        "held by:   amy",
        "deployer_assigned",
        "paused",
        "resolved",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    let zh = o.run("aud", &["queue", "--lang", "zh"]);
    assert!(zh.contains("部署中") && zh.contains("暂停"), "{zh}");
    let zh = o.run("aud", &["batch", "list", "--lang", "zh"]);
    assert!(zh.contains("系统部署") && zh.contains("集成配置"), "{zh}");
    // Pause accountability: C is still open, D lasted one day.
    let rows = o.json("aud", &["stats", "pauses", "--by", "reason"]);
    assert_eq!(rows[0]["key"], "package");
    assert_eq!(rows[0]["count"], 2);
    let rows = o.json(
        "aud",
        &[
            "stats",
            "pauses",
            "--by",
            "party",
            "--since",
            "2026-06-18T08:30:00Z",
        ],
    );
    assert_eq!(rows[0]["key"], "project");
    assert_eq!(rows[0]["count"], 1, "only D's pause began after 08:30");
    let zh = o.run("aud", &["stats", "pauses", "--lang", "zh"]);
    assert!(zh.contains("部署包下载不完整"), "{zh}");
}

#[test]
fn refusals_name_what_is_allowed_and_auditor_changes_nothing() {
    let o = Office::new(&["--dev-clock"]);
    o.setup();
    o.run(
        "pat",
        &["batch", "create", "X", "--project", "P1", "--title", "x"],
    );
    o.to_plan("X");
    // Wrong role: PERMISSION_DENIED naming the roles allowed.
    o.refused(
        "amy",
        &["batch", "advance", "X"],
        &["permission denied", "allowed roles are integrator"],
    );
    o.refused(
        "pat",
        &["gd", "confirm", "X", "--decision", "reason"],
        &["permission denied", "gd"],
    );
    // Wrong stage: FAILED_PRECONDITION naming the stage.
    o.refused(
        "pat",
        &["batch", "resolve", "X"],
        &["not allowed now", "stage plan"],
    );
    // Unmet gate: says what is missing.
    o.refused(
        "ian",
        &["batch", "advance", "X"],
        &["not allowed now", "plan_complete"],
    );
    // Bad input: INVALID_ARGUMENT naming the field.
    o.refused(
        "ian",
        &["batch", "pause", "X", "--reason", "weather", "--text", "t"],
        &["invalid argument", "reason"],
    );
    o.refused("pat", &["batch", "show", "NOPE"], &["not found"]);
    // Only an admin adds users or moves the clock.
    o.refused(
        "dan",
        &["user", "add", "eve", "--role", "admin"],
        &["permission denied", "admin"],
    );
    // The auditor reads everything and changes nothing.
    let before = o.json("aud", &["batch", "show", "X"])["history"]
        .as_array()
        .expect("history")
        .len();
    o.run("aud", &["batch", "list"]);
    o.run("aud", &["queue"]);
    o.run("aud", &["stats", "pauses"]);
    o.run("aud", &["project", "list"]);
    o.run("aud", &["user", "list"]);
    for args in [
        vec!["batch", "advance", "X"],
        vec!["batch", "pause", "X", "--reason", "other", "--text", "t"],
        vec!["batch", "create", "Y", "--project", "P1", "--title", "y"],
        vec!["deployer", "add", "aud"],
        vec!["project", "add", "P9", "--name", "n", "--line", "l"],
        vec!["user", "add", "eve", "--role", "admin"],
        vec!["dev", "clock", "advance", "1d"],
    ] {
        o.refused("aud", &args, &["permission denied"]);
    }
    let after = o.json("aud", &["batch", "show", "X"]);
    assert_eq!(after["history"].as_array().expect("history").len(), before);
    assert_eq!(after["batch"]["stage"], "plan");
}

#[test]
fn assign_says_whom_it_chose_and_an_unknown_deployer_names_the_fix() {
    let o = Office::new(&["--dev-clock"]);
    o.setup();
    // `user add --role deployer` put amy in the deployer list (setup's `deployer add amy`
    // then had nothing to do); a second deployer through `user add` too.
    let v = o.json("admin", &["user", "add", "zoe", "--role", "deployer"]);
    assert_eq!(v["deployer_added"], true, "{v}");
    let again = o.run("admin", &["deployer", "add", "zoe"]);
    assert!(again.contains("already in the deployer list"), "{again}");
    o.to_assign("AS1", "P1");
    let out = o.run("dan", &["assign", "AS1"]);
    assert!(
        out.contains("assigned to amy: least loaded of 2 deployers (0 batches deploying or queued; ties go by name)"),
        "{out}"
    );
    o.to_assign("AS2", "P1");
    o.refused(
        "dan",
        &["assign", "AS2", "--deployer", "bob"],
        &["not found", "`preflight deployer add bob`"],
    );
    let out = o.run("dan", &["assign", "AS2"]);
    assert!(out.contains("assigned to zoe: least loaded"), "{out}");
}

#[test]
fn dev_clock_is_refused_without_the_flag() {
    let ctl = Controller::start(&[]).expect("controller starts");
    for args in [
        vec!["dev", "clock", "advance", "1s"],
        vec!["dev", "clock", "set", "2026-06-18T08:00:00Z"],
    ] {
        let o = ctl.cli().args(&args).output().expect("runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("not allowed now") && err.contains("--dev-clock"),
            "{err}"
        );
    }
}

/// A pause is escalated to GD strictly after 15 days (the clock keeps running between
/// commands, so "before" is checked one second short of the boundary); the project may not
/// request deployment until GD processed the batch; terminated batches never move.
#[test]
fn escalation_restriction_and_termination() {
    let o = Office::new(&["--dev-clock"]);
    o.setup();
    o.clock("2026-06-01T09:00:00Z");
    for id in ["X", "Y", "Z"] {
        o.run(
            "pat",
            &["batch", "create", id, "--project", "P1", "--title", id],
        );
    }
    o.to_plan("X");
    o.to_plan("Z");
    // Y waits in pre_plan: its deploy request comes later.
    o.run("pat", &["batch", "advance", "Y"]);
    o.run("ian", &["batch", "advance", "Y"]);
    assert_eq!(o.stage("Y"), "deploy_request");
    o.run(
        "ian",
        &[
            "batch",
            "pause",
            "X",
            "--reason",
            "planning",
            "--text",
            "IPs differ from the plan",
            "--party",
            "project",
        ],
    );
    let paused_at = o.json("aud", &["batch", "show", "X"])["batch"]["pause"]["at"]
        .as_i64()
        .expect("pause time");
    // Fifteen days minus one second: not yet.
    // RFC 3339 of a Unix ms time.
    let t = |ms: i64| {
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            ms.rem_euclid(1000)
        )
    };
    o.clock(&t(paused_at + 15 * DAY_MS - 1000));
    assert_eq!(o.stage("X"), "problem_handling");
    // Not yet restricted either.
    let v = o.json("aud", &["project", "list"]);
    assert!(v["projects"][0]["restricted_by"].is_null(), "{v}");
    // One second past the boundary (two seconds later), the check that runs right after
    // advancing escalates it.
    let v = o.json("admin", &["dev", "clock", "advance", "2s"]);
    assert_eq!(v["escalated"], serde_json::json!(["X"]), "{v}");
    assert_eq!(o.stage("X"), "gd_confirm");
    let show = o.json("aud", &["batch", "show", "X"]);
    let kinds: Vec<&str> = show["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["kind"]["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds.last(), Some(&"escalated"), "{kinds:?}");
    // The restriction blocks a new deploy request, naming the blocking batch.
    o.refused("pat", &["batch", "advance", "Y"], &["not allowed now", "X"]);
    // GD confirms the reason: the restriction lifts, the batch is back in problem handling.
    o.run(
        "gina",
        &[
            "gd",
            "confirm",
            "X",
            "--decision",
            "reason",
            "--note",
            "site closed",
        ],
    );
    assert_eq!(o.stage("X"), "problem_handling");
    o.run("pat", &["batch", "advance", "Y"]);
    assert_eq!(o.stage("Y"), "plan");
    // Termination: asked by the project, confirmed by GD, then nothing moves it.
    o.run(
        "ian",
        &[
            "batch",
            "pause",
            "Z",
            "--reason",
            "site_busy",
            "--text",
            "nobody on site",
        ],
    );
    o.run(
        "pat",
        &["batch", "terminate", "Z", "--reason", "customer cancelled"],
    );
    assert_eq!(o.stage("Z"), "gd_confirm");
    o.run("gina", &["gd", "confirm", "Z", "--decision", "termination"]);
    assert_eq!(o.stage("Z"), "terminated");
    o.refused(
        "pat",
        &["batch", "resolve", "Z"],
        &["not allowed now", "terminated"],
    );
    o.refused(
        "pat",
        &["batch", "advance", "Z"],
        &["not allowed now", "terminated"],
    );
    o.refused(
        "ian",
        &["batch", "pause", "Z", "--reason", "other", "--text", "t"],
        &["not allowed now", "terminated"],
    );
    o.refused(
        "gina",
        &["gd", "confirm", "Z", "--decision", "reason"],
        &["not allowed now"],
    );
    let v = o.json("admin", &["dev", "clock", "advance", "30d"]);
    assert!(
        !v["escalated"]
            .as_array()
            .expect("list")
            .iter()
            .any(|b| b == "Z"),
        "{v}"
    );
    assert_eq!(o.stage("Z"), "terminated");
    // X, confirmed by GD 30 days ago and still paused, comes back to GD.
    assert_eq!(o.stage("X"), "gd_confirm");
}

fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A plan file attached to a batch, then real sweeps feed the `confirm_plan` gate: a clean sweep
/// of that plan lets the batch go on; a sweep with a hard failure pauses the batch, naming the
/// failing check.
#[test]
fn attached_plan_and_sweeps_drive_the_confirm_plan_gate() {
    let o = Office::new(&["--heartbeat-interval", "1s"]);
    o.setup();
    let base = tempfile::tempdir().unwrap();
    let mut agent =
        preflight_tests::cluster::Agent::enroll(&o.ctl, base.path(), "gate-1", "127.0.0.51")
            .unwrap();
    agent.start().unwrap();
    o.ctl.wait_online("gate-1");
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("db.dump");
    let sha_of_dump = {
        let out = std::process::Command::new("sh")
            .args(["-c", "printf dump | sha256sum"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let write_plan = |batch: &str| {
        let p = dir.path().join(format!("{batch}.toml"));
        std::fs::write(
            &p,
            format!(
                "[batch]\nproject = \"P1\"\nbatch = \"{batch}\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n\n[[servers]]\naddress = \"127.0.0.51\"\nhostname = \"gate-1\"\nrole = \"db\"\napps = [{{ name = \"pg\", ports = \"28793\" }}]\n\n[jump_host]\naddress = \"10.8.3.25\"\nkind = \"windows\"\n\n[[packages]]\npath = \"{}\"\nsize = 4\nsha256 = \"{sha_of_dump}\"\nkind = \"db_backup\"\ndatabase = \"portal\"\non_exists = \"rename\"\n",
                backup.display(),
            ),
        )
        .unwrap();
        p
    };
    let sweep = |batch: &str, plan: &std::path::Path| {
        o.output(
            "ian",
            &["sweep", "--batch", batch, "--plan", plan.to_str().unwrap()],
        )
    };

    // G1: the backup is there; the sweep passes and the project can confirm and move on.
    std::fs::write(&backup, b"dump").unwrap();
    o.run(
        "pat",
        &["batch", "create", "G1", "--project", "P1", "--title", "G1"],
    );
    o.to_plan("G1");
    let p1 = write_plan("G1");
    o.run("ian", &["plan", "attach", "G1", p1.to_str().unwrap()]);
    o.run("ian", &["batch", "advance", "G1"]);
    o.run("pat", &["batch", "confirm-plan", "G1"]);
    o.refused("pat", &["batch", "advance", "G1"], &["readiness"]);
    let s = sweep("G1", &p1);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    // Soft failures (here, possibly an unsynchronised clock on this machine) must be listed as
    // risks before the batch can leave confirm_plan.
    let shown = o.json("aud", &["batch", "show", "G1"]);
    let soft: Vec<String> = shown["batch"]["readiness"]["soft_failures"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["check"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    for check in &soft {
        o.run(
            "pat",
            &[
                "batch",
                "risk",
                "G1",
                "--text",
                "accepted for the test",
                "--source",
                check,
            ],
        );
    }
    o.run("pat", &["batch", "advance", "G1"]);
    assert_eq!(o.stage("G1"), "assign");

    // G2: the backup went missing; the sweep's hard failure pauses the batch with the check.
    std::fs::remove_file(&backup).unwrap();
    o.run(
        "pat",
        &["batch", "create", "G2", "--project", "P1", "--title", "G2"],
    );
    o.to_plan("G2");
    let p2 = write_plan("G2");
    o.run("ian", &["plan", "attach", "G2", p2.to_str().unwrap()]);
    o.run("ian", &["batch", "advance", "G2"]);
    o.run("pat", &["batch", "confirm-plan", "G2"]);
    let s = sweep("G2", &p2);
    assert_eq!(
        s.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&s.stderr)
    );
    assert_eq!(o.stage("G2"), "problem_handling");
    let shown = o.run("aud", &["batch", "show", "G2"]);
    assert!(shown.contains("db.dump"), "{shown}");
}

/// The controller keeps the attached plan (a TOML plan with its servers from a CSV list): the
/// batch is swept by name without a plan file, also after a controller restart; a run with
/// skipped checks is stored and reported but is not the batch's readiness; a sweep of another
/// plan file is not either; oversized and invalid plans attach nothing; a batch without a plan
/// cannot be swept by name.
#[test]
fn attached_plan_is_kept_and_swept_by_batch() {
    let mut o = Office::new(&["--heartbeat-interval", "1s"]);
    o.setup();
    let base = tempfile::tempdir().unwrap();
    let mut agent =
        preflight_tests::cluster::Agent::enroll(&o.ctl, base.path(), "keep-1", "127.0.0.53")
            .unwrap();
    agent.start().unwrap();
    o.ctl.wait_online("keep-1");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let thresholds = "[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n";
    // Complete (the `plan` gate): a jump host and the database backup, present on the host.
    let dump = file("k.dump", "dump");
    let complete = format!(
        "\n[jump_host]\naddress = \"10.8.3.25\"\nkind = \"windows\"\n\n[[packages]]\npath = \"{dump}\"\nsize = 4\nsha256 = \"{}\"\nkind = \"db_backup\"\ndatabase = \"portal\"\non_exists = \"rename\"\n",
        "b6ca0868bca6a2926b70aa1a71592038d9030fe26d4214edcfbd6cf41f2f4654" // printf dump | sha256sum
    );
    let toml = file(
        "k.toml",
        &format!("[batch]\nproject = \"P1\"\nbatch = \"K1\"\n\n{thresholds}{complete}"),
    );
    let csv = file(
        "k.csv",
        "IP,Hostname,Role,Apps,Ports\n127.0.0.53,keep-1,db,pg,28791\n",
    );
    let digest = o.json("ian", &["plan", "check", &toml, "--servers", &csv])["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    o.run(
        "pat",
        &["batch", "create", "K1", "--project", "P1", "--title", "K1"],
    );
    o.to_plan("K1");
    let plan_of =
        |o: &Office, b: &str| o.json("aud", &["batch", "show", b])["batch"]["plan"].clone();

    // Bad plans attach nothing: one with an error, and one over 1 MiB as canonical TOML.
    let dup = file(
        "dup.csv",
        "IP,Hostname,Role\n127.0.0.53,keep-1,db\n127.0.0.53,keep-2,db\n",
    );
    let bad = o.output("ian", &["plan", "attach", "K1", &toml, "--servers", &dup]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nothing was attached"),
        "{bad:?}"
    );
    let mut big = format!("{thresholds}\n");
    for i in 0..500 {
        big.push_str(&format!(
            "[[servers]]\naddress = \"10.9.{}.{}\"\nhostname = \"h{i}\"\nrole = \"r\"\napps = [",
            i / 250,
            i % 250 + 1
        ));
        for j in 0..30 {
            big.push_str(&format!("{{ name = \"app{j:02}-{}\" }},", "x".repeat(56)));
        }
        big.push_str("]\n");
    }
    let big = file("big.toml", &big);
    let out = o.output("ian", &["plan", "attach", "K1", &big]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the plan is")
            && err.contains("at most 1048576")
            && err.contains("nothing was attached"),
        "{err}"
    );
    assert!(plan_of(&o, "K1").is_null(), "nothing attached");

    // A batch without a plan cannot be swept by name.
    o.refused(
        "ian",
        &["sweep", "K1"],
        &["no plan attached", "preflight plan attach K1"],
    );

    o.run("ian", &["plan", "attach", "K1", &toml, "--servers", &csv]);
    assert_eq!(plan_of(&o, "K1")["digest"], digest.as_str());
    assert_eq!(plan_of(&o, "K1")["hosts"], serde_json::json!(["keep-1"]));
    o.run("ian", &["batch", "advance", "K1"]);
    o.run("pat", &["batch", "confirm-plan", "K1"]);

    // A quick sweep of the attached plan with skipped checks: stored and reported, not the
    // batch's readiness, and the output says why.
    let s = o.output(
        "ian",
        &[
            "sweep",
            "K1",
            "--skip",
            "disk",
            "--skip",
            "bandwidth",
            "--output",
            "json",
        ],
    );
    let err = String::from_utf8_lossy(&s.stderr);
    assert!(s.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["plan_digest"], digest.as_str(), "{v}");
    assert_eq!(
        v["skipped"],
        serde_json::json!(["bandwidth", "disk"]),
        "{v}"
    );
    assert!(
        err.contains("checks were skipped: bandwidth, disk, not recorded as the batch's readiness"),
        "{err}"
    );
    let skipped_run = v["run_id"].as_u64().unwrap();
    let shown = o.json("aud", &["batch", "show", "K1"]);
    assert!(shown["batch"]["readiness"].is_null(), "{shown}");
    let stored = o.json(
        "aud",
        &[
            "report",
            "--run",
            &skipped_run.to_string(),
            "--format",
            "json",
        ],
    );
    assert!(
        stored["not_recorded"]
            .as_str()
            .unwrap()
            .contains("checks were skipped"),
        "{stored}"
    );
    o.refused("pat", &["batch", "advance", "K1"], &["readiness"]);

    // An ad-hoc sweep of another plan file is not the batch's readiness either.
    let other = file(
        "other.toml",
        &format!("{thresholds}\n[[servers]]\naddress = \"127.0.0.53\"\nhostname = \"keep-1\"\nrole = \"db\"\n"),
    );
    let s = o.output("ian", &["sweep", "K1", "--plan", &other]);
    let err = String::from_utf8_lossy(&s.stderr);
    assert!(s.status.success(), "{err}");
    assert!(err.contains("another plan than the one attached"), "{err}");
    assert!(o.json("aud", &["batch", "show", "K1"])["batch"]["readiness"].is_null());

    // The plan survives a controller restart: the batch is swept by name, and a complete
    // sweep becomes its readiness.
    o.ctl.restart(&["--heartbeat-interval", "1s"]).unwrap();
    o.ctl.wait_online("keep-1");
    let v = o.json("ian", &["sweep", "K1"]);
    assert_eq!(v["plan_digest"], digest.as_str(), "{v}");
    assert_eq!(v["not_recorded"].as_str().unwrap_or(""), "", "{v}");
    let shown = o.json("aud", &["batch", "show", "K1"]);
    assert_eq!(
        shown["batch"]["readiness"]["run_id"],
        v["run_id"].as_u64().unwrap().to_string(),
        "{shown}"
    );
    assert_eq!(shown["batch"]["readiness"]["plan_digest"], digest.as_str());

    // `--batch` maps a plan host to its agent by the stored plan's address, when neither the
    // agent's id nor its reported hostname is the plan's name.
    o.run(
        "pat",
        &["batch", "create", "K2", "--project", "P1", "--title", "K2"],
    );
    o.to_plan("K2");
    let renamed = file(
        "renamed.toml",
        &format!("{thresholds}\n[[servers]]\naddress = \"127.0.0.53\"\nhostname = \"db-by-address\"\nrole = \"db\"\n"),
    );
    o.run("ian", &["plan", "attach", "K2", &renamed]);
    let st = o.json("ian", &["harden", "status", "--batch", "K2"]);
    assert_eq!(st["hosts"][0]["agent_id"], "keep-1", "{st}");

    // Facts alone (`batch plan --digest`) naming a plan the controller keeps: its servers are
    // the batch's, not the shorter host list sent along.
    o.run(
        "pat",
        &["batch", "create", "K3", "--project", "P1", "--title", "K3"],
    );
    o.to_plan("K3");
    o.run(
        "ian",
        &[
            "batch",
            "plan",
            "K3",
            "--digest",
            &digest,
            "--host",
            "someone-else",
        ],
    );
    assert_eq!(plan_of(&o, "K3")["hosts"], serde_json::json!(["keep-1"]));
}

/// Issue 13 items 1 and 13. The controller judges a plan's completeness itself: a plan of
/// servers alone, attached by a client that claims nothing is missing (`plan attach` sends an
/// empty `incomplete`), is refused at the `plan` gate naming each missing part, one a line in
/// `batch show`; facts without the plan are never complete; a complete plan passes. Risks: a
/// `--source` naming no finding is refused with the findings that exist; `--all-soft` lists
/// every soft failure as a risk, and the gate is met.
#[test]
fn the_controller_judges_plan_completeness_and_risks_name_findings() {
    let o = Office::new(&["--dev-clock"]);
    o.setup();
    let dir = tempfile::tempdir().unwrap();
    let servers_only = dir.path().join("servers-only.toml");
    std::fs::write(
        &servers_only,
        "[[servers]]\naddress = \"10.20.0.11\"\nhostname = \"web-01\"\nrole = \"nginx\"\napps = [{ name = \"nginx\", ports = \"80\" }]\n\n[[servers]]\naddress = \"10.20.0.12\"\nhostname = \"web-02\"\nrole = \"nginx\"\n\n[[servers]]\naddress = \"10.20.0.31\"\nhostname = \"db-01\"\nrole = \"db\"\napps = [{ name = \"postgresql\", ports = \"5432\" }]\n",
    )
    .unwrap();
    // `plan check` says beforehand what the gate will name.
    let check = o.run("ian", &["plan", "check", servers_only.to_str().unwrap()]);
    assert!(
        check.contains("not complete for the plan stage (plan_complete); missing:")
            && check.contains("    - jump host: none declared"),
        "{check}"
    );
    o.run(
        "pat",
        &["batch", "create", "C1", "--project", "P1", "--title", "C1"],
    );
    o.to_plan("C1");
    o.run(
        "ian",
        &["plan", "attach", "C1", servers_only.to_str().unwrap()],
    );
    let parts = [
        "web-02 has no app with ports",
        "required paths: none declared",
        "role nginx is a cluster of 2 servers without a virtual IP",
        "jump host: none declared",
        "package manifest: no package files",
        "database server db-01 has no database backup",
    ];
    let mut needles = vec!["plan_complete"];
    needles.extend(parts);
    o.refused("ian", &["batch", "advance", "C1"], &needles);
    assert_eq!(o.stage("C1"), "plan");
    let shown = o.run("aud", &["batch", "show", "C1"]);
    for p in parts {
        assert!(
            shown
                .lines()
                .any(|l| l.trim_start().starts_with("- ") && l.contains(p)),
            "{p:?} on a line of its own:\n{shown}"
        );
    }

    // Facts without the plan: never complete, and the refusal says how to attach the plan.
    o.run(
        "pat",
        &["batch", "create", "C2", "--project", "P1", "--title", "C2"],
    );
    o.to_plan("C2");
    o.run(
        "ian",
        &[
            "batch", "plan", "C2", "--digest", "d2", "--host", "10.0.0.5",
        ],
    );
    o.refused(
        "ian",
        &["batch", "advance", "C2"],
        &[
            "holds only its digest",
            "preflight plan attach C2 PLAN_FILE",
        ],
    );

    // A complete plan passes; then risks against a recorded readiness with soft failures.
    let full = dir.path().join("full.toml");
    std::fs::write(&full, preflight_tests::complete_plan("10.0.0.5")).unwrap();
    o.run("ian", &["plan", "attach", "C2", full.to_str().unwrap()]);
    o.run("ian", &["batch", "advance", "C2"]);
    assert_eq!(o.stage("C2"), "confirm_plan");
    o.run("pat", &["batch", "confirm-plan", "C2"]);
    o.run(
        "admin",
        &[
            "dev",
            "record",
            "readiness",
            "C2",
            "--soft",
            "disk:app-1:/data:disk_performance:customer",
            "--soft",
            "clock:app-1:other",
        ],
    );
    o.refused(
        "pat",
        &[
            "batch",
            "risk",
            "C2",
            "--text",
            "slow",
            "--source",
            "disk:app-9",
        ],
        &[
            "--source disk:app-9 matches no finding",
            "disk:app-1:/data",
            "clock:app-1",
        ],
    );
    o.refused(
        "pat",
        &["batch", "advance", "C2"],
        &["soft_failures_are_risks"],
    );
    let events = o.json("pat", &["batch", "risk", "C2", "--all-soft"]);
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    let risks = o.json("aud", &["batch", "show", "C2"])["batch"]["risks"].clone();
    let sources: Vec<&str> = risks
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["disk:app-1:/data", "clock:app-1"], "{risks}");
    // Again: nothing left to list.
    let again = o.run("pat", &["batch", "risk", "C2", "--all-soft"]);
    assert!(again.contains("already listed as a risk"), "{again}");
    o.run("pat", &["batch", "advance", "C2"]);
    assert_eq!(o.stage("C2"), "assign");
}

/// Issue 13 item 17: `batch show --lang zh` of a batch stuck at `plan` gives the gate's need and
/// every missing part in Chinese, one a line, by the rule of `check_zh_text` (no English
/// outside `backticks` but GD, IP, VPN); English text and JSON's English fields are unchanged,
/// the Chinese ones come additively.
#[test]
fn batch_show_in_chinese_names_what_the_plan_gate_misses() {
    let o = Office::new(&["--dev-clock"]);
    o.setup();
    let dir = tempfile::tempdir().unwrap();
    let servers_only = dir.path().join("servers-only.toml");
    std::fs::write(
        &servers_only,
        "[[servers]]\naddress = \"10.20.0.11\"\nhostname = \"web-01\"\nrole = \"nginx\"\napps = [{ name = \"nginx\", ports = \"80\" }]\n\n[[servers]]\naddress = \"10.20.0.12\"\nhostname = \"web-02\"\nrole = \"nginx\"\n\n[[servers]]\naddress = \"10.20.0.31\"\nhostname = \"db-01\"\nrole = \"db\"\napps = [{ name = \"postgresql\", ports = \"5432\" }]\n",
    )
    .unwrap();
    o.run(
        "pat",
        &["batch", "create", "Z1", "--project", "P1", "--title", "Z1"],
    );
    o.to_plan("Z1");
    o.run(
        "ian",
        &["plan", "attach", "Z1", servers_only.to_str().unwrap()],
    );
    let zh = o.run("aud", &["batch", "show", "Z1", "--lang", "zh"]);
    let lines: Vec<&str> = zh.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "离开集成开发规划阶段的关口：")
        .unwrap_or_else(|| panic!("gates header:\n{zh}"));
    assert!(
        lines[at + 1].starts_with(
            "  [未满足] plan_complete：已附上完整的规划：服务器（IP、主机名、角色、应用、端口）"
        ),
        "{zh}"
    );
    assert_eq!(lines[at + 2].trim(), "缺少：", "{zh}");
    let items: Vec<&str> = lines[at + 3..]
        .iter()
        .map(|l| l.trim_start())
        .take_while(|l| l.starts_with("- "))
        .map(|l| &l[2..])
        .collect();
    let parts = [
        "服务器：`web-02` 没有带端口的应用",
        "必需路径：未声明",
        "虚拟IP：角色 `nginx` 是由 2 台服务器组成的集群，但没有虚拟IP",
        "跳板机：未声明",
        "安装包清单：没有安装包文件",
        "安装包清单：数据库服务器 `db-01` 没有数据库备份",
    ];
    assert_eq!(items.len(), parts.len(), "{zh}");
    for (item, part) in items.iter().zip(parts) {
        assert!(
            item.starts_with(part),
            "{part:?} expected, got {item:?}\n{zh}"
        );
        preflight_core::workflow::check_zh_text(item).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(!zh.contains("missing:") && !zh.contains("not met"), "{zh}");
    // The refusal of `batch advance --lang zh` says the same, on one line.
    let err = o.refused(
        "ian",
        &["batch", "advance", "Z1", "--lang", "zh"],
        &[
            "error: 不允许：批次 `Z1` 不能离开集成开发规划阶段：`plan_complete` 未满足，缺少：服务器：`web-02` 没有带端口的应用：",
            "；跳板机：未声明：请添加 `[jump_host]`",
            "；安装包清单：数据库服务器 `db-01` 没有数据库备份：",
        ],
    );
    preflight_core::workflow::check_zh_text(&err["error: ".len()..])
        .unwrap_or_else(|e| panic!("{e}"));
    o.refused(
        "ian",
        &["batch", "advance", "Z1"],
        &["plan_complete", "jump host: none declared"],
    );
    // English stays as it was.
    let en = o.run("aud", &["batch", "show", "Z1"]);
    assert!(
        en.contains("[not met] plan_complete: a complete plan attached")
            && en.contains("missing:")
            && en.contains("- jump host: none declared"),
        "{en}"
    );
    // JSON: English fields unchanged, Chinese ones beside them, item for item.
    let v = o.json("aud", &["batch", "show", "Z1"]);
    let g = &v["gates"][0];
    assert_eq!(g["gate"], "plan_complete", "{v}");
    assert!(
        g["needs"]
            .as_str()
            .unwrap()
            .starts_with("a complete plan attached"),
        "{g}"
    );
    assert!(
        g["needs_zh"]
            .as_str()
            .unwrap()
            .starts_with("已附上完整的规划"),
        "{g}"
    );
    assert_eq!(
        g["missing"].as_array().unwrap().len(),
        g["missing_zh"].as_array().unwrap().len(),
        "{g}"
    );

    // Facts without the plan: the Chinese text says how to attach it.
    o.run(
        "pat",
        &["batch", "create", "Z2", "--project", "P1", "--title", "Z2"],
    );
    o.to_plan("Z2");
    o.run(
        "ian",
        &[
            "batch", "plan", "Z2", "--digest", "d2", "--host", "10.0.0.5",
        ],
    );
    let zh = o.run("aud", &["batch", "show", "Z2", "--lang", "zh"]);
    assert!(
        zh.lines()
            .any(|l| l.trim_start().starts_with("- 规划文件本身：")
                && l.contains("`preflight plan attach Z2 PLAN_FILE`")),
        "{zh}"
    );
}

/// Issue 20 item 2: a plan decides what the agents probe. The project may sweep its batch's
/// attached plan, never another plan file (that is for admin, integrator, deployer); and a plan
/// whose VIP lies outside the servers' networks is refused naming the field and the fix.
#[test]
fn plan_files_are_for_operators_and_vips_stay_in_the_batch_networks() {
    let o = Office::new(&[]);
    o.setup();
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.toml");
    std::fs::write(&own, preflight_tests::complete_plan("127.0.0.57")).unwrap();
    let own = own.to_str().unwrap();
    // Not attached to any batch: the project is refused before any agent is asked.
    let out = o.output("pat", &["sweep", "--batch", "S1", "--plan", own]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("role project may sweep a batch's attached plan")
            && err.contains("admin, integrator, deployer")
            && err.contains("preflight plan attach S1 FILE"),
        "{err}"
    );
    // Attached by the integrator, the same file may be swept by the project.
    o.run(
        "pat",
        &["batch", "create", "S1", "--project", "P1", "--title", "S1"],
    );
    o.to_plan("S1");
    o.run("ian", &["plan", "attach", "S1", own]);
    let out = o.output("pat", &["sweep", "--batch", "S1", "--plan", own]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("may sweep"), "{err}");
    assert!(
        err.contains("app-1") || String::from_utf8_lossy(&out.stdout).contains("app-1"),
        "the sweep ran: {err}"
    );

    // A VIP outside the servers' /24: refused at plan check and attach, naming the field.
    let scan = dir.path().join("scan.toml");
    std::fs::write(
        &scan,
        format!(
            "{}\n[[vips]]\naddress = \"8.8.8.8\"\nservers = [\"app-1\"]\nports = \"22\"\n",
            preflight_tests::complete_plan("10.20.0.11")
        ),
    )
    .unwrap();
    let scan = scan.to_str().unwrap();
    for args in [
        vec!["plan", "check", scan],
        vec!["plan", "attach", "S1", scan],
    ] {
        let out = o.output("ian", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("field vips[0].address")
                && err
                    .contains("virtual IP 8.8.8.8 is outside the batch's networks (10.20.0.0/24)"),
            "{args:?}: {err}"
        );
    }
}

/// Issue 20 item 2, at sweep time: the agents connect only to addresses the destination's host
/// holds. A server planned at an address its host does not have (here 127.0.1.99 for the agent
/// at 127.0.0.59) gets no connections; its paths say "not probed" and the identity check names
/// the mismatch; a VIP in no held network is not probed either.
#[test]
fn sweeps_connect_only_to_addresses_the_hosts_hold() {
    let o = Office::new(&["--heartbeat-interval", "1s"]);
    o.setup();
    let base = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for (id, ip) in [("held-a", "127.0.0.58"), ("held-b", "127.0.0.59")] {
        let mut a = preflight_tests::cluster::Agent::enroll(&o.ctl, base.path(), id, ip).unwrap();
        a.start().unwrap();
        o.ctl.wait_online(id);
        agents.push(a);
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("p.toml");
    std::fs::write(
        &plan,
        "[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n\n[[servers]]\naddress = \"127.0.0.58\"\nhostname = \"held-a\"\nrole = \"a\"\napps = [{ name = \"x\", ports = \"28795\" }]\n\n[[servers]]\naddress = \"127.0.1.99\"\nhostname = \"held-b\"\nrole = \"b\"\napps = [{ name = \"y\", ports = \"28796\" }]\n\n[[paths]]\nfrom = { role = \"a\" }\nto = { role = \"b\" }\nports = \"28796\"\n\n[[vips]]\naddress = \"127.0.1.98\"\nservers = [\"held-b\"]\nports = \"28797\"\n",
    )
    .unwrap();
    let out = o.output(
        "ian",
        &[
            "sweep",
            "--batch",
            "H1",
            "--plan",
            plan.to_str().unwrap(),
            "--skip",
            "disk",
            "--output",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let findings = v["findings"].as_array().expect("findings");
    let find = |check: &str| {
        findings
            .iter()
            .find(|f| f["check"].as_str().is_some_and(|c| c.starts_with(check)))
            .unwrap_or_else(|| panic!("no {check} finding: {v}"))
    };
    let path = find("path:held-b");
    assert!(
        path["message"]
            .as_str()
            .unwrap()
            .contains("not probed: held-b does not hold its planned address 127.0.1.99"),
        "{path}"
    );
    assert_eq!(path["verdict"], "hard", "{path}");
    let vip = find("vip:127.0.1.98");
    assert!(
        vip["message"].as_str().unwrap().contains("not probed"),
        "{vip}"
    );
    drop(agents);
}
