//! `sess.tmout`: the shell idle timeout; and the shell start-up files `perm.umask` reads too.

use std::collections::BTreeMap;

use super::need_text;
use crate::catalog::text::DISABLED;
use crate::catalog::{Ctx, Fix, Outcome, Unk};

// ---------------------------------------------------------------- sess.tmout

const TMOUT_DROPIN: &str = "/etc/profile.d/preflight-tmout.sh";

pub(super) fn shell_files(ctx: &Ctx) -> Result<Vec<String>, Unk> {
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

pub(super) fn is_disabled_or_comment(t: &str) -> bool {
    t.starts_with('#') || t.starts_with(": #")
}

pub(super) fn tokens(line: &str) -> Vec<String> {
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

pub(super) fn audit_tmout(ctx: &Ctx) -> Result<Outcome, Unk> {
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

pub(super) fn fix_tmout(ctx: &Ctx) -> Result<Fix, Unk> {
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
        fix.write(&p, crate::catalog::text::join_lines(&lines, &text));
    }
    Ok(fix)
}
