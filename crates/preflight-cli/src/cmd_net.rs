//! `preflight ports`, `preflight probe`, `preflight bandwidth`: network readiness between the
//! servers, asked of their agents through the controller.

use std::time::Duration;

use preflight_proto::v1 as pb;

use crate::client::{status, Conn};
use crate::{json, parse_duration, Output};

/// Network readiness subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum NetCmd {
    /// Listening sockets of an agent's host, with their processes (like `ss -ltnup`).
    #[command(after_help = "Examples:\n  \
preflight ports web-01\n  \
preflight ports web-01 --tcp --output json")]
    Ports {
        /// Agent id (see `preflight agents`).
        agent: String,
        /// TCP listeners only.
        #[arg(long)]
        tcp: bool,
        /// UDP sockets only.
        #[arg(long)]
        udp: bool,
        /// Skip owning processes (faster on hosts with many processes).
        #[arg(long)]
        no_processes: bool,
    },
    /// Can one server reach another's ports? Opens proof-answering listeners on the target's
    /// free ports and connects to them from the source.
    #[command(
        long_about = "Can one server reach another's ports?\n\n\
The target agent opens temporary listeners on the named ports that are free (they answer with a \
proof bound to a one-time nonce and close after the probe, or by themselves after a TTL); the \
source agent connects to each port and classifies it:\n  \
verified     our listener answered: the path is open end to end\n  \
open         something else accepted (a port in use on the target is probed as it is)\n  \
refused      reset: a firewall rejects it, or nothing listens\n  \
filtered     no answer before the timeout: a firewall drops it\n  \
unreachable  no route to the target",
        after_help = "Examples:\n  \
preflight probe --from web-01 --to db-01 --ports 5432\n  \
preflight probe --from nginx-01 --to soa-03 --ports 80,443,8080-8090 --timeout 3s\n  \
preflight probe --from a --to b --ports 9000 --to-addr 10.0.2.7 --keep 5m"
    )]
    Probe {
        /// Source agent: the connections start here.
        #[arg(long)]
        from: String,
        /// Target agent: the listeners open here.
        #[arg(long)]
        to: String,
        /// Ports, e.g. 80,443,8080-8090 (at most 1024).
        #[arg(long)]
        ports: String,
        /// Per-port timeout before a port counts as filtered (at most 30s).
        #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
        timeout: Duration,
        /// The target's address to probe (default: where its agent listens); must be one of
        /// the addresses the target reports.
        #[arg(long)]
        to_addr: Option<String>,
        /// Keep the target's listeners open this long after the probe (e.g. to try them with
        /// nc from elsewhere), at most 10m.
        #[arg(long, value_parser = parse_duration)]
        keep: Option<Duration>,
    },
    /// TCP throughput between two servers, like iperf3, measured at the receiving end.
    #[command(after_help = "Examples:\n  \
preflight bandwidth --from files-01 --to files-02\n  \
preflight bandwidth --from files-01 --to files-02 --duration 10 --streams 4\n  \
preflight bandwidth --from files-01 --to files-02 --port 8080\n  \
preflight bandwidth --from files-01 --to files-02 --reverse --output json\n\n\
On a customer network only planned ports are open: give --port, a planned port of the target\n\
that is free (no service listens on it yet); without it the receiver takes a free port.")]
    Bandwidth {
        /// Source agent (sends, unless --reverse).
        #[arg(long)]
        from: String,
        /// Target agent (receives, unless --reverse).
        #[arg(long)]
        to: String,
        /// Seconds of data, 1 to 60.
        #[arg(long, default_value_t = 10)]
        duration: u32,
        /// Parallel TCP streams, 1 to 16.
        #[arg(long, default_value_t = 1)]
        streams: u32,
        /// The target sends and the source receives.
        #[arg(long)]
        reverse: bool,
        /// The target's address to use (default: where its agent listens).
        #[arg(long)]
        to_addr: Option<String>,
        /// TCP port the receiver listens on, 1 to 65535 (default: a free port it picks).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
    },
}

/// Durations with sub-second units too: `500ms`, `2s`, `1m`.
fn parse_duration_ms(s: &str) -> Result<Duration, String> {
    match s.trim().strip_suffix("ms") {
        Some(n) => n
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{s:?} is not a duration: use e.g. 500ms, 2s")),
        None => parse_duration(s),
    }
}

/// Prints `s` and flushes, so a line reaches a pipe or terminal as soon as it is known.
fn print_now(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

pub async fn run(c: NetCmd, conn: &Conn, out: Output) -> anyhow::Result<()> {
    let mut api = conn.api().await?;
    match c {
        NetCmd::Ports {
            agent,
            tcp,
            udp,
            no_processes,
        } => {
            let r = api
                .list_agent_ports(pb::AgentPortsRequest {
                    agent_id: agent,
                    tcp,
                    udp,
                    no_processes,
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return json(&r.sockets);
            }
            print!("{}", preflight_render::ports(&r.sockets));
        }
        NetCmd::Probe {
            from,
            to,
            ports,
            timeout,
            to_addr,
            keep,
        } => {
            if timeout.is_zero() {
                anyhow::bail!("--timeout must be more than 0, e.g. 2s");
            }
            let r = api
                .probe(pb::ProbeRequest {
                    from_agent: from,
                    to_agent: to,
                    ports,
                    timeout_ms: millis(timeout),
                    to_addr: to_addr.unwrap_or_default(),
                    keep_ms: keep.map(millis).unwrap_or(0),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return json(&r);
            }
            print!("{}", preflight_render::probe(&r));
        }
        NetCmd::Bandwidth {
            from,
            to,
            duration,
            streams,
            reverse,
            to_addr,
            port,
        } => {
            if duration == 0 || streams == 0 {
                anyhow::bail!("--duration and --streams must be at least 1");
            }
            let mut live = api
                .bandwidth_live(pb::BandwidthRequest {
                    from_agent: from,
                    to_agent: to,
                    duration_s: duration,
                    streams,
                    reverse,
                    to_addr: to_addr.unwrap_or_default(),
                    port: port.map_or(0, u32::from),
                })
                .await
                .map_err(status)?
                .into_inner();
            // Text: the head once the receiver listens, a line as each second completes (like
            // iperf3), then the seconds the live messages did not cover and the table. JSON:
            // one document at the end, as Bandwidth returns it.
            let text = out != Output::Json;
            let mut printed = 0u32;
            let mut headed = false;
            let r = loop {
                let Some(m) = live.message().await.map_err(status)? else {
                    anyhow::bail!(
                        "the controller ended the bandwidth test without a result: try again"
                    );
                };
                if let Some(done) = m.done {
                    break done;
                }
                if !text {
                    continue;
                }
                if let Some(started) = m.started {
                    print_now(&preflight_render::bandwidth_head(
                        &started, reverse, streams,
                    ));
                    headed = true;
                } else if headed && m.second == printed {
                    print_now(&preflight_render::bandwidth_second(m.second, m.bytes));
                    printed += 1;
                }
            };
            if !text {
                return json(&r);
            }
            if !headed {
                let rep = r.report.clone().unwrap_or_default();
                print!(
                    "{}",
                    preflight_render::bandwidth_head(
                        &r,
                        rep.direction() == pb::BandwidthDirection::Reverse,
                        rep.expected_streams
                    )
                );
            }
            let rest = r
                .report
                .as_ref()
                .map(|rep| &rep.per_second_bytes[..])
                .unwrap_or_default();
            for (i, b) in rest.iter().enumerate().skip(printed as usize) {
                print!("{}", preflight_render::bandwidth_second(i as u32, *b));
            }
            print!("{}", preflight_render::bandwidth_tail(&r));
        }
    }
    Ok(())
}
