//! The checks of CHECKS.md: an audit function, the expected value, and (unless report-only,
//! firewall or needing a package) a fix function that computes the wanted file contents.
//!
//! Fix functions only compute; `mod.rs` compares, backs up, validates and writes. A fix is
//! computed only for a non-compliant check, and brings it to compliance, so a second apply
//! changes nothing.

// The private state tuples each serve one audit/fix pair; naming them adds nothing.
#![allow(clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use super::authselect;
use super::host::PamLayout;
use super::root::{Entry, FileMeta};
use super::sshd;
use super::text::{
    arg_value, kv_get, kv_parse, kv_set, module_name, pam_format, set_arg, ColonDb, KvStyle,
    PamFile, BEGIN, DISABLED, END,
};
use super::{CheckInfo, Ctx, Fix, Outcome, Policy, Unk};

/// One catalog entry with its implementation.
pub(crate) struct Check {
    pub info: CheckInfo,
    pub expected: fn(&Policy) -> String,
    pub audit: fn(&Ctx) -> Result<Outcome, Unk>,
    pub fix: Option<fn(&Ctx) -> Result<Fix, Unk>>,
    /// Files whose absence makes the check not applicable (the service is not installed).
    pub requires: &'static [&'static str],
}

type AuditFn = fn(&Ctx) -> Result<Outcome, Unk>;
type FixFn = fn(&Ctx) -> Result<Fix, Unk>;

#[allow(clippy::too_many_arguments)]
fn check(
    id: &'static str,
    title_en: &'static str,
    title_zh: &'static str,
    mlps: &'static str,
    cis: &'static str,
    expected: fn(&Policy) -> String,
    audit: AuditFn,
    fix: Option<FixFn>,
) -> Check {
    Check {
        info: CheckInfo {
            id,
            title_en,
            title_zh,
            mlps,
            cis,
            report_only: false,
            live_state: false,
            firewall: false,
        },
        expected,
        audit,
        fix,
        requires: &[],
    }
}

fn report_only(mut c: Check) -> Check {
    c.info.report_only = true;
    c.fix = None;
    c
}

fn live(mut c: Check) -> Check {
    c.info.live_state = true;
    c
}

fn fw(
    id: &'static str,
    en: &'static str,
    zh: &'static str,
    mlps: &'static str,
    cis: &'static str,
) -> Check {
    let mut c = check(
        id,
        en,
        zh,
        mlps,
        cis,
        |_| "see CHECKS.md".into(),
        |_| Err(Unk("firewall backend not wired".into())),
        None,
    );
    c.info.firewall = true;
    c
}

/// All checks in CHECKS.md order.
pub(crate) fn all() -> &'static [Check] {
    static ALL: OnceLock<Vec<Check>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v = vec![
            check("acct.pass_max_days", "Maximum password age", "密码最长使用期限", "L3-CES1-01", "5.4.1.1",
                |p| format!("<= {}", p.pass_max_days), |c| audit_aging(c, &MAX_DAYS), Some(|c| fix_aging(c, &MAX_DAYS))),
            check("acct.pass_min_days", "Minimum days between password changes", "密码最短使用期限", "L3-CES1-01", "5.4.1.2",
                |p| format!(">= {}", p.pass_min_days), |c| audit_aging(c, &MIN_DAYS), Some(|c| fix_aging(c, &MIN_DAYS))),
            check("acct.pass_warn_age", "Password expiry warning", "密码过期提前警告天数", "L3-CES1-01", "5.4.1.3",
                |p| format!(">= {}", p.pass_warn_age), |c| audit_aging(c, &WARN_AGE), Some(|c| fix_aging(c, &WARN_AGE))),
            check("acct.inactive", "Disable accounts inactive after password expiry", "密码过期后账户停用天数", "L3-CES1-07", "5.4.1.4",
                |p| format!("0..={}", p.inactive_days), |c| audit_aging(c, &INACTIVE), Some(|c| fix_aging(c, &INACTIVE))),
            check("auth.pw_minlen", "Minimum password length", "口令最小长度", "L3-CES1-01", "5.3.1",
                |p| format!(">= {}", p.pw_minlen), audit_minlen, Some(fix_minlen)),
            check("auth.pw_classes", "Password character classes", "口令复杂度(字符类别)", "L3-CES1-01", "5.3.1",
                |p| format!(">= {} classes", p.pw_min_classes), audit_classes, Some(fix_classes)),
            check("auth.pw_history", "Password reuse history", "口令历史(禁止重复使用)", "L3-CES1-01", "5.3.3",
                |p| format!("remember >= {}", p.pw_remember), audit_history, Some(fix_history)),
            check("auth.pw_hash", "Password hashing algorithm", "口令哈希算法", "L3-CES1-01", "5.3.4",
                |p| p.pw_hash.clone(), audit_hash, Some(fix_hash)),
            check("auth.lockout", "Lockout after failed logins", "登录失败锁定", "L3-CES1-02", "5.3.2",
                |p| format!("deny <= {}, unlock_time {}..={} s", p.lockout_deny, p.lockout_unlock_min, p.lockout_unlock_max), audit_lockout, Some(fix_lockout)),
            check("auth.no_empty_pw", "No empty passwords", "禁止空口令", "L3-CES1-01", "6.2.1",
                |_| "no empty password field; no nullok".into(), audit_empty_pw, Some(fix_empty_pw)),
            report_only(check("auth.uid0_only_root", "Only root has UID 0", "仅root的UID为0", "L3-CES1-06", "6.2.5",
                |_| "only root".into(), audit_uid0, None)),
            report_only(check("auth.unique_ids", "Unique user and group ids and names", "用户和组的ID与名称唯一", "L3-CES1-01", "6.2.16-19",
                |_| "no duplicate UID, GID or name".into(), audit_unique, None)),
            check("sess.tmout", "Shell idle timeout", "会话超时自动退出", "L3-CES1-02", "5.4.5",
                |p| format!("TMOUT 1..={}, readonly, exported", p.tmout), audit_tmout, Some(fix_tmout)),
            check("ssh.idle_timeout", "SSH idle timeout", "SSH空闲超时", "L3-CES1-02", "5.2.12",
                |p| format!("ClientAliveInterval 1..={}, ClientAliveCountMax 1..={}", p.ssh_client_alive_interval, p.ssh_client_alive_count_max), audit_ssh_idle, Some(fix_ssh_idle)),
            live(check("ssh.protocol2", "SSH protocol 2 only (OpenSSH version)", "仅SSH协议2(OpenSSH版本)", "L3-CES1-03", "5.2.2",
                |p| format!("OpenSSH >= {}.{}", p.openssh_min.0, p.openssh_min.1), audit_ssh_version, None)),
            check("ssh.permit_root_login", "SSH root login", "SSH禁止root远程登录", "L3-CES1-06", "5.2.8",
                |_| "no (prohibit-password without a sudo-capable account)".into(), audit_root_login, Some(fix_root_login)),
            check("ssh.permit_empty_pw", "SSH empty passwords", "SSH禁止空口令登录", "L3-CES1-01", "5.2.9",
                |_| "no".into(), audit_ssh_empty, Some(fix_ssh_empty)),
            check("ssh.max_auth_tries", "SSH maximum authentication attempts", "SSH最大认证尝试次数", "L3-CES1-02", "5.2.5",
                |p| format!("<= {}", p.ssh_max_auth_tries), audit_ssh_tries, Some(fix_ssh_tries)),
            check("ssh.misc", "SSH logging, forwarding and trust settings", "SSH日志、转发与信任设置", "L3-CES1-05, L3-CES1-12", "5.2.1-7, 5.2.10",
                |_| "LogLevel INFO, X11Forwarding no, IgnoreRhosts yes, HostbasedAuthentication no, PermitUserEnvironment no, sshd_config 0600 root".into(), audit_ssh_misc, Some(fix_ssh_misc)),
            live(check("ssh.no_plaintext_remote", "No plaintext remote login services", "禁用明文远程管理服务", "L3-CES1-03, L3-CES1-18", "",
                |_| "telnet, rsh, rlogin, rexec, ftp disabled and not listening".into(), audit_plaintext, Some(fix_plaintext))),
            check("acct.system_nologin", "System accounts cannot log in", "系统账户禁止登录", "L3-CES1-05, L3-CES1-07", "5.4.2",
                |_| "nologin or false for UID < UID_MIN except root".into(), audit_nologin, Some(fix_nologin)),
            check("acct.su_wheel", "su restricted to wheel", "su限制为wheel组", "L3-CES1-08", "5.6",
                |_| "auth required pam_wheel.so use_uid".into(), audit_su_wheel, Some(fix_su_wheel)),
            check("perm.umask", "Default umask", "默认umask", "L3-CES1-05", "5.4.4",
                |p| format!("{:03o} or stricter", p.umask), audit_umask, Some(fix_umask)),
            check("perm.critical_files", "Permissions of account files", "账户文件权限", "L3-CES1-09, L3-CES1-10", "6.1.2-9",
                |_| "passwd 0644, shadow 0000, gshadow 0000, group 0644, owner root:root".into(), audit_perms, Some(fix_perms)),
            live(check("audit.auditd", "auditd enabled and running", "审计服务启用并运行", "L3-CES1-12, L3-CES1-15", "4.1.2-3",
                |_| "enabled and running".into(), audit_auditd, Some(fix_auditd))),
            check("audit.rules", "Audit rules", "审计规则", "L3-CES1-12, L3-CES1-13", "4.1.4-18",
                |_| "identity, sudoers, logins, time, privileged, deletes, modules".into(), audit_rules, Some(fix_rules)),
            check("audit.retention", "Audit and log retention", "审计与日志留存", "L3-CES1-14", "4.1.1.x",
                |p| format!("max_log_file_action keep_logs; syslog kept >= {} days", p.log_retention_days), audit_retention, Some(fix_retention)),
            check("log.rsyslog", "rsyslog enabled, log file mode", "rsyslog启用及日志文件权限", "L3-CES1-12, L3-CES1-14", "4.2.1.x",
                |_| "enabled; $FileCreateMode 0640 or stricter".into(), audit_rsyslog, Some(fix_rsyslog)),
            report_only(check("mac.status", "SELinux / AppArmor enforcing", "强制访问控制(SELinux/AppArmor)", "L3-CES1-11", "1.6.x",
                |_| "enforcing".into(), audit_mac, None)),
            fw("fw.single_backend", "Exactly one firewall backend", "仅启用一种防火墙", "L3-CES1-18", ""),
            fw("fw.default_deny_in", "Default deny inbound", "入站默认拒绝", "L3-CES1-18", "3.6.2-4"),
            fw("fw.allowlist_ports", "Only planned ports open", "仅开放计划端口", "L3-CES1-18, L3-CES1-19", "3.6.5"),
            fw("fw.mgmt_source", "Management access restricted by source", "管理端口限制来源地址", "L3-CES1-19", "3.4.2-3"),
        ];
        for c in v.iter_mut() {
            if c.info.id.starts_with("ssh.") && c.info.id != "ssh.no_plaintext_remote" {
                c.requires = &[sshd::MAIN];
            }
        }
        v
    })
}

// ---------------------------------------------------------------- shared readers

const LOGIN_DEFS: &str = "/etc/login.defs";
const USERADD: &str = "/etc/default/useradd";
const PASSWD: &str = "/etc/passwd";
const SHADOW: &str = "/etc/shadow";
const GROUP: &str = "/etc/group";
const GSHADOW: &str = "/etc/gshadow";

fn need_text(ctx: &Ctx, path: &str) -> Result<String, Unk> {
    ctx.read_text(path)?
        .ok_or_else(|| Unk(format!("{path} is missing")))
}

fn db(ctx: &Ctx, path: &str, fields: usize) -> Result<ColonDb, Unk> {
    Ok(ColonDb::parse(path, &need_text(ctx, path)?, fields)?)
}

/// A passwd entry.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn users(ctx: &Ctx) -> Result<Vec<User>, Unk> {
    let p = db(ctx, PASSWD, 7)?;
    p.entries()
        .map(|f| {
            let num = |s: &str| {
                s.parse::<u32>().map_err(|_| {
                    Unk(format!(
                        "cannot parse {PASSWD}: uid/gid {s:?} of {} is not a number",
                        f[0]
                    ))
                })
            };
            Ok(User {
                name: f[0].clone(),
                uid: num(&f[2])?,
                gid: num(&f[3])?,
                home: f[5].clone(),
                shell: f[6].clone(),
            })
        })
        .collect()
}

fn uid_min(ctx: &Ctx) -> u32 {
    ctx.read_text(LOGIN_DEFS)
        .ok()
        .flatten()
        .and_then(|t| kv_parse(LOGIN_DEFS, &t, KvStyle::Space).ok())
        .and_then(|p| kv_get(&p, "UID_MIN", false).and_then(|v| v.parse().ok()))
        .unwrap_or(ctx.policy.uid_min)
}

fn usable_hash(h: &str) -> bool {
    !h.is_empty() && !h.starts_with('!') && !h.starts_with('*')
}

/// Interactive accounts: UID >= UID_MIN (not nobody) with a usable password (rule 3).
fn interactive(ctx: &Ctx, shadow: &ColonDb) -> Result<Vec<String>, Unk> {
    let min = uid_min(ctx);
    let us = users(ctx)?;
    Ok(shadow
        .entries()
        .filter(|f| usable_hash(&f[1]))
        .filter(|f| {
            us.iter()
                .any(|u| u.name == f[0] && u.uid >= min && u.uid != 65534)
        })
        .map(|f| f[0].clone())
        .collect())
}

fn is_nologin(shell: &str) -> bool {
    matches!(
        shell,
        "/sbin/nologin" | "/usr/sbin/nologin" | "/bin/false" | "/usr/bin/false"
    )
}

// ---------------------------------------------------------------- acct.* aging

struct Aging {
    file: &'static str,
    key: &'static str,
    style: KvStyle,
    default: i64,
    field: usize,
    ok: fn(i64, &Policy) -> bool,
    target: fn(&Policy) -> u32,
    chage: &'static str,
}

const MAX_DAYS: Aging = Aging {
    file: LOGIN_DEFS,
    key: "PASS_MAX_DAYS",
    style: KvStyle::Space,
    default: 99999,
    field: 4,
    ok: |v, p| v >= 0 && v <= i64::from(p.pass_max_days),
    target: |p| p.pass_max_days,
    chage: "--maxdays",
};
const MIN_DAYS: Aging = Aging {
    file: LOGIN_DEFS,
    key: "PASS_MIN_DAYS",
    style: KvStyle::Space,
    default: 0,
    field: 3,
    ok: |v, p| v >= i64::from(p.pass_min_days),
    target: |p| p.pass_min_days,
    chage: "--mindays",
};
const WARN_AGE: Aging = Aging {
    file: LOGIN_DEFS,
    key: "PASS_WARN_AGE",
    style: KvStyle::Space,
    default: 7,
    field: 5,
    ok: |v, p| v >= i64::from(p.pass_warn_age),
    target: |p| p.pass_warn_age,
    chage: "--warndays",
};
const INACTIVE: Aging = Aging {
    file: USERADD,
    key: "INACTIVE",
    style: KvStyle::Equals,
    default: -1,
    field: 6,
    ok: |v, p| v >= 0 && v <= i64::from(p.inactive_days),
    target: |p| p.inactive_days,
    chage: "--inactive",
};

fn num(path: &str, what: &str, v: &str) -> Result<i64, Unk> {
    v.trim().parse::<i64>().map_err(|_| {
        Unk(format!(
            "cannot parse {path}: {what} value {v:?} is not a number"
        ))
    })
}

/// (defaults value, violations in defaults, shadow violators with their value)
fn aging_state(ctx: &Ctx, a: &Aging) -> Result<(i64, bool, Vec<(String, String)>), Unk> {
    let text = match ctx.read_text(a.file)? {
        Some(t) => t,
        None if a.file == USERADD => String::new(),
        None => return Err(Unk(format!("{} is missing", a.file))),
    };
    let pairs = kv_parse(a.file, &text, a.style)?;
    let v = match kv_get(&pairs, a.key, false) {
        Some(v) => num(a.file, a.key, v)?,
        None => a.default,
    };
    let shadow = db(ctx, SHADOW, 9)?;
    let inter = interactive(ctx, &shadow)?;
    let mut bad = Vec::new();
    for f in shadow.entries().filter(|f| inter.contains(&f[0])) {
        let val = &f[a.field];
        let n = if val.is_empty() {
            if a.field == 3 {
                0
            } else {
                -1
            }
        } else {
            num(SHADOW, &format!("field {} of {}", a.field + 1, f[0]), val)?
        };
        let n = if a.field == 4 && n == -1 { 99999 } else { n };
        if !(a.ok)(n, ctx.policy) {
            bad.push((
                f[0].clone(),
                if val.is_empty() {
                    "unset".into()
                } else {
                    val.clone()
                },
            ));
        }
    }
    Ok((v, !(a.ok)(v, ctx.policy), bad))
}

fn audit_aging(ctx: &Ctx, a: &Aging) -> Result<Outcome, Unk> {
    let (v, bad_defs, bad) = aging_state(ctx, a)?;
    let mut obs = format!("{} {}={v}", a.file, a.key);
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|(n, v)| format!("{n}={v}")).collect();
        obs.push_str(&format!("; accounts: {}", list.join(", ")));
    }
    let exp = super::checks::all()
        .iter()
        .find(|c| {
            c.info.id.ends_with(match a.key {
                "PASS_MAX_DAYS" => "pass_max_days",
                "PASS_MIN_DAYS" => "pass_min_days",
                "PASS_WARN_AGE" => "pass_warn_age",
                _ => "inactive",
            })
        })
        .map(|c| (c.expected)(ctx.policy))
        .unwrap_or_default();
    Ok(Outcome::new(!bad_defs && bad.is_empty(), obs, exp))
}

fn fix_aging(ctx: &Ctx, a: &Aging) -> Result<Fix, Unk> {
    let (_, bad_defs, bad) = aging_state(ctx, a)?;
    let mut fix = Fix::default();
    let t = (a.target)(ctx.policy).to_string();
    if bad_defs {
        let text = ctx.read_text(a.file)?.unwrap_or_default();
        fix.write(a.file, kv_set(&text, a.key, &t, a.style));
        if a.file == LOGIN_DEFS {
            fix.notes.push(format!(
                "{} in login.defs applies to new accounts only (rule 3)",
                a.key
            ));
        }
    }
    if !bad.is_empty() {
        let mut shadow = db(ctx, SHADOW, 9)?;
        for (n, _) in &bad {
            shadow.set(n, a.field, &t);
            fix.actions.push(format!("chage {} {t} {n}", a.chage));
        }
        fix.write(SHADOW, shadow.render());
    }
    Ok(fix)
}

// ---------------------------------------------------------------- PAM helpers

const PWQ_CONF: &str = "/etc/security/pwquality.conf";
const PWQ_DIR: &str = "/etc/security/pwquality.conf.d";
const PWQ_DROPIN: &str = "/etc/security/pwquality.conf.d/50-preflight.conf";
const FAILLOCK_CONF: &str = "/etc/security/faillock.conf";
const PWHISTORY_CONF: &str = "/etc/security/pwhistory.conf";

fn stack_files(ctx: &Ctx, kind: &str) -> Result<Vec<String>, Unk> {
    match ctx.host.pam {
        PamLayout::SystemAuth => Ok(vec![
            "/etc/pam.d/system-auth".into(),
            "/etc/pam.d/password-auth".into(),
        ]),
        PamLayout::Common => Ok(vec![format!("/etc/pam.d/common-{kind}")]),
        PamLayout::Unknown => Err(Unk(
            "no known PAM layout: neither system-auth + password-auth nor common-* in /etc/pam.d"
                .into(),
        )),
    }
}

fn pam(ctx: &Ctx, path: &str) -> Result<PamFile, Unk> {
    Ok(PamFile::parse(path, &need_text(ctx, path)?)?)
}

/// Edits a PAM file, starting from a change already pending in `fix`.
fn pam_edit(
    ctx: &Ctx,
    fix: &mut Fix,
    path: &str,
    f: impl FnOnce(&mut PamFile) -> Result<(), Unk>,
) -> Result<(), Unk> {
    let text = match fix.writes.get(path) {
        Some((t, _)) => t.clone(),
        None => need_text(ctx, path)?,
    };
    let mut pf = PamFile::parse(path, &text)?;
    f(&mut pf)?;
    fix.write(path, pf.render());
    Ok(())
}

fn pam_notes(ctx: &Ctx, fix: &mut Fix) {
    if ctx.host.authconfig && !ctx.host.authselect {
        fix.notes.push(
            "EL7: `authconfig --update` regenerates system-auth/password-auth and drops these edits; audit again after any authconfig run".into(),
        );
    }
}

fn conf_pairs(ctx: &Ctx, main: &str, dir: Option<&str>) -> Result<Vec<(String, String)>, Unk> {
    let mut out = Vec::new();
    if let Some(t) = ctx.read_text(main)? {
        out.extend(kv_parse(main, &t, KvStyle::Spaced)?);
    }
    if let Some(d) = dir {
        for n in ctx.root.list(d)? {
            if n.ends_with(".conf") {
                let p = format!("{d}/{n}");
                if let Some(t) = ctx.read_text(&p)? {
                    out.extend(kv_parse(&p, &t, KvStyle::Spaced)?);
                }
            }
        }
    }
    Ok(out)
}

fn pwq_pairs(ctx: &Ctx) -> Result<Vec<(String, String)>, Unk> {
    conf_pairs(ctx, PWQ_CONF, Some(PWQ_DIR))
}

fn int(v: &str, what: &str) -> Result<i64, Unk> {
    v.parse::<i64>()
        .map_err(|_| Unk(format!("cannot parse {what} value {v:?}")))
}

/// Per password stack: (path, module, effective minlen, effective classes), or a missing module.
#[allow(clippy::type_complexity)]
fn pwq_state(ctx: &Ctx) -> Result<Vec<(String, Option<(String, i64, i64)>)>, Unk> {
    let conf = pwq_pairs(ctx)?;
    let mut out = Vec::new();
    for path in stack_files(ctx, "password")? {
        let pf = pam(ctx, &path)?;
        let lines: Vec<_> = pf
            .parsed()
            .into_iter()
            .filter(|(_, p)| {
                p.kind == "password"
                    && matches!(module_name(&p.module), "pam_pwquality" | "pam_cracklib")
            })
            .collect();
        let Some((_, l)) = lines.first() else {
            out.push((path, None));
            continue;
        };
        let m = module_name(&l.module).to_string();
        let uses_conf = m == "pam_pwquality";
        let get = |k: &str| -> Option<String> {
            arg_value(&l.args, k).map(str::to_string).or_else(|| {
                if uses_conf {
                    kv_get(&conf, k, false).map(str::to_string)
                } else {
                    None
                }
            })
        };
        let minlen = match get("minlen") {
            Some(v) => int(&v, "minlen")?,
            None if uses_conf => 8,
            None => 9,
        };
        let minclass = match get("minclass") {
            Some(v) => int(&v, "minclass")?,
            None => 0,
        };
        let mut neg = 0;
        for k in ["dcredit", "ucredit", "lcredit", "ocredit"] {
            if let Some(v) = get(k) {
                if int(&v, k)? < 0 {
                    neg += 1;
                }
            }
        }
        out.push((path, Some((m, minlen, minclass.max(neg)))));
    }
    Ok(out)
}

fn audit_pwq(ctx: &Ctx, which: usize) -> Result<Outcome, Unk> {
    let st = pwq_state(ctx)?;
    let target = i64::from(if which == 0 {
        ctx.policy.pw_minlen
    } else {
        ctx.policy.pw_min_classes
    });
    let mut ok = true;
    let mut obs = Vec::new();
    for (p, s) in &st {
        match s {
            None => {
                ok = false;
                obs.push(format!("{p}: no pam_pwquality/pam_cracklib"));
            }
            Some((m, minlen, classes)) => {
                let v = if which == 0 { *minlen } else { *classes };
                ok &= v >= target;
                obs.push(format!(
                    "{p}: {m} {}={v}",
                    if which == 0 { "minlen" } else { "classes" }
                ));
            }
        }
    }
    let exp = if which == 0 {
        format!(">= {}", ctx.policy.pw_minlen)
    } else {
        format!(">= {} classes", ctx.policy.pw_min_classes)
    };
    Ok(Outcome::new(ok, obs.join("; "), exp))
}

fn audit_minlen(ctx: &Ctx) -> Result<Outcome, Unk> {
    audit_pwq(ctx, 0)
}
fn audit_classes(ctx: &Ctx) -> Result<Outcome, Unk> {
    audit_pwq(ctx, 1)
}

fn fix_pwq(ctx: &Ctx, key: &str, target: u32) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    let st = pwq_state(ctx)?;
    let t = target.to_string();
    for (path, s) in &st {
        match s {
            None if ctx.host.authselect => {
                return Err(Unk(format!("authselect profile has no pam_pwquality in {path}; select a profile that has it")));
            }
            None if !ctx.host.pwquality => {
                return Err(Unk(
                    "pam_pwquality is not installed (libpwquality / libpam-pwquality); install it, then apply again".into(),
                ));
            }
            None => {
                pam_edit(ctx, &mut fix, path, |pf| {
                    let (i, u) = pf
                        .find("password", "pam_unix")
                        .into_iter()
                        .next()
                        .ok_or_else(|| Unk(format!("{path} has no password pam_unix line")))?;
                    if !u.args.iter().any(|a| a == "use_authtok") {
                        let mut a = u.args.clone();
                        a.push("use_authtok".into());
                        pf.set_args(i, &a);
                    }
                    pf.lines.insert(
                        i,
                        pam_format("password", "requisite", "pam_pwquality.so", &["retry=3"]),
                    );
                    Ok(())
                })?;
                pam_notes(ctx, &mut fix);
            }
            Some((m, _, _)) => {
                let m = m.clone();
                pam_edit(ctx, &mut fix, path, |pf| {
                    for (i, l) in pf.find("password", &m) {
                        let weak = match arg_value(&l.args, key) {
                            Some(v) => v.parse::<i64>().map_or(true, |n| n < i64::from(target)),
                            None => m == "pam_cracklib",
                        };
                        if weak {
                            let mut a = l.args.clone();
                            set_arg(&mut a, key, &t);
                            pf.set_args(i, &a);
                        }
                    }
                    Ok(())
                })?;
            }
        }
    }
    // Configuration file: the drop-in when the directory exists, else a key in pwquality.conf.
    let conf = pwq_pairs(ctx)?;
    let weak = kv_get(&conf, key, false)
        .is_none_or(|v| !matches!(v.parse::<i64>(), Ok(n) if n >= i64::from(target)));
    if weak && (ctx.host.pwquality || ctx.root.exists(PWQ_CONF)) {
        if ctx.root.is_dir(PWQ_DIR) {
            let cur = ctx
                .read_text(PWQ_DROPIN)?
                .unwrap_or_else(|| "# Managed by preflight-agent harden\n".into());
            fix.write(PWQ_DROPIN, kv_set(&cur, key, &t, KvStyle::Spaced));
        } else {
            let cur = ctx.read_text(PWQ_CONF)?.unwrap_or_default();
            fix.write(PWQ_CONF, kv_set(&cur, key, &t, KvStyle::Spaced));
        }
    }
    Ok(fix)
}

fn fix_minlen(ctx: &Ctx) -> Result<Fix, Unk> {
    fix_pwq(ctx, "minlen", ctx.policy.pw_minlen)
}
fn fix_classes(ctx: &Ctx) -> Result<Fix, Unk> {
    fix_pwq(ctx, "minclass", ctx.policy.pw_min_classes)
}

// auth.pw_history

fn history_state(ctx: &Ctx) -> Result<Vec<(String, i64)>, Unk> {
    let conf = conf_pairs(ctx, PWHISTORY_CONF, None)?;
    let mut out = Vec::new();
    for path in stack_files(ctx, "password")? {
        let pf = pam(ctx, &path)?;
        let mut best = 0i64;
        for (_, l) in pf.find("password", "pam_pwhistory") {
            let v =
                match arg_value(&l.args, "remember").or_else(|| kv_get(&conf, "remember", false)) {
                    Some(v) => int(v, "remember")?,
                    None => 10,
                };
            best = best.max(v);
        }
        for (_, l) in pf.find("password", "pam_unix") {
            if let Some(v) = arg_value(&l.args, "remember") {
                best = best.max(int(v, "remember")?);
            }
        }
        out.push((path, best));
    }
    Ok(out)
}

fn audit_history(ctx: &Ctx) -> Result<Outcome, Unk> {
    let st = history_state(ctx)?;
    let t = i64::from(ctx.policy.pw_remember);
    let ok = st.iter().all(|(_, v)| *v >= t);
    let obs: Vec<String> = st
        .iter()
        .map(|(p, v)| format!("{p}: remember={v}"))
        .collect();
    Ok(Outcome::new(ok, obs.join("; "), format!("remember >= {t}")))
}

fn fix_history(ctx: &Ctx) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    let t = ctx.policy.pw_remember.to_string();
    let target = i64::from(ctx.policy.pw_remember);
    if ctx.host.authselect {
        authselect::set_features(ctx, &["with-pwhistory"], &[], &mut fix)?;
        let conf = conf_pairs(ctx, PWHISTORY_CONF, None)?;
        let v = kv_get(&conf, "remember", false).map_or(Ok(10), |v| int(v, "remember"))?;
        if v < target {
            let cur = ctx.read_text(PWHISTORY_CONF)?.unwrap_or_default();
            fix.write(
                PWHISTORY_CONF,
                kv_set(&cur, "remember", &t, KvStyle::Spaced),
            );
        }
        return Ok(fix);
    }
    for (path, v) in history_state(ctx)? {
        if v >= target {
            continue;
        }
        pam_edit(ctx, &mut fix, &path, |pf| {
            let hist = pf.find("password", "pam_pwhistory");
            let lines = if hist.is_empty() {
                pf.find("password", "pam_unix")
            } else {
                hist
            };
            if lines.is_empty() {
                return Err(Unk(format!("{path} has no password pam_unix line")));
            }
            for (i, l) in lines {
                let mut a = l.args.clone();
                set_arg(&mut a, "remember", &t);
                pf.set_args(i, &a);
            }
            Ok(())
        })?;
    }
    pam_notes(ctx, &mut fix);
    Ok(fix)
}

// auth.pw_hash

const HASHES: &[&str] = &[
    "md5",
    "bigcrypt",
    "sha256",
    "sha512",
    "blowfish",
    "gost_yescrypt",
    "yescrypt",
];

fn audit_hash(ctx: &Ctx) -> Result<Outcome, Unk> {
    let want = ctx.policy.pw_hash.to_ascii_lowercase();
    let defs = kv_parse(LOGIN_DEFS, &need_text(ctx, LOGIN_DEFS)?, KvStyle::Space)?;
    let em = kv_get(&defs, "ENCRYPT_METHOD", false)
        .unwrap_or("DES")
        .to_string();
    let mut ok = em.eq_ignore_ascii_case(&want);
    let mut obs = vec![format!("login.defs ENCRYPT_METHOD={em}")];
    for path in stack_files(ctx, "password")? {
        let pf = pam(ctx, &path)?;
        for (_, l) in pf.find("password", "pam_unix") {
            let h: Vec<&String> = l
                .args
                .iter()
                .filter(|a| HASHES.contains(&a.as_str()))
                .collect();
            let hs = h.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
            ok &= h.len() == 1 && h[0] == &want;
            obs.push(format!(
                "{path}: pam_unix {}",
                if hs.is_empty() {
                    "(no hash argument)"
                } else {
                    &hs
                }
            ));
        }
    }
    Ok(Outcome::new(ok, obs.join("; "), ctx.policy.pw_hash.clone()))
}

fn fix_hash(ctx: &Ctx) -> Result<Fix, Unk> {
    let want = ctx.policy.pw_hash.to_ascii_lowercase();
    let mut fix = Fix::default();
    let text = need_text(ctx, LOGIN_DEFS)?;
    fix.write(
        LOGIN_DEFS,
        kv_set(&text, "ENCRYPT_METHOD", &ctx.policy.pw_hash, KvStyle::Space),
    );
    for path in stack_files(ctx, "password")? {
        let pf = pam(ctx, &path)?;
        let bad = pf.find("password", "pam_unix").iter().any(|(_, l)| {
            let h: Vec<&String> = l
                .args
                .iter()
                .filter(|a| HASHES.contains(&a.as_str()))
                .collect();
            !(h.len() == 1 && h[0] == &want)
        });
        if !bad {
            continue;
        }
        if ctx.host.authselect {
            return Err(Unk(format!(
                "the authselect profile sets the pam_unix hash in {path}; create a custom profile (`authselect create-profile`) with {want}"
            )));
        }
        pam_edit(ctx, &mut fix, &path, |pf| {
            for (i, l) in pf.find("password", "pam_unix") {
                let mut a: Vec<String> = l
                    .args
                    .iter()
                    .filter(|a| !HASHES.contains(&a.as_str()))
                    .cloned()
                    .collect();
                a.push(want.clone());
                pf.set_args(i, &a);
            }
            Ok(())
        })?;
    }
    fix.notes
        .push("existing password hashes change at each user's next password change".into());
    pam_notes(ctx, &mut fix);
    Ok(fix)
}

// auth.lockout

struct LockState {
    obs: Vec<String>,
    ok: bool,
}

fn lockout_state(ctx: &Ctx) -> Result<LockState, Unk> {
    let p = ctx.policy;
    let conf = conf_pairs(ctx, FAILLOCK_CONF, None)?;
    let mut st = LockState {
        obs: vec![],
        ok: true,
    };
    for path in stack_files(ctx, "auth")? {
        let pf = pam(ctx, &path)?;
        let fl = pf.find("auth", "pam_faillock");
        let t2 = pf.find("auth", "pam_tally2");
        let (module, deny, unlock) = if !fl.is_empty() {
            let has_pre = fl
                .iter()
                .any(|(_, l)| l.args.iter().any(|a| a == "preauth"));
            let fail = fl
                .iter()
                .find(|(_, l)| l.args.iter().any(|a| a == "authfail"));
            if !has_pre || fail.is_none() {
                st.ok = false;
                st.obs
                    .push(format!("{path}: pam_faillock without preauth+authfail"));
                continue;
            }
            let args = &fail.map(|f| f.1.args.clone()).unwrap_or_default();
            let get = |k: &str| {
                arg_value(args, k)
                    .or_else(|| kv_get(&conf, k, false))
                    .map(str::to_string)
            };
            let deny = get("deny").map_or(Ok(3), |v| int(&v, "deny"))?;
            let unlock = match get("unlock_time") {
                Some(v) if v == "never" => 0,
                Some(v) => int(&v, "unlock_time")?,
                None => 600,
            };
            ("pam_faillock", deny, unlock)
        } else if let Some((_, l)) = t2.first() {
            let deny = arg_value(&l.args, "deny").map_or(Ok(0), |v| int(v, "deny"))?;
            let unlock =
                arg_value(&l.args, "unlock_time").map_or(Ok(0), |v| int(v, "unlock_time"))?;
            if ctx.host.faillock {
                st.ok = false;
                st.obs.push(format!(
                    "{path}: pam_tally2 in use though pam_faillock is available (rule 2)"
                ));
            }
            ("pam_tally2", deny, unlock)
        } else {
            st.ok = false;
            st.obs.push(format!("{path}: no lockout module"));
            continue;
        };
        st.ok &= deny >= 1
            && deny <= i64::from(p.lockout_deny)
            && unlock >= i64::from(p.lockout_unlock_min)
            && unlock <= i64::from(p.lockout_unlock_max);
        st.obs
            .push(format!("{path}: {module} deny={deny} unlock_time={unlock}"));
    }
    for path in stack_files(ctx, "account")? {
        let pf = pam(ctx, &path)?;
        if pf.find("account", "pam_faillock").is_empty()
            && pf.find("account", "pam_tally2").is_empty()
        {
            st.ok = false;
            st.obs.push(format!("{path}: no account lockout line"));
        }
    }
    Ok(st)
}

fn audit_lockout(ctx: &Ctx) -> Result<Outcome, Unk> {
    let st = lockout_state(ctx)?;
    let p = ctx.policy;
    Ok(Outcome::new(
        st.ok,
        st.obs.join("; "),
        format!(
            "deny <= {}, unlock_time {}..={} s",
            p.lockout_deny, p.lockout_unlock_min, p.lockout_unlock_max
        ),
    ))
}

fn fix_lockout(ctx: &Ctx) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    let deny = format!("deny={}", ctx.policy.lockout_deny);
    let unlock = format!("unlock_time={}", ctx.policy.lockout_unlock_time);
    // Rule 2: faillock wherever it exists (also on EL7); tally2 only without it.
    let use_faillock = ctx.host.faillock || !ctx.host.tally2;
    if use_faillock && (ctx.root.exists(FAILLOCK_CONF) || ctx.host.authselect) {
        let cur = ctx.read_text(FAILLOCK_CONF)?.unwrap_or_default();
        let t = kv_set(
            &cur,
            "deny",
            &ctx.policy.lockout_deny.to_string(),
            KvStyle::Spaced,
        );
        let t = kv_set(
            &t,
            "unlock_time",
            &ctx.policy.lockout_unlock_time.to_string(),
            KvStyle::Spaced,
        );
        fix.write(FAILLOCK_CONF, t);
    }
    if ctx.host.authselect {
        authselect::set_features(ctx, &["with-faillock"], &[], &mut fix)?;
        return Ok(fix);
    }
    for path in stack_files(ctx, "auth")? {
        pam_edit(ctx, &mut fix, &path, |pf| {
            if use_faillock {
                for (i, _) in pf.find("auth", "pam_tally2").into_iter().rev() {
                    pf.lines.remove(i);
                }
                let args = |first: &str| -> Vec<String> {
                    let mut v = vec![first.to_string()];
                    if first == "preauth" {
                        v.push("silent".into());
                    }
                    v.push(deny.clone());
                    v.push(unlock.clone());
                    v
                };
                for (i, l) in pf.find("auth", "pam_faillock") {
                    let mut a = l.args.clone();
                    set_arg(&mut a, "deny", &ctx.policy.lockout_deny.to_string());
                    set_arg(
                        &mut a,
                        "unlock_time",
                        &ctx.policy.lockout_unlock_time.to_string(),
                    );
                    pf.set_args(i, &a);
                }
                let fl = pf.find("auth", "pam_faillock");
                let (ui, u) = pf
                    .find("auth", "pam_unix")
                    .into_iter()
                    .next()
                    .ok_or_else(|| Unk(format!("{path} has no auth pam_unix line")))?;
                if !fl
                    .iter()
                    .any(|(_, l)| l.args.iter().any(|a| a == "authfail"))
                {
                    let a = args("authfail");
                    let a: Vec<&str> = a.iter().map(String::as_str).collect();
                    let mut at = ui + 1;
                    pf.lines.insert(
                        at,
                        pam_format("auth", "[default=die]", "pam_faillock.so", &a),
                    );
                    if u.control.contains("success=") {
                        // Debian-style jump over the next line: keep its target intact.
                        at += 1;
                        pf.lines.insert(
                            at,
                            pam_format("auth", "sufficient", "pam_faillock.so", &["authsucc"]),
                        );
                    }
                }
                if !fl
                    .iter()
                    .any(|(_, l)| l.args.iter().any(|a| a == "preauth"))
                {
                    let a = args("preauth");
                    let a: Vec<&str> = a.iter().map(String::as_str).collect();
                    pf.lines
                        .insert(ui, pam_format("auth", "required", "pam_faillock.so", &a));
                }
            } else {
                let t2 = pf.find("auth", "pam_tally2");
                if t2.is_empty() {
                    let (ui, _) = pf
                        .find("auth", "pam_unix")
                        .into_iter()
                        .next()
                        .ok_or_else(|| Unk(format!("{path} has no auth pam_unix line")))?;
                    pf.lines.insert(
                        ui,
                        pam_format(
                            "auth",
                            "required",
                            "pam_tally2.so",
                            &[&deny, "onerr=fail", &unlock],
                        ),
                    );
                } else {
                    for (i, l) in t2 {
                        let mut a = l.args.clone();
                        set_arg(&mut a, "deny", &ctx.policy.lockout_deny.to_string());
                        set_arg(
                            &mut a,
                            "unlock_time",
                            &ctx.policy.lockout_unlock_time.to_string(),
                        );
                        pf.set_args(i, &a);
                    }
                }
            }
            Ok(())
        })?;
    }
    for path in stack_files(ctx, "account")? {
        pam_edit(ctx, &mut fix, &path, |pf| {
            let module = if use_faillock {
                "pam_faillock"
            } else {
                "pam_tally2"
            };
            if use_faillock {
                for (i, _) in pf.find("account", "pam_tally2").into_iter().rev() {
                    pf.lines.remove(i);
                }
            }
            if pf.find("account", module).is_empty() {
                let (ui, _) = pf
                    .find("account", "pam_unix")
                    .into_iter()
                    .next()
                    .ok_or_else(|| Unk(format!("{path} has no account pam_unix line")))?;
                pf.lines.insert(
                    ui,
                    pam_format("account", "required", &format!("{module}.so"), &[]),
                );
            }
            Ok(())
        })?;
    }
    if !use_faillock {
        fix.notes
            .push("pam_faillock is absent on this host: using pam_tally2 (rule 2)".into());
    }
    pam_notes(ctx, &mut fix);
    Ok(fix)
}

// auth.no_empty_pw

fn nullok_files(ctx: &Ctx) -> Result<Vec<String>, Unk> {
    let mut v = stack_files(ctx, "auth")?;
    if ctx.host.pam == PamLayout::Common {
        v.extend(stack_files(ctx, "password")?);
    }
    Ok(v)
}

fn empty_state(ctx: &Ctx) -> Result<(Vec<String>, Vec<String>), Unk> {
    let shadow = db(ctx, SHADOW, 9)?;
    let empty: Vec<String> = shadow
        .entries()
        .filter(|f| f[1].is_empty())
        .map(|f| f[0].clone())
        .collect();
    let mut nullok = Vec::new();
    for path in nullok_files(ctx)? {
        let pf = pam(ctx, &path)?;
        for (i, l) in pf.parsed() {
            if module_name(&l.module) == "pam_unix"
                && l.args.iter().any(|a| a.starts_with("nullok"))
            {
                nullok.push(format!("{path}:{}", i + 1));
            }
        }
    }
    Ok((empty, nullok))
}

fn audit_empty_pw(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (empty, nullok) = empty_state(ctx)?;
    let obs = format!(
        "empty password: [{}]; nullok: [{}]",
        empty.join(", "),
        nullok.join(", ")
    );
    Ok(Outcome::new(
        empty.is_empty() && nullok.is_empty(),
        obs,
        "no empty password field; no nullok",
    ))
}

fn fix_empty_pw(ctx: &Ctx) -> Result<Fix, Unk> {
    let (empty, nullok) = empty_state(ctx)?;
    let mut fix = Fix::default();
    if !empty.is_empty() {
        let mut shadow = db(ctx, SHADOW, 9)?;
        for n in &empty {
            shadow.set(n, 1, "!");
            fix.actions.push(format!("passwd -l {n}"));
        }
        fix.write(SHADOW, shadow.render());
    }
    if !nullok.is_empty() {
        if ctx.host.authselect {
            authselect::set_features(ctx, &["without-nullok"], &[], &mut fix)?;
        } else {
            for path in nullok_files(ctx)? {
                pam_edit(ctx, &mut fix, &path, |pf| {
                    for (i, l) in pf.parsed() {
                        if module_name(&l.module) == "pam_unix"
                            && l.args.iter().any(|a| a.starts_with("nullok"))
                        {
                            let a: Vec<String> = l
                                .args
                                .iter()
                                .filter(|a| !a.starts_with("nullok"))
                                .cloned()
                                .collect();
                            pf.set_args(i, &a);
                        }
                    }
                    Ok(())
                })?;
            }
            pam_notes(ctx, &mut fix);
        }
    }
    Ok(fix)
}

// ---------------------------------------------------------------- report-only account checks

fn audit_uid0(ctx: &Ctx) -> Result<Outcome, Unk> {
    let us = users(ctx)?;
    let zero: Vec<&str> = us
        .iter()
        .filter(|u| u.uid == 0)
        .map(|u| u.name.as_str())
        .collect();
    Ok(Outcome::new(
        zero == ["root"],
        format!("UID 0: [{}]", zero.join(", ")),
        "only root",
    ))
}

fn audit_unique(ctx: &Ctx) -> Result<Outcome, Unk> {
    let us = users(ctx)?;
    let g = db(ctx, GROUP, 4)?;
    let mut dups = Vec::new();
    let mut seen = BTreeMap::new();
    for u in &us {
        if let Some(prev) = seen.insert(u.uid, u.name.clone()) {
            dups.push(format!("uid {} ({prev}, {})", u.uid, u.name));
        }
    }
    let mut names = BTreeSet::new();
    for u in &us {
        if !names.insert(u.name.clone()) {
            dups.push(format!("user {}", u.name));
        }
    }
    let mut gids = BTreeMap::new();
    let mut gnames = BTreeSet::new();
    for f in g.entries() {
        if let Some(prev) = gids.insert(f[2].clone(), f[0].clone()) {
            dups.push(format!("gid {} ({prev}, {})", f[2], f[0]));
        }
        if !gnames.insert(f[0].clone()) {
            dups.push(format!("group {}", f[0]));
        }
    }
    Ok(Outcome::new(
        dups.is_empty(),
        if dups.is_empty() {
            "no duplicates".into()
        } else {
            format!("duplicates: {}", dups.join("; "))
        },
        "no duplicate UID, GID or name",
    ))
}

// ---------------------------------------------------------------- sess.tmout

const TMOUT_DROPIN: &str = "/etc/profile.d/preflight-tmout.sh";

fn shell_files(ctx: &Ctx) -> Result<Vec<String>, Unk> {
    let mut v: Vec<String> = ["/etc/profile", "/etc/bashrc", "/etc/bash.bashrc"]
        .iter()
        .filter(|p| ctx.root.exists(p))
        .map(|p| p.to_string())
        .collect();
    for n in ctx.root.list("/etc/profile.d")? {
        if n.ends_with(".sh") {
            v.push(format!("/etc/profile.d/{n}"));
        }
    }
    Ok(v)
}

fn is_disabled_or_comment(t: &str) -> bool {
    t.starts_with('#') || t.starts_with(": #")
}

fn tokens(line: &str) -> Vec<String> {
    line.split(|c: char| c.is_whitespace() || c == ';')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

struct Tmout {
    values: Vec<(String, String)>,
    readonly: bool,
    exported: bool,
    lines: Vec<(String, usize)>,
}

fn tmout_state(ctx: &Ctx) -> Result<Tmout, Unk> {
    let mut st = Tmout {
        values: vec![],
        readonly: false,
        exported: false,
        lines: vec![],
    };
    for p in shell_files(ctx)? {
        let Some(text) = ctx.read_text(&p)? else {
            continue;
        };
        for (i, l) in text.lines().enumerate() {
            let t = l.trim();
            if is_disabled_or_comment(t) {
                continue;
            }
            let toks = tokens(t);
            let mentions = toks.iter().any(|x| x == "TMOUT" || x.starts_with("TMOUT="));
            if !mentions {
                continue;
            }
            st.lines.push((p.clone(), i));
            for x in &toks {
                if let Some(v) = x.strip_prefix("TMOUT=") {
                    st.values.push((
                        p.clone(),
                        v.trim_matches('"').trim_matches('\'').to_string(),
                    ));
                }
            }
            let decl_flags: String = if toks
                .first()
                .is_some_and(|x| x == "declare" || x == "typeset")
            {
                toks.iter()
                    .filter(|x| x.starts_with('-'))
                    .map(|x| x.as_str())
                    .collect()
            } else {
                String::new()
            };
            if toks.iter().any(|x| x == "readonly") || decl_flags.contains('r') {
                st.readonly = true;
            }
            if toks.iter().any(|x| x == "export") || decl_flags.contains('x') {
                st.exported = true;
            }
        }
    }
    Ok(st)
}

fn audit_tmout(ctx: &Ctx) -> Result<Outcome, Unk> {
    let st = tmout_state(ctx)?;
    let max = i64::from(ctx.policy.tmout);
    let vals_ok = !st.values.is_empty()
        && st
            .values
            .iter()
            .all(|(_, v)| v.parse::<i64>().is_ok_and(|n| n >= 1 && n <= max));
    let vals: Vec<String> = st
        .values
        .iter()
        .map(|(p, v)| format!("{p}: TMOUT={v}"))
        .collect();
    let obs = format!(
        "{}; readonly={}; exported={}",
        if vals.is_empty() {
            "TMOUT not set".into()
        } else {
            vals.join(", ")
        },
        st.readonly,
        st.exported
    );
    Ok(Outcome::new(
        vals_ok && st.readonly && st.exported,
        obs,
        format!("TMOUT 1..={max}, readonly, exported"),
    ))
}

fn fix_tmout(ctx: &Ctx) -> Result<Fix, Unk> {
    let st = tmout_state(ctx)?;
    let mut fix = Fix::default();
    fix.write(
        TMOUT_DROPIN,
        format!(
            "# Managed by preflight-agent harden (sess.tmout)\nTMOUT={}\nreadonly TMOUT\nexport TMOUT\n",
            ctx.policy.tmout
        ),
    );
    // Other TMOUT lines would conflict with the readonly value: disable them with a no-op that
    // keeps the shell syntax valid.
    let mut by_file: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (p, i) in st.lines {
        if p != TMOUT_DROPIN {
            by_file.entry(p).or_default().push(i);
        }
    }
    for (p, idx) in by_file {
        let text = need_text(ctx, &p)?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for i in idx {
            lines[i] = format!(": {DISABLED}{}", lines[i]);
        }
        fix.write(&p, super::text::join_lines(&lines, &text));
    }
    Ok(fix)
}

// ---------------------------------------------------------------- ssh.*

fn sshd_cfg(ctx: &Ctx) -> Result<sshd::SshdConfig, Unk> {
    Ok(sshd::load(ctx, &BTreeMap::new())?)
}

fn sshd_value(cfg: &sshd::SshdConfig, key: &str, default: &str) -> String {
    cfg.get(&key.to_ascii_lowercase())
        .map(|d| d.value.clone())
        .unwrap_or_else(|| default.to_string())
}

/// `Match`-block values of `key` that fail `ok`: descriptions and (file, line) to disable.
fn match_overrides(
    ctx: &Ctx,
    key: &str,
    ok: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<(String, usize)>), Unk> {
    let cfg = sshd_cfg(ctx)?;
    let lk = key.to_ascii_lowercase();
    let mut obs = Vec::new();
    let mut lines = Vec::new();
    for d in cfg.matched.iter().filter(|d| d.key == lk && !ok(&d.value)) {
        obs.push(format!(
            "Match override {key} {} ({}:{})",
            d.value,
            d.file,
            d.line + 1
        ));
        lines.push((d.file.clone(), d.line));
    }
    Ok((obs, lines))
}

fn ssh_fix(
    ctx: &Ctx,
    settings: &[(&str, String)],
    disable: &[(String, usize)],
) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    if !disable.is_empty() {
        fix.notes.push(format!(
            "{} non-compliant override(s) inside Match blocks disabled",
            disable.len()
        ));
    }
    for (p, c) in sshd::set(ctx, settings, disable)? {
        let meta = FileMeta {
            mode: 0o600,
            uid: 0,
            gid: 0,
        };
        fix.writes.insert(p, (c, meta));
    }
    fix.validate_sshd = true;
    fix.notes
        .push("sshd reads the new settings on `systemctl reload sshd`".into());
    Ok(fix)
}

fn idle_bad(ctx: &Ctx) -> Result<(String, Vec<(&'static str, String)>, Vec<(String, usize)>), Unk> {
    let cfg = sshd_cfg(ctx)?;
    let iv = sshd_value(&cfg, "ClientAliveInterval", "0");
    let cm = sshd_value(&cfg, "ClientAliveCountMax", "3");
    let p = ctx.policy;
    let mut bad = Vec::new();
    if !iv
        .parse::<u32>()
        .is_ok_and(|v| v >= 1 && v <= p.ssh_client_alive_interval)
    {
        bad.push((
            "ClientAliveInterval",
            p.ssh_client_alive_interval.to_string(),
        ));
    }
    if !cm
        .parse::<u32>()
        .is_ok_and(|v| v >= 1 && v <= p.ssh_client_alive_count_max)
    {
        bad.push((
            "ClientAliveCountMax",
            p.ssh_client_alive_count_max.to_string(),
        ));
    }
    let (mut mo, mut ml) = match_overrides(ctx, "ClientAliveInterval", &|v| {
        v.parse::<u32>()
            .is_ok_and(|v| v >= 1 && v <= p.ssh_client_alive_interval)
    })?;
    let (mo2, ml2) = match_overrides(ctx, "ClientAliveCountMax", &|v| {
        v.parse::<u32>()
            .is_ok_and(|v| v >= 1 && v <= p.ssh_client_alive_count_max)
    })?;
    mo.extend(mo2);
    ml.extend(ml2);
    let mut obs = format!("ClientAliveInterval {iv}, ClientAliveCountMax {cm}");
    for m in mo {
        obs.push_str(&format!("; {m}"));
    }
    Ok((obs, bad, ml))
}

fn audit_ssh_idle(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, bad, ml) = idle_bad(ctx)?;
    let p = ctx.policy;
    Ok(Outcome::new(
        bad.is_empty() && ml.is_empty(),
        obs,
        format!(
            "ClientAliveInterval 1..={}, ClientAliveCountMax 1..={}",
            p.ssh_client_alive_interval, p.ssh_client_alive_count_max
        ),
    ))
}

fn fix_ssh_idle(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, bad, ml) = idle_bad(ctx)?;
    ssh_fix(ctx, &bad, &ml)
}

/// Accounts that can log in and use sudo (safety rule 6).
fn sudo_admins(ctx: &Ctx) -> Result<Vec<String>, Unk> {
    let us = users(ctx)?;
    let shadow = db(ctx, SHADOW, 9)?;
    let groups = db(ctx, GROUP, 4)?;
    let mut rule_users = BTreeSet::new();
    let mut rule_groups = BTreeSet::new();
    let mut files = vec!["/etc/sudoers".to_string()];
    for n in ctx.root.list("/etc/sudoers.d")? {
        if !n.contains('.') && !n.ends_with('~') {
            files.push(format!("/etc/sudoers.d/{n}"));
        }
    }
    for f in files {
        let Some(t) = ctx.read_text(&f)? else {
            continue;
        };
        for l in t.lines() {
            let l = l.trim();
            if l.is_empty()
                || l.starts_with('#')
                || l.starts_with("Defaults")
                || l.contains("_Alias")
            {
                continue;
            }
            let Some((who, rest)) = l.split_once(char::is_whitespace) else {
                continue;
            };
            if !grants_all(rest) {
                continue;
            }
            match who.strip_prefix('%') {
                Some(g) => rule_groups.insert(g.to_string()),
                None => rule_users.insert(who.to_string()),
            };
        }
    }
    let mut out = Vec::new();
    for u in us
        .iter()
        .filter(|u| u.uid != 0 && !is_nologin(&u.shell) && !u.shell.is_empty())
    {
        let hash_ok = shadow
            .entries()
            .any(|f| f[0] == u.name && usable_hash(&f[1]));
        let key_ok = ctx
            .read(&format!(
                "{}/.ssh/authorized_keys",
                u.home.trim_end_matches('/')
            ))
            .ok()
            .flatten()
            .is_some_and(|d| d.iter().any(|b| !b.is_ascii_whitespace()));
        if !(hash_ok || key_ok) {
            continue;
        }
        let in_group = |g: &str| {
            groups.entries().any(|f| {
                f[0] == g
                    && (f[3].split(',').any(|m| m == u.name)
                        || f[2].parse::<u32>().ok() == Some(u.gid))
            })
        };
        if rule_users.contains(&u.name) || rule_groups.iter().any(|g| in_group(g)) {
            out.push(u.name.clone());
        }
    }
    Ok(out)
}

/// True for a sudoers rule body that grants every command (`ALL=(ALL:ALL) NOPASSWD: ALL`).
fn grants_all(rest: &str) -> bool {
    let Some((_, cmds)) = rest.split_once('=') else {
        return false;
    };
    let cmds = match cmds.trim_start().strip_prefix('(') {
        Some(r) => r.split_once(')').map_or("", |x| x.1),
        None => cmds,
    };
    let mut c = cmds.trim();
    while let Some((tag, r)) = c.split_once(':') {
        if !matches!(
            tag.trim(),
            "NOPASSWD"
                | "PASSWD"
                | "SETENV"
                | "NOSETENV"
                | "EXEC"
                | "NOEXEC"
                | "LOG_INPUT"
                | "LOG_OUTPUT"
        ) {
            break;
        }
        c = r.trim();
    }
    c == "ALL"
}

fn root_login_state(ctx: &Ctx) -> Result<(String, String, Vec<String>), Unk> {
    let cfg = sshd_cfg(ctx)?;
    // Unset is not accepted: the compiled-in default differs between builds (EL7: yes).
    let v = sshd_value(&cfg, "PermitRootLogin", "(unset)").to_ascii_lowercase();
    let admins = sudo_admins(ctx)?;
    let want = if admins.is_empty() {
        "prohibit-password"
    } else {
        "no"
    };
    Ok((v, want.to_string(), admins))
}

fn root_login_ok(v: &str, want: &str) -> bool {
    let v = v.to_ascii_lowercase();
    v == "no"
        || (want == "prohibit-password"
            && matches!(
                v.as_str(),
                "prohibit-password" | "without-password" | "forced-commands-only"
            ))
}

fn audit_root_login(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (v, want, admins) = root_login_state(ctx)?;
    let (mo, ml) = match_overrides(ctx, "PermitRootLogin", &|x| root_login_ok(x, &want))?;
    let ok = root_login_ok(&v, &want) && ml.is_empty();
    let mut obs = format!(
        "PermitRootLogin {v}; sudo-capable accounts: [{}]",
        admins.join(", ")
    );
    for m in mo {
        obs.push_str(&format!("; {m}"));
    }
    let mut o = Outcome::new(ok, obs, want.clone());
    if want != "no" {
        o.reason = Some(
            "no working non-root account with sudo: `no` would lock the operator out (rule 6)"
                .into(),
        );
    }
    Ok(o)
}

fn fix_root_login(ctx: &Ctx) -> Result<Fix, Unk> {
    let (v, want, admins) = root_login_state(ctx)?;
    let (_, ml) = match_overrides(ctx, "PermitRootLogin", &|x| root_login_ok(x, &want))?;
    let settings = if root_login_ok(&v, &want) {
        vec![]
    } else {
        vec![("PermitRootLogin", want.clone())]
    };
    let mut fix = ssh_fix(ctx, &settings, &ml)?;
    if want == "no" {
        fix.notes.push(format!(
            "root login disabled: sudo-capable accounts exist ({})",
            admins.join(", ")
        ));
    } else {
        fix.notes.push("PermitRootLogin prohibit-password, not no: no working non-root sudo account exists (rule 6)".into());
    }
    Ok(fix)
}

fn simple_ssh(
    ctx: &Ctx,
    key: &str,
    default: &str,
    ok: fn(&str, &Policy) -> bool,
) -> Result<(String, bool, bool, Vec<(String, usize)>), Unk> {
    let cfg = sshd_cfg(ctx)?;
    let v = sshd_value(&cfg, key, default);
    let (mo, ml) = match_overrides(ctx, key, &|x| ok(x, ctx.policy))?;
    let mut obs = format!("{key} {v}");
    for m in mo {
        obs.push_str(&format!("; {m}"));
    }
    let global_ok = ok(&v, ctx.policy);
    Ok((obs, global_ok && ml.is_empty(), global_ok, ml))
}

fn ok_no(v: &str, _: &Policy) -> bool {
    v.eq_ignore_ascii_case("no")
}

fn ok_tries(v: &str, p: &Policy) -> bool {
    v.parse::<u32>()
        .is_ok_and(|n| n >= 1 && n <= p.ssh_max_auth_tries)
}

fn audit_ssh_empty(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (o, ok, _, _) = simple_ssh(ctx, "PermitEmptyPasswords", "no", ok_no)?;
    Ok(Outcome::new(ok, o, "no"))
}
fn fix_ssh_empty(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, _, global_ok, ml) = simple_ssh(ctx, "PermitEmptyPasswords", "no", ok_no)?;
    let s = if global_ok {
        vec![]
    } else {
        vec![("PermitEmptyPasswords", "no".to_string())]
    };
    ssh_fix(ctx, &s, &ml)
}
fn audit_ssh_tries(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (o, ok, _, _) = simple_ssh(ctx, "MaxAuthTries", "6", ok_tries)?;
    Ok(Outcome::new(
        ok,
        o,
        format!("<= {}", ctx.policy.ssh_max_auth_tries),
    ))
}
fn fix_ssh_tries(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, _, global_ok, ml) = simple_ssh(ctx, "MaxAuthTries", "6", ok_tries)?;
    let s = if global_ok {
        vec![]
    } else {
        vec![("MaxAuthTries", ctx.policy.ssh_max_auth_tries.to_string())]
    };
    ssh_fix(ctx, &s, &ml)
}

const SSH_MISC: &[(&str, &str, &[&str], &str)] = &[
    ("LogLevel", "INFO", &["info", "verbose"], "INFO"),
    ("X11Forwarding", "no", &["no"], "no"),
    ("IgnoreRhosts", "yes", &["yes"], "yes"),
    ("HostbasedAuthentication", "no", &["no"], "no"),
    ("PermitUserEnvironment", "no", &["no"], "no"),
];

fn misc_state(
    ctx: &Ctx,
) -> Result<
    (
        Vec<String>,
        Vec<(&'static str, String)>,
        Option<FileMeta>,
        Vec<(String, usize)>,
    ),
    Unk,
> {
    let cfg = sshd_cfg(ctx)?;
    let mut obs = Vec::new();
    let mut bad = Vec::new();
    let mut lines = Vec::new();
    for (k, def, ok, want) in SSH_MISC {
        let v = sshd_value(&cfg, k, def);
        if !ok.contains(&v.to_ascii_lowercase().as_str()) {
            bad.push((*k, want.to_string()));
        }
        obs.push(format!("{k} {v}"));
        let (mo, ml) = match_overrides(ctx, k, &|x| ok.contains(&x.to_ascii_lowercase().as_str()))?;
        obs.extend(mo);
        lines.extend(ml);
    }
    let m = ctx.root.meta(sshd::MAIN)?;
    let meta_fix = match m {
        Some(m) if m.mode & !0o600 != 0 || m.uid != 0 || m.gid != 0 => {
            obs.push(format!("sshd_config {:04o} {}:{}", m.mode, m.uid, m.gid));
            Some(FileMeta {
                mode: m.mode & 0o600,
                uid: 0,
                gid: 0,
            })
        }
        Some(m) => {
            obs.push(format!("sshd_config {:04o} {}:{}", m.mode, m.uid, m.gid));
            None
        }
        None => None,
    };
    Ok((obs, bad, meta_fix, lines))
}

fn audit_ssh_misc(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, bad, meta, ml) = misc_state(ctx)?;
    Ok(Outcome::new(bad.is_empty() && meta.is_none() && ml.is_empty(), obs.join(", "), "LogLevel INFO, X11Forwarding no, IgnoreRhosts yes, HostbasedAuthentication no, PermitUserEnvironment no, sshd_config 0600 root"))
}

fn fix_ssh_misc(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, bad, meta, ml) = misc_state(ctx)?;
    let mut fix = if bad.is_empty() && ml.is_empty() {
        Fix::default()
    } else {
        ssh_fix(ctx, &bad, &ml)?
    };
    if let Some(m) = meta {
        fix.metas.push((sshd::MAIN.into(), m));
    }
    Ok(fix)
}

fn parse_openssh(s: &str) -> Option<(u32, u32)> {
    let i = s.find("OpenSSH_")?;
    let v = &s[i + 8..];
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn audit_ssh_version(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (maj, min) = ctx.policy.openssh_min;
    let exp = format!("OpenSSH >= {maj}.{min}");
    let cfg = sshd_cfg(ctx)?;
    if let Some(d) = cfg.get("protocol") {
        if d.value.contains('1') {
            return Ok(Outcome::new(
                false,
                format!("Protocol {} in {}", d.value, d.file),
                exp,
            ));
        }
    }
    if !ctx.root.is_host() {
        return Ok(Outcome::live_only(
            "",
            "the sshd version is live state: read only when the root prefix is /",
            exp,
        ));
    }
    let out = super::run_fixed("/usr/sbin/sshd", &["-V"]).map_err(Unk)?.1;
    match parse_openssh(&out) {
        Some(v) => Ok(Outcome::new(
            v >= (maj, min),
            format!("OpenSSH {}.{}", v.0, v.1),
            exp,
        )),
        None => Ok(Outcome::unknown(
            format!("cannot read the version from `sshd -V`: {}", out.trim()),
            exp,
        )),
    }
}

// ssh.no_plaintext_remote

const PLAIN_XINETD: &[&str] = &[
    "telnet",
    "krb5-telnet",
    "ekrb5-telnet",
    "rsh",
    "rlogin",
    "rexec",
    "gssftp",
];
const PLAIN_UNITS: &[&str] = &[
    "telnet.socket",
    "rsh.socket",
    "rlogin.socket",
    "rexec.socket",
    "vsftpd.service",
    "proftpd.service",
    "pure-ftpd.service",
    "inetutils-inetd.service",
];
const PLAIN_PORTS: &[u16] = &[21, 23, 512, 513, 514];
const WANTS: &[&str] = &[
    "/etc/systemd/system/multi-user.target.wants",
    "/etc/systemd/system/sockets.target.wants",
];

fn xinetd_enabled(text: &str) -> bool {
    text.lines().any(|l| {
        let t: String = l.split_whitespace().collect::<Vec<_>>().join(" ");
        t == "disable = no" || t == "disable=no"
    })
}

fn plaintext_state(ctx: &Ctx) -> Result<(Vec<String>, Vec<String>, Vec<String>), Unk> {
    let mut xinetd = Vec::new();
    for s in PLAIN_XINETD {
        let p = format!("/etc/xinetd.d/{s}");
        if let Some(t) = ctx.read_text(&p)? {
            if xinetd_enabled(&t) {
                xinetd.push(p);
            }
        }
    }
    let mut units = Vec::new();
    for d in WANTS {
        for u in PLAIN_UNITS {
            let p = format!("{d}/{u}");
            if ctx.root.entry(&p)? != Entry::Missing {
                units.push(p);
            }
        }
    }
    let mut ports = Vec::new();
    if ctx.root.is_host() {
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(t) = std::fs::read_to_string(f) {
                for l in t.lines().skip(1) {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    if cols.len() > 3 && cols[3] == "0A" {
                        if let Some(port) = cols[1]
                            .rsplit(':')
                            .next()
                            .and_then(|h| u16::from_str_radix(h, 16).ok())
                        {
                            if PLAIN_PORTS.contains(&port) {
                                ports.push(format!("tcp port {port} listening"));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((xinetd, units, ports))
}

fn audit_plaintext(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (x, u, p) = plaintext_state(ctx)?;
    let mut all: Vec<String> = x.iter().map(|p| format!("{p}: disable = no")).collect();
    all.extend(u.iter().map(|p| format!("{p} enabled")));
    all.extend(p.clone());
    let mut o = Outcome::new(
        all.is_empty(),
        if all.is_empty() {
            "none found".into()
        } else {
            all.join("; ")
        },
        "telnet, rsh, rlogin, rexec, ftp disabled and not listening",
    );
    if !ctx.root.is_host() {
        o.reason = Some(
            "listening sockets are live state: not checked because the root prefix is not /".into(),
        );
    }
    Ok(o)
}

fn fix_plaintext(ctx: &Ctx) -> Result<Fix, Unk> {
    let (x, u, p) = plaintext_state(ctx)?;
    let mut fix = Fix::default();
    for path in x {
        let t = need_text(ctx, &path)?;
        let lines: Vec<String> = t
            .lines()
            .map(|l| {
                let n: String = l.split_whitespace().collect::<Vec<_>>().join(" ");
                if n == "disable = no" || n == "disable=no" {
                    l.replacen("no", "yes", 1)
                } else {
                    l.to_string()
                }
            })
            .collect();
        fix.write(&path, super::text::join_lines(&lines, &t));
        fix.notes.push(format!(
            "{path}: xinetd picks this up on `systemctl reload xinetd`"
        ));
    }
    for path in u {
        fix.notes.push(format!(
            "disabling {path} (systemctl disable); stop the running service with systemctl stop"
        ));
        fix.unlinks.push(path);
    }
    if !p.is_empty() {
        fix.notes.push(format!(
            "still listening: {}; stop those services by hand",
            p.join(", ")
        ));
    }
    Ok(fix)
}

// ---------------------------------------------------------------- acct.system_nologin, su

fn nologin_bad(ctx: &Ctx) -> Result<Vec<(String, String)>, Unk> {
    let min = uid_min(ctx);
    Ok(users(ctx)?
        .into_iter()
        .filter(|u| {
            u.uid < min && !matches!(u.name.as_str(), "root" | "sync" | "shutdown" | "halt")
        })
        .filter(|u| !is_nologin(&u.shell))
        .map(|u| (u.name, u.shell))
        .collect())
}

fn audit_nologin(ctx: &Ctx) -> Result<Outcome, Unk> {
    let bad = nologin_bad(ctx)?;
    let l: Vec<String> = bad
        .iter()
        .map(|(n, s)| format!("{n}:{}", if s.is_empty() { "(empty)" } else { s }))
        .collect();
    Ok(Outcome::new(
        bad.is_empty(),
        if l.is_empty() {
            "all system accounts use nologin/false".into()
        } else {
            format!("login shells: {}", l.join(", "))
        },
        "nologin or false for UID < UID_MIN except root",
    ))
}

fn fix_nologin(ctx: &Ctx) -> Result<Fix, Unk> {
    let bad = nologin_bad(ctx)?;
    let mut fix = Fix::default();
    let mut p = db(ctx, PASSWD, 7)?;
    let nl = if ctx.host.family == super::Family::RedHat && ctx.root.exists("/sbin/nologin") {
        "/sbin/nologin".to_string()
    } else {
        ctx.host.nologin.clone()
    };
    for (n, _) in &bad {
        p.set(n, 6, &nl);
        fix.actions.push(format!("usermod -s {nl} {n}"));
    }
    fix.write(PASSWD, p.render());
    fix.notes
        .push("a service that runs `su - <account>` needs `su -s /bin/sh` afterwards".into());
    Ok(fix)
}

const SU: &str = "/etc/pam.d/su";

fn audit_su_wheel(ctx: &Ctx) -> Result<Outcome, Unk> {
    let pf = pam(ctx, SU)?;
    let w = pf.find("auth", "pam_wheel");
    let ok = w
        .iter()
        .any(|(_, l)| l.control == "required" && l.args.iter().any(|a| a == "use_uid"));
    let obs = if w.is_empty() {
        "no pam_wheel line".to_string()
    } else {
        w.iter()
            .map(|(_, l)| format!("auth {} pam_wheel.so {}", l.control, l.args.join(" ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Ok(Outcome::new(ok, obs, "auth required pam_wheel.so use_uid"))
}

fn fix_su_wheel(ctx: &Ctx) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    pam_edit(ctx, &mut fix, SU, |pf| {
        // Uncomment the stock line when present, otherwise insert after pam_rootok.
        let commented = pf.lines.iter().position(|l| {
            let t = l.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
            l.trim_start().starts_with('#')
                && t.starts_with("auth")
                && t.contains("required")
                && t.contains("pam_wheel.so")
                && t.contains("use_uid")
                && !t.contains("trust")
        });
        if let Some(i) = commented {
            pf.lines[i] = pf.lines[i].trim_start_matches(['#', ' ']).to_string();
            return Ok(());
        }
        let w = pf.find("auth", "pam_wheel");
        if let Some((i, l)) = w.iter().find(|(_, l)| l.control == "required") {
            let mut a = l.args.clone();
            a.push("use_uid".into());
            pf.set_args(*i, &a);
            return Ok(());
        }
        let (ri, _) = pf
            .find("auth", "pam_rootok")
            .into_iter()
            .next()
            .ok_or_else(|| Unk(format!("{SU} has no pam_rootok line to anchor pam_wheel")))?;
        pf.lines.insert(
            ri + 1,
            pam_format("auth", "required", "pam_wheel.so", &["use_uid"]),
        );
        Ok(())
    })?;
    let g = db(ctx, GROUP, 4)?;
    match g.entries().find(|f| f[0] == "wheel") {
        Some(f) => fix
            .notes
            .push(format!("only members of wheel may su: [{}]", f[3])),
        None => fix
            .notes
            .push("no wheel group: pam_wheel then allows only members of the GID 0 group".into()),
    }
    Ok(fix)
}

// ---------------------------------------------------------------- perm.*

fn umask_files(ctx: &Ctx) -> Result<Vec<String>, Unk> {
    shell_files(ctx)
}

fn umask_strict(v: u32, want: u32) -> bool {
    v & want == want
}

fn umask_state(ctx: &Ctx) -> Result<(Vec<String>, Vec<(String, usize)>, bool), Unk> {
    let want = ctx.policy.umask;
    let mut obs = Vec::new();
    let mut bad = Vec::new();
    for p in umask_files(ctx)? {
        let Some(t) = ctx.read_text(&p)? else {
            continue;
        };
        for (i, l) in t.lines().enumerate() {
            let tl = l.trim();
            if is_disabled_or_comment(tl) {
                continue;
            }
            let toks = tokens(tl);
            for w in toks.windows(2) {
                if w[0] == "umask" {
                    if let Ok(v) = u32::from_str_radix(&w[1], 8) {
                        obs.push(format!("{p}:{} umask {}", i + 1, w[1]));
                        if !umask_strict(v, want) {
                            bad.push((p.clone(), i));
                        }
                    }
                }
            }
        }
    }
    let defs = kv_parse(LOGIN_DEFS, &need_text(ctx, LOGIN_DEFS)?, KvStyle::Space)?;
    let defs_bad = match kv_get(&defs, "UMASK", false) {
        Some(v) => {
            obs.push(format!("login.defs UMASK {v}"));
            !u32::from_str_radix(v, 8).is_ok_and(|v| umask_strict(v, want))
        }
        None => {
            obs.push("login.defs UMASK unset".into());
            true
        }
    };
    Ok((obs, bad, defs_bad))
}

fn audit_umask(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, bad, defs_bad) = umask_state(ctx)?;
    Ok(Outcome::new(
        bad.is_empty() && !defs_bad,
        obs.join("; "),
        format!("{:03o} or stricter", ctx.policy.umask),
    ))
}

fn fix_umask(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, bad, defs_bad) = umask_state(ctx)?;
    let want = format!("{:03o}", ctx.policy.umask);
    let mut fix = Fix::default();
    let mut by_file: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (p, i) in bad {
        by_file.entry(p).or_default().push(i);
    }
    for (p, idx) in by_file {
        let text = need_text(ctx, &p)?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for i in idx {
            let l = lines[i].clone();
            let mut out = String::new();
            let mut rest = l.as_str();
            while let Some(pos) = rest.find("umask") {
                out.push_str(&rest[..pos + 5]);
                rest = &rest[pos + 5..];
                let ws: String = rest
                    .chars()
                    .take_while(|c| *c == ' ' || *c == '\t')
                    .collect();
                let after = &rest[ws.len()..];
                let digits: String = after.chars().take_while(|c| c.is_digit(8)).collect();
                if !ws.is_empty() && !digits.is_empty() {
                    out.push_str(&ws);
                    out.push_str(&want);
                    rest = &after[digits.len()..];
                }
            }
            out.push_str(rest);
            lines[i] = out;
        }
        fix.write(&p, super::text::join_lines(&lines, &text));
    }
    if defs_bad {
        let t = need_text(ctx, LOGIN_DEFS)?;
        fix.write(LOGIN_DEFS, kv_set(&t, "UMASK", &want, KvStyle::Space));
    }
    Ok(fix)
}

const CRITICAL: &[(&str, u32)] = &[
    (PASSWD, 0o644),
    (SHADOW, 0o000),
    (GSHADOW, 0o000),
    (GROUP, 0o644),
];

fn perms_state(ctx: &Ctx) -> Result<(Vec<String>, Vec<(String, FileMeta)>), Unk> {
    let mut obs = Vec::new();
    let mut fixes = Vec::new();
    for (p, max) in CRITICAL {
        // Content is hashed for the evidence record only.
        ctx.read(p)?;
        match ctx.root.meta(p)? {
            None => obs.push(format!("{p} missing")),
            Some(m) => {
                obs.push(format!("{p} {:04o} {}:{}", m.mode, m.uid, m.gid));
                if m.mode & !max != 0 || m.uid != 0 || m.gid != 0 {
                    fixes.push((
                        p.to_string(),
                        FileMeta {
                            mode: m.mode & max,
                            uid: 0,
                            gid: 0,
                        },
                    ));
                }
            }
        }
    }
    Ok((obs, fixes))
}

fn audit_perms(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, fixes) = perms_state(ctx)?;
    Ok(Outcome::new(
        fixes.is_empty(),
        obs.join(", "),
        "passwd 0644, shadow 0000, gshadow 0000, group 0644, owner root:root",
    ))
}

fn fix_perms(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, fixes) = perms_state(ctx)?;
    let mut fix = Fix {
        metas: fixes,
        ..Fix::default()
    };
    if ctx.host.family == super::Family::Debian {
        fix.notes.push("Debian: unix_chkpwd (setgid shadow) can no longer read /etc/shadow; non-root password checks such as screen lockers fail".into());
    }
    Ok(fix)
}

// ---------------------------------------------------------------- audit.*, log.*, mac.*

const UNIT_DIRS: &[&str] = &[
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/etc/systemd/system",
];
const MU_WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

fn unit_path(ctx: &Ctx, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|p| ctx.root.exists(p))
}

fn unit_enabled(ctx: &Ctx, unit: &str) -> Result<bool, Unk> {
    Ok(ctx.root.entry(&format!("{MU_WANTS}/{unit}"))? != Entry::Missing)
}

fn process_running(name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .take(100_000)
        .any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
}

fn audit_auditd(ctx: &Ctx) -> Result<Outcome, Unk> {
    let exp = "enabled and running";
    if unit_path(ctx, "auditd.service").is_none() {
        return Ok(Outcome::new(false, "auditd.service not installed", exp));
    }
    let en = unit_enabled(ctx, "auditd.service")?;
    if !en {
        return Ok(Outcome::new(false, "auditd.service disabled", exp));
    }
    if !ctx.root.is_host() {
        return Ok(Outcome::live_only(
            "auditd.service enabled",
            "whether auditd runs is live state: read only when the root prefix is /",
            exp,
        ));
    }
    let run = process_running("auditd");
    Ok(Outcome::new(
        run,
        format!(
            "auditd.service enabled, {}",
            if run { "running" } else { "not running" }
        ),
        exp,
    ))
}

fn fix_auditd(ctx: &Ctx) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    let unit = unit_path(ctx, "auditd.service")
        .ok_or_else(|| Unk("auditd is not installed: install the audit package (packages are never installed automatically)".into()))?;
    if !unit_enabled(ctx, "auditd.service")? {
        fix.links.push((format!("{MU_WANTS}/auditd.service"), unit));
        fix.notes.push(
            "start it with `systemctl start auditd` (auditd refuses systemctl restart)".into(),
        );
    } else if ctx.root.is_host() {
        fix.notes
            .push("auditd is enabled but not running: start it with `service auditd start`".into());
    }
    Ok(fix)
}

const RULES_DIR: &str = "/etc/audit/rules.d";
const RULES_DROPIN: &str = "/etc/audit/rules.d/50-preflight.rules";

/// Audit rule categories: (name, predicate on rule text, rules written when missing).
#[allow(clippy::type_complexity)]
const CATEGORIES: &[(&str, fn(&str) -> bool, &str)] = &[
    ("identity", |t| ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"].iter().all(|f| t.contains(&format!("-w {f} "))),
        "-w /etc/passwd -p wa -k identity\n-w /etc/shadow -p wa -k identity\n-w /etc/group -p wa -k identity\n-w /etc/gshadow -p wa -k identity\n-w /etc/security/opasswd -p wa -k identity\n"),
    ("sudoers", |t| t.contains("-w /etc/sudoers "), "-w /etc/sudoers -p wa -k scope\n-w /etc/sudoers.d/ -p wa -k scope\n"),
    ("logins", |t| t.contains("/var/log/lastlog") || t.contains("/var/run/faillock") || t.contains("/var/log/faillog"),
        "-w /var/log/lastlog -p wa -k logins\n-w /var/run/faillock/ -p wa -k logins\n"),
    ("time", |t| t.contains("adjtimex") || t.contains("settimeofday") || t.contains("clock_settime"),
        "-a always,exit -F arch=b64 -S adjtimex -S settimeofday -k time-change\n-a always,exit -F arch=b32 -S adjtimex -S settimeofday -S stime -k time-change\n-a always,exit -F arch=b64 -S clock_settime -k time-change\n-w /etc/localtime -p wa -k time-change\n"),
    ("privileged", |t| t.contains("-k privileged") || t.contains("key=privileged") || (t.contains("execve") && t.contains("euid=0")),
        "-a always,exit -F arch=b64 -S execve -C uid!=euid -F euid=0 -k privileged\n-a always,exit -F arch=b32 -S execve -C uid!=euid -F euid=0 -k privileged\n"),
    ("deletes", |t| t.contains("unlink") || t.contains("renameat"),
        "-a always,exit -F arch=b64 -S unlink -S unlinkat -S rename -S renameat -F auid>=1000 -F auid!=unset -k delete\n-a always,exit -F arch=b32 -S unlink -S unlinkat -S rename -S renameat -F auid>=1000 -F auid!=unset -k delete\n"),
    ("modules", |t| t.contains("init_module") || t.contains("/sbin/insmod"),
        "-w /sbin/insmod -p x -k modules\n-w /sbin/rmmod -p x -k modules\n-w /sbin/modprobe -p x -k modules\n-a always,exit -F arch=b64 -S init_module -S finit_module -S delete_module -k modules\n"),
];

fn rules_text(ctx: &Ctx, skip: Option<&str>) -> Result<String, Unk> {
    let mut all = String::new();
    for n in ctx.root.list(RULES_DIR)? {
        let p = format!("{RULES_DIR}/{n}");
        if !n.ends_with(".rules") || Some(p.as_str()) == skip {
            continue;
        }
        if let Some(t) = ctx.read_text(&p)? {
            for l in t.lines().filter(|l| !l.trim_start().starts_with('#')) {
                all.push_str(l);
                all.push_str(" \n");
            }
        }
    }
    Ok(all)
}

fn audit_rules(ctx: &Ctx) -> Result<Outcome, Unk> {
    let exp = "identity, sudoers, logins, time, privileged, deletes, modules";
    if !ctx.root.is_dir(RULES_DIR) {
        return Ok(Outcome::new(
            false,
            format!("{RULES_DIR} missing (audit not installed)"),
            exp,
        ));
    }
    let t = rules_text(ctx, None)?;
    let missing: Vec<&str> = CATEGORIES
        .iter()
        .filter(|(_, f, _)| !f(&t))
        .map(|(n, _, _)| *n)
        .collect();
    Ok(Outcome::new(
        missing.is_empty(),
        if missing.is_empty() {
            "all categories present".into()
        } else {
            format!("missing: {}", missing.join(", "))
        },
        exp,
    ))
}

fn fix_rules(ctx: &Ctx) -> Result<Fix, Unk> {
    if !ctx.root.is_dir(RULES_DIR) {
        return Err(Unk(format!(
            "{RULES_DIR} missing: install the audit package first"
        )));
    }
    let others = rules_text(ctx, Some(RULES_DROPIN))?;
    let mut body = String::from(
        "## Managed by preflight-agent harden (audit.rules): categories missing elsewhere\n",
    );
    for (_, f, rules) in CATEGORIES {
        if !f(&others) {
            body.push_str(rules);
        }
    }
    let mut fix = Fix::default();
    fix.writes.insert(
        RULES_DROPIN.into(),
        (
            body,
            FileMeta {
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        ),
    );
    fix.notes
        .push("loaded by `augenrules --load` (or at the next auditd start)".into());
    Ok(fix)
}

const AUDITD_CONF: &str = "/etc/audit/auditd.conf";
const LOGROTATE_CONF: &str = "/etc/logrotate.conf";

fn syslog_rotate_file(ctx: &Ctx) -> Option<String> {
    ["/etc/logrotate.d/syslog", "/etc/logrotate.d/rsyslog"]
        .iter()
        .find(|p| ctx.root.exists(p))
        .map(|p| p.to_string())
}

fn period_days(w: &str) -> Option<u32> {
    match w {
        "daily" => Some(1),
        "weekly" => Some(7),
        "monthly" => Some(30),
        "yearly" => Some(365),
        _ => None,
    }
}

/// Global logrotate defaults: (period days, rotate count).
fn logrotate_global(ctx: &Ctx) -> Result<(u32, u32), Unk> {
    let mut period = 7;
    let mut rotate = 0;
    if let Some(t) = ctx.read_text(LOGROTATE_CONF)? {
        let mut depth = 0;
        for l in t.lines() {
            let l = l.trim();
            if l.ends_with('{') {
                depth += 1;
            } else if l == "}" {
                depth -= 1;
            } else if depth == 0 {
                if let Some(d) = period_days(l) {
                    period = d;
                }
                if let Some(n) = l.strip_prefix("rotate ") {
                    rotate = n
                        .trim()
                        .parse()
                        .map_err(|_| Unk(format!("cannot parse {LOGROTATE_CONF}: rotate {n:?}")))?;
                }
            }
        }
    }
    Ok((period, rotate))
}

/// Blocks of a logrotate file: (open line, close line, period, rotate, rotate line).
#[allow(clippy::type_complexity)]
fn logrotate_blocks(
    path: &str,
    text: &str,
    global: (u32, u32),
) -> Result<Vec<(usize, usize, u32, u32, Option<usize>)>, Unk> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, u32, u32, Option<usize>)> = None;
    let mut in_script = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if in_script {
            if t == "endscript" {
                in_script = false;
            }
            continue;
        }
        if matches!(
            t,
            "postrotate" | "prerotate" | "firstaction" | "lastaction" | "preremove"
        ) {
            in_script = true;
            continue;
        }
        if t.ends_with('{') {
            if cur.is_some() {
                return Err(Unk(format!(
                    "cannot parse {path} line {}: nested block",
                    i + 1
                )));
            }
            cur = Some((i, global.0, global.1, None));
        } else if t == "}" {
            let (o, p, r, rl) = cur
                .take()
                .ok_or_else(|| Unk(format!("cannot parse {path} line {}: unmatched }}", i + 1)))?;
            out.push((o, i, p, r, rl));
        } else if let Some(c) = cur.as_mut() {
            if let Some(d) = period_days(t) {
                c.1 = d;
            }
            if let Some(n) = t.strip_prefix("rotate ") {
                c.2 = n.trim().parse().map_err(|_| {
                    Unk(format!("cannot parse {path} line {}: rotate {n:?}", i + 1))
                })?;
                c.3 = Some(i);
            }
        }
    }
    if cur.is_some() {
        return Err(Unk(format!("cannot parse {path}: unclosed block")));
    }
    Ok(out)
}

fn retention_state(ctx: &Ctx) -> Result<(Vec<String>, bool, bool), Unk> {
    let mut obs = Vec::new();
    let Some(conf) = ctx.read_text(AUDITD_CONF)? else {
        obs.push(format!("{AUDITD_CONF} missing (audit not installed)"));
        return Ok((obs, false, false));
    };
    let pairs = kv_parse(AUDITD_CONF, &conf, KvStyle::Spaced)?;
    let action = kv_get(&pairs, "max_log_file_action", true)
        .unwrap_or("ROTATE")
        .to_string();
    obs.push(format!("max_log_file_action = {action}"));
    let audit_ok = action.eq_ignore_ascii_case("keep_logs");
    let mut rot_ok = true;
    match syslog_rotate_file(ctx) {
        None => {
            rot_ok = false;
            obs.push("no logrotate file for syslog".into());
        }
        Some(p) => {
            let g = logrotate_global(ctx)?;
            let t = need_text(ctx, &p)?;
            for (o, _, per, rot, _) in logrotate_blocks(&p, &t, g)? {
                let days = per * rot;
                rot_ok &= days >= ctx.policy.log_retention_days;
                obs.push(format!("{p}:{} kept {days} days", o + 1));
            }
        }
    }
    Ok((obs, audit_ok, rot_ok))
}

fn audit_retention(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, a, r) = retention_state(ctx)?;
    Ok(Outcome::new(
        a && r,
        obs.join("; "),
        format!(
            "max_log_file_action keep_logs; syslog kept >= {} days",
            ctx.policy.log_retention_days
        ),
    ))
}

fn fix_retention(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, a, r) = retention_state(ctx)?;
    let mut fix = Fix::default();
    if !a {
        let t = need_text(ctx, AUDITD_CONF)?;
        let pairs = kv_parse(AUDITD_CONF, &t, KvStyle::Spaced)?;
        let key = pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("max_log_file_action"))
            .map_or("max_log_file_action".to_string(), |(k, _)| k.clone());
        fix.write(AUDITD_CONF, kv_set(&t, &key, "keep_logs", KvStyle::Spaced));
        fix.notes.push(
            "keep_logs never deletes audit logs: watch the free space of /var/log/audit".into(),
        );
    }
    if !r {
        let p = syslog_rotate_file(ctx).ok_or_else(|| {
            Unk("no logrotate file for syslog (/etc/logrotate.d/syslog or rsyslog)".into())
        })?;
        let g = logrotate_global(ctx)?;
        let t = need_text(ctx, &p)?;
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        let days = ctx.policy.log_retention_days;
        // Edit from the last block so that inserted lines do not shift earlier indexes.
        for (o, _, per, rot, rl) in logrotate_blocks(&p, &t, g)?.into_iter().rev() {
            if per * rot >= days {
                continue;
            }
            let need = days.div_ceil(per);
            match rl {
                Some(i) => {
                    let indent: String =
                        lines[i].chars().take_while(|c| c.is_whitespace()).collect();
                    lines[i] = format!("{indent}rotate {need}");
                }
                None => lines.insert(o + 1, format!("    rotate {need}")),
            }
        }
        fix.write(&p, super::text::join_lines(&lines, &t));
    }
    Ok(fix)
}

const RSYSLOG_CONF: &str = "/etc/rsyslog.conf";

fn rsyslog_mode(ctx: &Ctx) -> Result<(Option<String>, Option<(String, usize)>), Unk> {
    let mut files = vec![RSYSLOG_CONF.to_string()];
    for n in ctx.root.list("/etc/rsyslog.d")? {
        if n.ends_with(".conf") {
            files.push(format!("/etc/rsyslog.d/{n}"));
        }
    }
    let mut val = None;
    let mut at = None;
    for f in files {
        let Some(t) = ctx.read_text(&f)? else {
            continue;
        };
        for (i, l) in t.lines().enumerate() {
            let tl = l.trim();
            if let Some(v) = tl.strip_prefix("$FileCreateMode") {
                val = Some(v.trim().to_string());
                at = Some((f.clone(), i));
            } else if let Some(pos) = tl.find("fileCreateMode=\"") {
                if !tl.starts_with('#') {
                    let v: String = tl[pos + 16..].chars().take_while(|c| *c != '"').collect();
                    val = Some(v);
                    at = None;
                }
            }
        }
    }
    Ok((val, at))
}

fn audit_rsyslog(ctx: &Ctx) -> Result<Outcome, Unk> {
    let exp = "enabled; $FileCreateMode 0640 or stricter";
    if unit_path(ctx, "rsyslog.service").is_none() {
        return Ok(Outcome::new(false, "rsyslog not installed", exp));
    }
    let en = unit_enabled(ctx, "rsyslog.service")?;
    let (mode, _) = rsyslog_mode(ctx)?;
    let mode_ok = mode
        .as_deref()
        .is_some_and(|m| u32::from_str_radix(m, 8).is_ok_and(|v| v & !0o640 == 0));
    Ok(Outcome::new(
        en && mode_ok,
        format!(
            "rsyslog.service {}; FileCreateMode {}",
            if en { "enabled" } else { "disabled" },
            mode.as_deref().unwrap_or("unset (0644)")
        ),
        exp,
    ))
}

fn fix_rsyslog(ctx: &Ctx) -> Result<Fix, Unk> {
    let mut fix = Fix::default();
    let unit = unit_path(ctx, "rsyslog.service")
        .ok_or_else(|| Unk("rsyslog is not installed: install it first".into()))?;
    if !unit_enabled(ctx, "rsyslog.service")? {
        fix.links
            .push((format!("{MU_WANTS}/rsyslog.service"), unit));
    }
    let (mode, at) = rsyslog_mode(ctx)?;
    let mode_ok = mode
        .as_deref()
        .is_some_and(|m| u32::from_str_radix(m, 8).is_ok_and(|v| v & !0o640 == 0));
    if !mode_ok {
        match at {
            Some((f, i)) => {
                let t = need_text(ctx, &f)?;
                let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
                lines[i] = "$FileCreateMode 0640".into();
                fix.write(&f, super::text::join_lines(&lines, &t));
            }
            None if mode.is_some() => {
                return Err(Unk(
                    "fileCreateMode is set in a RainerScript module() statement; change it there"
                        .into(),
                ));
            }
            None => {
                // Legacy directives apply to the actions that follow: a block at the top.
                let t = need_text(ctx, RSYSLOG_CONF)?;
                let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
                lines.splice(
                    0..0,
                    [
                        BEGIN.to_string(),
                        "$FileCreateMode 0640".into(),
                        END.to_string(),
                    ],
                );
                fix.write(RSYSLOG_CONF, super::text::join_lines(&lines, &t));
            }
        }
        fix.notes
            .push("applies to log files rsyslog creates after `systemctl restart rsyslog`".into());
    }
    Ok(fix)
}

fn audit_mac(ctx: &Ctx) -> Result<Outcome, Unk> {
    if let Some(t) = ctx.read_text("/etc/selinux/config")? {
        let pairs = kv_parse("/etc/selinux/config", &t, KvStyle::Equals)?;
        let mode = kv_get(&pairs, "SELINUX", false)
            .unwrap_or("unset")
            .to_string();
        let mut obs = format!("SELinux config {mode}");
        let mut ok = mode == "enforcing";
        if ctx.root.is_host() {
            match std::fs::read_to_string("/sys/fs/selinux/enforce") {
                Ok(v) => {
                    obs.push_str(&format!(
                        ", running {}",
                        if v.trim() == "1" {
                            "enforcing"
                        } else {
                            "permissive"
                        }
                    ));
                    ok &= v.trim() == "1";
                }
                Err(_) => {
                    obs.push_str(", running disabled");
                    ok = false;
                }
            }
        }
        return Ok(Outcome::new(ok, obs, "enforcing"));
    }
    if ctx.root.is_host() {
        let aa =
            std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").unwrap_or_default();
        let obs = match aa.trim() {
            "" => "no SELinux config, AppArmor not loaded".to_string(),
            v => format!("AppArmor enabled={v}"),
        };
        return Ok(Outcome::new(aa.trim() == "Y", obs, "enforcing"));
    }
    Ok(Outcome::live_only(
        "no /etc/selinux/config",
        "AppArmor state is live: read only when the root prefix is /",
        "enforcing",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudoers_rules_granting_everything() {
        assert!(grants_all("ALL=(ALL) ALL"));
        assert!(grants_all("ALL=(ALL:ALL) NOPASSWD: ALL"));
        assert!(grants_all("ALL = ALL"));
        assert!(!grants_all("ALL=(ALL) /usr/bin/systemctl restart app"));
        assert!(!grants_all("ALL=(ALL) NOPASSWD: /usr/bin/ALLOW"));
    }

    #[test]
    fn openssh_version_parse() {
        assert_eq!(
            parse_openssh("OpenSSH_7.4p1, OpenSSL 1.0.2k-fips"),
            Some((7, 4))
        );
        assert_eq!(
            parse_openssh("unknown option -- V\nOpenSSH_9.2p1 Debian-2"),
            Some((9, 2))
        );
        assert_eq!(parse_openssh("nothing"), None);
    }

    #[test]
    fn catalog_ids_unique_and_complete() {
        let ids: BTreeSet<&str> = all().iter().map(|c| c.info.id).collect();
        assert_eq!(ids.len(), all().len());
        assert_eq!(all().len(), 33);
        assert!(all()
            .iter()
            .filter(|c| !c.info.firewall)
            .all(|c| !c.info.title_zh.is_empty() && !c.info.mlps.is_empty()));
        assert!(all()
            .iter()
            .filter(|c| c.info.report_only)
            .all(|c| c.fix.is_none()));
    }
}
