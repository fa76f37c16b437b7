//! The CLI and agent as a person meets them: bad input gets one line naming the problem and a
//! non-zero exit, with nothing half-written; the demo runs as a non-root user.

use std::process::{Command, Output};

use preflight_tests::cluster::{bin, enroll_cmd, Controller};

/// Asserts a failed command printed exactly one line, on stderr, containing `needle`.
fn one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "expected {needle:?} in: {err}");
}

const PIN: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const TOKEN: &str = "pfj_0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn enroll_bad_input_is_one_clear_line_and_writes_nothing() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let s = state.to_str().unwrap();
    let unreachable = "https://127.0.0.1:1";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--controller",
                unreachable,
                "--token",
                TOKEN,
                "--ca-sha256",
                PIN,
            ],
            "cannot reach the controller at 127.0.0.1:1",
        ),
        (
            vec![
                "--controller",
                unreachable,
                "--token",
                "not a token!",
                "--ca-sha256",
                PIN,
            ],
            "--token is malformed",
        ),
        (
            vec![
                "--controller",
                "ctl.example:7443",
                "--token",
                TOKEN,
                "--ca-sha256",
                PIN,
            ],
            "must start with https://",
        ),
        (
            vec![
                "--controller",
                "https://ctl:99999",
                "--token",
                TOKEN,
                "--ca-sha256",
                PIN,
            ],
            "invalid port",
        ),
        (
            vec![
                "--controller",
                unreachable,
                "--token",
                TOKEN,
                "--ca-sha256",
                "abc",
            ],
            "--ca-sha256",
        ),
        (
            vec![
                "--controller",
                unreachable,
                "--token",
                TOKEN,
                "--ca-sha256",
                PIN,
                "--name",
                "Bad_Name",
            ],
            "--name",
        ),
    ];
    for (mut args, needle) in cases {
        args.extend(["--state-dir", s]);
        let o = enroll_cmd(&args).output().unwrap();
        one_line_error(&o, needle);
    }
    assert!(!state.join("agent.toml").exists());

    // A state directory that cannot be created (its parent is a file) fails before any contact.
    let file = base.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("state");
    let o = enroll_cmd(&[
        "--controller",
        unreachable,
        "--token",
        TOKEN,
        "--ca-sha256",
        PIN,
        "--state-dir",
        bad.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    one_line_error(&o, "is not writable");
}

#[test]
fn cli_needs_a_valid_token_and_says_how_to_get_one() {
    let ctl = Controller::start(&[]).unwrap();
    let o = ctl
        .cli()
        .env_remove("PREFLIGHT_TOKEN")
        .arg("agents")
        .output()
        .unwrap();
    one_line_error(&o, "no token");
    let o = ctl.cli_as("pfa_wrong").arg("agents").output().unwrap();
    one_line_error(&o, "unknown token");
    assert!(String::from_utf8_lossy(&o.stderr).contains("preflight serve --init"));
    let o = ctl
        .cli()
        .env("PREFLIGHT_CA_SHA256", PIN)
        .arg("agents")
        .output()
        .unwrap();
    one_line_error(&o, "CA pin mismatch");
    let o = ctl
        .cli()
        .args(["token", "create", "--ttl", "30d"])
        .output()
        .unwrap();
    one_line_error(&o, "out of range");
    let o = ctl.cli().args(["inventory", "nobody"]).output().unwrap();
    one_line_error(&o, "no agent \"nobody\"");
    let o = ctl
        .cli()
        .env("PREFLIGHT_CONTROLLER", "https://127.0.0.1:1")
        .arg("agents")
        .output()
        .unwrap();
    one_line_error(&o, "cannot reach the controller");
    assert_eq!(ctl.json(&["whoami"]).unwrap()["role"], "admin");
}

#[test]
fn serve_refuses_an_unusable_data_directory() {
    let base = tempfile::tempdir().unwrap();
    let o = Command::new(bin("preflight"))
        .args(["serve", "--data"])
        .arg(base.path().join("none"))
        .output()
        .unwrap();
    one_line_error(&o, "is not initialised");
    let file = base.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let o = Command::new(bin("preflight"))
        .args(["serve", "--init", "--data"])
        .arg(file.join("d"))
        .output()
        .unwrap();
    one_line_error(&o, "cannot use data directory");
}

fn lscpu_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn demo_runs_as_a_non_root_user_and_reports_this_host() {
    let mut cmd = if is_root() {
        // Drop to nobody, as a user without privileges would run it.
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin("preflight"));
        c
    } else {
        Command::new(bin("preflight"))
    };
    let o = cmd
        .args(["demo", "--output", "json"])
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    for (a, ip) in agents
        .iter()
        .zip(["127.0.0.11", "127.0.0.12", "127.0.0.13"])
    {
        assert_eq!(a["online"], true);
        assert!(a["listen_addr"].as_str().unwrap().starts_with(ip), "{a}");
    }
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    let lscpu = String::from_utf8(
        Command::new("lscpu")
            .env("LC_ALL", "C")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for id in ["demo-1", "demo-2", "demo-3"] {
        let inv = &v["inventory"][id];
        assert_eq!(inv["hostname"], host.trim());
        assert_eq!(
            inv["cpu"]["threads"].as_u64().unwrap().to_string(),
            lscpu_field(&lscpu, "CPU(s):")
        );
        assert_eq!(inv["cpu"]["model"], lscpu_field(&lscpu, "Model name:"));
    }
    // The readiness story: sweep 1 blocks on the held planned port (customer's to fix) and the
    // missing backup (project's), sweep 2 passes.
    let sweeps = v["sweeps"].as_array().unwrap();
    assert_eq!(sweeps[0]["hard"], 2, "{}", sweeps[0]);
    let hard: Vec<_> = sweeps[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "hard")
        .map(|f| {
            (
                f["server"].as_str().unwrap().to_string(),
                f["check"].as_str().unwrap().to_string(),
                f["party"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        hard.iter()
            .any(|(s, c, p)| s == "demo-2" && c.starts_with("port:28080") && p == "customer"),
        "{hard:?}"
    );
    assert!(
        hard.iter()
            .any(|(s, c, p)| s == "demo-3" && c.ends_with("portal.dump") && p == "project"),
        "{hard:?}"
    );
    assert_eq!(sweeps[1]["hard"], 0, "{}", sweeps[1]);
}

/// Issue 20 item 3, the agent's local `package verify`: a file that differs is reported as a
/// mismatch only (never its observed SHA-256 or size, in text or JSON), and a path under the
/// state directory is refused before anything is read.
#[test]
fn package_verify_tells_match_or_mismatch_only_and_refuses_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("identity.pem"), b"secret").unwrap();
    let changed = dir.path().join("app.tar.gz");
    std::fs::write(&changed, b"abd").unwrap();
    let short = dir.path().join("short.tar.gz");
    std::fs::write(&short, b"ab").unwrap();
    let sha = |b: &[u8]| preflight_pki::sha256_hex(b);
    let plan = |files: &[(&std::path::Path, u64, String)]| {
        let mut t = String::from(
            "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"h1\"\nrole = \"app\"\n",
        );
        for (p, size, sha) in files {
            t.push_str(&format!(
                "\n[[packages]]\npath = \"{}\"\nsize = {size}\nsha256 = \"{sha}\"\nkind = \"app\"\n",
                p.display()
            ));
        }
        let f = dir.path().join("plan.toml");
        std::fs::write(&f, t).unwrap();
        f
    };
    let run = |plan: &std::path::Path, json: bool| {
        let mut c = Command::new(bin("preflight-agent"));
        c.args(["package", "verify", "--plan"])
            .arg(plan)
            .arg("--state-dir")
            .arg(&state);
        if json {
            c.args(["--output", "json"]);
        }
        c.output().unwrap()
    };
    let p = plan(&[(&changed, 3, sha(b"abc")), (&short, 3, sha(b"abc"))]);
    for json in [false, true] {
        let o = run(&p, json);
        assert!(!o.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!all.contains(&sha(b"abd")), "observed hash shown: {all}");
        assert!(
            !all.contains("2 bytes") && !all.contains("\"actual"),
            "{all}"
        );
        if json {
            assert!(all.contains("\"status\": \"wrong_hash\""), "{all}");
            assert!(all.contains("\"larger\": false"), "{all}");
        } else {
            assert!(all.contains("does not match the plan"), "{all}");
            assert!(all.contains("smaller than planned"), "{all}");
        }
    }
    let p = plan(&[(&state.join("identity.pem"), 6, sha(b"secret"))]);
    let o = run(&p, false);
    one_line_error(&o, "state directory");
}
