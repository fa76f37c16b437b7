//! Readiness sweeps end to end: a plan with a missing database backup and a server without an
//! agent fails, names each problem and who must fix it; fixing them passes; the report renders;
//! a controller killed mid-sweep marks the run interrupted, with no partial record.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use preflight_tests::cluster::{eventually, Agent, Controller};

fn sha(data: &[u8]) -> String {
    preflight_pki::sha256_hex(data)
}

fn hostname() -> String {
    String::from_utf8(Command::new("hostname").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn plan(dir: &Path, servers: &[(&str, &str)], packages: &str) -> std::path::PathBuf {
    let mut t = String::from("[batch]\nproject = \"e2e\"\nbatch = \"b1\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n\n");
    for (addr, host) in servers {
        t.push_str(&format!(
            "[[servers]]\naddress = \"{addr}\"\nhostname = \"{host}\"\nrole = \"app\"\ndata_dirs = [\"{}\"]\n\n",
            dir.display()
        ));
    }
    t.push_str(packages);
    let p = dir.join("plan.toml");
    std::fs::write(&p, t).unwrap();
    p
}

fn sweep(ctl: &Controller, plan: &Path) -> (i32, serde_json::Value) {
    let o = ctl
        .cli()
        .args(["sweep", "--batch", "b1", "--output", "json", "--plan"])
        .arg(plan)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), v)
}

fn failures(v: &serde_json::Value) -> Vec<(String, String, String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] != "pass")
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("server"), s("check"), s("verdict"), s("party"))
        })
        .collect()
}

#[test]
fn sweep_names_problems_and_parties_then_passes_once_fixed() {
    let mut ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "sw-1", "127.0.0.41").unwrap();
    a.start().unwrap();
    ctl.wait_online("sw-1");

    let app = data.path().join("app.tar.gz");
    std::fs::write(&app, b"application bits").unwrap();
    let backup = data.path().join("db.dump");
    let backup_bytes = b"pg_dump custom format".to_vec();
    let packages = format!(
        "[[packages]]\npath = \"{}\"\nsize = 16\nsha256 = \"{}\"\nkind = \"app\"\n\n[[packages]]\npath = \"{}\"\nsize = {}\nsha256 = \"{}\"\nkind = \"db_backup\"\ndatabase = \"portal\"\non_exists = \"rename\"\non = {{ server = \"{}\" }}\n",
        app.display(), sha(b"application bits"), backup.display(), backup_bytes.len(), sha(&backup_bytes), hostname()
    );
    // 127.0.0.42 is planned but has no agent.
    let p = plan(
        data.path(),
        &[("127.0.0.41", &hostname()), ("127.0.0.42", "ghost-01")],
        &packages,
    );
    let (code, v) = sweep(&ctl, &p);
    assert_eq!(code, 3, "hard failures exit 3: {v}");
    let f = failures(&v);
    assert!(
        f.contains(&(
            hostname(),
            format!("package:{}", backup.display()),
            "hard".into(),
            "project".into()
        )),
        "{f:?}"
    );
    assert!(
        f.iter()
            .any(|x| x.0 == "ghost-01" && x.1 == "reachable" && x.2 == "hard"),
        "{f:?}"
    );
    // The backup and ghost-01's reachable; ghost-01's other planned checks could not run and
    // say so (hard too).
    let hard: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "hard")
        .collect();
    let not_run: Vec<_> = hard
        .iter()
        .filter(|f| f["message"] == "not checked: ghost-01 unreachable")
        .collect();
    assert!(
        not_run.iter().all(|f| f["server"] == "ghost-01")
            && not_run.iter().any(|f| f["check"] == "identity"),
        "{v}"
    );
    assert_eq!(hard.len(), 2 + not_run.len(), "{v}");
    let msg = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["check"].as_str().unwrap().starts_with("package:") && x["verdict"] == "hard")
        .unwrap();
    assert!(
        msg["message"].as_str().unwrap().contains("database backup")
            && msg["message_zh"].as_str().unwrap().contains("数据库备份")
    );

    // Fix both: copy the backup, drop the server that was planned wrongly.
    std::fs::write(&backup, &backup_bytes).unwrap();
    let p = plan(data.path(), &[("127.0.0.41", &hostname())], &packages);
    let (code, v) = sweep(&ctl, &p);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["hard"], 0, "{v}");
    assert!(v["passed"].as_u64().unwrap() >= 7, "{v}");

    let html = ctl
        .run(&["report", "--batch", "b1", "--format", "html"])
        .unwrap();
    // This machine's clock may be unsynchronised (a soft risk), never blocking.
    assert!(
        html.contains("<h1>Readiness report") && html.contains("0 blocking 阻塞"),
        "{html}"
    );
    assert!(!html.contains("class=\"cell hard\""), "{html}");
    let runs = ctl.json(&["sweeps", "--batch", "b1"]).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);

    // A controller killed mid-sweep: the run is marked interrupted at restart, not half-kept.
    let big = data.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    let slow = format!(
        "[[packages]]\npath = \"{}\"\nsize = {}\nsha256 = \"{}\"\nkind = \"app\"\n",
        big.display(),
        6u64 << 30,
        "0".repeat(64)
    );
    let p = plan(data.path(), &[("127.0.0.41", &hostname())], &slow);
    let mut child = ctl
        .cli()
        .args(["sweep", "--batch", "b2", "--output", "json", "--plan"])
        .arg(&p)
        .spawn()
        .unwrap();
    let running = eventually(Duration::from_secs(20), "a running sweep", || {
        let runs = ctl.json(&["sweeps", "--batch", "b2"]).ok()?;
        runs.as_array()?
            .iter()
            .find(|r| r["state"] == "running")
            .map(|r| r["run_id"].as_u64().unwrap())
    });
    ctl.restart(&["--heartbeat-interval", "1s"]).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let runs = ctl.json(&["sweeps", "--batch", "b2"]).unwrap();
    let r = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == running)
        .unwrap()
        .clone();
    assert_eq!(r["state"], "interrupted", "{r}");
    let rep = ctl
        .json(&["report", "--run", &running.to_string()])
        .unwrap();
    assert!(
        rep["findings"].as_array().unwrap().is_empty(),
        "no partial findings: {rep}"
    );
}

#[test]
fn bad_sweep_requests_are_refused_with_the_field() {
    let ctl = Controller::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[batch]\nproject = \"x\"\nbatch = \"b\"\n[[servers]]\naddress = \"10.0.0.300\"\nhostname = \"a\"\nrole = \"r\"\n").unwrap();
    let o = ctl
        .cli()
        .args(["sweep", "--batch", "b1", "--plan"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("invalid argument")
            && err.contains("servers[0].address"),
        "{err}"
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[batch]\nproject = \"x\"\nbatch = \"b\"\n[[servers]]\naddress = \"127.0.0.1\"\nhostname = \"a\"\nrole = \"r\"\n").unwrap();
    let o = ctl
        .cli()
        .args(["sweep", "--batch", "bad batch!", "--plan"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("batch \"bad batch!\""));
    let o = ctl
        .cli()
        .args(["sweep", "--batch", "b", "--concurrency", "100000", "--plan"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("concurrency"));
    // An unknown --skip name is refused, listing the checks that can be left out.
    let o = ctl
        .cli()
        .args(["sweep", "b", "--skip", "disks", "--plan"])
        .arg(&good)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for name in preflight_core::readiness::SKIPPABLE {
        assert!(err.contains(name), "{name} not listed: {err}");
    }
}

/// `preflight demo`, end to end: the first sweep names the held planned port (customer) and
/// the missing database backup (project) and pauses the batch; after the demo frees the port
/// and copies the backup the second sweep has no hard failure and the batch is past
/// `confirm_plan`.
#[test]
fn demo_story_fails_on_the_held_port_and_the_backup_then_advances() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("demo");
    let o = Command::new(preflight_tests::cluster::bin("preflight"))
        .args(["demo", "--output", "json", "--data"])
        .arg(&dir)
        .env(
            "PREFLIGHT_AGENT_BIN",
            preflight_tests::cluster::bin("preflight-agent"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed: {err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = &v["sweeps"][0];
    let second = &v["sweeps"][1];
    let f = failures(first);
    let hard: Vec<_> = f.iter().filter(|x| x.2 == "hard").collect();
    assert_eq!(hard.len(), 2, "exactly the two staged problems: {f:?}");
    assert!(
        hard.iter()
            .any(|x| x.0 == "demo-2" && x.1 == "port:28080/tcp" && x.3 == "customer"),
        "{f:?}"
    );
    assert!(
        hard.iter().any(|x| x.0 == "demo-3"
            && x.1.starts_with("package:")
            && x.1.ends_with("portal.dump")
            && x.3 == "project"),
        "{f:?}"
    );
    let port = first["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["check"] == "port:28080/tcp")
        .unwrap();
    assert!(
        port["message"]
            .as_str()
            .unwrap()
            .contains("already held by")
            && port["message"].as_str().unwrap().contains("127.0.0.12")
            && !port["fix_zh"].as_str().unwrap().is_empty(),
        "{port}"
    );
    // The held port is reported once: the path to it is not a second failure.
    let path = first["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["check"] == "path:demo-2:28080")
        .unwrap();
    assert_eq!(path["verdict"], "pass", "{path}");
    assert_eq!(v["paused_at"], "problem_handling", "{v}");
    assert_eq!(second["hard"], 0, "{second}");
    // Every check ran in the second sweep, with measured figures in the JSON.
    let checks: Vec<&str> = second["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["check"].as_str().unwrap())
        .collect();
    for want in [
        "port:28080/tcp",
        "path:demo-2:28080",
        "path:demo-3:28081",
        "bandwidth:demo-2",
        "identity",
        "clock",
    ] {
        assert!(checks.contains(&want), "{want} missing: {checks:?}");
    }
    let measured: Vec<_> = second["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["measured"].is_u64() && x["threshold"].is_u64())
        .collect();
    assert!(
        measured
            .iter()
            .any(|x| x["unit"] == "iops"
                && x["check"].as_str().unwrap().starts_with("disk_randread:")),
        "{measured:?}"
    );
    assert!(
        measured
            .iter()
            .any(|x| x["unit"] == "mbit_per_s" && x["measured"].as_u64().unwrap() > 0),
        "{measured:?}"
    );
    assert_eq!(v["stage"], "assign", "{v}");
}

/// An agent killed (SIGKILL) while a sweep with disk benchmarks runs: its server gets a hard
/// `reachable` result, the other servers complete, and the run finishes.
#[test]
fn agent_killed_mid_sweep_is_unreachable_while_the_others_complete() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut agents = Vec::new();
    for (id, ip) in [
        ("k-1", "127.0.0.61"),
        ("k-2", "127.0.0.62"),
        ("k-3", "127.0.0.63"),
    ] {
        let mut a = Agent::enroll(&ctl, base.path(), id, ip).unwrap();
        a.start().unwrap();
        agents.push(a);
    }
    for a in &agents {
        ctl.wait_online(&a.id);
    }
    let mut t = String::from("[batch]\nproject = \"e2e\"\nbatch = \"k\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\nmin_randread_iops = 1\nmin_randwrite_iops = 1\nmax_fdatasync_p99_us = 10000000\n\n");
    for (i, id) in ["k-1", "k-2", "k-3"].iter().enumerate() {
        t.push_str(&format!(
            "[[servers]]\naddress = \"127.0.0.6{}\"\nhostname = \"{id}\"\nrole = \"r{}\"\napps = [{{ name = \"svc\", ports = \"2870{}\" }}]\ndata_dirs = [\"{}\"]\n\n",
            i + 1,
            i + 1,
            i + 1,
            data.path().display()
        ));
    }
    t.push_str("[[paths]]\nfrom = { role = \"r1\" }\nto = { role = \"r3\" }\nports = \"28703\"\n");
    let p = data.path().join("plan.toml");
    std::fs::write(&p, t).unwrap();
    // Disk benchmarks of 3 s each, taken in turn on this one host: about 27 s of phase 1.
    let child = ctl
        .cli()
        .args([
            "sweep",
            "kill-b",
            "--output",
            "json",
            "--skip",
            "bandwidth",
            "--measure-ms",
            "3000",
            "--plan",
        ])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "a running sweep", || {
        let runs = ctl.json(&["sweeps", "--batch", "kill-b"]).ok()?;
        runs.as_array()?
            .iter()
            .find(|r| r["state"] == "running")
            .map(|_| ())
    });
    // Killed as soon as the sweep runs: phase 1 alone takes ~27 s, so k-2 dies mid-sweep
    // whichever of its calls is under way (no fixed wait needed).
    let killed = agents[1].proc.as_mut().unwrap();
    killed.0.kill().unwrap(); // SIGKILL
    let _ = killed.0.wait();
    let o = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(o.status.code(), Some(3), "{v}");
    assert_eq!(v["state"], "finished", "{v}");
    let find = |server: &str, check: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["server"] == server && f["check"].as_str().unwrap().starts_with(check))
            .cloned()
    };
    let r2 = find("k-2", "reachable").expect("k-2 reachable finding");
    assert_eq!(
        (r2["verdict"].as_str(), r2["party"].as_str()),
        (Some("hard"), Some("project")),
        "{v}"
    );
    // Only the killed agent blocks: its reachable, and its checks not run after it died.
    let hard: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "hard")
        .collect();
    assert!(
        hard.iter().all(|f| f["server"] == "k-2"
            && (f["check"] == "reachable" || f["message"] == "not checked: k-2 unreachable")),
        "only the killed agent blocks: {v}"
    );
    for s in ["k-1", "k-3"] {
        assert_eq!(find(s, "reachable").unwrap()["verdict"], "pass", "{v}");
        for c in [
            "disk_randread:",
            "disk_randwrite:",
            "disk_fdatasync:",
            "port:",
        ] {
            let f = find(s, c).unwrap_or_else(|| panic!("{s} {c} missing: {v}"));
            assert_eq!(f["verdict"], "pass", "{f}");
        }
    }
    assert_eq!(
        find("k-1", "path:k-3:28703").unwrap()["verdict"],
        "pass",
        "{v}"
    );
}

/// Bad plans through `plan attach`: each error names the file, the line and the field, the
/// command exits 2, and nothing is attached to the batch.
#[test]
fn bad_plans_are_refused_by_plan_attach_and_nothing_is_attached() {
    let ctl = Controller::start(&[]).unwrap();
    let token = |name: &str, role: &str| {
        ctl.json(&["user", "add", name, "--role", role]).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (pat, ian) = (token("pat", "project"), token("ian", "integrator"));
    let run = |tok: &str, args: &[&str]| {
        let o = ctl.cli_as(tok).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(
        &ctl.admin_token,
        &[
            "project", "add", "P1", "--name", "Tax", "--line", "gov", "--budget", "B-1",
        ],
    );
    run(
        &pat,
        &[
            "batch",
            "create",
            "BP",
            "--project",
            "P1",
            "--title",
            "bad plans",
        ],
    );
    for who in [&pat, &ian, &pat] {
        run(who, &["batch", "advance", "BP"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let head = "[batch]\nproject = \"P1\"\n\n[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"a-01\"\nrole = \"web\"\n\n";
    let cases: [(&str, String, &str, &str); 5] = [
        (
            "role.toml",
            format!("{head}[[paths]]\nfrom = {{ role = \"nginx\" }}\nto = {{ role = \"web\" }}\nports = \"80\"\n"),
            ":10:",
            "paths[0].from.role",
        ),
        (
            "dup.toml",
            format!("{head}[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"a-02\"\nrole = \"web\"\n"),
            ":10:",
            "servers[1].address",
        ),
        (
            "port.toml",
            "[batch]\nproject = \"P1\"\n\n[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"a-01\"\nrole = \"web\"\napps = [{ name = \"x\", ports = \"70000\" }]\n".to_string(),
            ":8:",
            "servers[0].apps[0].ports",
        ),
        (
            "servers.csv",
            "ip,hostname,role\n10.0.0.1,a-01,web\n10.0.0.2,a-02\n".to_string(),
            ":3:",
            "header has 3",
        ),
        (
            "hash.toml",
            format!("{head}[[packages]]\npath = \"/opt/a.tar.gz\"\nsize = 1\nsha256 = \"abc123\"\nkind = \"app\"\n"),
            ":12:",
            "packages[0].sha256",
        ),
    ];
    for (name, text, line, field) in &cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let o = ctl
            .cli_as(&ian)
            .args(["plan", "attach", "BP"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("{}{line}", p.display())) && err.contains(field),
            "{name}: want {line} and {field} in: {err}"
        );
        assert!(err.contains("nothing was attached"), "{name}: {err}");
        let b = ctl.json(&["batch", "show", "BP"]).unwrap();
        assert!(
            b["batch"]["plan"].is_null(),
            "{name}: a plan got attached: {b}"
        );
        assert_eq!(b["batch"]["stage"], "plan", "{b}");
    }
}

/// The identity check compares the plan with what the host reports, never with the agent's
/// enrollment name: an agent enrolled as `--name web-01` on a host with another name fails the
/// check for a plan saying `web-01`, naming both; the host's real name passes.
#[test]
fn identity_names_the_planned_and_the_reported_hostname() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let real = hostname();
    assert_ne!(real, "web-01", "this test needs a host not called web-01");
    let mut a = Agent::enroll(&ctl, base.path(), "web-01", "127.0.0.44").unwrap();
    a.start().unwrap();
    ctl.wait_online("web-01");
    let sweep_of = |host: &str| {
        let p = plan(data.path(), &[("127.0.0.44", host)], "");
        let o = ctl
            .cli()
            .args([
                "sweep", "b-id", "--skip", "disk", "--skip", "ports", "--output", "json", "--plan",
            ])
            .arg(&p)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        // Every numeric check carries its figure, threshold and unit in the JSON.
        for (check, unit) in [
            ("cores", "cores"),
            ("memory", "mib"),
            ("clock", "ms"),
            ("disk_free:", "gib"),
        ] {
            let f = v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["check"].as_str().unwrap().starts_with(check))
                .unwrap_or_else(|| panic!("{check} missing: {v}"));
            assert!(
                f["measured"].is_u64() && f["threshold"].is_u64() && f["unit"] == unit,
                "{f}"
            );
        }
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "identity")
            .cloned()
            .unwrap_or_else(|| panic!("no identity finding: {v}"))
    };
    let f = sweep_of("web-01");
    assert_eq!(
        (f["verdict"].as_str(), f["party"].as_str()),
        (Some("soft"), Some("integrator")),
        "{f}"
    );
    let m = f["message"].as_str().unwrap();
    assert!(
        m.contains("\"web-01\"") && m.contains(&format!("{real:?}")),
        "message must name the planned and the reported hostname: {m}"
    );
    let m = f["message_zh"].as_str().unwrap();
    assert!(
        m.contains("“web-01”") && m.contains(&format!("“{real}”")),
        "message_zh must name the planned and the reported hostname: {m}"
    );
    let f = sweep_of(&real);
    assert_eq!(f["verdict"], "pass", "{f}");
}

/// One agent of three is down: the report still lists every planned check (the same number as
/// when all answer), and those it could not run say `not checked: SERVER unreachable`, hard.
#[test]
fn checks_of_an_unreachable_agent_are_listed_not_checked() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut agents = Vec::new();
    for (id, ip) in [
        ("u-1", "127.0.0.71"),
        ("u-2", "127.0.0.72"),
        ("u-3", "127.0.0.73"),
    ] {
        let mut a = Agent::enroll(&ctl, base.path(), id, ip).unwrap();
        a.start().unwrap();
        agents.push(a);
    }
    for a in &agents {
        ctl.wait_online(&a.id);
    }
    let mut t = String::from("[batch]\nproject = \"e2e\"\nbatch = \"u\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\nmin_randread_iops = 1\nmin_randwrite_iops = 1\nmax_fdatasync_p99_us = 10000000\nmin_bandwidth_mbit = 1\n\n");
    for i in 1..=3 {
        t.push_str(&format!(
            "[[servers]]\naddress = \"127.0.0.7{i}\"\nhostname = \"u-{i}\"\nrole = \"r{i}\"\napps = [{{ name = \"svc\", ports = \"2871{i}\" }}]\ndata_dirs = [\"{}\"]\n\n",
            data.path().display()
        ));
    }
    // Paths into and out of u-2, and one that does not touch it; a bandwidth pair with it.
    t.push_str(
        "[[paths]]\nfrom = { role = \"r1\" }\nto = { role = \"r2\" }\nports = \"28712\"\n\n",
    );
    t.push_str(
        "[[paths]]\nfrom = { role = \"r2\" }\nto = { role = \"r3\" }\nports = \"28713\"\n\n",
    );
    t.push_str(
        "[[paths]]\nfrom = { role = \"r1\" }\nto = { role = \"r3\" }\nports = \"28713\"\n\n",
    );
    t.push_str("[[bandwidth]]\nfrom = \"u-1\"\nto = \"u-2\"\n");
    let p = data.path().join("plan.toml");
    std::fs::write(&p, t).unwrap();
    let sweep = || {
        let o = ctl
            .cli()
            .args([
                "sweep",
                "u-b",
                "--measure-ms",
                "200",
                "--output",
                "json",
                "--plan",
            ])
            .arg(&p)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        v
    };
    let checks = |v: &serde_json::Value| -> Vec<(String, String)> {
        let mut c: Vec<(String, String)> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["server"].as_str().unwrap().to_string(),
                    f["check"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        c.sort();
        c
    };
    let all_up = sweep();
    let planned = checks(&all_up);
    assert!(
        planned.contains(&("u-1".into(), "path:u-2:28712".into()))
            && planned.contains(&("u-2".into(), "path:u-3:28713".into()))
            && planned.contains(&("u-1".into(), "bandwidth:u-2".into())),
        "{all_up}"
    );

    let down = agents[1].proc.as_mut().unwrap();
    down.0.kill().unwrap();
    let _ = down.0.wait();
    let v = sweep();
    assert_eq!(v["state"], "finished", "{v}");
    assert_eq!(
        checks(&v),
        planned,
        "every planned check is in the report with an agent down"
    );
    let findings = v["findings"].as_array().unwrap();
    let not_checked: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["message"].as_str().unwrap().starts_with("not checked:"))
        .collect();
    for f in &not_checked {
        assert_eq!(f["message"], "not checked: u-2 unreachable", "{f}");
        assert_eq!(f["verdict"], "hard", "{f}");
    }
    let said = |server: &str, check: &str| {
        not_checked
            .iter()
            .any(|f| f["server"] == server && f["check"] == check)
    };
    for (server, check) in [
        ("u-1", "path:u-2:28712"),
        ("u-2", "path:u-3:28713"),
        ("u-1", "bandwidth:u-2"),
        ("u-2", "identity"),
        ("u-2", "cores"),
        ("u-2", "clock"),
        ("u-2", "port:28712/tcp"),
    ] {
        assert!(
            said(server, check),
            "{server} {check} not listed as not checked: {v}"
        );
    }
    let reach = findings
        .iter()
        .find(|f| f["server"] == "u-2" && f["check"] == "reachable")
        .unwrap();
    assert_eq!(reach["verdict"], "hard", "{reach}");
    // What does not involve u-2 ran.
    let path13 = findings
        .iter()
        .find(|f| f["server"] == "u-1" && f["check"] == "path:u-3:28713")
        .unwrap();
    assert_eq!(path13["verdict"], "pass", "{path13}");
    // Everything judged hard is u-2's: its reachable and what it could not run.
    let hard = findings.iter().filter(|f| f["verdict"] == "hard").count();
    assert_eq!(hard, not_checked.len() + 1, "{v}");
    assert_eq!(v["hard"].as_u64(), Some(hard as u64));
}

/// Lines of a child's stderr as they come, for a test to wait on.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// Ctrl-C on `preflight sweep` says the run goes on and how to attach to it or cancel it; a
/// second CLI attaches and gets the report; a second sweep of the batch is refused naming both;
/// `sweep cancel` ends a run `cancelled` (the agent's benchmark stops and removes its file),
/// nothing of it is recorded as the batch's readiness, and the batch can be swept again.
#[test]
fn a_running_sweep_can_be_attached_to_and_cancelled() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let token = |name: &str, role: &str| {
        ctl.json(&["user", "add", name, "--role", role]).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (pat, ian) = (token("pat", "project"), token("ian", "integrator"));
    let run_as = |tok: &str, args: &[&str]| {
        let o = ctl.cli_as(tok).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run_as(
        &ctl.admin_token,
        &[
            "project", "add", "P1", "--name", "Tax", "--line", "gov", "--budget", "B-1",
        ],
    );
    run_as(
        &pat,
        &[
            "batch",
            "create",
            "AC",
            "--project",
            "P1",
            "--title",
            "attach",
        ],
    );
    for who in [&pat, &ian, &pat] {
        run_as(who, &["batch", "advance", "AC"]);
    }
    let base = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bench_dir = data.path().join("bench");
    std::fs::create_dir(&bench_dir).unwrap();
    // A benchmark is refused on a directory others may write: keep it the owner's.
    std::fs::set_permissions(
        &bench_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "ac-1", "127.0.0.81").unwrap();
    a.start().unwrap();
    ctl.wait_online("ac-1");
    let p = data.path().join("plan.toml");
    std::fs::write(
        &p,
        format!(
            "[batch]\nproject = \"P1\"\nbatch = \"AC\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\nmin_randread_iops = 1\nmin_randwrite_iops = 1\nmax_fdatasync_p99_us = 10000000\n\n[[servers]]\naddress = \"127.0.0.81\"\nhostname = \"{}\"\nrole = \"app\"\ndata_dirs = [\"{}\"]\n",
            hostname(),
            bench_dir.display()
        ),
    )
    .unwrap();
    run_as(&ian, &["plan", "attach", "AC", p.to_str().unwrap()]);
    let readiness_run = || {
        let b = ctl.json(&["batch", "show", "AC"]).unwrap();
        b["batch"]["readiness"]["run_id"].as_str().map(String::from)
    };
    assert_eq!(readiness_run(), None);
    let start = |measure_ms: &str| {
        let mut child = ctl
            .cli()
            .args(["sweep", "AC", "--measure-ms", measure_ms])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stderr_lines(&mut child);
        // The CLI names the run as soon as the controller has started it.
        let first = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the CLI names the run");
        let run: u64 = first
            .strip_prefix("run ")
            .and_then(|r| r.split(':').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no run id in {first:?}"));
        (child, lines, run)
    };

    // Ctrl-C: the sweep goes on, and the CLI says how to follow or stop it.
    let (child, lines, run) = start("2000");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    // Every line, to the end of its stderr (the CLI has exited).
    let hint: Vec<String> = lines.iter().collect();
    let hint = hint.join("\n");
    assert_eq!(o.status.code(), Some(130), "{hint}");
    assert!(
        hint.contains("goes on")
            && hint.contains(&format!("preflight sweep --attach {run}"))
            && hint.contains(&format!("preflight sweep cancel {run}")),
        "{hint}"
    );
    // A second sweep of the batch is refused, offering both.
    let o = ctl.cli().args(["sweep", "AC"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains(&format!("--attach {run}"))
            && err.contains(&format!("sweep cancel {run}")),
        "{err}"
    );
    // A second CLI attaches and gets the report of the finished run.
    let o = ctl
        .cli()
        .args(["sweep", "--attach", &run.to_string(), "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(
        (v["run_id"].as_u64(), v["state"].as_str()),
        (Some(run), Some("finished")),
        "{v}"
    );
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"].as_str().unwrap().starts_with("disk_randread:")),
        "{v}"
    );
    let recorded = eventually(Duration::from_secs(10), "the run recorded", readiness_run);
    assert_eq!(recorded, run.to_string());

    // Cancel a long one (three 30 s disk benchmarks).
    let (child, _lines, long) = start("30000");
    // The sweep's disk benchmark runs on the agent: it holds its (unlinked) test file in the
    // data directory open. Per agent, unlike the host-wide benchmark lock other tests share.
    let agent_pid = a.proc.as_ref().unwrap().0.id();
    let bench_open = || {
        std::fs::read_dir(format!("/proc/{agent_pid}/fd"))
            .map(|fds| {
                fds.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .any(|t| {
                        t.starts_with(&bench_dir)
                            && t.to_string_lossy().contains(".preflight-bench-")
                    })
            })
            .unwrap_or(false)
    };
    // Disk benchmarks of other tests on this host may hold the host's lock a while first.
    eventually(
        Duration::from_secs(150),
        "the sweep's disk benchmark running",
        || bench_open().then_some(()),
    );
    let t0 = std::time::Instant::now();
    let c = ctl.json(&["sweep", "cancel", &long.to_string()]).unwrap();
    assert_eq!(
        (c["run_id"].as_u64(), c["state"].as_str()),
        (Some(long), Some("cancelled")),
        "{c}"
    );
    assert!(c["findings"].as_array().unwrap().is_empty(), "{c}");
    assert!(
        c["not_recorded"]
            .as_str()
            .unwrap()
            .contains("cancelled by admin"),
        "{c}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "cancel took {:?}",
        t0.elapsed()
    );
    // The sweeping CLI gets the cancelled report and fails.
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    // The agent stopped the sweep's benchmark (not 90 s later): its test file is closed.
    eventually(Duration::from_secs(20), "the benchmark stopped", || {
        (!bench_open()).then_some(())
    });
    let runs = ctl.json(&["sweeps", "--batch", "AC"]).unwrap();
    let st = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == long)
        .unwrap()["state"]
        .clone();
    assert_eq!(st, "cancelled");
    // Not recorded: the batch's readiness is still the earlier run.
    assert_eq!(readiness_run(), Some(run.to_string()));
    // Cancelling it again: it is not running.
    let o = ctl
        .cli()
        .args(["sweep", "cancel", &long.to_string()])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The next sweep of the batch is accepted.
    let o = ctl
        .cli()
        .args(["sweep", "AC", "--skip", "disk", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v["state"], "finished", "{v}");
}
