//! Human output end to end: the readiness report's first screen in English and Chinese with
//! times in the operator's zone (`--tz`, `PREFLIGHT_TZ`), the `harden` tables in Chinese, the
//! demo's story as it happens, and README's statements about JSON fields and documents checked
//! against the real thing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_tests::cluster::{bin, Agent, Controller};

fn hostname() -> String {
    String::from_utf8(Command::new("hostname").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stdout_of(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success() || o.status.code() == Some(3),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A controller, one agent on 127.0.0.151 and a finished quick sweep of batch `r1`.
fn swept() -> (Controller, Agent, tempfile::TempDir, tempfile::TempDir) {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "rp-1", "127.0.0.151").unwrap();
    a.start().unwrap();
    ctl.wait_online("rp-1");
    let plan = format!(
        "[batch]\nproject = \"portal\"\nbatch = \"r1\"\n\n[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 60000\n\n[[servers]]\naddress = \"127.0.0.151\"\nhostname = \"{}\"\nrole = \"app\"\ndata_dirs = [\"{}\"]\napps = [{{ name = \"app\", ports = \"28151\" }}]\n",
        hostname(),
        data.path().display()
    );
    let p = data.path().join("plan.toml");
    std::fs::write(&p, plan).unwrap();
    let o = ctl
        .cli()
        .args([
            "sweep", "r1", "--skip", "disk", "--output", "json", "--plan",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(3),
        "sweep: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (ctl, a, base, data)
}

#[test]
fn report_first_screen_in_chinese_and_the_operators_zone() {
    let (ctl, _a, _base, _data) = swept();
    // English, in UTC: project, batch, who ran it, why it does not count, then the rest.
    let en = stdout_of(ctl.cli().args(["report", "--batch", "r1"]).env_remove("TZ"));
    let first: Vec<&str> = en.lines().take(10).collect();
    assert_eq!(first[0], "Readiness report — batch r1", "{en}");
    let field = |name: &str| {
        first
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from the first screen:\n{en}"))
            .to_string()
    };
    assert!(field("project").ends_with(" portal"), "{en}");
    assert!(field("run by").ends_with("admin (admin)"), "{en}");
    assert!(
        field("time").contains(" UTC") && !field("time").contains("+08:00"),
        "{en}"
    );
    // No workflow batch r1: a free-standing check.
    assert!(
        field("readiness").contains("no: there is no workflow batch r1"),
        "{en}"
    );
    let at = |s: &str| en.find(s).unwrap_or_else(|| panic!("{s} missing:\n{en}"));
    assert!(at("readiness") < at("\nServers\n") && at("\nServers\n") < at("\nAll checks\n"));
    let servers = &en[at("\nServers\n")..at("\nAll checks\n")];
    assert!(
        servers.contains("127.0.0.151") && servers.contains("threads"),
        "{servers}"
    );
    // Pass rows name no party.
    let checks = &en[at("\nAll checks\n")..];
    for l in checks.lines().filter(|l| l.contains("  pass  ")) {
        assert!(
            !["customer", "project", "integrator"]
                .iter()
                .any(|p| l.contains(p)),
            "{l}"
        );
    }

    // Chinese, in Shanghai time, by flag and by PREFLIGHT_TZ.
    let zh = stdout_of(ctl.cli().args([
        "report",
        "--batch",
        "r1",
        "--lang",
        "zh",
        "--tz",
        "Asia/Shanghai",
    ]));
    assert!(zh.starts_with("就绪检查报告 — 批次 r1\n"), "{zh}");
    assert!(zh.contains("  执行人    admin（管理员）"), "{zh}");
    assert!(
        zh.contains("UTC (") && zh.contains("+08:00 Asia/Shanghai)"),
        "{zh}"
    );
    assert!(
        zh.contains("\n服务器\n") && zh.contains("\n全部检查项\n"),
        "{zh}"
    );
    assert!(zh.contains("通过") && !zh.contains(" pass "), "{zh}");
    let by_env = stdout_of(
        ctl.cli()
            .args(["report", "--batch", "r1", "--lang", "zh"])
            .env("PREFLIGHT_TZ", "Asia/Shanghai"),
    );
    assert_eq!(by_env, zh);
    // TZ as the last fallback.
    let by_tz = stdout_of(
        ctl.cli()
            .args(["sweeps", "--batch", "r1"])
            .env("TZ", "Asia/Shanghai"),
    );
    assert!(by_tz.contains("+08:00 Asia/Shanghai"), "{by_tz}");
    // JSON stays UTC milliseconds whatever the zone.
    let j1 = stdout_of(
        ctl.cli()
            .args(["report", "--batch", "r1", "--output", "json"]),
    );
    let j2 = stdout_of(ctl.cli().args([
        "report",
        "--batch",
        "r1",
        "--output",
        "json",
        "--tz",
        "Asia/Shanghai",
    ]));
    assert_eq!(j1, j2);
    let v: serde_json::Value = serde_json::from_str(&j1).unwrap();
    assert_eq!(v["started_by"], "admin");
    assert_eq!(v["project"], "portal");
    assert_eq!(v["recorded"], false);
    assert_eq!(v["servers"][0]["address"], "127.0.0.151");
    assert!(v["servers"][0]["memory_bytes"].as_u64().unwrap() > 0, "{v}");
    // HTML: the same first screen, in the zone.
    let h = stdout_of(ctl.cli().args([
        "report",
        "--batch",
        "r1",
        "--format",
        "html",
        "--tz",
        "Asia/Shanghai",
    ]));
    assert!(
        h.contains(
            "<th>run by 执行人</th><td>admin (admin)<br><span class=\"zh\">admin（管理员）</span></td>"
        ),
        "{h}"
    );
    assert!(h.contains("+08:00 Asia/Shanghai"));
    // An unknown zone is refused naming the value and the form.
    let o = ctl
        .cli()
        .args(["sweeps", "--tz", "Mars/Base"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Mars/Base") && err.contains("Asia/Shanghai"),
        "{err}"
    );

    // README: the fields it documents for `preflight report --output json` are in a real report.
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("JSON fields of `preflight report --output json`:"))
        .expect("README lists the report's JSON fields");
    let mut documented = 0;
    for part in line.split('`').skip(3).step_by(2) {
        let (obj, key) = match part.split_once('.') {
            Some(("findings[]", k)) => (&v["findings"][0], k),
            Some(("servers[]", k)) => (&v["servers"][0], k),
            Some((o, _)) => panic!("README names {part}: unknown object {o}"),
            None => (&v, part),
        };
        assert!(
            obj.as_object().is_some_and(|m| m.contains_key(key)),
            "README documents `{part}` but the report has no such field: {v}"
        );
        documented += 1;
    }
    assert!(documented >= 20, "{line}");
}

#[test]
fn harden_status_in_chinese_aligns_by_display_width() {
    let ctl = Controller::start(&[]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "rp-2", "127.0.0.152").unwrap();
    a.start().unwrap();
    ctl.wait_online("rp-2");
    let zh = stdout_of(
        ctl.cli()
            .args(["harden", "status", "--agent", "rp-2", "--lang", "zh"]),
    );
    let lines: Vec<&str> = zh.lines().collect();
    assert!(lines[0].starts_with("代理  基线已加固"), "{zh}");
    assert!(!zh.contains("true") && !zh.contains("false"), "{zh}");
    // The second column starts at the same display column on every line.
    let col = |l: &str| {
        let first_gap = l.find("  ").unwrap();
        let rest = &l[first_gap..];
        let start = first_gap + (rest.len() - rest.trim_start().len());
        unicode_width_of(&l[..start])
    };
    assert_eq!(col(lines[0]), col(lines[1]), "{zh}");
    let en = stdout_of(ctl.cli().args(["harden", "status", "--agent", "rp-2"]));
    assert!(en.starts_with("AGENT"), "{en}");
}

/// Display width: CJK characters count two columns.
fn unicode_width_of(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

#[test]
fn demo_tells_its_story_as_it_happens_and_ends_with_next_steps() {
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = data.path().join("demo");
    let mut child = Command::new(bin("preflight"))
        .args(["demo", "--keep", "--data"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // The first story line arrives through a pipe while the demo is still running.
    assert!(first.starts_with("• initialising a controller"), "{first}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the demo printed only at its end"
    );
    let mut rest = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    for l in out.lines() {
        rest.push_str(&l.unwrap());
        rest.push('\n');
        assert!(Instant::now() < deadline, "demo too slow:\n{rest}");
    }
    let st = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(st.success(), "demo failed: {err}\n{rest}");
    let at = |s: &str| {
        rest.find(s)
            .unwrap_or_else(|| panic!("{s} missing:\n{rest}"))
    };
    // In order: agents, one inventory, sweep 1 and its report, the fix, sweep 2 and its report.
    assert!(at("\nAgents\n") < at("Inventory of demo-1"));
    assert_eq!(rest.matches("Inventory of ").count(), 1, "{rest}");
    assert!(at("Inventory of demo-1") < at("• sweep 1:"));
    assert!(at("• sweep 1:") < at("Readiness sweep 1:"));
    assert!(at("Readiness sweep 1:") < at("• the hard failures paused the batch"));
    assert!(at("• fixing:") < at("• sweep 2"));
    assert!(at("• sweep 2") < at("Readiness sweep 2:"));
    assert!(at("Readiness sweep 2:") < at("advanced past confirm_plan"));
    // --keep: the admin token and the commands to look around, then the next steps.
    let token_line = rest[at("Its admin token")..]
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        token_line.len() >= 20 && !token_line.contains(' '),
        "{rest}"
    );
    assert!(
        rest.contains(&format!("PREFLIGHT_TOKEN={token_line}")),
        "{rest}"
    );
    assert!(rest.contains(&format!(
        "serve --data {}/controller --listen 127.0.0.1:",
        dir.display()
    )));
    assert!(rest.contains(&format!("run --state-dir {}/demo-3", dir.display())));
    assert!(rest.contains("batch show demo-b1"));
    assert!(at("Its admin token") < at("Next steps"));
    assert!(rest.contains("preflight token create --install-command"));
    assert!(dir.join("controller").exists());
}

#[test]
fn readme_links_resolve_to_documents_in_the_repository() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for doc in ["docs/WORKFLOW.md", "docs/CHECKS.md"] {
        assert!(readme.contains(&format!("]({doc}")), "README links {doc}");
        assert!(root.join(doc).is_file(), "{doc} is in the repository");
    }
    // Every relative Markdown link of README points at a file that exists.
    for (i, _) in readme.match_indices("](") {
        let rest = &readme[i + 2..];
        let target = &rest[..rest.find(')').unwrap()];
        if target.starts_with('#') || target.contains("://") {
            continue;
        }
        let path = target.split('#').next().unwrap();
        assert!(
            root.join(path).exists(),
            "README links {target}, which does not exist"
        );
    }
    // The catalog document names every check the agent implements, with its Chinese title.
    let checks = std::fs::read_to_string(root.join("docs/CHECKS.md")).unwrap();
    for c in preflight_harden::catalog::catalog() {
        assert!(
            checks.contains(&format!("`{}`", c.id)),
            "docs/CHECKS.md lacks {}",
            c.id
        );
        assert!(
            checks.contains(c.title_zh),
            "docs/CHECKS.md lacks {}'s title {}",
            c.id,
            c.title_zh
        );
    }
}

#[test]
fn batch_show_in_chinese_and_the_operators_zone() {
    let ctl = Controller::start(&[]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(ctl.cli().args([
        "user", "add", "pat", "--role", "project", "--output", "json",
    ])))
    .unwrap();
    let pat = v["token"].as_str().unwrap().to_string();
    stdout_of(ctl.cli().args([
        "project",
        "add",
        "P1",
        "--name",
        "Tax portal",
        "--line",
        "gov",
        "--budget",
        "B-1",
    ]));
    stdout_of(ctl.cli_as(&pat).args([
        "batch",
        "create",
        "B7",
        "--project",
        "P1",
        "--title",
        "三个 SOA 节点",
    ]));
    let zh = stdout_of(ctl.cli().args([
        "batch",
        "show",
        "B7",
        "--lang",
        "zh",
        "--tz",
        "Asia/Shanghai",
    ]));
    assert!(zh.starts_with("批次 B7：三个 SOA 节点\n"), "{zh}");
    assert!(zh.contains("项目：      P1（业务线 gov）"), "{zh}");
    let stage = zh.lines().find(|l| l.starts_with("阶段：")).unwrap();
    assert!(
        stage.contains("项目组申请（apply）") && stage.ends_with("+08:00 Asia/Shanghai 起"),
        "{stage}"
    );
    assert!(
        zh.contains("当前处理人：") && zh.contains("历史记录："),
        "{zh}"
    );
    // The history table aligns its Chinese header by display width.
    let head = zh.lines().find(|l| l.starts_with("序号")).unwrap();
    assert!(head.starts_with("序号  时间"), "{head}");
    let row = zh
        .lines()
        .skip_while(|l| !l.starts_with("序号"))
        .nth(1)
        .unwrap();
    let time_col = |l: &str| unicode_width_of(&l[..l.find('2').unwrap()]);
    assert_eq!(unicode_width_of("序号  "), time_col(row), "{zh}");
    // English and UTC by default; JSON unchanged by --tz.
    let en = stdout_of(ctl.cli().args(["batch", "show", "B7"]).env_remove("TZ"));
    assert!(
        en.contains("stage:     apply (项目组申请) since ") && en.contains(" UTC"),
        "{en}"
    );
    let j1 = stdout_of(ctl.cli().args(["batch", "show", "B7", "--output", "json"]));
    let j2 = stdout_of(ctl.cli().args([
        "batch",
        "show",
        "B7",
        "--output",
        "json",
        "--tz",
        "Asia/Shanghai",
    ]));
    assert_eq!(j1, j2);
}

#[test]
fn agent_harden_audit_in_chinese_aligns_by_display_width() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/login.defs"), "PASS_MAX_DAYS 99999\n").unwrap();
    let o = Command::new(bin("preflight-agent"))
        .args([
            "harden",
            "audit",
            "--check",
            "acct.pass_max_days",
            "--check",
            "acct.pass_min_days",
            "--lang",
            "zh",
            "--root",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    let zh = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{zh}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = zh.lines().collect();
    assert!(lines[0].starts_with("检查项              状态"), "{zh}");
    // No /etc/shadow in the tree: the agent cannot decide, and says so in Chinese.
    assert!(lines[1].starts_with("acct.pass_max_days  无法判定"), "{zh}");
    // The third column starts at one display column on every row.
    let third = |l: &str| {
        let mut seen = 0;
        let mut gap = false;
        for (i, c) in l.char_indices() {
            if c == ' ' {
                gap = true;
            } else if gap {
                seen += 1;
                gap = false;
                if seen == 2 {
                    return unicode_width_of(&l[..i]);
                }
            }
        }
        panic!("{l}")
    };
    assert_eq!(third(lines[0]), third(lines[1]), "{zh}");
    assert_eq!(third(lines[1]), third(lines[2]), "{zh}");
    assert!(
        zh.contains("0 项符合，0 项不符合，0 项不适用，2 项无法判定"),
        "{zh}"
    );
}
