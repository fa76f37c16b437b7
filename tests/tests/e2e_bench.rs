//! Benchmarks through the real controller and a real agent on loopback: `preflight bench AGENT
//! disk|cpu|memory`. Disk runs go to a directory under the target directory (a real filesystem,
//! checked with statfs, so O_DIRECT is measured rather than tmpfs), and every test checks that
//! no test file is left behind. The agent unlinks its test file right after creating it, so
//! "left behind" means two things here: a name in the directory, and a descriptor the agent
//! still holds on the deleted file (its blocks stay allocated until that closes), read from
//! /proc/PID/fd.
//!
//! Disk benchmarks take a host-wide lock, so the tests that run one hold `DISK` to keep them
//! from refusing each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use preflight_tests::cluster::{bin_dir, eventually, Agent, Controller, Proc};

static DISK: Mutex<()> = Mutex::new(());

fn disk_lock() -> std::sync::MutexGuard<'static, ()> {
    DISK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A controller and one online agent listening on `ip`.
fn cluster(id: &str, ip: &str) -> (Controller, Agent, tempfile::TempDir) {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).expect("controller starts");
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), id, ip).expect("agent enrolls");
    a.start().expect("agent starts");
    ctl.wait_online(id);
    (ctl, a, base)
}

/// An empty directory on the target directory's filesystem, refused when that is tmpfs.
fn bench_dir() -> tempfile::TempDir {
    let parent = bin_dir().join("e2e-bench");
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::tempdir_in(&parent).unwrap();
    let c = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed statfs the call fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs {}", dir.path().display());
    assert_ne!(
        st.f_type,
        libc::TMPFS_MAGIC,
        "the target directory is on tmpfs: O_DIRECT cannot be measured there"
    );
    dir
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn disk_args<'a>(agent: &'a str, dir: &'a str, size: &'a str, time: &'a str) -> Vec<&'a str> {
    vec![
        "bench", agent, "disk", dir, "--size", size, "--time", time, "--output", "json",
    ]
}

fn agent_pid(a: &Agent) -> u32 {
    a.proc.as_ref().expect("agent started").0.id()
}

/// Test files of `dir` the agent process holds open (deleted or not).
fn open_test_files(pid: u32, dir: &Path) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let prefix = dir.join(".preflight-bench-");
    let prefix = prefix.to_str().unwrap();
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// Nothing of a test file remains: no name in `dir`, no descriptor in the agent.
fn assert_nothing_left(a: &Agent, dir: &Path) {
    let pid = agent_pid(a);
    eventually(
        Duration::from_secs(10),
        "the test file to be released",
        || (entries(dir).is_empty() && open_test_files(pid, dir).is_empty()).then_some(()),
    );
}

/// Starts a long disk benchmark in the background and waits until the agent holds its test
/// file open.
fn start_long_disk_run(ctl: &Controller, a: &Agent, dir: &Path) -> Proc {
    let agent = a.id.as_str();
    let child = ctl
        .cli()
        .args(disk_args(agent, dir.to_str().unwrap(), "64m", "120s"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let pid = agent_pid(a);
    eventually(
        Duration::from_secs(30),
        "the agent to open its test file",
        || (!open_test_files(pid, dir).is_empty()).then_some(()),
    );
    proc
}

/// Runs the CLI and returns (success, stderr).
fn failing(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "expected a refusal, got success: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    err
}

#[test]
fn disk_run_through_the_controller_measures_and_leaves_no_file() {
    let _g = disk_lock();
    let (ctl, a, _base) = cluster("bench-d1", "127.0.0.41");
    let dir = bench_dir();
    let v = ctl
        .json(&[
            "bench",
            "bench-d1",
            "disk",
            dir.path().to_str().unwrap(),
            "--size",
            "64m",
            "--time",
            "2s",
        ])
        .expect("disk benchmark runs");
    assert!(v["iops"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["read"]["iops"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["read"]["latency"]["p99_us"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["mib_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["io_mode"], "direct", "{v}");
    assert_eq!(v["buffered"], false, "{v}");
    assert_eq!(v["params"]["size_bytes"], 64u64 << 20, "{v}");
    assert_eq!(v["params"]["rw"], "randread", "{v}");
    assert_eq!(v["params"]["time_s"], 2.0, "{v}");
    assert_eq!(v["params"]["direct"], true, "{v}");
    assert_eq!(
        v["params"]["directory"],
        dir.path().to_str().unwrap(),
        "{v}"
    );
    assert!(
        entries(dir.path()).is_empty(),
        "files left behind: {:?}",
        entries(dir.path())
    );
    assert_nothing_left(&a, dir.path());

    // The human summary says what it measured.
    let text = ctl
        .run(&[
            "bench",
            "bench-d1",
            "disk",
            dir.path().to_str().unwrap(),
            "--size",
            "64m",
            "--time",
            "1s",
            "--rw",
            "randwrite",
        ])
        .expect("text run");
    assert!(
        text.contains("randwrite") && text.contains("O_DIRECT"),
        "{text}"
    );
    assert!(text.contains("write") && text.contains("IOPS"), "{text}");
    assert_nothing_left(&a, dir.path());
}

#[test]
fn cancelling_the_cli_midway_removes_the_test_file_and_frees_the_disk() {
    let _g = disk_lock();
    let (ctl, a, _base) = cluster("bench-d2", "127.0.0.42");
    let dir = bench_dir();
    let started = std::time::Instant::now();
    let mut run = start_long_disk_run(&ctl, &a, dir.path());
    // The CLI dies without a word to anyone: its connection drops, the controller drops the
    // call to the agent, the agent cancels the run.
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    assert_nothing_left(&a, dir.path());
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the 120 s run was not cut short"
    );
    // The lock went with the run: a new benchmark starts at once instead of being refused.
    let v = ctl
        .json(&disk_args("bench-d2", dir.path().to_str().unwrap(), "64m", "1s")[..8])
        .expect("a run after the cancelled one");
    assert!(v["iops"].as_f64().unwrap() > 0.0, "{v}");
    assert_nothing_left(&a, dir.path());
}

#[test]
fn a_second_disk_benchmark_on_the_same_host_is_refused_clearly() {
    let _g = disk_lock();
    let (ctl, a, _base) = cluster("bench-d3", "127.0.0.43");
    let dir = bench_dir();
    let other = bench_dir();
    let mut first = start_long_disk_run(&ctl, &a, dir.path());
    let err = failing(ctl.cli().args(disk_args(
        "bench-d3",
        other.path().to_str().unwrap(),
        "64m",
        "2s",
    )));
    assert!(
        err.contains("busy: agent bench-d3: another disk benchmark is running on this host"),
        "{err}"
    );
    assert!(entries(other.path()).is_empty(), "the refused run wrote");
    assert!(open_test_files(agent_pid(&a), other.path()).is_empty());
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert_nothing_left(&a, dir.path());
}

#[test]
fn cpu_and_memory_runs_give_their_figures() {
    let (ctl, _a, _base) = cluster("bench-c1", "127.0.0.44");
    let v = ctl
        .json(&["bench", "bench-c1", "cpu", "--time", "1s"])
        .expect("cpu benchmark runs");
    assert!(v["events_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["events"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["params"]["cpu_max_prime"], 20_000, "{v}");
    assert_eq!(v["params"]["threads"], 1, "{v}");
    assert!(v["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{v}");

    let v = ctl
        .json(&[
            "bench",
            "bench-c1",
            "memory",
            "--memory-block-size",
            "64m",
            "--memory-oper",
            "read",
            "--time",
            "1s",
        ])
        .expect("memory benchmark runs");
    assert!(v["mib_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["params"]["oper"], "read", "{v}");
    assert_eq!(v["params"]["block_size_bytes"], 64u64 << 20, "{v}");

    let text = ctl
        .run(&["bench", "bench-c1", "cpu", "--time", "500ms"])
        .expect("cpu text");
    assert!(text.contains("events per second"), "{text}");
}

#[test]
fn bad_options_are_invalid_argument_naming_the_field() {
    let (ctl, _a, _base) = cluster("bench-v1", "127.0.0.45");
    let dir = bench_dir();
    let d = dir.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["disk", d, "--size", "65g"],
            "invalid size \"69793218560\": is over the cap of 68719476736 bytes (64.0 GiB)",
        ),
        (
            vec!["disk", d, "--time", "601"],
            "invalid time \"601 s\": is over the cap of 600 s",
        ),
        (
            vec!["disk", "relative/dir"],
            "invalid directory \"relative/dir\": must be an absolute path",
        ),
        (vec!["disk", d, "--iodepth", "100000"], "invalid iodepth"),
        (vec!["disk", d, "--bs", "1g"], "invalid bs"),
        (vec!["cpu", "--threads", "100000"], "invalid threads"),
        (vec!["cpu", "--time", "11m"], "invalid time"),
    ];
    for (args, needle) in cases {
        let err = failing(ctl.cli().args(["bench", "bench-v1"]).args(&args));
        assert!(
            err.contains(&format!("invalid argument: agent bench-v1: {needle}")),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    // Words outside the closed sets never reach the agent: the command line lists the choices
    // (the agent's own refusal of an unknown value is in e2e_bad_input).
    for (args, needle) in [
        (
            vec!["disk", d, "--rw", "sideways"],
            "[possible values: randread, randwrite, randrw, read, write]",
        ),
        (
            vec!["memory", "--memory-oper", "scribble"],
            "[possible values: read, write, copy]",
        ),
    ] {
        let o = ctl
            .cli()
            .args(["bench", "bench-v1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("error: invalid value") && err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    assert!(entries(dir.path()).is_empty());
}
