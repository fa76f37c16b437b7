//! `perm.*`: the default umask and the modes of the account files.

// The private state tuples each serve one audit/fix pair; naming them adds nothing.
#![allow(clippy::type_complexity)]

use std::collections::BTreeMap;

use super::accounts::{GROUP, GSHADOW, LOGIN_DEFS, PASSWD, SHADOW};
use super::need_text;
use super::session::{is_disabled_or_comment, shell_files, tokens};
use crate::catalog::root::FileMeta;
use crate::catalog::text::{kv_get, kv_parse, kv_set, KvStyle};
use crate::catalog::{Ctx, Fix, Outcome, Unk};

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

pub(super) fn audit_umask(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, bad, defs_bad) = umask_state(ctx)?;
    Ok(Outcome::new(
        bad.is_empty() && !defs_bad,
        obs.join("; "),
        format!("{:03o} or stricter", ctx.policy.umask),
    ))
}

pub(super) fn fix_umask(ctx: &Ctx) -> Result<Fix, Unk> {
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
        fix.write(&p, crate::catalog::text::join_lines(&lines, &text));
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

pub(super) fn audit_perms(ctx: &Ctx) -> Result<Outcome, Unk> {
    let (obs, fixes) = perms_state(ctx)?;
    Ok(Outcome::new(
        fixes.is_empty(),
        obs.join(", "),
        "passwd 0644, shadow 0000, gshadow 0000, group 0644, owner root:root",
    ))
}

pub(super) fn fix_perms(ctx: &Ctx) -> Result<Fix, Unk> {
    let (_, fixes) = perms_state(ctx)?;
    let mut fix = Fix {
        metas: fixes,
        ..Fix::default()
    };
    if ctx.host.family == crate::catalog::Family::Debian {
        fix.notes.push("Debian: unix_chkpwd (setgid shadow) can no longer read /etc/shadow; non-root password checks such as screen lockers fail".into());
    }
    Ok(fix)
}
