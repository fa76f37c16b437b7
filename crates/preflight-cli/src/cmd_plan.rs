//! `preflight plan`: work with deployment plans. `check` validates a plan offline, with no
//! controller; `attach` (sending a checked plan to the controller for a batch) comes with the
//! controller client and gets its own variant of [`PlanCmd`].

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use preflight_core::plan::{InvalidPlan, PackageKind, Plan, MAX_PLAN_BYTES};

use crate::Output;

/// Arguments of `preflight plan`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: PlanCmd,
}

/// The `preflight plan` subcommands.
#[derive(clap::Subcommand)]
pub enum PlanCmd {
    /// Validate a plan (TOML, or a CSV server list) offline and print a summary or every error.
    #[command(
        after_help = "Run `preflight plan check --help` for examples and the file formats.",
        after_long_help = CHECK_HELP
    )]
    Check(CheckArgs),
    /// Check a plan and attach it to a batch (integrator, at the `plan` stage). The controller
    /// keeps the plan (checked again, CSV servers merged, at most 1 MiB as canonical TOML):
    /// `preflight sweep B7` then sweeps it, the batch takes readiness only from sweeps of this
    /// very plan, and the hardening gate checks the firewall against its ports.
    /// Nothing is attached when the plan has any error.
    #[command(
        after_help = "Examples:\n  preflight plan attach B7 plan.toml\n  preflight plan attach B7 plan-paths.toml --servers servers.csv\n  preflight sweep B7"
    )]
    Attach {
        /// Batch id.
        batch: String,
        #[command(flatten)]
        plan: CheckArgs,
    },
}

const CHECK_HELP: &str = "\
Examples:
  preflight plan check deploy/examples/plan.toml
  preflight plan check deploy/examples/servers.csv
  preflight plan check plan-paths.toml --servers servers.csv --output json

A TOML plan holds [batch], [[servers]], [[paths]], [[vips]], [jump_host], [management],
[thresholds], [[bandwidth]] and [[packages]]; deploy/examples/plan.toml documents every key:

  [[servers]]
  address = \"10.20.0.21\"
  hostname = \"soa-01\"
  role = \"soa\"
  apps = [{ name = \"soa-gateway\", ports = \"8080,8081-8089\" }]
  data_dirs = [\"/opt/soa/data\"]

  [[paths]]                       # every nginx server must reach every soa server on 8080
  from = { role = \"nginx\" }
  to = { role = \"soa\" }
  ports = \"8080\"

A CSV server list (as exported from the planning spreadsheet) has a header row naming the
columns ip, hostname, role and optionally apps, ports, data_dirs (any case, any order):

  IP,Hostname,Role,Apps,Ports
  10.20.0.21,soa-01,soa,soa-gateway;node_exporter,\"8080;9100\"

Checked alone it gives a plan with default thresholds and no paths; with --servers it is merged
into a TOML plan whose paths may name its roles and hostnames.

Every error is printed as FILE:LINE:COL: field NAME: what is wrong and how to fix it.
Exit status: 0 valid, 2 invalid plan, 1 file not readable.";

/// Arguments of `preflight plan check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Plan file: TOML (.toml) or a CSV server list (.csv).
    file: PathBuf,
    /// CSV server list to merge into a TOML plan (its servers are added to the plan's own).
    #[arg(long, value_name = "CSV")]
    servers: Option<PathBuf>,
    /// Format of FILE, when its extension does not say.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Output: a readable summary, or JSON (the plan, its digest, the expanded paths, or the
    /// errors). The same flag as the global `--output`, with the same type and id, so that
    /// `preflight --output json plan check FILE` and `preflight plan check FILE --output json`
    /// both work.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Input format of a plan file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// TOML plan.
    Toml,
    /// CSV server list.
    Csv,
}

/// Runs the subcommand. An invalid plan exits the process with status 2 after printing every
/// error; unreadable files return an error (status 1).
pub async fn run(args: Args, conn: &crate::client::Conn) -> anyhow::Result<()> {
    match args.cmd {
        PlanCmd::Check(a) => check(a),
        PlanCmd::Attach { batch, plan } => {
            let (name, parsed) = load(&plan)?;
            let p = match parsed {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("error: {name} is invalid; nothing was attached");
                    std::process::exit(2);
                }
            };
            // The controller keeps the plan itself, as canonical TOML (CSV servers merged), and
            // checks it again; it must read back to the very same plan.
            let text = p.to_toml();
            if Plan::from_toml("canonical", &text).map(|b| b.digest()).ok() != Some(p.digest()) {
                anyhow::bail!(
                    "{name}: the plan does not survive its canonical TOML form; nothing was attached (please report this)"
                );
            }
            const MAX: usize = preflight_core::plan::MAX_ATTACHED_PLAN_BYTES;
            if text.len() > MAX {
                eprintln!(
                    "error: {name}: the plan is {} bytes as canonical TOML; at most {MAX} can be attached: split the batch into smaller ones; nothing was attached",
                    text.len()
                );
                std::process::exit(2);
            }
            let hosts = p.servers.iter().map(|s| s.hostname.clone()).collect();
            crate::cmd_workflow::attach_plan(conn, batch, p.digest(), hosts, text, plan.output)
                .await
        }
    }
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    let (name, result) = load(&a)?;
    match result {
        Ok(plan) => {
            match a.output {
                Output::Text => print!("{}", summary(&name, &plan)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&json_ok(&plan))?),
            }
            Ok(())
        }
        Err(invalid) => {
            match a.output {
                Output::Text => {
                    eprintln!("{invalid}");
                    eprintln!(
                        "{name}: invalid plan: {} error(s), nothing attached",
                        invalid.errors.len()
                    );
                }
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&json_err(&invalid))?)
                }
            }
            std::process::exit(1)
        }
    }
}

/// Reads the files named by the arguments and parses them: the outer error is a file that
/// cannot be read, the inner one an invalid plan. Also what `plan attach` will call.
fn load(a: &CheckArgs) -> anyhow::Result<(String, Result<Plan, InvalidPlan>)> {
    let format = match a.format {
        Some(f) => f,
        None => format_of(&a.file)?,
    };
    let text = read_text(&a.file)?;
    let name = a.file.display().to_string();
    let result = match (format, &a.servers) {
        (Format::Toml, None) => Plan::from_toml(&name, &text),
        (Format::Csv, None) => Plan::from_csv(&name, &text),
        (Format::Toml, Some(csv)) => {
            let csv_text = read_text(csv)?;
            Plan::from_toml_with_csv_servers(&name, &text, &csv.display().to_string(), &csv_text)
        }
        (Format::Csv, Some(_)) => {
            anyhow::bail!("--servers merges a CSV server list into a TOML plan: give a .toml FILE")
        }
    };
    Ok((name, result))
}

fn format_of(file: &Path) -> anyhow::Result<Format> {
    match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("toml") => Ok(Format::Toml),
        Some("csv") => Ok(Format::Csv),
        _ => anyhow::bail!(
            "cannot tell the format of {} from its extension: pass --format toml or --format csv",
            file.display()
        ),
    }
}

/// Reads a plan file, refusing files above the core's size cap and text that is not UTF-8.
fn read_text(path: &Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let cap = u64::try_from(MAX_PLAN_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("read {}", path.display()))?;
    if bytes.len() > MAX_PLAN_BYTES {
        anyhow::bail!(
            "{} is larger than {MAX_PLAN_BYTES} bytes: a plan is text, check the file",
            path.display()
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 (first bad byte at offset {}): save it as UTF-8 (in a spreadsheet: \"CSV UTF-8\")",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn summary(name: &str, plan: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{name}: valid plan, digest {}", plan.digest());
    let b = &plan.batch;
    if b.project.is_some() || b.batch.is_some() {
        let _ = writeln!(
            s,
            "  project {}, batch {}",
            b.project.as_deref().unwrap_or("-"),
            b.batch.as_deref().unwrap_or("-")
        );
    }
    let roles: Vec<String> = plan
        .roles()
        .into_iter()
        .map(|r| {
            format!(
                "{r} {}",
                plan.servers.iter().filter(|s| s.role == r).count()
            )
        })
        .collect();
    let ports: usize = plan.planned_ports().iter().map(|(_, p)| p.len()).sum();
    let _ = writeln!(
        s,
        "  servers: {} ({}), {ports} planned ports",
        plan.servers.len(),
        roles.join(", ")
    );
    let _ = writeln!(
        s,
        "  required paths: {} declared, {} (from, to, port) checks",
        plan.paths.len(),
        plan.expanded_paths().len()
    );
    let _ = writeln!(
        s,
        "  virtual IPs: {}, bandwidth pairs: {}, management sources: {}",
        plan.vips.len(),
        plan.bandwidth.len(),
        plan.management.sources.len()
    );
    let backups = plan
        .packages
        .iter()
        .filter(|p| matches!(p.kind, PackageKind::DbBackup { .. }))
        .count();
    let bytes: u64 = plan.packages.iter().map(|p| p.size).sum();
    let _ = writeln!(
        s,
        "  packages: {} files ({} app, {backups} db_backup), {bytes} bytes",
        plan.packages.len(),
        plan.packages.len() - backups
    );
    if let Some(j) = &plan.jump_host {
        let _ = writeln!(s, "  jump host: {} ({:?})", j.address, j.kind);
    }
    let t = &plan.thresholds;
    let _ = writeln!(
        s,
        "  thresholds: randread >= {} IOPS, randwrite >= {} IOPS, fdatasync p99 <= {} us, \
         bandwidth >= {} Mbit/s, cores >= {}, memory >= {} MiB, free disk >= {} GiB, \
         clock skew <= {} ms, report age <= {} min",
        t.min_randread_iops,
        t.min_randwrite_iops,
        t.max_fdatasync_p99_us,
        t.min_bandwidth_mbit,
        t.min_cores,
        t.min_memory_mib,
        t.min_free_disk_gib,
        t.max_clock_skew_ms,
        t.report_max_age_minutes
    );
    for (role, t) in &plan.role_thresholds {
        let _ = writeln!(
            s,
            "  thresholds for role {role}: randread >= {}, randwrite >= {}, fdatasync p99 <= {} us, \
             cores >= {}, memory >= {} MiB, free disk >= {} GiB",
            t.min_randread_iops,
            t.min_randwrite_iops,
            t.max_fdatasync_p99_us,
            t.min_cores,
            t.min_memory_mib,
            t.min_free_disk_gib
        );
    }
    // What the `plan` gate will name (the controller judges it again from the attached plan).
    let missing = plan.incomplete();
    if missing.is_empty() {
        let _ = writeln!(s, "  complete for the plan stage (plan_complete)");
    } else {
        let _ = writeln!(
            s,
            "  not complete for the plan stage (plan_complete); missing:"
        );
        for m in &missing {
            let _ = writeln!(s, "    - {m}");
        }
    }
    s
}

fn json_ok(plan: &Plan) -> serde_json::Value {
    let paths: Vec<serde_json::Value> = plan
        .expanded_paths()
        .iter()
        .map(|p| {
            serde_json::json!({
                "from": p.from.hostname,
                "to": p.to.hostname,
                "to_address": p.to.address,
                "port": p.port,
                "protocol": p.protocol,
            })
        })
        .collect();
    serde_json::json!({
        "valid": true,
        "digest": plan.digest(),
        "plan": plan,
        "expanded_paths": paths,
        "incomplete": plan.incomplete(),
    })
}

fn json_err(invalid: &InvalidPlan) -> serde_json::Value {
    let errors: Vec<serde_json::Value> = invalid
        .errors
        .iter()
        .map(|e| {
            serde_json::json!({
                "file": e.location.file,
                "line": e.location.line,
                "column": e.location.column,
                "field": e.field,
                "message": e.kind.to_string(),
            })
        })
        .collect();
    serde_json::json!({ "valid": false, "errors": errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/examples")
            .join(name)
    }

    fn args(file: &str, servers: Option<&str>, format: Option<Format>) -> CheckArgs {
        CheckArgs {
            file: examples(file),
            servers: servers.map(examples),
            format,
            output: Output::Text,
        }
    }

    #[test]
    fn example_plans_load_and_summarize() {
        let (name, plan) = load(&args("plan.toml", None, None)).expect("readable");
        let plan = plan.unwrap_or_else(|e| panic!("{e}"));
        let text = summary(&name, &plan);
        assert!(text.contains("servers: 6 (db 1, nginx 2, soa 3)"), "{text}");
        assert!(
            text.contains("required paths: 3 declared, 27 (from, to, port) checks"),
            "{text}"
        );
        assert!(
            text.contains("packages: 3 files (2 app, 1 db_backup)"),
            "{text}"
        );
        let json = json_ok(&plan);
        assert_eq!(json["digest"], plan.digest());
        assert_eq!(json["expanded_paths"].as_array().map(Vec::len), Some(27));

        let (_, merged) =
            load(&args("plan-paths.toml", Some("servers.csv"), None)).expect("readable");
        assert_eq!(merged.map(|p| p.digest()), Ok(plan.digest()));
        let (_, csv) = load(&args("servers.csv", None, None)).expect("readable");
        assert_eq!(csv.map(|p| p.servers), Ok(plan.servers));
    }

    #[test]
    fn invalid_examples_report_every_error() {
        let (_, r) = load(&args("invalid/plan-with-errors.toml", None, None)).expect("readable");
        let err = r.expect_err("invalid");
        assert_eq!(err.errors.len(), 10, "{err}");
        let json = json_err(&err);
        assert_eq!(json["errors"][0]["line"], 11);
        assert_eq!(json["errors"][0]["field"], "servers[0].apps[0].ports");
        let (_, r) = load(&args("invalid/servers-with-errors.csv", None, None)).expect("readable");
        let lines: Vec<u32> = r
            .expect_err("invalid")
            .errors
            .iter()
            .map(|e| e.location.line)
            .collect();
        assert_eq!(lines, [3, 4, 5]);
    }

    #[test]
    fn format_comes_from_the_extension_or_the_flag() {
        assert!(load(&args("README", None, None)).is_err());
        // A CSV read as TOML is a TOML syntax error, located.
        let (_, r) = load(&args("servers.csv", None, Some(Format::Toml))).expect("readable");
        assert_eq!(r.expect_err("not toml").errors[0].location.line, 1);
        // --servers needs a TOML plan.
        assert!(load(&args("servers.csv", Some("servers.csv"), None)).is_err());
    }
}
