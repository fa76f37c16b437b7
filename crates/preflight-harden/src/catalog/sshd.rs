//! The effective sshd configuration: `sshd_config` with its `Include`s expanded in order, first
//! value wins (as sshd does), `Match` blocks ignored for global settings.

use std::collections::BTreeMap;

use super::text::{join_lines, ParseError, BEGIN, DISABLED, END};
use super::Ctx;

/// Main config path.
pub const MAIN: &str = "/etc/ssh/sshd_config";
/// Drop-in directory.
pub const DROPIN_DIR: &str = "/etc/ssh/sshd_config.d";
/// The drop-in this tool manages; `00-` sorts before vendor drop-ins, and sshd keeps the first
/// value it reads.
pub const DROPIN: &str = "/etc/ssh/sshd_config.d/00-preflight-hardening.conf";

/// One global directive, in the order sshd reads them.
#[derive(Debug, Clone)]
pub struct Directive {
    /// File it is in.
    pub file: String,
    /// 0-based line.
    pub line: usize,
    /// Keyword, lowercase.
    pub key: String,
    /// Value as written.
    pub value: String,
}

/// The parsed configuration.
#[derive(Debug, Clone, Default)]
pub struct SshdConfig {
    /// Global directives in read order.
    pub directives: Vec<Directive>,
    /// True when the main file includes the drop-in directory (outside a Match block).
    pub includes_dropins: bool,
    /// Files read, in order.
    pub files: Vec<String>,
    /// Directives inside `Match` blocks (they override the global value for some sessions).
    pub matched: Vec<Directive>,
}

impl SshdConfig {
    /// The effective value of a keyword (lowercase), first occurrence wins.
    pub fn get(&self, key: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.key == key)
    }
}

fn glob_match(pat: &str, name: &str) -> bool {
    match pat.split_once('*') {
        None => pat == name,
        Some((pre, post)) => {
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
    }
}

/// Expands an Include argument into in-host paths (only `*` in the last component).
fn expand(ctx: &Ctx, arg: &str, overrides: &BTreeMap<String, String>) -> Vec<String> {
    let full = if arg.starts_with('/') {
        arg.to_string()
    } else {
        format!("/etc/ssh/{arg}")
    };
    if !full.contains('*') {
        return vec![full];
    }
    let (dir, pat) = full.rsplit_once('/').unwrap_or(("/", &full));
    let mut out: Vec<String> = ctx
        .root
        .list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| glob_match(pat, n))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    // Files a plan would create take their place in the order too.
    for p in overrides.keys() {
        if let Some((d, n)) = p.rsplit_once('/') {
            if d == dir && glob_match(pat, n) && !out.contains(p) {
                out.push(p.clone());
            }
        }
    }
    out.sort();
    out
}

/// Reads the configuration, with `overrides` standing in for file contents (for plans).
pub fn load(ctx: &Ctx, overrides: &BTreeMap<String, String>) -> Result<SshdConfig, ParseError> {
    let mut cfg = SshdConfig::default();
    read_file(ctx, MAIN, overrides, &mut cfg, 0, true)?;
    Ok(cfg)
}

fn read_file(
    ctx: &Ctx,
    path: &str,
    overrides: &BTreeMap<String, String>,
    cfg: &mut SshdConfig,
    depth: usize,
    main: bool,
) -> Result<(), ParseError> {
    if depth > 8 {
        return Err(ParseError {
            path: path.into(),
            line: 0,
            what: "Include nested more than 8 deep".into(),
        });
    }
    let text = match overrides.get(path) {
        Some(t) => t.clone(),
        None => match ctx.read_text(path)? {
            Some(t) => t,
            None if main => {
                return Err(ParseError {
                    path: path.into(),
                    line: 0,
                    what: "file missing".into(),
                })
            }
            None => return Ok(()),
        },
    };
    cfg.files.push(path.to_string());
    let mut in_match = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = match t.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (k, v.trim().trim_start_matches('=').trim()),
            None => (t, ""),
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) || v.is_empty() {
            return Err(ParseError {
                path: path.into(),
                line: i + 1,
                what: format!(
                    "expected `Keyword value`, found {:?}",
                    t.chars().take(60).collect::<String>()
                ),
            });
        }
        let key = k.to_ascii_lowercase();
        if key == "match" {
            in_match = true;
            continue;
        }
        if in_match {
            cfg.matched.push(Directive {
                file: path.to_string(),
                line: i,
                key,
                value: v.to_string(),
            });
            continue;
        }
        if key == "include" {
            for arg in v.split_whitespace() {
                let files = expand(ctx, arg, overrides);
                if main && arg.contains("sshd_config.d/") {
                    cfg.includes_dropins = true;
                }
                for f in files {
                    read_file(ctx, &f, overrides, cfg, depth + 1, false)?;
                }
            }
            continue;
        }
        cfg.directives.push(Directive {
            file: path.to_string(),
            line: i,
            key,
            value: v.to_string(),
        });
    }
    Ok(())
}

/// The file changes that make `settings` (keyword as written, value) effective: the managed
/// drop-in when the main file includes `sshd_config.d`, otherwise a managed block at the top of
/// `sshd_config`; an earlier conflicting directive is disabled. Returns new contents by path.
pub fn set(
    ctx: &Ctx,
    settings: &[(&str, String)],
    disable: &[(String, usize)],
) -> Result<BTreeMap<String, String>, ParseError> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    disable_lines(ctx, &mut out, disable)?;
    if settings.is_empty() {
        return unchanged_dropped(ctx, out);
    }
    let cfg = load(ctx, &out)?;
    let use_dropin = cfg.includes_dropins && ctx.root.is_dir(DROPIN_DIR);
    let target = if use_dropin { DROPIN } else { MAIN };
    let current = match out.get(target) {
        Some(t) => t.clone(),
        None => ctx.read_text(target)?.unwrap_or_default(),
    };
    let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
    // Region holding managed lines.
    let (start, e) = if use_dropin {
        if lines.is_empty() {
            lines = vec![
                "# Managed by preflight-agent harden; sshd uses the first value it reads,".into(),
                "# and this file sorts before the other drop-ins.".into(),
            ];
        }
        (0, lines.len())
    } else {
        match (
            lines.iter().position(|l| l == BEGIN),
            lines.iter().position(|l| l == END),
        ) {
            (Some(b), Some(e)) if b < e => (b + 1, e),
            _ => {
                lines.insert(0, END.into());
                lines.insert(0, BEGIN.into());
                (1, 1)
            }
        }
    };
    let mut end = e;
    for (k, v) in settings {
        let want = format!("{k} {v}");
        let mut done = false;
        for l in lines.iter_mut().take(end).skip(start) {
            if l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(k))
            {
                *l = want.clone();
                done = true;
            }
        }
        if !done {
            lines.insert(end, want);
            end += 1;
        }
    }
    out.insert(target.to_string(), join_lines(&lines, "\n"));
    // Disable directives read before ours with a different value.
    let after = load(ctx, &out)?;
    for (k, v) in settings {
        let lk = k.to_ascii_lowercase();
        for d in after.directives.iter().filter(|d| d.key == lk) {
            if d.file == target {
                break;
            }
            if d.value.eq_ignore_ascii_case(v) {
                continue;
            }
            let text = match out.get(&d.file) {
                Some(t) => t.clone(),
                None => ctx.read_text(&d.file)?.unwrap_or_default(),
            };
            let mut ls: Vec<String> = text.lines().map(str::to_string).collect();
            if let Some(l) = ls.get_mut(d.line) {
                *l = format!("{DISABLED}{l}");
            }
            out.insert(d.file.clone(), join_lines(&ls, &text));
        }
    }
    unchanged_dropped(ctx, out)
}

/// Comments out lines (`Match`-block overrides the caller found non-compliant).
fn disable_lines(
    ctx: &Ctx,
    out: &mut BTreeMap<String, String>,
    lines: &[(String, usize)],
) -> Result<(), ParseError> {
    for (file, line) in lines {
        let text = match out.get(file) {
            Some(t) => t.clone(),
            None => ctx.read_text(file)?.unwrap_or_default(),
        };
        let mut ls: Vec<String> = text.lines().map(str::to_string).collect();
        if let Some(l) = ls.get_mut(*line) {
            if !l.starts_with(DISABLED) {
                *l = format!("{DISABLED}{l}");
            }
        }
        out.insert(file.clone(), join_lines(&ls, &text));
    }
    Ok(())
}

fn unchanged_dropped(
    ctx: &Ctx,
    out: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParseError> {
    let mut changed = BTreeMap::new();
    for (p, t) in out {
        if ctx.read_text(&p)?.as_deref() != Some(t.as_str()) {
            changed.insert(p, t);
        }
    }
    Ok(changed)
}

/// The whole configuration as one text (Includes inlined), for `sshd -t -f`.
pub fn flattened(ctx: &Ctx, overrides: &BTreeMap<String, String>) -> Result<String, ParseError> {
    let mut s = String::new();
    flatten_file(ctx, MAIN, overrides, &mut s, 0)?;
    Ok(s)
}

fn flatten_file(
    ctx: &Ctx,
    path: &str,
    overrides: &BTreeMap<String, String>,
    out: &mut String,
    depth: usize,
) -> Result<(), ParseError> {
    if depth > 8 {
        return Ok(());
    }
    let text = match overrides.get(path) {
        Some(t) => t.clone(),
        None => ctx.read_text(path)?.unwrap_or_default(),
    };
    for l in text.lines() {
        let t = l.trim();
        let mut it = t.split_whitespace();
        if it.next().is_some_and(|k| k.eq_ignore_ascii_case("include")) {
            for arg in it {
                for f in expand(ctx, arg, overrides) {
                    flatten_file(ctx, &f, overrides, out, depth + 1)?;
                }
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    Ok(())
}
