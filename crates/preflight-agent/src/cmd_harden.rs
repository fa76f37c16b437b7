//! `preflight-agent harden`: the hardening catalog used locally, with no controller.
//!
//! `audit`, `plan`, `apply` and `rollback` against a root prefix (`--root`, default `/`), as
//! text tables or JSON (`--output json`). The `fw.*` checks audit the live firewall only with
//! `--root /` (against the allow-list confirmed in `--state-dir`), else they are not applicable. `apply` shows the plan and asks for confirmation on a
//! terminal unless `--yes`.

use preflight_args::LangArg;
use preflight_render::{Lang, Table};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use preflight_core::evidence::EvidenceStatus;
use preflight_harden::catalog::{self, ApplyOptions, Policy, Root, DEFAULT_BACKUP_DIR};

/// Arguments of `preflight-agent harden`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent's state directory: the `fw.*` checks judge the live firewall against the
    /// allow-list last confirmed there (`STATE/firewall`). They run only with `--root /`;
    /// with another root prefix they are not applicable.
    #[arg(long, global = true, default_value = crate::state::DEFAULT_STATE_DIR, env = "PREFLIGHT_AGENT_STATE")]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: HardenCmd,
}

#[derive(Debug, clap::Subcommand)]
enum HardenCmd {
    /// Read-only audit of the checks.
    Audit(Common),
    /// Show what apply would change (unified diffs and actions); writes nothing.
    Plan(Common),
    /// Back up, validate and change the files of non-compliant checks.
    Apply(ApplyArgs),
    /// Restore a backup made by apply, byte for byte.
    Rollback(RollbackArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Root prefix the checks read and change (a fixture tree or a mounted image).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Check id to run (repeatable); all checks when absent.
    #[arg(long = "check", value_name = "ID")]
    checks: Vec<String>,
    /// Thresholds as a TOML file (fields of the policy, CHECKS.md defaults otherwise).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Language of the tables: en or zh (中文).
    #[arg(long, value_enum, default_value_t = LangArg::En)]
    lang: LangArg,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    #[command(flatten)]
    common: Common,
    /// Where backups are kept (must lie outside the root prefix being changed).
    #[arg(long, default_value = DEFAULT_BACKUP_DIR)]
    backup_dir: PathBuf,
    /// Apply without asking.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, clap::Args)]
struct RollbackArgs {
    /// Root prefix the backup belongs to.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Where backups are kept.
    #[arg(long, default_value = DEFAULT_BACKUP_DIR)]
    backup_dir: PathBuf,
    /// Backup id (printed by apply); the newest backup when absent.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
    /// Thresholds as a TOML file, for the audit after the restore.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Language of the tables: en or zh (中文).
    #[arg(long, value_enum, default_value_t = LangArg::En)]
    lang: LangArg,
}

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    let Some(p) = path else {
        return Ok(Policy::default());
    };
    let meta =
        std::fs::metadata(p).with_context(|| format!("cannot read policy file {}", p.display()))?;
    if meta.len() > MAX_POLICY_BYTES {
        bail!(
            "policy file {} is larger than 64 KiB; it should hold a few thresholds",
            p.display()
        );
    }
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read policy file {}", p.display()))?;
    let policy: Policy =
        toml::from_str(&text).with_context(|| format!("invalid policy file {}", p.display()))?;
    policy.validate()?;
    Ok(policy)
}

fn open_root(p: &Path) -> anyhow::Result<Root> {
    Ok(Root::new(p)?)
}

fn ids(checks: &[String]) -> anyhow::Result<Vec<&str>> {
    let v: Vec<&str> = checks.iter().map(String::as_str).collect();
    catalog::select(&v)?;
    Ok(v)
}

/// Shortens a cell to `n` characters.
fn cell(s: &str, n: usize) -> String {
    let one_line = preflight_render::term::clean(s.replace('\n', " "));
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut t: String = one_line.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The results table (aligned by display width, so Chinese statuses line up).
fn results_table(lang: Lang) -> Table {
    Table::new(&[
        lang.pick("CHECK", "检查项"),
        lang.pick("STATUS", "状态"),
        lang.pick("OBSERVED", "实际值"),
        lang.pick("EXPECTED", "期望值"),
    ])
}

fn table_row(
    t: &mut Table,
    lang: Lang,
    id: &str,
    st: EvidenceStatus,
    observed: &str,
    expected: &str,
    reason: Option<&str>,
) {
    let obs = match (st, reason) {
        (EvidenceStatus::Unknown, Some(r)) if observed.is_empty() => r.to_string(),
        _ => observed.to_string(),
    };
    t.row(vec![
        id.to_string(),
        preflight_render::status_word(st.as_str(), lang),
        cell(&obs, 60),
        cell(expected, 60),
    ]);
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn summary(statuses: impl Iterator<Item = EvidenceStatus>) -> String {
    let (mut c, mut n, mut na, mut u) = (0, 0, 0, 0);
    for s in statuses {
        match s {
            EvidenceStatus::Compliant => c += 1,
            EvidenceStatus::NonCompliant => n += 1,
            EvidenceStatus::NotApplicable => na += 1,
            EvidenceStatus::Unknown => u += 1,
        }
    }
    format!("{c} compliant, {n} non_compliant, {na} not_applicable, {u} unknown")
}

/// [`summary`] in `lang`.
fn summary_in(statuses: impl Iterator<Item = EvidenceStatus>, lang: Lang) -> String {
    let s: Vec<EvidenceStatus> = statuses.collect();
    if lang == Lang::En {
        return summary(s.into_iter());
    }
    let n = |x: EvidenceStatus| s.iter().filter(|y| **y == x).count();
    format!(
        "{} 项符合，{} 项不符合，{} 项不适用，{} 项无法判定",
        n(EvidenceStatus::Compliant),
        n(EvidenceStatus::NonCompliant),
        n(EvidenceStatus::NotApplicable),
        n(EvidenceStatus::Unknown)
    )
}

fn print_plan(out: &mut impl Write, plan: &[catalog::PlanEntry]) -> std::io::Result<usize> {
    let mut changes = 0;
    for e in plan {
        if e.changes.is_empty() && e.actions.is_empty() && e.blocked.is_none() {
            continue;
        }
        writeln!(
            out,
            "== {} ({}) [{}]",
            e.audit.id,
            e.audit.title_en,
            e.audit.status.as_str()
        )?;
        if let Some(b) = &e.blocked {
            writeln!(out, "   not changed: {b}")?;
        }
        for c in &e.changes {
            changes += 1;
            write!(out, "{}", c.diff)?;
            if !c.diff.ends_with('\n') {
                writeln!(out)?;
            }
        }
        for a in &e.actions {
            changes += 1;
            writeln!(out, "   action: {a}")?;
        }
        for n in &e.notes {
            writeln!(out, "   note: {n}")?;
        }
    }
    Ok(changes)
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    // One short line is enough for an answer.
    std::io::Read::take(std::io::stdin().lock(), 64).read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES"))
}

fn newest_backup(dir: &Path) -> anyhow::Result<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list backup directory {}", dir.display()))?
        .flatten()
        .filter(|e| e.path().join("manifest.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Ids start with the Unix time, zero-padded nanoseconds follow.
    ids.sort_by_key(|id| {
        let mut it = id.split('-');
        (
            it.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            it.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
        )
    });
    ids.pop().with_context(|| {
        format!(
            "no backup in {}; pass --backup-dir where apply kept them",
            dir.display()
        )
    })
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fw_hook = crate::svc_harden::firewall_hook(&args.state_dir);
    match args.cmd {
        HardenCmd::Audit(c) => {
            let root = open_root(&c.root)?;
            let policy = load_policy(c.policy.as_deref())?;
            let results = catalog::audit(&root, &policy, &fw_hook, &ids(&c.checks)?);
            if c.output == Output::Json {
                return print_json(&results);
            }
            let mut out = preflight_render::term::SafeWriter(std::io::stdout().lock());
            let mut t = results_table(c.lang.into());
            for r in &results {
                table_row(
                    &mut t,
                    c.lang.into(),
                    &r.id,
                    r.status,
                    &r.observed,
                    &r.expected,
                    r.reason.as_deref(),
                );
            }
            write!(out, "{}", t.render())?;
            writeln!(
                out,
                "\n{}",
                summary_in(results.iter().map(|r| r.status), c.lang.into())
            )?;
        }
        HardenCmd::Plan(c) => {
            let root = open_root(&c.root)?;
            let policy = load_policy(c.policy.as_deref())?;
            let plan = catalog::plan(&root, &policy, &fw_hook, &ids(&c.checks)?)?;
            if c.output == Output::Json {
                return print_json(&plan);
            }
            let mut out = preflight_render::term::SafeWriter(std::io::stdout().lock());
            let mut t = results_table(c.lang.into());
            for e in &plan {
                let a = &e.audit;
                table_row(
                    &mut t,
                    c.lang.into(),
                    &a.id,
                    a.status,
                    &a.observed,
                    &a.expected,
                    a.reason.as_deref(),
                );
            }
            write!(out, "{}", t.render())?;
            writeln!(out)?;
            let n = print_plan(&mut out, &plan)?;
            writeln!(
                out,
                "\n{n} change(s) planned under {}",
                root.base().display()
            )?;
        }
        HardenCmd::Apply(a) => {
            let c = &a.common;
            let root = open_root(&c.root)?;
            let policy = load_policy(c.policy.as_deref())?;
            let ids = ids(&c.checks)?;
            if a.backup_dir.starts_with(root.base()) && !root.is_host() {
                bail!(
                    "backup directory {} lies inside the root prefix {}; choose one outside it",
                    a.backup_dir.display(),
                    root.base().display()
                );
            }
            if !a.yes {
                if !std::io::stdin().is_terminal() {
                    bail!("stdin is not a terminal: review `harden plan`, then pass --yes to apply without a prompt");
                }
                let plan = catalog::plan(&root, &policy, &fw_hook, &ids)?;
                let n = print_plan(
                    &mut preflight_render::term::SafeWriter(std::io::stderr().lock()),
                    &plan,
                )?;
                if n == 0 {
                    eprintln!("nothing to change");
                    return Ok(());
                }
                if !confirm(&format!(
                    "apply {n} change(s) under {}?",
                    root.base().display()
                ))? {
                    bail!("not applied: not confirmed");
                }
            }
            let report = catalog::apply(
                &root,
                &policy,
                &fw_hook,
                &ids,
                &ApplyOptions {
                    backup_dir: a.backup_dir.clone(),
                },
            )?;
            if c.output == Output::Json {
                return print_json(&report);
            }
            let mut out = preflight_render::term::SafeWriter(std::io::stdout().lock());
            let mut t = results_table(c.lang.into());
            let mut errors = Vec::new();
            for r in &report.records {
                table_row(
                    &mut t,
                    c.lang.into(),
                    &r.check_id,
                    r.status,
                    &r.observed,
                    &r.expected,
                    r.reason.as_deref(),
                );
                if let Some(e) = &r.error {
                    errors.push(format!("{}: error: {}", r.check_id, cell(e, 120)));
                }
            }
            write!(out, "{}", t.render())?;
            for e in errors {
                writeln!(out, "{e}")?;
            }
            writeln!(
                out,
                "\n{}",
                summary_in(report.records.iter().map(|r| r.status), c.lang.into())
            )?;
            match &report.backup {
                Some(b) => writeln!(out, "backup {} in {} (undo: preflight-agent harden rollback --backup {} --backup-dir {})", b.id, b.dir, b.id, b.dir)?,
                None => writeln!(out, "nothing changed")?,
            }
        }
        HardenCmd::Rollback(r) => {
            let root = open_root(&r.root)?;
            let policy = load_policy(r.policy.as_deref())?;
            let id = match &r.backup {
                Some(id) => id.clone(),
                None => newest_backup(&r.backup_dir)?,
            };
            let report = catalog::rollback(&root, &policy, &fw_hook, &r.backup_dir, &id)?;
            if r.output == Output::Json {
                return print_json(&report);
            }
            let mut out = std::io::stdout().lock();
            for p in &report.restored {
                writeln!(out, "restored {p}")?;
            }
            let mut t = results_table(r.lang.into());
            for rec in &report.records {
                table_row(
                    &mut t,
                    r.lang.into(),
                    &rec.check_id,
                    rec.status,
                    &rec.observed,
                    &rec.expected,
                    rec.reason.as_deref(),
                );
            }
            write!(out, "{}", t.render())?;
            writeln!(out, "\nrolled back backup {id}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        args: Args,
    }

    fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            let to = dst.join(e.file_name());
            let ft = e.file_type()?;
            if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &to)?;
            } else if ft.is_dir() {
                copy_tree(&e.path(), &to)?;
            } else {
                std::fs::copy(e.path(), &to)?;
            }
        }
        Ok(())
    }

    fn parse(argv: &[&str]) -> anyhow::Result<Args> {
        Ok(TestCli::try_parse_from(std::iter::once("harden").chain(argv.iter().copied()))?.args)
    }

    #[test]
    fn apply_then_rollback_through_the_command() -> anyhow::Result<()> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../preflight-harden/tests/fixtures/kylin-v10");
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        copy_tree(&src, &root)?;
        let backups = tmp.path().join("backups");
        let (r, b) = (root.display().to_string(), backups.display().to_string());
        let login_defs = std::fs::read(root.join("etc/login.defs"))?;

        run(parse(&[
            "audit",
            "--root",
            &r,
            "--check",
            "acct.pass_max_days",
            "--output",
            "json",
        ])?)?;
        run(parse(&["plan", "--root", &r])?)?;
        assert_eq!(
            std::fs::read(root.join("etc/login.defs"))?,
            login_defs,
            "plan wrote"
        );
        run(parse(&[
            "apply",
            "--root",
            &r,
            "--backup-dir",
            &b,
            "--yes",
            "--check",
            "acct.pass_max_days",
        ])?)?;
        assert!(std::fs::read_to_string(root.join("etc/login.defs"))?.contains("PASS_MAX_DAYS\t90"));
        run(parse(&["rollback", "--root", &r, "--backup-dir", &b])?)?;
        assert_eq!(
            std::fs::read(root.join("etc/login.defs"))?,
            login_defs,
            "rollback"
        );
        Ok(())
    }

    #[test]
    fn policy_file_is_toml() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let p = tmp.path().join("policy.toml");
        std::fs::write(&p, "pass_max_days = 60\numask = \"077\"\n")?;
        let pol = load_policy(Some(&p))?;
        assert_eq!((pol.pass_max_days, pol.umask), (60, 0o077));
        std::fs::write(&p, "pass_max_days = 0\n")?;
        let e = load_policy(Some(&p)).expect_err("out of range");
        assert!(e.to_string().contains("pass_max_days"), "{e}");
        std::fs::write(&p, "pass_max_dayz = 60\n")?;
        assert!(load_policy(Some(&p)).is_err());
        Ok(())
    }

    #[test]
    fn bad_input_is_refused_with_a_fix() -> anyhow::Result<()> {
        let e =
            run(parse(&["audit", "--root", "/nonexistent-preflight-root"])?).expect_err("bad root");
        assert!(e.to_string().contains("--root"), "{e}");
        let e = run(parse(&["plan", "--check", "no.such_check"])?).expect_err("bad id");
        assert!(e.to_string().contains("unknown check id"), "{e}");
        assert!(parse(&["audit", "--output", "yaml"]).is_err());
        let tmp = tempfile::tempdir()?;
        let e = run(parse(&[
            "apply",
            "--root",
            &tmp.path().display().to_string(),
            "--backup-dir",
            &tmp.path().join("b").display().to_string(),
        ])?)
        .expect_err("inside prefix");
        assert!(e.to_string().contains("outside"), "{e}");
        Ok(())
    }
}
