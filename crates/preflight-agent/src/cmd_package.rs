//! `preflight-agent package verify`: check the deployment package on this server against the
//! plan's manifest, with no controller — the check a deployer runs before calling anyone.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};
use preflight_core::plan::{PackageKind, Plan, MAX_PLAN_BYTES};
use preflight_probe::package::{self, ExpectedFile, FileStatus};

use crate::Output;

/// Arguments of `preflight-agent package`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: PackageCmd,
}

#[derive(Debug, clap::Subcommand)]
enum PackageCmd {
    /// Verify every package file of the plan on this host: present, size, SHA-256.
    #[command(
        after_help = "Examples:\n  preflight-agent package verify --plan plan.toml --server db-01\n  \
preflight-agent package verify --plan plan.toml --output json\n\n\
Exit status: 0 every file verified, 1 a file is missing or differs, 2 the plan is invalid."
    )]
    Verify {
        /// The plan (TOML) whose [[packages]] list the files.
        #[arg(long)]
        plan: PathBuf,
        /// Only the files meant for this server (hostname or address in the plan).
        #[arg(long)]
        server: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// The agent's state directory, never read by the check.
        #[arg(long, default_value = crate::state::DEFAULT_STATE_DIR, env = "PREFLIGHT_AGENT_STATE")]
        state_dir: PathBuf,
    },
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let PackageCmd::Verify {
        plan,
        server,
        output,
        state_dir,
    } = a.cmd;
    let meta =
        std::fs::metadata(&plan).with_context(|| format!("cannot read {}", plan.display()))?;
    if meta.len() > MAX_PLAN_BYTES as u64 {
        bail!("{} is larger than {} bytes", plan.display(), MAX_PLAN_BYTES);
    }
    let text = std::fs::read_to_string(&plan)
        .with_context(|| format!("cannot read {}", plan.display()))?;
    let name = plan.display().to_string();
    let parsed = match Plan::from_toml(&name, &text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let listed: Vec<_> = match &server {
        Some(s) => {
            let srv = parsed
                .server(s)
                .with_context(|| format!("--server {s:?} is not a server of {name}"))?;
            parsed.packages_for(srv).collect()
        }
        None => parsed.packages.iter().collect(),
    };
    if listed.is_empty() {
        bail!(
            "{name} lists no package files{}",
            server.map(|s| format!(" for {s}")).unwrap_or_default()
        );
    }
    let files: Vec<ExpectedFile> = listed
        .iter()
        .map(|p| ExpectedFile {
            path: p.path.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
        })
        .collect();
    let progress = output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Restricted like the agent's service (the same paths refused, nothing observed shown):
    // the local admin has sha256sum for anything else.
    let results = package::verify(&files, Some(&state_dir), &AtomicBool::new(false), |c| {
        if progress {
            eprintln!("checked {}", c.path);
        }
    })?;
    let bad = results
        .iter()
        .filter(|r| r.status != FileStatus::Ok)
        .count();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Text => {
            let mut t = preflight_render::Table::new(&["FILE", "KIND", "SIZE", "STATUS", "DETAIL"]);
            for (r, p) in results.iter().zip(&listed) {
                let kind = match &p.kind {
                    PackageKind::App => "app".to_string(),
                    PackageKind::DbBackup { database, .. } => format!("db_backup ({database})"),
                };
                let (status, detail) = match &r.status {
                    FileStatus::Ok => ("ok", String::new()),
                    FileStatus::Missing => ("MISSING", String::new()),
                    FileStatus::NotAFile => ("NOT A FILE", String::new()),
                    FileStatus::WrongSize { larger } => (
                        "WRONG SIZE",
                        if *larger {
                            "larger than planned"
                        } else {
                            "smaller than planned"
                        }
                        .to_string(),
                    ),
                    FileStatus::WrongHash => ("WRONG SHA-256", "does not match the plan".into()),
                    FileStatus::Refused { reason } => ("REFUSED", reason.clone()),
                    FileStatus::Unreadable { error } => ("UNREADABLE", error.clone()),
                    FileStatus::Cancelled => ("cancelled", String::new()),
                };
                t.row(vec![
                    r.path.clone(),
                    kind,
                    preflight_render::bytes(r.expected_size),
                    status.into(),
                    detail,
                ]);
            }
            print!("{}", t.render());
        }
    }
    if bad > 0 {
        bail!(
            "{bad} of {} package files failed verification",
            results.len()
        );
    }
    Ok(())
}
