//! Acceptance tests of the hardening catalog on fixture root trees (CHECKS.md, issue 7).
//!
//! Each fixture is copied into a temporary directory (git keeps neither owners nor modes, so the
//! test sets them), then: audit finds the seeded violations, plan shows them without writing,
//! apply fixes them, a second apply changes nothing, verify is compliant (except the report-only
//! and live-state checks listed per fixture), and rollback restores every file byte for byte.

#[path = "support/tree.rs"]
mod tree;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use preflight_core::evidence::EvidenceStatus;
use preflight_harden::catalog::{self, ApplyOptions, NoFirewall, Policy, Root};

struct Fixture {
    _tmp: tempfile::TempDir,
    root: Root,
    dir: PathBuf,
    backups: PathBuf,
}

fn fixture(name: &str) -> Result<Fixture> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("root");
    tree::copy_fixture(&src, &dir)?;
    let backups = tmp.path().join("backups");
    let root = Root::new(&dir)?;
    Ok(Fixture {
        _tmp: tmp,
        root,
        dir,
        backups,
    })
}

fn snapshot(dir: &Path) -> Result<BTreeMap<String, String>> {
    tree::snapshot(dir, catalog::sha256_hex)
}

fn status_map(root: &Root) -> BTreeMap<String, (EvidenceStatus, String)> {
    catalog::audit(root, &Policy::default(), &NoFirewall, &[])
        .into_iter()
        .map(|r| {
            let s = format!("{} | {:?}", r.observed, r.reason);
            (r.id, (r.status, s))
        })
        .collect()
}

fn read(f: &Fixture, p: &str) -> Result<String> {
    fs::read_to_string(f.dir.join(p)).with_context(|| format!("reading {p}"))
}

/// Runs the whole cycle and returns the fixture after apply (before rollback) for extra checks.
fn cycle(
    name: &str,
    seeded: &[&str],
    after_exceptions: &[(&str, EvidenceStatus)],
    after_apply: impl FnOnce(&Fixture) -> Result<()>,
) -> Result<()> {
    let f = fixture(name)?;
    if unsafe_not_root() {
        eprintln!("SKIP: {name}: ownership checks need root (chown to 0:0)");
        return Ok(());
    }
    let before = snapshot(&f.dir)?;
    let policy = Policy::default();

    // Audit finds the seeded violations.
    let audit = status_map(&f.root);
    for id in seeded {
        let (st, obs) = &audit[*id];
        if *st != EvidenceStatus::NonCompliant {
            bail!("{name}: {id} should be non_compliant before apply, is {st:?}: {obs}");
        }
    }

    // Plan shows them, writes nothing.
    let plan = catalog::plan(&f.root, &policy, &NoFirewall, &[])?;
    for id in seeded {
        let e = plan
            .iter()
            .find(|e| e.audit.id == *id)
            .with_context(|| format!("{id} missing from plan"))?;
        if e.audit.report_only {
            continue;
        }
        if e.changes.is_empty() && e.actions.is_empty() {
            bail!(
                "{name}: plan for {id} shows no change (blocked: {:?})",
                e.blocked
            );
        }
        for c in &e.changes {
            if !c.diff.starts_with("--- a/") || !c.diff.contains("+++ b/") {
                bail!(
                    "{name}: {id} diff of {} is not a unified diff: {}",
                    c.path,
                    c.diff
                );
            }
        }
    }
    if snapshot(&f.dir)? != before {
        bail!("{name}: audit or plan changed the tree");
    }

    // Apply fixes them.
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let report = catalog::apply(&f.root, &policy, &NoFirewall, &[], &opts)?;
    let backup = report
        .backup
        .clone()
        .context("first apply made no backup")?;
    for r in &report.records {
        if let Some(e) = &r.error {
            bail!("{name}: apply of {} failed: {e}", r.check_id);
        }
    }
    let after = snapshot(&f.dir)?;

    // Verify: all compliant but the listed exceptions.
    let verify = catalog::verify(&f.root, &policy, &NoFirewall, &[])?;
    for r in &verify {
        let want = after_exceptions
            .iter()
            .find(|(id, _)| *id == r.check_id)
            .map(|(_, s)| *s)
            .unwrap_or(if r.check_id.starts_with("fw.") {
                EvidenceStatus::Unknown
            } else {
                EvidenceStatus::Compliant
            });
        if r.status != want {
            bail!(
                "{name}: after apply {} is {:?}, expected {want:?}: {} | {:?}",
                r.check_id,
                r.status,
                r.observed,
                r.reason
            );
        }
        if !matches!(
            r.status,
            EvidenceStatus::Unknown | EvidenceStatus::NotApplicable
        ) && r.files.is_empty()
            && !r.check_id.starts_with("fw.")
        {
            bail!("{name}: {} verify record names no file hashes", r.check_id);
        }
    }

    // A second apply changes nothing.
    let again = catalog::apply(&f.root, &policy, &NoFirewall, &[], &opts)?;
    if again.backup.is_some() || again.records.iter().any(|r| !r.diff.is_empty()) {
        bail!(
            "{name}: second apply changed something: {:?}",
            again
                .records
                .iter()
                .filter(|r| !r.diff.is_empty())
                .map(|r| (&r.check_id, &r.diff))
                .collect::<Vec<_>>()
        );
    }
    if snapshot(&f.dir)? != after {
        bail!("{name}: second apply changed file hashes");
    }

    after_apply(&f)?;

    // Rollback restores every file byte for byte, and removes created ones.
    let rb = catalog::rollback(&f.root, &policy, &NoFirewall, &f.backups, &backup.id)?;
    if rb.restored.is_empty() {
        bail!("{name}: rollback restored nothing");
    }
    let restored = snapshot(&f.dir)?;
    if restored != before {
        let diff: Vec<_> = before
            .iter()
            .filter(|(k, v)| restored.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(
                restored
                    .keys()
                    .filter(|k| !before.contains_key(*k))
                    .cloned(),
            )
            .collect();
        bail!("{name}: rollback did not restore: {diff:?}");
    }
    Ok(())
}

fn unsafe_not_root() -> bool {
    !nix::unistd::geteuid().is_root()
}

const LIVE: &[(&str, EvidenceStatus)] = &[
    ("ssh.protocol2", EvidenceStatus::NotApplicable),
    ("audit.auditd", EvidenceStatus::NotApplicable),
];

fn with(extra: &[(&'static str, EvidenceStatus)]) -> Vec<(&'static str, EvidenceStatus)> {
    let mut v = LIVE.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn centos7_tally2() -> Result<()> {
    cycle(
        "centos7-tally2",
        &[
            "acct.pass_max_days",
            "acct.pass_min_days",
            "acct.inactive",
            "auth.pw_minlen",
            "auth.pw_classes",
            "auth.pw_history",
            "auth.pw_hash",
            "auth.lockout",
            "auth.no_empty_pw",
            "sess.tmout",
            "ssh.idle_timeout",
            "ssh.permit_root_login",
            "ssh.max_auth_tries",
            "ssh.misc",
            "ssh.no_plaintext_remote",
            "acct.system_nologin",
            "acct.su_wheel",
            "perm.umask",
            "perm.critical_files",
            "audit.auditd",
            "audit.rules",
            "audit.retention",
            "log.rsyslog",
            "mac.status",
        ],
        &with(&[("mac.status", EvidenceStatus::NonCompliant)]),
        |f| {
            let sa = read(f, "etc/pam.d/system-auth-ac")?;
            // pam_faillock is absent on this host: pam_tally2 stays, with compliant arguments.
            assert!(
                sa.contains("pam_tally2.so deny=5 onerr=fail unlock_time=600"),
                "{sa}"
            );
            assert!(
                sa.contains("account     required    pam_tally2.so")
                    || sa.contains("pam_tally2.so\n"),
                "{sa}"
            );
            assert!(!sa.contains("pam_faillock"), "{sa}");
            assert!(!sa.contains("nullok"), "{sa}");
            assert!(
                sa.contains("pam_unix.so shadow try_first_pass use_authtok remember=5 sha512"),
                "{sa}"
            );
            // The symlink system-auth -> system-auth-ac is kept.
            assert_eq!(
                fs::read_link(f.dir.join("etc/pam.d/system-auth"))?,
                Path::new("system-auth-ac")
            );
            let sshd = read(f, "etc/ssh/sshd_config")?;
            assert!(
                sshd.starts_with("# BEGIN preflight managed block"),
                "{sshd}"
            );
            assert!(
                sshd.contains("PermitRootLogin no\n"),
                "admin is in wheel with a password: {sshd}"
            );
            // Overrides inside the Match block would reopen what the global settings close.
            assert!(sshd.contains("Match Group sftponly\n\tChrootDirectory /srv/sftp/%u\n#preflight-disabled# \tX11Forwarding yes\n#preflight-disabled# \tPermitRootLogin yes\n"), "{sshd}");
            let mode = fs::metadata(f.dir.join("etc/ssh/sshd_config"))?.mode() & 0o777;
            assert_eq!(mode, 0o600);
            assert_eq!(fs::metadata(f.dir.join("etc/shadow"))?.mode() & 0o777, 0);
            let shadow = read(f, "etc/shadow")?;
            // bob had an empty password: locked, and then no longer an interactive account.
            assert!(shadow.contains("\nbob:!:19820:0:99999:7:::\n"), "{shadow}");
            assert!(shadow.contains(":19810:1:90:7:30::\nbob"), "{shadow}");
            let passwd = read(f, "etc/passwd")?;
            assert!(
                passwd.contains("postgres:x:26:26:PostgreSQL Server:/var/lib/pgsql:/sbin/nologin"),
                "{passwd}"
            );
            assert!(read(f, "etc/xinetd.d/telnet")?.contains("disable\t\t= yes"));
            let su = read(f, "etc/pam.d/su")?;
            assert!(
                su.contains("\nauth\t\trequired\tpam_wheel.so use_uid\n"),
                "{su}"
            );
            assert!(
                read(f, "etc/profile.d/timeout.sh")?.contains(": #preflight-disabled# TMOUT=1800")
            );
            assert!(read(f, "etc/profile")?.contains("umask 027\nelse\n    umask 027"));
            assert!(read(f, "etc/logrotate.d/syslog")?.contains("{\n    rotate 26\n"));
            assert!(fs::symlink_metadata(
                f.dir
                    .join("etc/systemd/system/multi-user.target.wants/auditd.service")
            )?
            .file_type()
            .is_symlink());
            Ok(())
        },
    )
}

#[test]
fn centos7_faillock() -> Result<()> {
    cycle(
        "centos7-faillock",
        &[
            "auth.lockout",
            "auth.uid0_only_root",
            "ssh.permit_root_login",
            "auth.pw_classes",
            "audit.rules",
        ],
        &with(&[
            ("auth.uid0_only_root", EvidenceStatus::NonCompliant),
            ("auth.unique_ids", EvidenceStatus::NonCompliant),
        ]),
        |f| {
            for p in ["etc/pam.d/system-auth-ac", "etc/pam.d/password-auth-ac"] {
                let t = read(f, p)?;
                assert!(!t.contains("pam_tally2"), "{t}");
                let pre = t
                    .find("pam_faillock.so preauth silent deny=5 unlock_time=600")
                    .context("preauth")?;
                let unix = t.find("pam_unix.so try_first_pass").context("unix")?;
                let fail = t
                    .find("[default=die] pam_faillock.so authfail deny=5 unlock_time=600")
                    .context("authfail")?;
                assert!(pre < unix && unix < fail, "{t}");
                assert!(
                    t.contains("account     required     pam_faillock.so"),
                    "{t}"
                );
            }
            // No sudo-capable account (wheel is empty): rule 6 keeps key login for root.
            let sshd = read(f, "etc/ssh/sshd_config")?;
            assert!(
                sshd.contains("PermitRootLogin prohibit-password\n"),
                "{sshd}"
            );
            // vsftpd was enabled: the wants link is removed (rollback recreates it).
            assert!(fs::symlink_metadata(
                f.dir
                    .join("etc/systemd/system/multi-user.target.wants/vsftpd.service")
            )
            .is_err());
            let rules = read(f, "etc/audit/rules.d/50-preflight.rules")?;
            assert!(
                !rules.contains("-w /etc/passwd"),
                "identity rules exist elsewhere: {rules}"
            );
            assert!(rules.contains("-k privileged"), "{rules}");
            Ok(())
        },
    )?;
    let f = fixture("centos7-faillock")?;
    // Plans come in catalog order.
    let plan = catalog::plan(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.permit_root_login", "auth.lockout"],
    )?;
    assert_eq!(plan[0].audit.id, "auth.lockout");
    assert!(
        plan[0].notes.iter().any(|n| n.contains("authconfig")),
        "{:?}",
        plan[0].notes
    );
    assert!(
        plan[1].notes.iter().any(|n| n.contains("rule 6")),
        "{:?}",
        plan[1].notes
    );
    assert!(
        plan[1]
            .notes
            .iter()
            .any(|n| n.contains("sshd -t") && n.contains("skipped")),
        "{:?}",
        plan[1].notes
    );
    Ok(())
}

#[test]
fn rocky9_authselect() -> Result<()> {
    cycle(
        "rocky9-authselect",
        &[
            "acct.pass_max_days",
            "acct.inactive",
            "auth.pw_classes",
            "auth.pw_history",
            "auth.lockout",
            "auth.no_empty_pw",
            "ssh.permit_root_login",
            "ssh.misc",
            "ssh.idle_timeout",
            "perm.umask",
            "audit.rules",
            "log.rsyslog",
        ],
        LIVE,
        |f| {
            let conf = read(f, "etc/authselect/authselect.conf")?;
            // Catalog order: auth.pw_history, auth.lockout, auth.no_empty_pw.
            assert_eq!(
                conf,
                "minimal\nwith-pwhistory\nwith-faillock\nwithout-nullok\n"
            );
            let sa = read(f, "etc/authselect/system-auth")?;
            assert!(sa.contains("pam_faillock.so preauth silent"), "{sa}");
            assert!(sa.contains("pam_pwhistory.so use_authtok"), "{sa}");
            assert!(!sa.contains("nullok"), "{sa}");
            // The pam.d links into /etc/authselect stay links.
            assert_eq!(
                fs::read_link(f.dir.join("etc/pam.d/system-auth"))?,
                Path::new("/etc/authselect/system-auth")
            );
            let fl = read(f, "etc/security/faillock.conf")?;
            assert!(fl.contains("deny = 5\nunlock_time = 600\n"), "{fl}");
            let drop = read(f, "etc/ssh/sshd_config.d/00-preflight-hardening.conf")?;
            assert!(
                drop.contains("PermitRootLogin no") && drop.contains("X11Forwarding no"),
                "{drop}"
            );
            assert_eq!(
                fs::metadata(
                    f.dir
                        .join("etc/ssh/sshd_config.d/00-preflight-hardening.conf")
                )?
                .mode()
                    & 0o777,
                0o600
            );
            assert!(read(f, "etc/security/pwquality.conf.d/50-preflight.conf")?
                .contains("minclass = 3"));
            assert!(read(f, "etc/rsyslog.conf")?.starts_with(
                "# BEGIN preflight managed block (do not edit by hand)\n$FileCreateMode 0640\n"
            ));
            Ok(())
        },
    )
}

#[test]
fn rocky9_authselect_check_failure_stops() -> Result<()> {
    let f = fixture("rocky9-authselect")?;
    // Someone edited the generated file by hand: authselect check fails, nothing is changed.
    let p = f.dir.join("etc/authselect/system-auth");
    let mut t = fs::read_to_string(&p)?;
    t.push_str("auth        optional      pam_echo.so hand-edit\n");
    fs::write(&p, &t)?;
    let before = snapshot(&f.dir)?;
    let plan = catalog::plan(&f.root, &Policy::default(), &NoFirewall, &["auth.lockout"])?;
    let blocked = plan[0].blocked.clone().unwrap_or_default();
    assert!(blocked.contains("authselect check failed"), "{blocked}");
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let r = catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["auth.lockout"],
        &opts,
    )?;
    assert!(r.records[0]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("authselect check failed"));
    assert!(r.records[0].diff.is_empty());
    // faillock.conf would be written by the same check; nothing is.
    assert_eq!(snapshot(&f.dir)?, before);
    Ok(())
}

#[test]
fn openeuler2203() -> Result<()> {
    cycle(
        "openeuler2203",
        &[
            "acct.pass_min_days",
            "acct.inactive",
            "auth.pw_history",
            "auth.lockout",
            "sess.tmout",
            "ssh.idle_timeout",
            "ssh.permit_root_login",
            "ssh.misc",
            "perm.critical_files",
            "audit.rules",
            "audit.retention",
            "log.rsyslog",
        ],
        &with(&[("ssh.protocol2", EvidenceStatus::NotApplicable)]),
        |f| {
            let sa = read(f, "etc/pam.d/system-auth")?;
            assert!(
                sa.contains("pam_faillock.so preauth audit deny=5 even_deny_root unlock_time=600"),
                "{sa}"
            );
            assert!(
                sa.contains("pam_pwhistory.so use_authtok remember=5 enforce_for_root"),
                "{sa}"
            );
            assert!(read(f, "etc/bashrc")?.contains(": #preflight-disabled# export TMOUT=300"));
            let sshd = read(f, "etc/ssh/sshd_config")?;
            assert!(
                sshd.contains("ClientAliveCountMax 3\n")
                    && !sshd.contains("ClientAliveInterval 300\nClientAliveInterval"),
                "{sshd}"
            );
            Ok(())
        },
    )
}

#[test]
fn kylin_v10() -> Result<()> {
    cycle(
        "kylin-v10",
        &[
            "acct.pass_max_days",
            "acct.pass_warn_age",
            "auth.pw_minlen",
            "auth.pw_classes",
            "auth.lockout",
            "auth.no_empty_pw",
            "sess.tmout",
            "ssh.permit_empty_pw",
            "ssh.misc",
            "ssh.max_auth_tries",
            "log.rsyslog",
            "audit.rules",
        ],
        LIVE,
        |f| {
            assert!(
                read(f, "etc/security/pwquality.conf.d/50-preflight.conf")?.contains("minlen = 8")
            );
            let sa = read(f, "etc/pam.d/password-auth")?;
            assert!(sa.contains("pam_faillock.so authfail"), "{sa}");
            let fl = read(f, "etc/security/faillock.conf")?;
            assert!(fl.contains("\ndeny = 5\n"), "{fl}");
            assert!(read(f, "etc/profile.d/kylin-tmout.sh")?
                .contains(": #preflight-disabled# readonly TMOUT=900"));
            assert!(read(f, "etc/profile.d/preflight-tmout.sh")?
                .contains("TMOUT=600\nreadonly TMOUT\nexport TMOUT\n"));
            Ok(())
        },
    )
}

#[test]
fn debian12() -> Result<()> {
    cycle(
        "debian12",
        &[
            "acct.pass_max_days",
            "acct.pass_min_days",
            "acct.inactive",
            "auth.pw_classes",
            "auth.pw_history",
            "auth.pw_hash",
            "auth.lockout",
            "auth.no_empty_pw",
            "ssh.permit_root_login",
            "ssh.max_auth_tries",
            "ssh.misc",
            "acct.system_nologin",
            "acct.su_wheel",
            "perm.umask",
            "perm.critical_files",
            "audit.rules",
            "audit.retention",
        ],
        &with(&[("mac.status", EvidenceStatus::NotApplicable)]),
        |f| {
            let auth = read(f, "etc/pam.d/common-auth")?;
            let pre = auth.find("pam_faillock.so preauth").context("preauth")?;
            let unix = auth
                .find("[success=1 default=ignore]\tpam_unix.so")
                .context("unix")?;
            let fail = auth.find("pam_faillock.so authfail").context("authfail")?;
            let succ = auth.find("pam_faillock.so authsucc").context("authsucc")?;
            assert!(pre < unix && unix < fail && fail < succ, "{auth}");
            assert!(read(f, "etc/pam.d/common-account")?.contains("pam_faillock.so"));
            let pw = read(f, "etc/pam.d/common-password")?;
            assert!(
                pw.contains("pam_unix.so obscure use_authtok try_first_pass remember=5 sha512"),
                "{pw}"
            );
            let su = read(f, "etc/pam.d/su")?;
            assert!(
                su.contains("pam_rootok.so\nauth        required     pam_wheel.so use_uid\n"),
                "{su}"
            );
            let drop = read(f, "etc/ssh/sshd_config.d/00-preflight-hardening.conf")?;
            assert!(
                drop.contains("PermitRootLogin no") && drop.contains("MaxAuthTries 4"),
                "{drop}"
            );
            // The customer's drop-in sorts after ours: left as is.
            assert!(
                read(f, "etc/ssh/sshd_config.d/10-local.conf")?.contains("\nPermitRootLogin yes\n")
            );
            assert!(read(f, "etc/default/useradd")?.contains("INACTIVE=30"));
            assert!(read(f, "etc/logrotate.d/rsyslog")?.contains("\trotate 26\n"));
            Ok(())
        },
    )
}

#[test]
fn unparseable_file_is_unknown_and_untouched() -> Result<()> {
    let f = fixture("debian12")?;
    let garbage: &[u8] =
        b"Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin\n\xff\xfe{{ template error }}\n";
    fs::write(f.dir.join("etc/ssh/sshd_config"), garbage)?;
    fs::write(
        f.dir.join("etc/login.defs"),
        "PASS_MAX_DAYS 99999\n<<<<<<< merge conflict\n",
    )?;
    let policy = Policy::default();
    for r in catalog::audit(
        &f.root,
        &policy,
        &NoFirewall,
        &[
            "ssh.permit_root_login",
            "ssh.misc",
            "acct.pass_max_days",
            "perm.umask",
        ],
    ) {
        assert_eq!(
            r.status,
            EvidenceStatus::Unknown,
            "{}: {:?}",
            r.id,
            r.observed
        );
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|s| s.contains("cannot parse")),
            "{:?}",
            r.reason
        );
    }
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let rep = catalog::apply(&f.root, &policy, &NoFirewall, &[], &opts)?;
    assert!(rep
        .records
        .iter()
        .any(|r| r.check_id == "ssh.misc" && r.error.is_some()));
    assert_eq!(fs::read(f.dir.join("etc/ssh/sshd_config"))?, garbage);
    assert_eq!(
        fs::read_to_string(f.dir.join("etc/login.defs"))?,
        "PASS_MAX_DAYS 99999\n<<<<<<< merge conflict\n"
    );
    assert!(!f
        .dir
        .join("etc/ssh/sshd_config.d/00-preflight-hardening.conf")
        .exists());
    // The other checks were still applied.
    assert!(rep
        .records
        .iter()
        .any(|r| r.check_id == "acct.su_wheel" && !r.diff.is_empty()));
    Ok(())
}

#[test]
fn symlink_outside_prefix_is_refused() -> Result<()> {
    let f = fixture("debian12")?;
    let outside = f._tmp.path().join("outside-shadow");
    fs::write(&outside, "root::1:0:99999:7:::\n")?;
    // A relative link climbing above the prefix.
    fs::remove_file(f.dir.join("etc/shadow"))?;
    std::os::unix::fs::symlink("../../outside-shadow", f.dir.join("etc/shadow"))?;
    let err = f
        .root
        .read("/etc/shadow")
        .expect_err("escape must be refused");
    assert!(err.to_string().contains("outside the root prefix"), "{err}");
    let r = &catalog::audit(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["auth.no_empty_pw"],
    )[0];
    assert_eq!(r.status, EvidenceStatus::Unknown);
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("outside the root prefix"),
        "{:?}",
        r.reason
    );
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["auth.no_empty_pw", "acct.pass_max_days"],
        &opts,
    )?;
    assert_eq!(fs::read_to_string(&outside)?, "root::1:0:99999:7:::\n");
    // An absolute link is resolved inside the prefix, as in a chroot: it never reaches the host.
    fs::remove_file(f.dir.join("etc/shadow"))?;
    std::os::unix::fs::symlink(outside.display().to_string(), f.dir.join("etc/shadow"))?;
    assert_eq!(f.root.read("/etc/shadow")?, None);
    // `..` in a requested path cannot climb either.
    assert!(f.root.read("/../../etc/passwd").is_err());
    Ok(())
}

#[test]
fn sshd_earlier_conflicting_directive_is_disabled() -> Result<()> {
    let f = fixture("debian12")?;
    let p = f.dir.join("etc/ssh/sshd_config");
    let t = fs::read_to_string(&p)?;
    fs::write(
        &p,
        t.replacen(
            "Include /etc/ssh/sshd_config.d/*.conf",
            "MaxAuthTries 8\nInclude /etc/ssh/sshd_config.d/*.conf",
            1,
        ),
    )?;
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.max_auth_tries"],
        &opts,
    )?;
    let t = fs::read_to_string(&p)?;
    assert!(
        t.contains("#preflight-disabled# MaxAuthTries 8\nInclude"),
        "{t}"
    );
    let r = &catalog::audit(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.max_auth_tries"],
    )[0];
    assert_eq!(r.status, EvidenceStatus::Compliant, "{}", r.observed);
    Ok(())
}

#[test]
fn evidence_records_carry_hashes_diff_and_backup() -> Result<()> {
    let f = fixture("kylin-v10")?;
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let rep = catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["acct.pass_max_days"],
        &opts,
    )?;
    let r = &rep.records[0];
    assert_eq!(r.status, EvidenceStatus::Compliant);
    assert!(r
        .observed_before
        .as_deref()
        .unwrap_or("")
        .contains("PASS_MAX_DAYS=99999"));
    assert!(
        r.diff.contains("-PASS_MAX_DAYS\t99999") && r.diff.contains("+PASS_MAX_DAYS\t90"),
        "{}",
        r.diff
    );
    assert!(
        r.actions.iter().any(|a| a == "chage --maxdays 90 admin"),
        "{:?}",
        r.actions
    );
    let login_defs = r
        .files
        .iter()
        .find(|h| h.path == "/etc/login.defs")
        .context("hash of login.defs")?;
    assert_eq!(
        login_defs.sha256.as_deref(),
        Some(catalog::sha256_hex(&fs::read(f.dir.join("etc/login.defs"))?).as_str())
    );
    let b = r.backup.as_ref().context("backup ref")?;
    assert!(f.backups.join(&b.id).join("manifest.json").exists());
    let json = serde_json::to_value(r)?;
    assert_eq!(json["status"], "compliant");
    assert_eq!(json["operation"], "apply");
    Ok(())
}

#[test]
fn report_only_checks_never_change_anything() -> Result<()> {
    let f = fixture("centos7-faillock")?;
    let before = snapshot(&f.dir)?;
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let rep = catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["auth.uid0_only_root", "auth.unique_ids", "mac.status"],
        &opts,
    )?;
    assert!(rep.backup.is_none());
    assert_eq!(rep.records[0].status, EvidenceStatus::NonCompliant);
    assert!(rep.records[0].observed.contains("toor"));
    assert_eq!(snapshot(&f.dir)?, before);
    Ok(())
}

#[test]
fn policy_thresholds_are_configurable() -> Result<()> {
    let f = fixture("openeuler2203")?;
    let strict: Policy = serde_json::from_str(r#"{"pass_max_days": 60}"#)?;
    let r = &catalog::audit(&f.root, &strict, &NoFirewall, &["acct.pass_max_days"])[0];
    assert_eq!(r.status, EvidenceStatus::NonCompliant, "{}", r.observed);
    assert_eq!(r.expected, "<= 60");
    let r = &catalog::audit(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["acct.pass_max_days"],
    )[0];
    assert_eq!(r.status, EvidenceStatus::Compliant, "{}", r.observed);
    assert!(serde_json::from_str::<Policy>(r#"{"no_such": 1}"#).is_err());
    let p: Policy = serde_json::from_str(r#"{"umask": "077"}"#)?;
    assert_eq!(p.umask, 0o077);
    assert!(serde_json::from_str::<Policy>(r#"{"umask": "089"}"#).is_err());
    assert_eq!(serde_json::to_value(Policy::default())?["umask"], "027");
    let bad = Policy {
        lockout_unlock_time: 60,
        ..Policy::default()
    };
    assert!(catalog::plan(&f.root, &bad, &NoFirewall, &[]).is_err());
    Ok(())
}

#[test]
fn host_detection_uses_os_release_and_files() -> Result<()> {
    for (name, pam, authselect, faillock) in [
        (
            "centos7-tally2",
            catalog::PamLayout::SystemAuth,
            false,
            false,
        ),
        (
            "centos7-faillock",
            catalog::PamLayout::SystemAuth,
            false,
            true,
        ),
        (
            "rocky9-authselect",
            catalog::PamLayout::SystemAuth,
            true,
            true,
        ),
        ("openeuler2203", catalog::PamLayout::SystemAuth, false, true),
        ("kylin-v10", catalog::PamLayout::SystemAuth, false, true),
        ("debian12", catalog::PamLayout::Common, false, true),
    ] {
        let f = fixture(name)?;
        let h = catalog::detect_host(&f.root);
        assert_eq!(
            (h.pam, h.authselect, h.faillock),
            (pam, authselect, faillock),
            "{name}: {h:?}"
        );
    }
    Ok(())
}

#[test]
fn plan_of_a_new_dropin_respects_include_order() -> Result<()> {
    // The managed drop-in does not exist yet: the plan must still place it first, so the
    // customer's later drop-in needs no change.
    let f = fixture("debian12")?;
    let plan = catalog::plan(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.permit_root_login"],
    )?;
    let paths: Vec<&str> = plan[0].changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/etc/ssh/sshd_config.d/00-preflight-hardening.conf"]
    );
    let login = catalog::plan(&f.root, &Policy::default(), &NoFirewall, &["perm.umask"])?;
    // The line keeps its own spacing.
    assert!(
        login[0].changes[0].diff.contains("+UMASK\t\t027\n"),
        "{}",
        login[0].changes[0].diff
    );
    Ok(())
}

#[test]
fn ssh_checks_are_not_applicable_without_sshd() -> Result<()> {
    let f = fixture("kylin-v10")?;
    fs::remove_file(f.dir.join("etc/ssh/sshd_config"))?;
    for r in catalog::audit(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.misc", "ssh.permit_root_login"],
    ) {
        assert_eq!(r.status, EvidenceStatus::NotApplicable, "{}", r.id);
    }
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let rep = catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.misc"],
        &opts,
    )?;
    assert!(rep.backup.is_none() && !f.dir.join("etc/ssh/sshd_config").exists());
    Ok(())
}

/// Runs a real `sshd -t` on the configuration apply produced, for every fixture with sshd.
/// The library only runs /usr/sbin/sshd on a live root; this test takes the binary from
/// PREFLIGHT_TEST_SSHD (e.g. extracted from the openssh-server package) or /usr/sbin/sshd.
#[test]
fn applied_sshd_configs_pass_sshd_t() -> Result<()> {
    let sshd = std::env::var("PREFLIGHT_TEST_SSHD").unwrap_or_else(|_| "/usr/sbin/sshd".into());
    if !Path::new(&sshd).exists() {
        eprintln!("SKIP: no sshd binary at {sshd} (set PREFLIGHT_TEST_SSHD)");
        return Ok(());
    }
    let keygen = "/usr/bin/ssh-keygen";
    if !Path::new(keygen).exists() {
        eprintln!("SKIP: no {keygen} to make a host key");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let key = tmp.path().join("hostkey");
    let st = std::process::Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    assert!(st.success());
    for name in [
        "centos7-tally2",
        "centos7-faillock",
        "rocky9-authselect",
        "openeuler2203",
        "kylin-v10",
        "debian12",
    ] {
        let f = fixture(name)?;
        let opts = ApplyOptions {
            backup_dir: f.backups.clone(),
        };
        catalog::apply(&f.root, &Policy::default(), &NoFirewall, &[], &opts)?;
        // Settings sshd of this build rejects or that need host files are dropped; everything
        // the catalog writes stays.
        let flat: String = catalog::sshd_flattened(&f.root)
            .map_err(anyhow::Error::msg)?
            .lines()
            .filter(|l| {
                let k = l
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                !matches!(k.as_str(), "hostkey" | "gssapikexalgorithms" | "protocol")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let conf = tmp.path().join(format!("{name}.conf"));
        fs::write(&conf, &flat)?;
        let out = std::process::Command::new(&sshd)
            .arg("-t")
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(&key)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Privilege separation user")
            || err.contains("privilege separation directory")
        {
            eprintln!("SKIP: {name}: this machine lacks sshd's privilege separation setup: {err}");
            continue;
        }
        assert!(
            out.status.success(),
            "{name}: sshd -t rejected the applied configuration: {err}\n{flat}"
        );
    }
    Ok(())
}

#[test]
fn concurrent_apply_is_refused_and_notes_are_recorded() -> Result<()> {
    let f = fixture("debian12")?;
    fs::create_dir_all(&f.backups)?;
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(f.backups.join(".lock"))?;
    let held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("lock: {e}"))?;
    let opts = ApplyOptions {
        backup_dir: f.backups.clone(),
    };
    let e = catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.misc"],
        &opts,
    )
    .expect_err("busy");
    assert!(e.to_string().contains("another harden apply"), "{e}");
    drop(held);
    let rep = catalog::apply(
        &f.root,
        &Policy::default(),
        &NoFirewall,
        &["ssh.misc"],
        &opts,
    )?;
    assert!(
        rep.records[0]
            .notes
            .iter()
            .any(|n| n.contains("sshd -t") && n.contains("skipped")),
        "{:?}",
        rep.records[0].notes
    );
    Ok(())
}

/// The `fw.*` checks are audited by the hook the caller passes in: two hooks in one process
/// each answer for their own call, and with `NoFirewall` the checks are `unknown`, saying so.
#[test]
fn firewall_checks_are_audited_by_the_hook_passed_in() -> Result<()> {
    struct Fixed(EvidenceStatus);
    impl catalog::FirewallHook for Fixed {
        fn audit(&self, _: &Root, id: &str) -> catalog::FirewallAudit {
            (
                self.0,
                format!("{id} seen by the test hook"),
                "test".into(),
                None,
                None,
            )
        }
    }
    let dir = tempfile::tempdir()?;
    let root = Root::new(dir.path())?;
    let ids = ["fw.single_backend", "fw.mgmt_source"];
    for want in [EvidenceStatus::Compliant, EvidenceStatus::NonCompliant] {
        let got = catalog::audit(&root, &Policy::default(), &Fixed(want), &ids);
        assert_eq!(got.len(), 2);
        for r in got {
            assert_eq!(r.status, want, "{r:?}");
            assert_eq!(r.observed, format!("{} seen by the test hook", r.id));
        }
    }
    for r in catalog::audit(&root, &Policy::default(), &NoFirewall, &ids) {
        assert_eq!(r.status, EvidenceStatus::Unknown, "{r:?}");
        assert_eq!(r.reason.as_deref(), Some("firewall backend not wired"));
    }
    Ok(())
}
