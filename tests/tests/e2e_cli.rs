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

// ---- Smaller CLI items (issue 13, item 21) ----

/// `serve --init --listen 127.0.0.1:0 --output json` prints one JSON document with the port
/// it really listens on, and its log on a pipe has no ANSI escapes.
#[test]
fn serve_init_prints_json_with_the_real_port_and_plain_logs() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("preflight"))
        .args([
            "serve",
            "--init",
            "--listen",
            "127.0.0.1:0",
            "--output",
            "json",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env("PREFLIGHT_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let _kill = preflight_tests::cluster::Proc(child);
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((true, l));
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((false, l));
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (mut doc, mut listening, mut logs) = (String::new(), None::<String>, Vec::new());
    let mut doc_done = false;
    while !(doc_done && listening.is_some()) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (is_out, l) = rx
            .recv_timeout(left)
            .expect("serve printed its document and address");
        if is_out {
            doc.push_str(&l);
            doc.push('\n');
            doc_done = l == "}";
        } else {
            if let Some(rest) = l.strip_prefix("controller listening on ") {
                listening = rest.split_whitespace().next().map(str::to_string);
            }
            logs.push(l);
        }
    }
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let addr: std::net::SocketAddr = listening.unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(v["port"], addr.port(), "{v}");
    assert_eq!(v["listen"], addr.to_string(), "{v}");
    assert!(
        v["admin_token"].as_str().unwrap().starts_with("pfa_"),
        "{v}"
    );
    assert_eq!(v["ca_sha256"].as_str().map(str::len), Some(64), "{v}");
    assert!(
        logs.iter().all(|l| !l.contains('\u{1b}')),
        "no ANSI escapes in logs on a pipe: {logs:?}"
    );
}

/// `plan check`: an invalid plan exits 1, a usage error 2; a path end written as a string
/// is explained in the plan's own words, never with an internal type name.
#[test]
fn plan_check_exit_codes_and_errors_in_the_users_words() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plan.toml");
    std::fs::write(
        &p,
        "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"web-01\"\nrole = \"nginx\"\napps = [{ name = \"nginx\", ports = \"80\" }]\n\n[[paths]]\nfrom = \"nginx\"\nto = { role = \"nginx\" }\nports = \"80\"\n",
    )
    .unwrap();
    let o = Command::new(bin("preflight"))
        .args(["plan", "check"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "invalid plan: {err}");
    assert!(
        err.contains(r#"write { role = "nginx" } or { server = "web-01" }"#),
        "{err}"
    );
    assert!(!err.contains("RawEndpoint"), "{err}");
    let o = Command::new(bin("preflight"))
        .args(["plan", "check", "--no-such-flag"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "usage error: {o:?}");
}

/// Errors that named internal fields now name the flag or say what to do: `--approval ""`,
/// a readiness record for a batch without a plan; bad times name the flag and the format.
#[test]
fn workflow_errors_name_the_flag_and_the_fix() {
    let ctl = Controller::start(&["--dev-clock"]).unwrap();
    ctl.run(&["project", "add", "P1", "--name", "n", "--line", "l"])
        .unwrap();
    let pat = ctl
        .json(&["user", "add", "pat", "--role", "project"])
        .unwrap();
    let o = ctl
        .cli_as(pat["token"].as_str().unwrap())
        .args(["batch", "create", "B1", "--project", "P1", "--title", "t"])
        .output()
        .unwrap();
    preflight_tests::cluster::ok(&o, "batch create").unwrap();
    let o = ctl
        .cli()
        .args(["jump", "B1", "--position", "1", "--approval", " "])
        .output()
        .unwrap();
    one_line_error(&o, "--approval is empty");
    let o = ctl
        .cli()
        .args(["dev", "record", "readiness", "B1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("has no plan attached") && err.contains("preflight plan attach B1"),
        "{err}"
    );
    assert!(!err.contains("summary.plan_digest"), "{err}");
    for (bad, why) in [
        ("2026-02-31", "day"),
        ("2026-06-01T08:30Z", ""),
        ("２０２６-06-01", ""),
    ] {
        let o = ctl
            .cli()
            .args(["stats", "pauses", "--since", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
        assert!(
            err.contains("--since") && err.contains("2026-06-18T08:30:00Z") && err.contains(why),
            "{bad}: {err}"
        );
    }
}

/// `harden audit` exits 3 (as `sweep` with hard failures) when a check is non_compliant, and
/// names the checks; the fixture tree has some.
#[test]
fn harden_audit_exits_3_when_a_check_is_non_compliant() {
    use preflight_tests::cluster::Agent;
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/preflight-harden/tests/fixtures/debian12"
    );
    let cp = Command::new("cp")
        .arg("-a")
        .arg(fixture)
        .arg(&root)
        .status()
        .unwrap();
    assert!(cp.success());
    let mut a = Agent::enroll(&ctl, base.path(), "aud-1", "127.0.0.63").unwrap();
    a.start_with(&[std::ffi::OsStr::new("--harden-root"), root.as_os_str()])
        .unwrap();
    ctl.wait_online("aud-1");
    let o = ctl
        .cli()
        .args(["harden", "audit", "--agent", "aud-1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("non_compliant"),
        "the fixture has non-compliant checks: {out}"
    );
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("non_compliant: aud-1 "), "{err}");
    // The same with --output json: the whole document on stdout, then exit 3 (as `sweep`).
    let o = ctl
        .cli()
        .args(["harden", "audit", "--agent", "aud-1", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert!(v["results"][0]["checks"].is_array(), "{v}");
    assert_eq!(o.status.code(), Some(3));
}
