//! `ssh.*`: sshd settings through the effective configuration (`Include`s and `Match`
//! blocks), the OpenSSH version, and the plaintext remote-login services.

// The private state tuples each serve one audit/fix pair; naming them adds nothing.
#![allow(clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet};

use super::accounts::{is_nologin, usable_hash, users, GROUP, SHADOW};
use super::{db, need_text};
use crate::catalog::root::{Entry, FileMeta};
use crate::catalog::sshd;
use crate::catalog::{Ctx, Fix, Outcome, Policy, Unk};

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

pub(super) fn audit_ssh_idle(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_ssh_idle(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_root_login(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_root_login(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_ssh_empty(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (o, ok, _, _) = simple_ssh(ctx, "PermitEmptyPasswords", "no", ok_no)?;
    Ok(Outcome::new(ok, o, "no"))
}
pub(super) fn fix_ssh_empty(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, _, global_ok, ml) = simple_ssh(ctx, "PermitEmptyPasswords", "no", ok_no)?;
    let s = if global_ok {
        vec![]
    } else {
        vec![("PermitEmptyPasswords", "no".to_string())]
    };
    ssh_fix(ctx, &s, &ml)
}
pub(super) fn audit_ssh_tries(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (o, ok, _, _) = simple_ssh(ctx, "MaxAuthTries", "6", ok_tries)?;
    Ok(Outcome::new(
        ok,
        o,
        format!("<= {}", ctx.policy.ssh_max_auth_tries),
    ))
}
pub(super) fn fix_ssh_tries(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_ssh_misc(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, bad, meta, ml) = misc_state(ctx)?;
    Ok(Outcome::new(bad.is_empty() && meta.is_none() && ml.is_empty(), obs.join(", "), "LogLevel INFO, X11Forwarding no, IgnoreRhosts yes, HostbasedAuthentication no, PermitUserEnvironment no, sshd_config 0600 root"))
}

pub(super) fn fix_ssh_misc(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_ssh_version(ctx: &Ctx) -> Result<Outcome, Unk> {
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
    let out = crate::catalog::run_fixed("/usr/sbin/sshd", &["-V"])
        .map_err(Unk)?
        .1;
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

pub(super) fn audit_plaintext(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_plaintext(ctx: &Ctx) -> Result<Fix, Unk> {
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
        fix.write(&path, crate::catalog::text::join_lines(&lines, &t));
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
}
