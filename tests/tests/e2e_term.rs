//! What both binaries write to a terminal or a pipe: strings from hosts cannot drive the
//! terminal (control characters are shown escaped, JSON stays exact), and a reader that goes
//! away early (`| head`) ends a command quietly, never with a panic.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use preflight_tests::cluster::{bin, Agent, Controller};

/// `\x1b]0;x\x07` (window title) and `\x1b[2J` (clear screen): what a local user could name
/// a process.
const EVIL: &str = "\u{1b}]0;x\u{7}\u{1b}[2J";
const SHOWN: &str = "\\x1b]0;x\\x07\\x1b[2J";

/// This test process renames itself (`/proc/self/comm`, as `prctl(PR_SET_NAME)` would) and
/// listens on a loopback port: `preflight-agent ports` shows the name escaped, its JSON exact.
/// (The only test in this file that looks at this process's name.)
#[test]
fn agent_ports_prints_a_hostile_process_name_escaped() {
    if !nix_is_root() {
        eprintln!("SKIP: reading other processes' sockets needs root");
        return;
    }
    let old = std::fs::read_to_string("/proc/self/comm").unwrap();
    std::fs::write("/proc/self/comm", EVIL).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.61:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let text = Command::new(bin("preflight-agent"))
        .args(["ports", "--tcp"])
        .output()
        .unwrap();
    let json = Command::new(bin("preflight-agent"))
        .args(["ports", "--tcp", "--output", "json"])
        .output()
        .unwrap();
    std::fs::write("/proc/self/comm", old.trim_end()).unwrap();
    assert!(text.status.success(), "{text:?}");
    let out = String::from_utf8(text.stdout).unwrap();
    let line = out
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(1) == Some(&"127.0.0.61") && w.get(2) == Some(&port.to_string().as_str())
        })
        .unwrap_or_else(|| panic!("port {port} listed:\n{out}"));
    assert!(line.contains(SHOWN), "escaped name in: {line:?}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "no raw control characters: {out:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let mine = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == port && s["address"] == "127.0.0.61")
        .expect("listed in JSON");
    assert_eq!(mine["process"], EVIL, "JSON keeps the exact name: {mine}");
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd` with its standard output a pipe whose reader is already closed, and checks it
/// ended without a panic (a panic aborts with 134 in release builds).
fn into_closed_pipe(mut cmd: Command, what: &str) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{what}: quiet end on a closed pipe, got: {err}"
    );
    assert_ne!(o.status.code(), Some(134), "{what}: aborted");
    assert_ne!(o.status.code(), Some(101), "{what}: panicked");
    assert!(
        o.status.success()
            || o.status.code() == Some(141)
            || o.status.signal() == Some(libc::SIGPIPE),
        "{what}: ends as a SIGPIPE would: {:?} {err}",
        o.status
    );
}

#[test]
fn commands_end_quietly_when_the_reader_goes_away() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "pipe-1", "127.0.0.62").unwrap();
    a.start().unwrap();
    ctl.wait_online("pipe-1");
    let cli = |args: &[&str]| {
        let mut c = ctl.cli();
        c.args(args);
        c
    };
    into_closed_pipe(cli(&["agents"]), "preflight agents");
    into_closed_pipe(
        cli(&["agents", "--output", "json"]),
        "preflight agents --output json",
    );
    into_closed_pipe(cli(&["inventory", "pipe-1"]), "preflight inventory");
    into_closed_pipe(cli(&["whoami"]), "preflight whoami");
    into_closed_pipe(cli(&["--help"]), "preflight --help");
    let plan = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/plan.toml");
    into_closed_pipe(cli(&["plan", "check", plan]), "preflight plan check");
    let agent = |args: &[&str]| {
        let mut c = Command::new(bin("preflight-agent"));
        c.args(args);
        c
    };
    into_closed_pipe(agent(&["ports"]), "preflight-agent ports");
    into_closed_pipe(agent(&["inventory"]), "preflight-agent inventory");
    into_closed_pipe(
        agent(&["inventory", "--output", "json"]),
        "preflight-agent inventory --output json",
    );
}
