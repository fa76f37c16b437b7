//! `audit.*` and `log.*`: auditd and its rules, log retention, rsyslog.

// The private state tuples each serve one audit/fix pair; naming them adds nothing.
#![allow(clippy::type_complexity)]

use super::need_text;
use crate::catalog::root::{Entry, FileMeta};
use crate::catalog::text::{kv_get, kv_parse, kv_set, KvStyle, BEGIN, END};
use crate::catalog::{Ctx, Fix, Outcome, Unk};

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

pub(super) fn audit_auditd(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_auditd(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_rules(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_rules(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_retention(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_retention(ctx: &Ctx) -> Result<Fix, Unk> {
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
        fix.write(&p, crate::catalog::text::join_lines(&lines, &t));
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

pub(super) fn audit_rsyslog(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_rsyslog(ctx: &Ctx) -> Result<Fix, Unk> {
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
                fix.write(&f, crate::catalog::text::join_lines(&lines, &t));
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
                fix.write(RSYSLOG_CONF, crate::catalog::text::join_lines(&lines, &t));
            }
        }
        fix.notes
            .push("applies to log files rsyslog creates after `systemctl restart rsyslog`".into());
    }
    Ok(fix)
}
