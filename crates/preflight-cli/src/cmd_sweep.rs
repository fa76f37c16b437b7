//! `preflight sweep`, `preflight sweeps`, `preflight report`: readiness sweeps over a plan's
//! servers and their stored reports.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use preflight_core::plan::MAX_PLAN_BYTES;
use preflight_core::readiness::{CheckGroup, SKIPPABLE};
use preflight_proto::v1 as pb;

use crate::client::{status, Conn};
use crate::Output;

/// What `preflight sweep` does besides sweeping.
#[derive(Debug, clap::Subcommand)]
pub enum SweepAction {
    /// Stop a running sweep: the agents' calls are cancelled (benchmarks and probe listeners
    /// stop), the run ends `cancelled`, nothing of it is recorded as readiness, and the batch
    /// can be swept again.
    Cancel {
        /// The run (`preflight sweeps` lists them).
        #[arg(value_name = "RUN", value_parser = clap::value_parser!(u64).range(1..))]
        run: u64,
    },
}

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
preflight sweep --batch b1 --output json\n  \
preflight sweep --attach 12                 # follow run 12 (after Ctrl-C, or from another terminal)\n  \
preflight sweep cancel 12                   # stop run 12: nothing of it is recorded\n\n\
Ctrl-C stops following, not the sweep: it goes on at the controller, and the CLI says how to\n\
attach to it or cancel it.",
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true
    )]
    Sweep {
        #[command(subcommand)]
        action: Option<SweepAction>,
        /// Batch the run belongs to (or --batch).
        #[arg(
            value_name = "BATCH",
            required_unless_present_any = ["batch", "attach"],
            conflicts_with_all = ["batch", "attach"]
        )]
        batch_arg: Option<String>,
        /// Follow the running sweep RUN (its progress, then its report) instead of starting one.
        #[arg(long, value_name = "RUN", conflicts_with_all = ["batch", "plan", "skip"], value_parser = clap::value_parser!(u64).range(1..))]
        attach: Option<u64>,
        /// A plan file (TOML) instead of the batch's attached plan.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Batch the run belongs to.
        #[arg(long)]
        batch: Option<String>,
        /// Leave out a check (repeatable): the slow ones are disk and bandwidth.
        #[arg(long = "skip", value_name = "CHECK", value_parser = skip_arg())]
        skip: Vec<CheckGroup>,
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
            action: Some(SweepAction::Cancel { run }),
            lang,
            ..
        } => {
            let r = readiness(conn)
                .await?
                .cancel_sweep(pb::CancelSweepRequest { run_id: run })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r);
            }
            if lang == "zh" {
                println!(
                    "运行 {} 已{}：不记录为就绪检查结果",
                    r.run_id,
                    state_zh(preflight_render::state_of(&r))
                );
            } else {
                println!(
                    "run {} {}: nothing of it is recorded as readiness",
                    r.run_id,
                    preflight_render::state_of(&r)
                );
            }
            Ok(())
        }
        SweepCmd::Sweep {
            attach: Some(run),
            lang,
            ..
        } => {
            let sigint = interrupts()?;
            let stream = readiness(conn)
                .await?
                .attach_sweep(pb::AttachSweepRequest { run_id: run })
                .await
                .map_err(status)?
                .into_inner();
            let report = follow(sigint, stream, out, &lang, "").await?;
            finish(&report, out, &lang)
        }
        SweepCmd::Sweep {
            action: None,
            attach: None,
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
            let sigint = interrupts()?;
            let stream = readiness(conn)
                .await?
                .run_sweep(pb::RunSweepRequest {
                    batch: batch.clone(),
                    plan_name,
                    plan_toml: text,
                    concurrency,
                    skip: skip
                        .iter()
                        .map(|&g| pb::CheckGroup::from(g) as i32)
                        .collect(),
                    measure_ms,
                })
                .await
                .map_err(status)?
                .into_inner();
            let report = follow(sigint, stream, out, &lang, &batch).await?;
            finish(&report, out, &lang)
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
                    preflight_render::state_of(x).to_string(),
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

/// Follows a sweep's events to its report, with a progress bar on a terminal. Ctrl-C stops
/// following, not the sweep: it says so, and how to attach to the run or cancel it (exit 130).
async fn follow(
    mut sigint: tokio::signal::unix::Signal,
    mut stream: tonic::Streaming<pb::SweepEvent>,
    out: Output,
    lang: &str,
    batch: &str,
) -> anyhow::Result<pb::SweepReport> {
    let bar = (out == Output::Text && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} checks {msg}")
                .expect("valid template"),
        );
        b
    });
    let mut run_id = 0;
    let mut report = None;
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = sigint.recv() => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                eprintln!("{}", interrupted_hint(run_id, batch, lang));
                std::process::exit(130);
            }
        };
        let Some(ev) = ev else { break };
        let ev = ev.map_err(status)?;
        if ev.run_id != 0 && run_id == 0 {
            run_id = ev.run_id;
            if out == Output::Text && ev.report.is_none() {
                if lang == "zh" {
                    eprintln!(
                        "运行 {run_id}：共 {} 项（Ctrl-C 只停止跟踪，不停止检查）",
                        ev.total
                    );
                } else {
                    eprintln!(
                        "run {run_id}: {} checks (Ctrl-C stops following, not the sweep)",
                        ev.total
                    );
                }
            }
        }
        if let Some(b) = &bar {
            b.set_length(u64::from(ev.total));
            b.set_position(u64::from(ev.done));
            b.set_message(ev.server.clone());
        }
        if ev.report.is_some() {
            report = ev.report;
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report.context("the controller ended the sweep without a report")
}

/// SIGINT (Ctrl-C), caught from now on: registered before the sweep starts, so no Ctrl-C
/// kills the CLI silently.
/// `--skip`: the groups' words, listed in `--help` and completions.
fn skip_arg() -> impl clap::builder::TypedValueParser<Value = CheckGroup> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(SKIPPABLE)
        .map(|w| CheckGroup::from_word(&w).expect("every possible value is a group"))
}

fn interrupts() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot catch Ctrl-C")
}

/// What Ctrl-C on a sweep says: the run goes on, and how to follow or stop it.
fn interrupted_hint(run_id: u64, batch: &str, lang: &str) -> String {
    match (run_id, lang) {
        (0, "zh") => format!(
            "已停止跟踪，检查仍在控制器上继续：`preflight sweeps --batch {batch}` 列出其运行编号 N，用 `preflight sweep --attach N` 继续跟踪，或用 `preflight sweep cancel N` 停止"
        ),
        (0, _) => format!(
            "stopped following; the sweep goes on at the controller: `preflight sweeps --batch {batch}` lists its run N; follow it with `preflight sweep --attach N`, or stop it with `preflight sweep cancel N`"
        ),
        (id, "zh") => format!(
            "已停止跟踪，检查（运行 {id}）仍在控制器上继续：用 `preflight sweep --attach {id}` 继续跟踪并获取报告，或用 `preflight sweep cancel {id}` 停止"
        ),
        (id, _) => format!(
            "stopped following; the sweep (run {id}) goes on at the controller: follow it and get its report with `preflight sweep --attach {id}`, or stop it with `preflight sweep cancel {id}`"
        ),
    }
}

fn state_zh(state: &str) -> &str {
    match state {
        "cancelled" => "取消",
        "finished" => "完成",
        "interrupted" => "中断",
        "running" => "运行中",
        s => s,
    }
}

/// Prints a finished sweep's report, the note on why it is not the batch's readiness, and
/// exits 3 when something blocks.
fn finish(report: &pb::SweepReport, out: Output, lang: &str) -> anyhow::Result<()> {
    print_report(report, out, "text", lang)?;
    if report.state() == pb::SweepState::Cancelled {
        bail!("{}", report.not_recorded);
    }
    if !report.not_recorded.is_empty() {
        eprintln!("{}", note(report, lang));
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
