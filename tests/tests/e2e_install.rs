//! The one-line agent install, end to end: the line `preflight token create --install-command`
//! prints is run as printed (minus `sudo`, plus `--root PREFIX`) against a real controller on
//! loopback; curl fetches install.sh and the agent binary with the controller's public key
//! pinned, the agent enrolls and answers; a re-run changes nothing; `--uninstall` leaves the
//! prefix as it was; a wrong pin, a bad token or an unreachable controller stop with one line
//! and write nothing. Also: shellcheck on every script in deploy/.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use preflight_tests::cluster::{bin, Controller, Proc};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every file and directory under `root`: relative path → (mode, size, mtime in ns). Equal
/// snapshots mean nothing was added, removed, or rewritten.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, u64, i128)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, u64, i128)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mtime = if m.is_dir() {
                0 // a directory's mtime changes with temporary files inside; its entries count
            } else {
                i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
            };
            out.insert(rel, (m.mode(), m.len(), mtime));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs a shell line with bash and pipefail, so a failing curl fails the pipeline.
fn sh(line: &str) -> Output {
    Command::new("bash")
        .args(["-o", "pipefail", "-c", line])
        .stdin(Stdio::null())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The last non-empty stderr line, asserting it is the script's one `error:` line.
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure: {}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line: {}", text(o));
    assert!(lines[0].starts_with("error: "), "{}", text(o));
    lines[0].to_string()
}

/// The printed install line, made runnable here: no sudo, everything under `prefix`.
fn runnable(line: &str, prefix: &Path, extra: &str) -> String {
    assert!(line.contains("| sudo sh -s -- "), "{line}");
    format!(
        "{} --root {} {extra}",
        line.replace("| sudo sh -s -- ", "| sh -s -- "),
        prefix.display()
    )
}

fn install_line(ctl: &Controller) -> String {
    let v = ctl
        .json(&["token", "create", "--ttl", "10m", "--install-command"])
        .unwrap();
    v["install_command"].as_str().unwrap().to_string()
}

/// The join token in a printed install line (given to the script on its standard input).
fn token_of(line: &str) -> &str {
    let rest = line
        .split("PREFLIGHT_JOIN_TOKEN=")
        .nth(1)
        .unwrap_or_else(|| panic!("no token in {line}"));
    rest.split(';').next().unwrap().trim()
}

/// A pin of the right shape that no key has.
const WRONG_PIN: &str = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn value_of<'a>(line: &'a str, flag: &str) -> &'a str {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == flag {
            return it.next().unwrap();
        }
    }
    panic!("{flag} not in {line}");
}

#[test]
fn one_line_install_enrolls_reruns_idempotently_and_uninstalls_cleanly() {
    assert!(have("curl"), "curl is needed (scripts/test installs it)");
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let line = install_line(&ctl);
    let pin = value_of(&line, "--pinnedpubkey");
    assert!(pin.starts_with("sha256//") && pin.len() == 52, "{line}");
    assert_eq!(value_of(&line, "--pin"), pin);
    assert_eq!(value_of(&line, "--ca-sha256"), ctl.pin);
    assert!(line.contains(" -k "), "{line}");

    // The served installer is the one in deploy/.
    let o = sh(&format!(
        "curl -fsS -k --pinnedpubkey {pin} {}/install.sh",
        ctl.url
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        std::fs::read_to_string(repo().join("deploy/install.sh")).unwrap()
    );

    let base = tempfile::tempdir().unwrap();
    let prefix = base.path().join("root");
    std::fs::create_dir(&prefix).unwrap();
    let before = snapshot(&prefix);

    let o = sh(&runnable(
        &line,
        &prefix,
        "--name inst-01 --listen 127.0.0.1:0",
    ));
    assert!(o.status.success(), "install failed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("enrolled as inst-01"), "{out}");
    assert!(
        out.contains("would run: systemctl enable --now preflight-agent.service"),
        "{out}"
    );

    // What it wrote.
    let agent = prefix.join("usr/local/bin/preflight-agent");
    assert_eq!(
        std::fs::read(&agent).unwrap(),
        std::fs::read(bin("preflight-agent")).unwrap(),
        "the installed binary is the one the controller serves"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/systemd/system/preflight-agent.service")).unwrap(),
        std::fs::read_to_string(repo().join("deploy/systemd/preflight-agent.service")).unwrap(),
        "install.sh writes the unit in deploy/systemd/"
    );
    let state = prefix.join("var/lib/preflight-agent");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(state.join("agent.toml").exists());

    // The agent answers from the installed state.
    let agent_proc = Proc(
        Command::new(&agent)
            .args(["run", "--state-dir"])
            .arg(&state)
            .env("PREFLIGHT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    ctl.wait_online("inst-01");
    let inv = ctl.json(&["inventory", "inst-01"]).unwrap();
    assert!(inv.is_object(), "{inv}");
    let agents = ctl.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["outdated"], false, "{agents:?}");

    // Re-running the same line (its token is spent) keeps the enrollment and touches nothing.
    let installed = snapshot(&prefix);
    let o = sh(&runnable(
        &line,
        &prefix,
        "--name inst-01 --listen 127.0.0.1:0",
    ));
    assert!(o.status.success(), "re-run failed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("already enrolled as inst-01, kept"), "{out}");
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(snapshot(&prefix), installed, "a re-run changed files");
    ctl.wait_online("inst-01");

    // Uninstall leaves the prefix as it was before.
    drop(agent_proc);
    let o = Command::new("sh")
        .arg(repo().join("deploy/install.sh"))
        .args(["--uninstall", "--root"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(o.status.success(), "uninstall failed: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("removed:"));
    assert_eq!(snapshot(&prefix), before, "uninstall left something behind");
    // And a second uninstall says there is nothing to do.
    let o = Command::new("sh")
        .arg(repo().join("deploy/install.sh"))
        .args(["--uninstall", "--root"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to remove"));
}

#[test]
fn wrong_pin_bad_token_or_unreachable_controller_stop_with_one_line_and_write_nothing() {
    assert!(have("curl"), "curl is needed (scripts/test installs it)");
    let ctl = Controller::start(&[]).unwrap();
    let line = install_line(&ctl);
    let pin = value_of(&line, "--pinnedpubkey").to_string();
    let token = token_of(&line).to_string();
    let base = tempfile::tempdir().unwrap();
    let prefix = base.path().join("root");
    std::fs::create_dir(&prefix).unwrap();
    let script = repo().join("deploy/install.sh");
    let run = |args: &[&str]| {
        Command::new("sh")
            .arg(&script)
            .args(args)
            .arg("--root")
            .arg(&prefix)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // The one-liner with a wrong pin: curl refuses the controller (exit 90), no script runs.
    let o = sh(&runnable(&line.replace(&pin, WRONG_PIN), &prefix, ""));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(90)"),
        "curl should report a pin mismatch: {}",
        text(&o)
    );
    assert!(snapshot(&prefix).is_empty());

    // The script given a wrong pin: one line, nothing written.
    let ctl_args = ["--controller", &ctl.url, "--ca-sha256", &ctl.pin];
    let mut a = ctl_args.to_vec();
    a.extend(["--token", &token, "--pin", WRONG_PIN]);
    let e = error_line(&run(&a));
    assert!(e.contains("pin mismatch"), "{e}");
    assert!(snapshot(&prefix).is_empty(), "a wrong pin wrote files");

    // A bad token: refused by the controller, and the half-made install is taken back.
    let mut a = ctl_args.to_vec();
    let bad = format!("pfj_{}", "0".repeat(64));
    a.extend(["--token", &bad, "--pin", &pin]);
    let e = error_line(&run(&a));
    assert!(
        e.contains("enrollment failed, nothing left installed"),
        "{e}"
    );
    assert!(snapshot(&prefix).is_empty(), "a bad token left files");

    // An unreachable controller.
    let e = error_line(&run(&[
        "--controller",
        "https://127.0.0.1:1",
        "--ca-sha256",
        &ctl.pin,
        "--token",
        &token,
        "--pin",
        &pin,
    ]));
    assert!(e.contains("cannot reach the controller"), "{e}");
    assert!(snapshot(&prefix).is_empty());

    // Missing arguments are named.
    let e = error_line(&run(&["--controller", &ctl.url, "--pin", &pin]));
    assert!(e.contains("--token is missing"), "{e}");

    // The token was never spent: the same line still works.
    let o = sh(&runnable(
        &line,
        &prefix,
        "--name inst-02 --listen 127.0.0.1:0",
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("enrolled as inst-02"));
}

#[test]
fn the_join_token_is_never_on_a_command_line() {
    assert!(have("curl"), "curl is needed (scripts/test installs it)");
    let ctl = Controller::start(&[]).unwrap();
    let line = install_line(&ctl);
    let token = token_of(&line).to_string();
    assert!(token.starts_with("pfj_"), "{line}");
    // Neither sh nor anything it starts gets the token as an argument.
    assert!(!line.contains("--token"), "{line}");
    let base = tempfile::tempdir().unwrap();
    let prefix = base.path().join("root");
    std::fs::create_dir(&prefix).unwrap();
    // A stand-in agent that records how enroll was called, then fails.
    let rec = base.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let fake = base.path().join("fake-agent");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n--version) echo preflight-agent 0.0.0-fake ;;\n\
enroll)\n  printf '%s\\n' \"$@\" >{r}/args\n  while [ $# -gt 0 ]; do\n    \
if [ \"$1\" = --token-file ]; then cat \"$2\" >{r}/token; stat -c %a \"$2\" >{r}/mode; fi\n    \
shift\n  done\n  echo 'error: fake agent' >&2; exit 1 ;;\nesac\n",
            r = rec.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = sh(&runnable(
        &line,
        &prefix,
        &format!("--name fk-1 --offline {}", fake.display()),
    ));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(error_line(&o).contains("enrollment failed"), "{}", text(&o));
    let args = std::fs::read_to_string(rec.join("args")).unwrap();
    assert!(!args.contains(&token), "token on the command line: {args}");
    assert!(args.lines().any(|l| l == "--token-file"), "{args}");
    assert_eq!(
        std::fs::read_to_string(rec.join("token")).unwrap().trim(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(rec.join("mode")).unwrap().trim(),
        "600"
    );
    assert!(snapshot(&prefix).is_empty(), "a failed install left files");
}

#[test]
fn offline_install_from_a_copied_binary_checks_its_sha256() {
    let ctl = Controller::start(&[]).unwrap();
    let token = ctl.join_token("10m").unwrap();
    let base = tempfile::tempdir().unwrap();
    let prefix = base.path().join("root");
    std::fs::create_dir(&prefix).unwrap();
    let script = repo().join("deploy/install.sh");
    let agent = bin("preflight-agent");
    let run = |sha: &str| {
        Command::new("sh")
            .arg(&script)
            .args(["--controller", &ctl.url, "--ca-sha256", &ctl.pin])
            .args(["--token", &token, "--name", "air-01", "--offline"])
            .arg(&agent)
            .args(["--sha256", sha, "--root"])
            .arg(&prefix)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let e = error_line(&run(&"0".repeat(64)));
    assert!(e.contains("nothing was written"), "{e}");
    assert!(snapshot(&prefix).is_empty());
    let o = Command::new("sha256sum").arg(&agent).output().unwrap();
    let sha = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let o = run(&sha);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("SHA-256 verified") && out.contains("enrolled as air-01"),
        "{out}"
    );
}

/// Whether shellcheck is here; as non-root without it, prints the SKIP line; as root (the
/// README test command installs it) its absence is a failure.
fn shellcheck_available() -> bool {
    if have("shellcheck") {
        return true;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: shellcheck is not installed (scripts/test installs it when run as root)");
        return false;
    }
    panic!(
        "shellcheck is not installed: run ./scripts/test as root, or apt-get install shellcheck"
    );
}

#[test]
fn shellcheck_passes_on_every_script_in_deploy() {
    if !shellcheck_available() {
        return;
    }
    let mut scripts = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "sh")
                || std::fs::read(&p).unwrap_or_default().starts_with(b"#!")
            {
                scripts.push(p);
            }
        }
    }
    assert!(
        scripts.iter().any(|p| p.ends_with("deploy/install.sh")),
        "{scripts:?}"
    );
    let o = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .args(&scripts)
        .output()
        .unwrap();
    assert!(o.status.success(), "shellcheck: {}", text(&o));
}

/// The bash scripts people run (benchmarks, fuzzing, the test command, CI) pass shellcheck too.
#[test]
fn shellcheck_passes_on_the_bash_scripts() {
    if !shellcheck_available() {
        return;
    }
    let mut scripts = vec![
        repo().join("scripts/test"),
        repo().join("scripts/fuzz"),
        repo().join(".ci/run"),
        repo().join("tests/fixtures/make-datadir.sh"),
    ];
    for e in std::fs::read_dir(repo().join("bench")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "sh") {
            scripts.push(p);
        }
    }
    assert!(scripts.len() > 5, "{scripts:?}");
    let o = Command::new("shellcheck")
        .args(["--shell=bash", "--severity=style"])
        .args(&scripts)
        .output()
        .unwrap();
    assert!(o.status.success(), "shellcheck: {}", text(&o));
}

#[test]
fn not_root_and_no_systemd_are_one_line_errors() {
    let script = repo().join("deploy/install.sh");
    let args = [
        "--controller",
        "https://127.0.0.1:1",
        "--token",
        "pfj_x",
        "--ca-sha256",
        &"0".repeat(64),
        "--pin",
        WRONG_PIN,
    ];
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let as_user = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    let mut c = as_user;
    let o = c.arg(&script).args(args).output().unwrap();
    let e = error_line(&o);
    assert!(e.contains("run as root"), "{e}");
    if !root {
        eprintln!("SKIP: the no-systemd error needs root to reach the systemd check");
        return;
    }
    if Path::new("/run/systemd/system").exists() {
        eprintln!("SKIP: systemd runs on this host, so the no-systemd error cannot be shown");
        return;
    }
    let o = Command::new("sh").arg(&script).args(args).output().unwrap();
    let e = error_line(&o);
    assert!(e.contains("systemd is not running"), "{e}");
}
