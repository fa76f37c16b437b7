//! Password and lockout checks through PAM and its configuration files: `auth.pw_minlen`,
//! `auth.pw_classes`, `auth.pw_history`, `auth.pw_hash`, `auth.lockout`, `auth.no_empty_pw`.

use super::accounts::{LOGIN_DEFS, SHADOW};
use super::{db, need_text};
use crate::catalog::authselect;
use crate::catalog::host::PamLayout;
use crate::catalog::text::{
    arg_value, kv_get, kv_parse, kv_set, module_name, pam_format, set_arg, KvStyle, PamFile,
};
use crate::catalog::{Ctx, Fix, Outcome, Unk};

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

pub(super) fn pam(ctx: &Ctx, path: &str) -> Result<PamFile, Unk> {
    Ok(PamFile::parse(path, &need_text(ctx, path)?)?)
}

/// Edits a PAM file, starting from a change already pending in `fix`.
pub(super) fn pam_edit(
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

pub(super) fn audit_minlen(ctx: &Ctx) -> Result<Outcome, Unk> {
    audit_pwq(ctx, 0)
}
pub(super) fn audit_classes(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_minlen(ctx: &Ctx) -> Result<Fix, Unk> {
    fix_pwq(ctx, "minlen", ctx.policy.pw_minlen)
}
pub(super) fn fix_classes(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_history(ctx: &Ctx) -> Result<Outcome, Unk> {
    let st = history_state(ctx)?;
    let t = i64::from(ctx.policy.pw_remember);
    let ok = st.iter().all(|(_, v)| *v >= t);
    let obs: Vec<String> = st
        .iter()
        .map(|(p, v)| format!("{p}: remember={v}"))
        .collect();
    Ok(Outcome::new(ok, obs.join("; "), format!("remember >= {t}")))
}

pub(super) fn fix_history(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_hash(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_hash(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_lockout(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_lockout(ctx: &Ctx) -> Result<Fix, Unk> {
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

pub(super) fn audit_empty_pw(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_empty_pw(ctx: &Ctx) -> Result<Fix, Unk> {
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
