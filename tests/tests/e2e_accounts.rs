//! People's accounts and enrollment credentials end to end, with the real binaries: default
//! token expiry, rotation, disable/enable, removal and their audit log; join tokens good for N
//! servers, the address printed in the enroll lines; enrollment authenticated before the CSR is
//! looked at, refusals logged; the data directory's permissions.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use preflight_proto::v1 as pb;
use preflight_tests::cluster::{bin, enroll_cmd, eventually, ok, Agent, Controller};
use preflight_tests::grpc::{controller_channel, rt};
use serde_json::Value;

fn json_as(ctl: &Controller, token: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let o = ctl.cli_as(token).args(&a).output().unwrap();
    serde_json::from_str(&ok(&o, &a.join(" ")).unwrap()).unwrap()
}

/// The one-line error of a refused command as `token`.
#[track_caller]
fn refused_as(ctl: &Controller, token: &str, args: &[&str]) -> String {
    let o = ctl.cli_as(token).args(args).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(
        !o.status.success(),
        "preflight {} succeeded",
        args.join(" ")
    );
    e
}

fn works(ctl: &Controller, token: &str) -> bool {
    ctl.cli_as(token)
        .arg("whoami")
        .output()
        .unwrap()
        .status
        .success()
}

const DAY_MS: i64 = 24 * 3600 * 1000;

#[test]
fn people_tokens_expire_by_default_and_rotate_disable_remove_are_recorded() {
    let mut ctl = Controller::start(&["--dev-clock"]).unwrap();
    let admin = ctl.admin_token.clone();
    let now = json_as(&ctl, &admin, &["dev", "clock", "show"])["now_ms"]
        .as_i64()
        .unwrap();

    // The first admin token expires after the default 90 days, like every new token.
    let users = json_as(&ctl, &admin, &["user", "list"]);
    let a = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "admin")
        .unwrap();
    let left = a["expires_at_ms"].as_i64().unwrap() - now;
    assert!((89 * DAY_MS..=90 * DAY_MS + 60_000).contains(&left), "{a}");

    // A deployer user is in the deployer list at once.
    let amy = json_as(&ctl, &admin, &["user", "add", "amy", "--role", "deployer"]);
    assert_eq!(amy["deployer_added"], true, "{amy}");
    let amy1 = amy["token"].as_str().unwrap().to_string();
    let left = amy["expires_at_ms"].as_i64().unwrap() - now;
    assert!(
        (89 * DAY_MS..=90 * DAY_MS + 60_000).contains(&left),
        "{amy}"
    );
    let projects = json_as(&ctl, &admin, &["deployer", "list"]);
    assert!(
        projects["deployers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "amy"),
        "{projects}"
    );
    assert!(works(&ctl, &amy1));

    // Rotation: the new token works, the old one is refused at once.
    let rot = json_as(&ctl, &admin, &["user", "token", "rotate", "amy"]);
    let amy2 = rot["token"].as_str().unwrap().to_string();
    assert_ne!(amy1, amy2);
    assert!(works(&ctl, &amy2));
    let e = refused_as(&ctl, &amy1, &["whoami"]);
    assert!(e.contains("unknown token"), "{e}");

    // Disabled: refused, saying so; enabled again: works.
    ctl.run(&["user", "disable", "amy"]).unwrap();
    let e = refused_as(&ctl, &amy2, &["whoami"]);
    assert!(
        e.contains("disabled") && e.contains("preflight user enable amy"),
        "{e}"
    );
    ctl.run(&["user", "enable", "amy"]).unwrap();
    assert!(works(&ctl, &amy2));

    // Only an admin manages users; the last admin cannot be disabled or removed.
    let e = refused_as(&ctl, &amy2, &["user", "disable", "admin"]);
    assert!(
        e.contains("permission denied") || e.contains("admin"),
        "{e}"
    );
    let e = refused_as(&ctl, &admin, &["user", "disable", "admin"]);
    assert!(e.contains("last admin"), "{e}");
    let e = refused_as(&ctl, &admin, &["user", "remove", "admin"]);
    assert!(e.contains("last admin"), "{e}");

    // Removal: the token is refused; the history keeps the name.
    let bob = json_as(&ctl, &admin, &["user", "add", "bob", "--role", "auditor"]);
    let bob = bob["token"].as_str().unwrap().to_string();
    assert!(works(&ctl, &bob));
    ctl.run(&["user", "remove", "bob"]).unwrap();
    assert!(!works(&ctl, &bob));
    let e = refused_as(&ctl, &admin, &["user", "token", "rotate", "bob"]);
    assert!(e.contains("no user \"bob\""), "{e}");

    // A token close to expiry is flagged in `user list`.
    ctl.run(&["user", "add", "soon", "--role", "auditor", "--ttl", "3d"])
        .unwrap();
    let list = ctl.run(&["user", "list"]).unwrap();
    assert!(list.contains("TOKEN EXPIRES"), "{list}");
    assert!(
        list.contains("warning: the token of soon expires in 2 days 23 h")
            || list.contains("warning: the token of soon expires in 3 days 0 h"),
        "{list}"
    );
    assert!(
        !list.contains("warning: the token of amy"),
        "amy's token has 90 days: {list}"
    );

    // Who did what, in order.
    let h = json_as(&ctl, &admin, &["user", "history"]);
    let got: Vec<(String, String, String)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["by"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("serve --init", "add", "admin"),
        ("admin", "add", "amy"),
        ("admin", "rotate", "amy"),
        ("admin", "disable", "amy"),
        ("admin", "enable", "amy"),
        ("admin", "add", "bob"),
        ("admin", "remove", "bob"),
        ("admin", "add", "soon"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    let text = ctl.run(&["user", "history"]).unwrap();
    assert!(text.contains("remove") && text.contains("bob"), "{text}");

    // 91 days later every default token is refused as expired, the first admin's too.
    ctl.run(&["dev", "clock", "advance", "91d"]).unwrap();
    for t in [&amy2, &admin] {
        let e = refused_as(&ctl, t, &["whoami"]);
        assert!(
            e.contains("has expired") && e.contains("preflight user token rotate"),
            "{e}"
        );
    }

    // The way back in: a new admin token made at the data directory, controller stopped.
    ctl.kill();
    let o = Command::new(bin("preflight"))
        .args([
            "serve",
            "--rotate-token",
            "admin",
            "--token-ttl",
            "400d",
            "--data",
        ])
        .arg(ctl.data())
        .output()
        .unwrap();
    let out = ok(&o, "serve --rotate-token").unwrap();
    let fresh = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("pfa_"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    ctl.restart(&["--dev-clock"]).unwrap();
    assert!(works(&ctl, &fresh), "the rotated admin token works");
    assert!(!works(&ctl, &admin), "the old admin token stays refused");
    let h = json_as(&ctl, &fresh, &["user", "history"]);
    let last = h.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["by"], "serve --rotate-token", "{last}");
    assert_eq!(last["action"], "rotate", "{last}");
}

#[test]
fn a_join_token_with_uses_enrolls_exactly_that_many_at_once() {
    let ctl = Controller::start(&[]).unwrap();
    let v = ctl
        .json(&[
            "token",
            "create",
            "--uses",
            "3",
            "--ttl",
            "10m",
            "--controller-url",
            "https://10.9.9.9:7443",
            "--install-command",
        ])
        .unwrap();
    assert_eq!(v["uses"], 3, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    // The printed lines name the address the servers reach, not this CLI's.
    for k in ["install_command", "enroll_command"] {
        let line = v[k].as_str().unwrap();
        assert!(line.contains("https://10.9.9.9:7443"), "{k}: {line}");
        assert!(!line.contains(&ctl.url), "{k}: {line}");
        // The token is never an argument of a process (visible in `ps`).
        assert!(!line.contains("--token "), "{k}: {line}");
    }
    let text = ctl
        .run(&["token", "create", "--uses", "30", "--ttl", "2h"])
        .unwrap();
    assert!(text.contains("30 uses"), "{text}");
    assert!(
        text.contains(&format!("--controller {}", ctl.url)),
        "{text}"
    );

    // Six servers race for three uses: exactly three enroll.
    let base = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let state = base.path().join(format!("u-{i}"));
            let args = [
                "--controller".to_string(),
                ctl.url.clone(),
                "--token".into(),
                token.clone(),
                "--ca-sha256".into(),
                ctl.pin.clone(),
                "--name".into(),
                format!("use-{i}"),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--state-dir".into(),
                state.display().to_string(),
            ];
            std::thread::spawn(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                enroll_cmd(&a).output().unwrap()
            })
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 3, "{outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("already used"), "{e}");
    }
    let enrolled = ctl
        .agents()
        .unwrap()
        .iter()
        .filter(|a| a["id"].as_str().unwrap().starts_with("use-"))
        .count();
    assert_eq!(enrolled, 3);
    let logged = ctl.log_lines_with("join token created");
    assert!(logged.iter().any(|l| l.contains("admin")), "{logged:?}");
}

fn enroll_raw(ctl: &Controller, token: &str, csr_pem: &str, name: &str) -> tonic::Status {
    rt().block_on(async {
        let ch = controller_channel(ctl, None).await.unwrap();
        pb::registry_client::RegistryClient::new(ch)
            .enroll(pb::EnrollRequest {
                join_token: token.into(),
                csr_pem: csr_pem.into(),
                name: name.into(),
                agent_version: "0".into(),
                hostname: "h".into(),
            })
            .await
            .unwrap_err()
    })
}

#[test]
fn enrollment_checks_the_token_before_the_csr_and_refusals_are_logged() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let forged = format!("pfj_{}", "1".repeat(64));
    // An unknown token with garbage for a CSR: refused for the token, the CSR never looked at.
    let s = enroll_raw(&ctl, &forged, "not a csr", "en-1");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("join token is unknown"), "{s:?}");
    // A good token with a bad CSR: the CSR is refused and the token is not spent.
    let good = ctl.join_token("10m").unwrap();
    let s = enroll_raw(&ctl, &good, "not a csr", "en-1");
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let base = tempfile::tempdir().unwrap();
    let st = base.path().join("en-1");
    let o = enroll_cmd(&[
        "--controller",
        &ctl.url,
        "--token",
        &good,
        "--ca-sha256",
        &ctl.pin,
        "--name",
        "en-1",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
    ])
    .arg(&st)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The refusal is logged with the source address and the reason, never the token.
    let l = eventually(
        Duration::from_secs(5),
        "the enrollment refusal logged",
        || {
            let l = ctl.log_lines_with("enrollment refused");
            (!l.is_empty()).then_some(l)
        },
    );
    assert!(
        l.iter()
            .any(|x| x.contains("127.0.0.1") && x.contains("join token is unknown")),
        "{l:?}"
    );
    // A wrong people token is logged too.
    let o = ctl
        .cli_as(&forged.replace("pfj", "pfu"))
        .arg("whoami")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let l = eventually(Duration::from_secs(5), "the request refusal logged", || {
        let l = ctl.log_lines_with("request refused");
        (!l.is_empty()).then_some(l)
    });
    assert!(l.iter().any(|x| x.contains("unknown token")), "{l:?}");
    let all = ctl.log_lines_with("");
    assert!(
        all.iter()
            .all(|x| !x.contains(&forged[4..]) && !x.contains(&good)),
        "a token in the log"
    );

    // A revoked id: enroll under a new name (never "revoke the old agent first").
    let mut a = Agent::enroll(&ctl, base.path(), "rv-1", "127.0.0.25").unwrap();
    a.start().unwrap();
    ctl.wait_online("rv-1");
    ctl.run(&["agents", "revoke", "rv-1"]).unwrap();
    let t = ctl.join_token("10m").unwrap();
    let st = base.path().join("rv-1-again");
    let o = enroll_cmd(&[
        "--controller",
        &ctl.url,
        "--token",
        &t,
        "--ca-sha256",
        &ctl.pin,
        "--name",
        "rv-1",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
    ])
    .arg(&st)
    .output()
    .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("revoked") && e.contains("new --name"), "{e}");
    assert!(!e.contains("revoke the old agent first"), "{e}");
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_readable_data_directory_and_keys_are_narrowed_with_a_warning() {
    let mut ctl = Controller::start(&[]).unwrap();
    let data = ctl.data();
    // The database: directory 0700, files 0600.
    fn walk(p: &std::path::Path) {
        let m = mode(p);
        if p.is_dir() {
            assert_eq!(m, 0o700, "{}", p.display());
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path());
            }
        } else {
            assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
        }
    }
    walk(&data.join("db"));
    ctl.kill();
    let set = |name: &str, m: u32| {
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(m)).unwrap()
    };
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    set("ca.key", 0o644);
    set("evidence.key", 0o644);
    set("db/conf", 0o644);
    ctl.restart(&[]).unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("ca.key")), 0o600);
    assert_eq!(mode(&data.join("evidence.key")), 0o600);
    assert_eq!(mode(&data.join("db/conf")), 0o600);
    let warned = ctl.log_lines_with("narrowed");
    assert!(
        warned.iter().any(|l| l.contains("ca.key"))
            && warned.iter().any(|l| l.contains("evidence.key")),
        "{warned:?}"
    );
    assert!(warned.iter().any(|l| l.contains("0755")), "{warned:?}");
    // And it serves.
    ctl.run(&["whoami"]).unwrap();
}
