//! `preflight-agent ports`: listening sockets with their processes, locally, like
//! `ss -ltnup`, with no controller involved.

use std::io::Write;

use anyhow::Context;
use preflight_probe::ports::{list_listening, ListOptions, Listener};

/// Output format of `preflight-agent ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// An aligned table.
    Text,
    /// A JSON array of listeners.
    Json,
}

/// Arguments of `preflight-agent ports`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TCP listeners only (with --udp: both, the default).
    #[arg(long)]
    pub tcp: bool,
    /// UDP sockets only (with --tcp: both, the default).
    #[arg(long)]
    pub udp: bool,
    /// Do not resolve owning processes (faster: skips the scan of /proc/*/fd).
    #[arg(long)]
    pub no_processes: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs the subcommand: lists (sorted by proto and port) and prints. On failure it prints one
/// line, `preflight-agent ports: <cause>: <cause>...`, and exits with status 1.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Err(e) = list_and_print(args) {
        eprintln!("preflight-agent ports: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn list_and_print(args: Args) -> anyhow::Result<()> {
    let both = !args.tcp && !args.udp;
    let opts = ListOptions {
        tcp: args.tcp || both,
        udp: args.udp || both,
        processes: !args.no_processes,
    };
    let listeners = list_listening(&opts).context("listing listening sockets")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.output {
        Output::Json => {
            serde_json::to_writer(&mut out, &listeners).context("writing JSON")?;
            writeln!(out)?;
        }
        Output::Text => write_table(
            &mut preflight_render::term::SafeWriter(&mut out),
            &listeners,
        )?,
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

fn write_table(out: &mut impl Write, listeners: &[Listener]) -> anyhow::Result<()> {
    let dash = || "-".to_string();
    let rows: Vec<[String; 6]> = listeners
        .iter()
        .map(|l| {
            [
                l.proto.as_str().to_string(),
                l.address.to_string(),
                l.port.to_string(),
                l.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                // Names come from the host (any local user can name a process): escaped.
                l.process
                    .clone()
                    .map(preflight_render::term::clean)
                    .unwrap_or_else(dash),
                l.user
                    .clone()
                    .map(preflight_render::term::clean)
                    .unwrap_or_else(dash),
            ]
        })
        .collect();
    let header = ["PROTO", "LOCAL", "PORT", "PID", "PROCESS", "USER"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        // Numbers right-aligned, text left-aligned, no trailing spaces.
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:<w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        )
    };
    writeln!(out, "{}", line(header))?;
    for row in &rows {
        writeln!(
            out,
            "{}",
            line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])
        )?;
    }
    Ok(())
}
