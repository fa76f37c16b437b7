//! Strict parsers and minimal editors for the configuration formats the checks touch.
//!
//! Editors change only what they must: a key's value in place, or a block between markers
//! (never a blind append), so that comparing before writing makes a second apply a no-op.

/// First line of a managed block.
pub const BEGIN: &str = "# BEGIN preflight managed block (do not edit by hand)";
/// Last line of a managed block.
pub const END: &str = "# END preflight managed block";
/// Prefix given to a line the tool disabled.
pub const DISABLED: &str = "#preflight-disabled# ";

/// Why a file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// In-host path.
    pub path: String,
    /// 1-based line, 0 for the whole file.
    pub line: usize,
    /// What was wrong.
    pub what: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "cannot parse {}: {}", self.path, self.what)
        } else {
            write!(
                f,
                "cannot parse {} line {}: {}",
                self.path, self.line, self.what
            )
        }
    }
}

/// Decodes a file as UTF-8 text.
pub fn utf8(path: &str, data: &[u8]) -> Result<String, ParseError> {
    String::from_utf8(data.to_vec()).map_err(|_| ParseError {
        path: path.into(),
        line: 0,
        what: "not UTF-8 text".into(),
    })
}

/// How keys and values are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvStyle {
    /// `KEY VALUE` (login.defs).
    Space,
    /// `KEY=VALUE` (/etc/default/useradd).
    Equals,
    /// `key = value` (pwquality.conf, faillock.conf, auditd.conf); a bare `key` is a flag.
    Spaced,
}

fn split_kv(line: &str, style: KvStyle) -> Option<(String, String)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    match style {
        KvStyle::Space => {
            let mut it = t.splitn(2, char::is_whitespace);
            let k = it.next()?;
            let v = it.next().unwrap_or("").trim();
            Some((k.to_string(), v.to_string()))
        }
        KvStyle::Equals | KvStyle::Spaced => match t.split_once('=') {
            Some((k, v)) => Some((k.trim().to_string(), v.trim().trim_matches('"').to_string())),
            None => Some((t.to_string(), String::new())),
        },
    }
}

fn key_ok(k: &str, style: KvStyle) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.chars().all(|c| match style {
            KvStyle::Space | KvStyle::Equals => {
                c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
            }
            KvStyle::Spaced => c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.',
        })
}

/// Parses a key/value file strictly; the last occurrence of a key wins.
pub fn kv_parse(
    path: &str,
    text: &str,
    style: KvStyle,
) -> Result<Vec<(String, String)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((k, v)) = split_kv(line, style) {
            let bad = !key_ok(&k, style)
                || (style == KvStyle::Space && (v.is_empty() || v.split_whitespace().count() != 1))
                || (style == KvStyle::Equals && !line.contains('='));
            if bad {
                return Err(ParseError {
                    path: path.into(),
                    line: i + 1,
                    what: format!("expected a key and a value, found {:?}", truncate(line)),
                });
            }
            out.push((k, v));
        }
    }
    Ok(out)
}

/// The value of `key` (last occurrence), case-sensitive unless `ci`.
pub fn kv_get<'a>(pairs: &'a [(String, String)], key: &str, ci: bool) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| {
            if ci {
                k.eq_ignore_ascii_case(key)
            } else {
                k == key
            }
        })
        .map(|(_, v)| v.as_str())
}

fn format_kv(key: &str, value: &str, style: KvStyle) -> String {
    match style {
        KvStyle::Space => format!("{key}\t{value}"),
        KvStyle::Equals => format!("{key}={value}"),
        KvStyle::Spaced if value.is_empty() => key.to_string(),
        KvStyle::Spaced => format!("{key} = {value}"),
    }
}

/// Sets `key` to `value`: every uncommented occurrence is rewritten in place; if there is none
/// the key goes into the managed block (created at the end of the file when missing).
pub fn kv_set(text: &str, key: &str, value: &str, style: KvStyle) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut found = false;
    for l in lines.iter_mut() {
        if let Some((k, v)) = split_kv(l, style) {
            if k == key {
                found = true;
                if v != value {
                    // Keep the line's own spacing when the value ends it.
                    let t = l.trim_end();
                    *l = if !v.is_empty() && t.ends_with(v.as_str()) {
                        format!("{}{value}", &t[..t.len() - v.len()])
                    } else {
                        let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
                        format!("{indent}{}", format_kv(key, value, style))
                    };
                }
            }
        }
    }
    if !found {
        block_set_line(&mut lines, key, &format_kv(key, value, style), style);
    }
    join_lines(&lines, text)
}

/// Inserts or replaces `line` for `key` inside the managed block at the end.
fn block_set_line(lines: &mut Vec<String>, key: &str, line: &str, style: KvStyle) {
    let begin = lines.iter().position(|l| l == BEGIN);
    let end = lines.iter().position(|l| l == END);
    match (begin, end) {
        (Some(b), Some(e)) if b < e => {
            for l in lines.iter_mut().take(e).skip(b + 1) {
                if split_kv(l, style).is_some_and(|(k, _)| k == key) {
                    *l = line.to_string();
                    return;
                }
            }
            lines.insert(e, line.to_string());
        }
        _ => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(BEGIN.into());
            lines.push(line.to_string());
            lines.push(END.into());
        }
    }
}

/// Joins lines, keeping a final newline when the original had one (or was empty).
pub fn join_lines(lines: &[String], original: &str) -> String {
    let mut s = lines.join("\n");
    if original.ends_with('\n') || original.is_empty() || !lines.is_empty() {
        s.push('\n');
    }
    s
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

// ---------------------------------------------------------------- passwd / shadow / group

/// A colon-separated database (passwd 7 fields, shadow 9, group 4, gshadow 4).
#[derive(Debug, Clone)]
pub struct ColonDb {
    /// Rows of fields; comment or blank lines are kept as `None`.
    pub rows: Vec<Option<Vec<String>>>,
    original: String,
    raw: Vec<String>,
}

impl ColonDb {
    /// Parses strictly: every non-blank line has exactly `fields` fields.
    pub fn parse(path: &str, text: &str, fields: usize) -> Result<ColonDb, ParseError> {
        let mut rows = Vec::new();
        let mut raw = Vec::new();
        for (i, l) in text.lines().enumerate() {
            raw.push(l.to_string());
            if l.trim().is_empty() || l.starts_with('#') {
                rows.push(None);
                continue;
            }
            let f: Vec<String> = l.split(':').map(str::to_string).collect();
            if f.len() != fields || f[0].is_empty() {
                return Err(ParseError {
                    path: path.into(),
                    line: i + 1,
                    what: format!(
                        "expected {fields} colon-separated fields, found {}",
                        f.len()
                    ),
                });
            }
            rows.push(Some(f));
        }
        Ok(ColonDb {
            rows,
            original: text.to_string(),
            raw,
        })
    }

    /// The parsed rows.
    pub fn entries(&self) -> impl Iterator<Item = &Vec<String>> {
        self.rows.iter().flatten()
    }

    /// Sets a field of the row named `name`; returns true if something changed.
    pub fn set(&mut self, name: &str, field: usize, value: &str) -> bool {
        for (i, r) in self.rows.iter_mut().enumerate() {
            if let Some(f) = r {
                if f[0] == name && f[field] != value {
                    f[field] = value.to_string();
                    self.raw[i] = f.join(":");
                    return true;
                }
            }
        }
        false
    }

    /// Renders the database, unchanged lines byte for byte.
    pub fn render(&self) -> String {
        join_lines(&self.raw, &self.original)
    }
}

// ---------------------------------------------------------------- PAM

/// One PAM line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamLine {
    /// `auth`, `account`, `password`, `session` (leading `-` stripped).
    pub kind: String,
    /// Control (`required`, `[success=1 default=ignore]`, ...); empty for `@include`.
    pub control: String,
    /// Module (`pam_unix.so`), or the included file for `@include` / `include` / `substack`.
    pub module: String,
    /// Module arguments.
    pub args: Vec<String>,
}

/// A PAM file: original lines plus the parsed ones.
#[derive(Debug, Clone)]
pub struct PamFile {
    /// Raw lines.
    pub lines: Vec<String>,
    original: String,
}

/// Parses one line; `None` for comments and blanks.
pub fn pam_line(l: &str) -> Option<Result<PamLine, String>> {
    let t = l.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    if let Some(rest) = t.strip_prefix("@include") {
        return Some(Ok(PamLine {
            kind: "@include".into(),
            control: String::new(),
            module: rest.trim().to_string(),
            args: vec![],
        }));
    }
    let (kind, rest) = t.split_once(char::is_whitespace)?;
    let kind = kind.trim_start_matches('-').to_ascii_lowercase();
    if !matches!(kind.as_str(), "auth" | "account" | "password" | "session") {
        return Some(Err(format!("unknown PAM type {kind:?}")));
    }
    let rest = rest.trim_start();
    let (control, rest) = if rest.starts_with('[') {
        match rest.find(']') {
            Some(e) => (rest[..=e].to_string(), rest[e + 1..].trim_start()),
            None => return Some(Err("unclosed [ in control".into())),
        }
    } else {
        match rest.split_once(char::is_whitespace) {
            Some((c, r)) => (c.to_string(), r.trim_start()),
            None => return Some(Err("missing module".into())),
        }
    };
    let mut it = rest.split_whitespace();
    let module = match it.next() {
        Some(m) => m.to_string(),
        None => return Some(Err("missing module".into())),
    };
    Some(Ok(PamLine {
        kind,
        control,
        module,
        args: it.map(str::to_string).collect(),
    }))
}

/// The module's base name (`pam_unix` for `/lib/security/pam_unix.so`).
pub fn module_name(m: &str) -> &str {
    let base = m.rsplit('/').next().unwrap_or(m);
    base.strip_suffix(".so").unwrap_or(base)
}

impl PamFile {
    /// Parses strictly.
    pub fn parse(path: &str, text: &str) -> Result<PamFile, ParseError> {
        for (i, l) in text.lines().enumerate() {
            if let Some(Err(what)) = pam_line(l) {
                return Err(ParseError {
                    path: path.into(),
                    line: i + 1,
                    what,
                });
            }
        }
        Ok(PamFile {
            lines: text.lines().map(str::to_string).collect(),
            original: text.to_string(),
        })
    }

    /// Parsed lines with their index.
    pub fn parsed(&self) -> Vec<(usize, PamLine)> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match pam_line(l) {
                Some(Ok(p)) => Some((i, p)),
                _ => None,
            })
            .collect()
    }

    /// Lines of `kind` using module `name`.
    pub fn find(&self, kind: &str, name: &str) -> Vec<(usize, PamLine)> {
        self.parsed()
            .into_iter()
            .filter(|(_, p)| p.kind == kind && module_name(&p.module) == name)
            .collect()
    }

    /// Rewrites the arguments of line `i`, keeping the text up to the module as it was.
    pub fn set_args(&mut self, i: usize, args: &[String]) {
        let l = &self.lines[i];
        let Some(Ok(p)) = pam_line(l) else { return };
        let Some(pos) = l.find(&p.module) else { return };
        let head = &l[..pos + p.module.len()];
        let new = if args.is_empty() {
            head.to_string()
        } else {
            format!("{head} {}", args.join(" "))
        };
        self.lines[i] = new;
    }

    /// Renders the file.
    pub fn render(&self) -> String {
        join_lines(&self.lines, &self.original)
    }
}

/// Formats a PAM line in the usual column layout.
pub fn pam_format(kind: &str, control: &str, module: &str, args: &[&str]) -> String {
    let width = 13.max(control.len() + 1);
    let mut s = format!("{kind:<12}{control:<width$}{module}");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// The value of `key=value` in module arguments.
pub fn arg_value<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.iter()
        .rev()
        .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Sets `key=value` in arguments (replacing every occurrence, or appending).
pub fn set_arg(args: &mut Vec<String>, key: &str, value: &str) {
    let new = format!("{key}={value}");
    let mut found = false;
    args.retain_mut(|a| {
        if a.split('=').next() == Some(key) && a.contains('=') {
            if found {
                return false;
            }
            found = true;
            *a = new.clone();
        }
        true
    });
    if !found {
        args.push(new);
    }
}

// ---------------------------------------------------------------- diff

/// A unified diff between two texts, empty when they are equal.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_set_replaces_in_place_and_uses_block_when_absent() {
        let t = "# c\nPASS_MAX_DAYS\t99999\nPASS_MIN_DAYS 0\n";
        let s = kv_set(t, "PASS_MAX_DAYS", "90", KvStyle::Space);
        assert_eq!(s, "# c\nPASS_MAX_DAYS\t90\nPASS_MIN_DAYS 0\n");
        let s2 = kv_set(&s, "UMASK", "027", KvStyle::Space);
        assert!(
            s2.ends_with(&format!("{BEGIN}\nUMASK\t027\n{END}\n")),
            "{s2}"
        );
        assert_eq!(kv_set(&s2, "UMASK", "027", KvStyle::Space), s2);
        let s3 = kv_set(&s2, "ENCRYPT_METHOD", "SHA512", KvStyle::Space);
        assert!(
            s3.contains("UMASK\t027\nENCRYPT_METHOD\tSHA512\n# END"),
            "{s3}"
        );
    }

    #[test]
    fn kv_parse_rejects_garbage() {
        assert!(kv_parse(
            "/x",
            "PASS_MAX_DAYS 90\nthis is = not ok {\n",
            KvStyle::Space
        )
        .is_err());
        assert!(kv_parse("/x", "minlen = 8\nbad key = 1\n", KvStyle::Spaced).is_err());
        assert!(kv_parse("/x", "INACTIVE=30\nSHELL\n", KvStyle::Equals).is_err());
    }

    #[test]
    fn pam_lines_parse_and_edit() {
        let mut f = PamFile::parse(
            "/p",
            "auth [success=1 default=ignore]  pam_unix.so nullok\n-session optional pam_systemd.so\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let u = f.find("auth", "pam_unix");
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].1.control, "[success=1 default=ignore]");
        f.set_args(0, &[]);
        assert_eq!(f.lines[0], "auth [success=1 default=ignore]  pam_unix.so");
        assert!(PamFile::parse("/p", "auht required pam_unix.so\n").is_err());
        let mut a = vec!["remember=3".to_string(), "x".into()];
        set_arg(&mut a, "remember", "5");
        assert_eq!(a, vec!["remember=5", "x"]);
    }
}
