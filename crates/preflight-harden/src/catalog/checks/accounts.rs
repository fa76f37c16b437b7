//! Account checks: password aging (`acct.pass_*`, `acct.inactive`), the report-only UID
//! checks (`auth.uid0_only_root`, `auth.unique_ids`), system accounts without a login shell
//! and `su` restricted to wheel; and the passwd/shadow readers the other families share.

// The private state tuples each serve one audit/fix pair; naming them adds nothing.
#![allow(clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet};

use super::auth::{pam, pam_edit};
use super::db;
use crate::catalog::text::{kv_get, kv_parse, kv_set, pam_format, ColonDb, KvStyle};
use crate::catalog::{Ctx, Fix, Outcome, Policy, Unk};

pub(super) const LOGIN_DEFS: &str = "/etc/login.defs";
const USERADD: &str = "/etc/default/useradd";
pub(super) const PASSWD: &str = "/etc/passwd";
pub(super) const SHADOW: &str = "/etc/shadow";
pub(super) const GROUP: &str = "/etc/group";
pub(super) const GSHADOW: &str = "/etc/gshadow";

/// A passwd entry.
pub(super) struct User {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) home: String,
    pub(super) shell: String,
}

pub(super) fn users(ctx: &Ctx) -> Result<Vec<User>, Unk> {
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

pub(super) fn usable_hash(h: &str) -> bool {
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

pub(super) fn is_nologin(shell: &str) -> bool {
    matches!(
        shell,
        "/sbin/nologin" | "/usr/sbin/nologin" | "/bin/false" | "/usr/bin/false"
    )
}

// ---------------------------------------------------------------- acct.* aging

pub(super) struct Aging {
    file: &'static str,
    key: &'static str,
    style: KvStyle,
    default: i64,
    field: usize,
    ok: fn(i64, &Policy) -> bool,
    target: fn(&Policy) -> u32,
    chage: &'static str,
}

pub(super) const MAX_DAYS: Aging = Aging {
    file: LOGIN_DEFS,
    key: "PASS_MAX_DAYS",
    style: KvStyle::Space,
    default: 99999,
    field: 4,
    ok: |v, p| v >= 0 && v <= i64::from(p.pass_max_days),
    target: |p| p.pass_max_days,
    chage: "--maxdays",
};
pub(super) const MIN_DAYS: Aging = Aging {
    file: LOGIN_DEFS,
    key: "PASS_MIN_DAYS",
    style: KvStyle::Space,
    default: 0,
    field: 3,
    ok: |v, p| v >= i64::from(p.pass_min_days),
    target: |p| p.pass_min_days,
    chage: "--mindays",
};
pub(super) const WARN_AGE: Aging = Aging {
    file: LOGIN_DEFS,
    key: "PASS_WARN_AGE",
    style: KvStyle::Space,
    default: 7,
    field: 5,
    ok: |v, p| v >= i64::from(p.pass_warn_age),
    target: |p| p.pass_warn_age,
    chage: "--warndays",
};
pub(super) const INACTIVE: Aging = Aging {
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

pub(super) fn audit_aging(ctx: &Ctx, a: &Aging) -> Result<Outcome, Unk> {
    let (v, bad_defs, bad) = aging_state(ctx, a)?;
    let mut obs = format!("{} {}={v}", a.file, a.key);
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|(n, v)| format!("{n}={v}")).collect();
        obs.push_str(&format!("; accounts: {}", list.join(", ")));
    }
    let exp = super::all()
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

pub(super) fn fix_aging(ctx: &Ctx, a: &Aging) -> Result<Fix, Unk> {
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

// ---------------------------------------------------------------- report-only account checks

pub(super) fn audit_uid0(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn audit_unique(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn audit_nologin(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_nologin(ctx: &Ctx) -> Result<Fix, Unk> {
    let bad = nologin_bad(ctx)?;
    let mut fix = Fix::default();
    let mut p = db(ctx, PASSWD, 7)?;
    let nl =
        if ctx.host.family == crate::catalog::Family::RedHat && ctx.root.exists("/sbin/nologin") {
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

pub(super) fn audit_su_wheel(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_su_wheel(ctx: &Ctx) -> Result<Fix, Unk> {
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
