//! `preflight sweep`, `preflight sweeps`, `preflight report`: readiness sweeps over a plan's
//! servers and their stored reports.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use preflight_core::plan::MAX_PLAN_BYTES;
use preflight_proto::v1 as pb;

use crate::client::{status, Conn};
use crate::Output;

/// Readiness subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum SweepCmd {
    /// Sweep every server of the batch's attached plan (or of --plan FILE): agent reachable,
    /// identity, capacity, disk space, clock, deployment package (including database backups),
    /// planned ports free, required paths, bandwidth pairs, disk benchmarks of the data
    /// directories, virtual IPs not answering yet. A complete sweep of the attached plan is the
    /// batch's readiness (confirm_plan gate); one with --skip is stored and reported only.
    /// Exit 3 when something blocks.
    #[command(
        after_help = "Examples:\n  preflight sweep b-2026-12                   # the plan attached with `preflight plan attach`\n  \
preflight sweep b1 --skip disk --skip bandwidth   # quick look, not the batch's readiness\n  \
preflight sweep b1 --plan plan.toml         # ad-hoc: a plan file, recorded only if it is the attached one\n  \
preflight sweep --batch b1 --output json"
    )]
    Sweep {
        /// Batch the run belongs to (or --batch).
        #[arg(
            value_name = "BATCH",
            required_unless_present = "batch",
            conflicts_with = "batch"
        )]
        batch_arg: Option<String>,
        /// A plan file (TOML) instead of the batch's attached plan.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Batch the run belongs to.
        #[arg(long)]
        batch: Option<String>,
        /// Leave out a check (repeatable): the slow ones are disk and bandwidth.
        #[arg(long = "skip", value_name = "CHECK", value_parser = clap::builder::PossibleValuesParser::new(preflight_core::readiness::SKIPPABLE))]
        skip: Vec<String>,
        /// Length of each disk benchmark and bandwidth test, in milliseconds (200-30000).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(200..=30000))]
        measure_ms: u32,
        /// Agents asked at once.
        #[arg(long, default_value_t = 32)]
        concurrency: u32,
        /// Chinese messages.
        #[arg(long, value_parser = ["en", "zh"], default_value = "en")]
        lang: String,
    },
    /// List stored sweep runs.
    Sweeps {
        #[arg(long)]
        batch: Option<String>,
    },
    /// Show a stored sweep report.
    Report {
        /// Run id (default: the latest).
        #[arg(long)]
        run: Option<u64>,
        #[arg(long)]
        batch: Option<String>,
        /// text, json, or html (one self-contained page).
        #[arg(long, value_parser = ["text", "json", "html"], default_value = "text")]
        format: String,
        #[arg(long, value_parser = ["en", "zh"], default_value = "en")]
        lang: String,
    },
}

async fn readiness(
    conn: &Conn,
) -> anyhow::Result<pb::readiness_client::ReadinessClient<crate::client::Authed>> {
    conn.service(pb::readiness_client::ReadinessClient::with_interceptor)
        .await
}

pub async fn run(c: SweepCmd, conn: &Conn, out: Output) -> anyhow::Result<()> {
    match c {
        SweepCmd::Sweep {
            batch_arg,
            plan,
            batch,
            skip,
            measure_ms,
            concurrency,
            lang,
        } => {
            let batch = batch_arg.or(batch).unwrap_or_default();
            let (plan_name, text) = match &plan {
                Some(plan) => {
                    let meta = std::fs::metadata(plan)
                        .with_context(|| format!("cannot read {}", plan.display()))?;
                    if meta.len() > MAX_PLAN_BYTES as u64 {
                        bail!("{} is larger than {MAX_PLAN_BYTES} bytes", plan.display());
                    }
                    let text = std::fs::read_to_string(plan)
                        .with_context(|| format!("cannot read {}", plan.display()))?;
                    if text.is_empty() {
                        bail!("{} is empty: give a plan file, or leave out --plan to sweep the batch's attached plan", plan.display());
                    }
                    (plan.display().to_string(), text)
                }
                None => (String::new(), String::new()),
            };
            let mut stream = readiness(conn)
                .await?
                .run_sweep(pb::RunSweepRequest {
                    batch,
                    plan_name,
                    plan_toml: text,
                    concurrency,
                    skip,
                    measure_ms,
                })
                .await
                .map_err(status)?
                .into_inner();
            let bar = (out == Output::Text && std::io::stderr().is_terminal()).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} checks {msg}")
                        .expect("valid template"),
                );
                b
            });
            let mut report = None;
            while let Some(ev) = stream.next().await {
                let ev = ev.map_err(status)?;
                if let Some(b) = &bar {
                    b.set_length(u64::from(ev.total));
                    b.set_position(u64::from(ev.done));
                    b.set_message(ev.server.clone());
                }
                if ev.report.is_some() {
                    report = ev.report;
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let report = report.context("the controller ended the sweep without a report")?;
            print_report(&report, out, "text", &lang)?;
            if !report.not_recorded.is_empty() {
                eprintln!("{}", note(&report, &lang));
            }
            if report.hard > 0 {
                eprintln!(
                    "error: {} hard failure(s): the batch cannot go on until they are fixed",
                    report.hard
                );
                std::process::exit(3);
            }
            Ok(())
        }
        SweepCmd::Sweeps { batch } => {
            let r = readiness(conn)
                .await?
                .list_sweeps(pb::ListSweepsRequest {
                    batch: batch.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r.runs);
            }
            let mut t = preflight_render::Table::new(&[
                "RUN", "BATCH", "STATE", "STARTED", "PASS", "SOFT", "HARD",
            ]);
            for x in &r.runs {
                t.row(vec![
                    x.run_id.to_string(),
                    x.batch.clone(),
                    x.state.clone(),
                    preflight_render::time(x.started_at_ms),
                    x.passed.to_string(),
                    x.soft.to_string(),
                    x.hard.to_string(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        SweepCmd::Report {
            run,
            batch,
            format,
            lang,
        } => {
            let r = readiness(conn)
                .await?
                .get_sweep(pb::GetSweepRequest {
                    run_id: run.unwrap_or(0),
                    batch: batch.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_report(&r, out, &format, &lang)?;
            if out == Output::Text && format == "text" && !r.not_recorded.is_empty() {
                eprintln!("{}", note(&r, &lang));
            }
            Ok(())
        }
    }
}

/// Why the run is not the batch's readiness, in the report's language.
fn note(r: &pb::SweepReport, lang: &str) -> String {
    if lang == "zh" && !r.not_recorded_zh.is_empty() {
        format!("注意：{}", r.not_recorded_zh)
    } else {
        format!("note: {}", r.not_recorded)
    }
}

fn print_report(r: &pb::SweepReport, out: Output, format: &str, lang: &str) -> anyhow::Result<()> {
    match (out, format) {
        (Output::Json, _) | (_, "json") => crate::json(r),
        (_, "html") => {
            print!("{}", preflight_render::sweep_html(r));
            Ok(())
        }
        _ => {
            print!("{}", preflight_render::sweep(r, lang == "zh"));
            Ok(())
        }
    }
}
