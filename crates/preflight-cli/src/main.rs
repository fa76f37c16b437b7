//! preflight: the controller daemon (`preflight serve`) and the operator CLI. Every subcommand
//! but `serve`, `demo` and `plan check` is a gRPC client of the controller.

// Every `print!`/`println!`/`eprint!`/`eprintln!` of this crate goes through
// `preflight_render::term`: control characters from hosts are escaped in text output (JSON is
// written exactly), and a reader that went away (`| head`) ends the process quietly.
#[allow(unused_macros)]
macro_rules! print {
    ($($t:tt)*) => { ::preflight_render::term::out(format_args!($($t)*), false) };
}
#[allow(unused_macros)]
macro_rules! println {
    () => { ::preflight_render::term::out(format_args!(""), true) };
    ($($t:tt)*) => { ::preflight_render::term::out(format_args!($($t)*), true) };
}
#[allow(unused_macros)]
macro_rules! eprint {
    ($($t:tt)*) => { ::preflight_render::term::err(format_args!($($t)*), false) };
}
#[allow(unused_macros)]
macro_rules! eprintln {
    () => { ::preflight_render::term::err(format_args!(""), true) };
    ($($t:tt)*) => { ::preflight_render::term::err(format_args!($($t)*), true) };
}

mod client;
mod cmd_bench;
mod cmd_harden;
mod cmd_net;
mod cmd_ops;
mod cmd_plan;
mod cmd_sweep;
mod cmd_workflow;
mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use preflight_proto::v1 as pb;

use client::{status, Conn};

#[derive(Parser)]
#[command(
    name = "preflight",
    version,
    about = "preflight: deployment readiness, hardening and workflow for customer servers",
    long_about = "preflight: deployment readiness, hardening and workflow for customer servers.\n\n\
Start a controller with `preflight serve --init` (prints the first admin token once), enroll an \
agent on each server with the line `preflight token create` prints, then ask: `preflight agents`, \
`preflight inventory AGENT`. `preflight demo` shows the whole path on this machine."
)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Log format on stderr (for `serve`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PREFLIGHT_LOG_FORMAT")]
    log_format: LogFormat,
    /// Time zone of the times shown in text and HTML (IANA name, e.g. Asia/Shanghai; default
    /// PREFLIGHT_TZ, then TZ, then UTC). JSON keeps UTC.
    #[arg(long, global = true, value_name = "ZONE", env = "PREFLIGHT_TZ")]
    tz: Option<String>,
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller.
    Serve(ServeArgs),
    /// Join tokens for enrolling agents.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List enrolled agents, or revoke one.
    Agents {
        /// Also list revoked agents and agents replaced by a later enrollment at the same
        /// address (hidden in the text list; JSON always lists every agent).
        #[arg(long)]
        all: bool,
        #[command(subcommand)]
        cmd: Option<AgentsCmd>,
    },
    /// Show the inventory of an agent's host.
    Inventory {
        /// Agent id (see `preflight agents`).
        agent: String,
    },
    /// Save the controller URL, CA pin and token for later commands.
    Login {
        /// Write here instead of ~/.config/preflight/cli.toml.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Who the token belongs to, and the controller's version.
    Whoami,
    /// The controller's version and uptime, agents online/offline, outdated agents.
    Status(cmd_ops::StatusArgs),
    /// Run a demo controller and three local agents on 127.0.0.11-13 and show their inventory.
    Demo(demo::Args),
    /// Validate a deployment plan (TOML or CSV) offline.
    Plan(cmd_plan::Args),
    /// Disk, CPU or memory benchmark on an agent, like fio and sysbench.
    Bench(cmd_bench::Args),
    #[command(flatten)]
    Net(cmd_net::NetCmd),
    #[command(flatten)]
    Workflow(cmd_workflow::WorkflowCmd),
    #[command(flatten)]
    Harden(cmd_harden::HardenCmd),
    #[command(flatten)]
    Sweep(cmd_sweep::SweepCmd),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory (sled database, CA and keys).
    #[arg(long, default_value = "./preflight-data", env = "PREFLIGHT_DATA")]
    data: PathBuf,
    /// Address for gRPC and HTTPS.
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// Create the CA and the first admin token (printed once) if the data directory is new.
    #[arg(long)]
    init: bool,
    /// Extra DNS names or IPs for the controller's certificate (with --init), repeatable.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// How often agents heartbeat, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Lifetime of agent certificates, e.g. 30d; agents renew with a third left.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    agent_cert_ttl: Duration,
    /// Use a settable clock (`preflight dev clock set|advance`, admin only), persisted in the
    /// data directory; for tests and rehearsals, never in production.
    #[arg(long)]
    dev_clock: bool,
    /// Directory of the agent binaries served at /agent/linux-ARCH: preflight-agent-linux-x86_64,
    /// preflight-agent-linux-aarch64, or preflight-agent for this machine's architecture
    /// (default: the directory of this executable).
    #[arg(long, env = "PREFLIGHT_AGENT_DIR")]
    agent_dir: Option<PathBuf>,
    /// Requests handled at once before shedding with RESOURCE_EXHAUSTED (tests, benchmarks).
    #[arg(long, hide = true, env = "PREFLIGHT_MAX_INFLIGHT", default_value_t = preflight_controller::MAX_INFLIGHT)]
    max_inflight: usize,
    /// Lifetime of people's tokens made without --ttl (the first admin token too), e.g. 90d;
    /// at most 400d. `preflight user token rotate NAME` makes a new one.
    #[arg(long, default_value = "90d", value_parser = parse_token_ttl, env = "PREFLIGHT_TOKEN_TTL")]
    token_ttl: Duration,
    /// Print a new token for user NAME and exit, the controller stopped (the way back in
    /// when the last admin token expired or was lost; the old token is refused).
    #[arg(long, value_name = "NAME")]
    rotate_token: Option<String>,
    /// Close established connections with no request in flight for this many milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Close connections that sent nothing within this many milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    first_byte_timeout_ms: Option<u64>,
    /// TLS handshakes in progress at once.
    #[arg(long, hide = true)]
    max_pending_handshakes: Option<usize>,
    /// Connections open at once.
    #[arg(long, hide = true)]
    max_connections: Option<usize>,
    /// Connections open at once from one address.
    #[arg(long, hide = true)]
    max_connections_per_source: Option<usize>,
}

fn parse_token_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() || d.as_secs() > u64::from(preflight_controller::MAX_USER_TTL_S) {
        return Err(format!("{s}: a token lives from 1s to 400d"));
    }
    Ok(d)
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a one-time join token and print the enroll command.
    #[command(after_help = "Examples:\n  \
preflight token create --ttl 2h\n  \
preflight token create --install-command\n  \
preflight token create --uses 30 --ttl 2h --controller-url https://10.0.0.5:7443 --install-command\n\n\
--install-command prints one line to paste on the server: curl fetches install.sh from the \
controller, pinning the controller's public key (curl exits with code 90 and nothing runs when \
the key differs), and the script downloads the agent with the same pin, checks its SHA-256, \
enrolls, and starts the systemd unit.")]
    Create {
        /// How long the token is valid, e.g. 15m, 1h, 2d (at most 7d).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many servers it may enroll within --ttl (each use is recorded with the agent id).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        uses: u32,
        /// The controller address the servers reach, for the printed lines (default: the
        /// --controller this command uses, which may be 127.0.0.1 or a tunnel).
        #[arg(long, value_name = "URL")]
        controller_url: Option<String>,
        /// Print the one-line installer (curl … | sudo sh) instead of the enroll command.
        #[arg(long)]
        install_command: bool,
    },
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// List agents (the default).
    List,
    /// Revoke an agent: the controller refuses it from now on.
    Revoke { agent: String },
}

/// The agents to list, and how many were left out: revoked ones, and ones replaced by a
/// later enrollment (not revoked) at the same listen address. `all` keeps every agent.
fn current_agents(agents: Vec<pb::AgentInfo>, all: bool) -> (Vec<pb::AgentInfo>, usize) {
    if all {
        return (agents, 0);
    }
    let replaced = |a: &pb::AgentInfo| {
        !a.listen_addr.is_empty()
            && agents.iter().any(|b| {
                b.id != a.id
                    && !b.revoked
                    && b.listen_addr == a.listen_addr
                    && b.enrolled_at_unix_ms > a.enrolled_at_unix_ms
            })
    };
    let keep: Vec<bool> = agents.iter().map(|a| !a.revoked && !replaced(a)).collect();
    let hidden = keep.iter().filter(|k| !**k).count();
    let shown = agents
        .into_iter()
        .zip(keep)
        .filter_map(|(a, k)| k.then_some(a))
        .collect();
    (shown, hidden)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    preflight_core::units::parse_duration(s).map_err(|why| format!("invalid duration {s:?}: {why}"))
}

use preflight_core::error_chain;

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn now_ms() -> i64 {
    preflight_controller::Clock::now_ms(&preflight_controller::SystemClock)
}

async fn serve(a: ServeArgs, out: Output) -> anyhow::Result<()> {
    // Everything the controller writes (sled files, keys, snapshots) is the owner's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Some(name) = &a.rotate_token {
        let (token, expires) = preflight_controller::rotate_offline(&a.data, name, a.token_ttl)?;
        if out == Output::Json {
            return json(&serde_json::json!({
                "user": name,
                "token": token,
                "expires_at_ms": expires,
            }));
        }
        println!(
            "new token for user {name} (shown only this once; expires {}; the old one is refused):\n  {token}",
            preflight_render::time(expires)
        );
        return Ok(());
    }
    let init = if a.init && !preflight_controller::is_initialized(&a.data) {
        Some(preflight_controller::init_with_ttl(
            &a.data,
            &a.sans,
            a.token_ttl,
        )?)
    } else {
        if a.init {
            tracing::info!(data = %a.data.display(), "already initialised; no new admin token is printed");
        }
        None
    };
    let mut cfg = preflight_controller::ServeConfig::new(&a.data);
    cfg.listen = a.listen;
    cfg.heartbeat_interval = a.heartbeat_interval;
    cfg.agent_cert_ttl = a.agent_cert_ttl;
    cfg.dev_clock = a.dev_clock;
    cfg.max_inflight = a.max_inflight.max(1);
    cfg.user_token_ttl = a.token_ttl;
    if let Some(ms) = a.idle_timeout_ms {
        cfg.limits.idle_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = a.first_byte_timeout_ms {
        cfg.limits.first_byte_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(n) = a.max_pending_handshakes {
        cfg.limits.max_pending = n.max(1);
    }
    if let Some(n) = a.max_connections {
        cfg.limits.max_connections = n.max(1);
    }
    if let Some(n) = a.max_connections_per_source {
        cfg.limits.max_connections_per_source = n.max(1);
    }
    if let Some(d) = a.agent_dir {
        cfg.agent_dir = d;
    }
    let running =
        preflight_controller::start(cfg, Arc::new(preflight_controller::SystemClock)).await?;
    // Printed once listening, so the port is the real one (also with --listen …:0).
    if let Some(init) = init {
        if out == Output::Json {
            json(&serde_json::json!({
                "initialised": a.data.display().to_string(),
                "ca_sha256": init.ca_pin,
                "admin_token": init.admin_token,
                "admin_token_expires_at_ms": init.admin_token_expires_at_ms,
                "listen": running.local_addr.to_string(),
                "port": running.local_addr.port(),
            }))?;
        } else {
            println!("initialised {}", a.data.display());
            println!("CA pin (sha256): {}", init.ca_pin);
            println!(
                "admin token (shown only this once, keep it safe):\n  {}",
                init.admin_token
            );
            println!(
                "use it with:\n  preflight login --controller https://HOST:{} --ca-sha256 {} --token <the token>",
                running.local_addr.port(),
                init.ca_pin
            );
            println!(
                "the admin token expires {} (--token-ttl); make a new one before then with:\n  preflight user token rotate admin",
                preflight_render::time(init.admin_token_expires_at_ms)
            );
        }
    }
    eprintln!(
        "controller listening on {} (CA sha256 {})",
        running.local_addr, running.ca_pin
    );
    running.wait(shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.output;
    let conn = cli.conn;
    match cli.cmd {
        Cmd::Serve(a) => serve(a, out).await,
        Cmd::Demo(a) => demo::run(a, out).await,
        Cmd::Plan(a) => cmd_plan::run(a, &conn).await,
        Cmd::Bench(a) => cmd_bench::run(a, &conn, out).await,
        Cmd::Net(c) => cmd_net::run(c, &conn, out).await,
        Cmd::Workflow(c) => cmd_workflow::run(c, &conn, out).await,
        Cmd::Harden(c) => cmd_harden::run(c, &conn, out).await,
        Cmd::Sweep(c) => cmd_sweep::run(c, &conn, out).await,
        Cmd::Status(a) => cmd_ops::status_cmd(a, &conn, out).await,
        Cmd::Token(TokenCmd::Create {
            ttl,
            install_command,
            uses,
            controller_url,
        }) => {
            let url = match controller_url {
                Some(u) => {
                    preflight_pki::controller_addr(&u)
                        .map_err(|e| anyhow::anyhow!("--controller-url {u:?}: {e}"))?;
                    if !u.starts_with("https://") {
                        anyhow::bail!("--controller-url {u:?}: write it as https://HOST:PORT");
                    }
                    u
                }
                None => conn.resolve()?.0,
            };
            let r = conn
                .api()
                .await?
                .create_join_token(pb::CreateJoinTokenRequest {
                    ttl_s: ttl.as_secs().min(u64::from(u32::MAX)) as u32,
                    uses,
                })
                .await
                .map_err(status)?
                .into_inner();
            let line = install_command.then(|| {
                cmd_ops::install_command(&url, &r.token, &r.ca_sha256, &r.controller_pubkey_sha256)
            });
            let enroll = cmd_ops::enroll_command(&url, &r.token, &r.ca_sha256);
            if out == Output::Json {
                let mut v = serde_json::to_value(&r)?;
                if let Some(m) = v.as_object_mut() {
                    if let Some(line) = &line {
                        m.insert("install_command".into(), line.clone().into());
                    }
                    m.insert("enroll_command".into(), enroll.clone().into());
                    m.insert("controller_url".into(), url.clone().into());
                }
                return json(&v);
            }
            let how_many = if r.uses <= 1 {
                "one use".to_string()
            } else {
                format!("{} uses, one server each", r.uses)
            };
            if let Some(line) = line {
                println!(
                    "join token ({how_many}, expires {}); on the server, paste (as root, or a user with sudo):",
                    preflight_render::time(r.expires_at_unix.saturating_mul(1000))
                );
                println!("{line}");
                return Ok(());
            }
            println!(
                "join token ({how_many}, expires {}):\n  {}",
                preflight_render::time(r.expires_at_unix.saturating_mul(1000)),
                r.token
            );
            println!("CA pin (sha256):\n  {}", r.ca_sha256);
            println!("on the server, as root:\n  {enroll}");
            Ok(())
        }
        Cmd::Agents { all, cmd } => match cmd.unwrap_or(AgentsCmd::List) {
            AgentsCmd::List => {
                let r = conn
                    .api()
                    .await?
                    .list_agents(pb::ListAgentsRequest {})
                    .await
                    .map_err(status)?
                    .into_inner();
                if out == Output::Json {
                    return json(&r.agents);
                }
                if r.agents.is_empty() {
                    println!("no agents enrolled yet: `preflight token create` prints the enroll command");
                    return Ok(());
                }
                let (shown, hidden) = current_agents(r.agents, all);
                if !shown.is_empty() {
                    print!("{}", preflight_render::agents(&shown, now_ms()));
                }
                if hidden > 0 {
                    println!("{hidden} revoked or replaced agent(s) not shown: `preflight agents --all` lists them");
                }
                Ok(())
            }
            AgentsCmd::Revoke { agent } => {
                conn.api()
                    .await?
                    .revoke_agent(pb::RevokeAgentRequest {
                        agent_id: agent.clone(),
                    })
                    .await
                    .map_err(status)?;
                if out == Output::Json {
                    return json(&serde_json::json!({ "revoked": agent }));
                }
                println!("agent {agent} revoked: the controller refuses it from now on");
                Ok(())
            }
        },
        Cmd::Inventory { agent } => {
            let inv = conn
                .api()
                .await?
                .get_agent_inventory(pb::GetAgentInventoryRequest { agent_id: agent })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return json(&inv);
            }
            print!("{}", preflight_render::inventory(&inv));
            Ok(())
        }
        Cmd::Whoami => {
            let r = conn
                .api()
                .await?
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return json(&r);
            }
            println!(
                "{} ({}) on controller {}",
                r.user,
                preflight_proto::json::name::<pb::Role>(r.role),
                r.controller_version
            );
            Ok(())
        }
        Cmd::Login { file } => {
            let (url, token, pin) = conn.resolve()?;
            let (Some(token), Some(pin)) = (token, pin) else {
                anyhow::bail!("login needs --controller, --ca-sha256 and --token (or their PREFLIGHT_* variables)");
            };
            // Prove the three work together before saving them.
            let r = conn
                .api()
                .await?
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let path = file.unwrap_or_else(client::default_config_path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let cfg = client::FileConfig {
                controller: Some(url),
                token: Some(token),
                ca_sha256: Some(pin),
            };
            preflight_pki::fsutil::write_atomic(&path, toml::to_string(&cfg)?.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "logged in as {} ({}); saved to {}",
                r.user,
                preflight_proto::json::name::<pb::Role>(r.role),
                path.display()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    preflight_pki::install_crypto_provider();
    let cli = Cli::parse();
    preflight_render::term::set_json(cli.output == Output::Json);
    // Client commands end quietly when their reader goes away (`| head`); the controller
    // (`serve`, and `demo`, which runs one) keeps SIGPIPE ignored for its sockets and pipes.
    if !matches!(cli.cmd, Cmd::Serve(_) | Cmd::Demo(_)) {
        preflight_render::term::default_sigpipe();
    }
    match preflight_render::Zone::choose(cli.tz.as_deref(), std::env::var("TZ").ok().as_deref()) {
        Ok(z) => preflight_render::tz::set_display_zone(z),
        Err(e) => {
            eprintln!("error: --tz: {e}");
            return ExitCode::from(2);
        }
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PREFLIGHT_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(if matches!(cli.cmd, Cmd::Serve(_)) {
                "info"
            } else {
                "warn"
            })
        });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: logs in files and journald stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, addr: &str, enrolled: i64, revoked: bool) -> pb::AgentInfo {
        pb::AgentInfo {
            id: id.into(),
            listen_addr: addr.into(),
            enrolled_at_unix_ms: enrolled,
            revoked,
            ..Default::default()
        }
    }

    #[test]
    fn agents_list_hides_revoked_and_replaced_unless_all() {
        let list = vec![
            agent("web-01", "10.0.0.1:7444", 1, false),
            agent("web-01b", "10.0.0.1:7444", 2, false),
            agent("db-01", "10.0.0.2:7444", 1, true),
            agent("app-01", "10.0.0.3:7444", 1, false),
        ];
        let (shown, hidden) = current_agents(list.clone(), false);
        let ids: Vec<&str> = shown.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["web-01b", "app-01"]);
        assert_eq!(hidden, 2);
        let (shown, hidden) = current_agents(list, true);
        assert_eq!((shown.len(), hidden), (4, 0));
    }
}
