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
    assert_eq!(v["hard"], 2, "{v}");
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
}
