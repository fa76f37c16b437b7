//! `preflight demo`: a controller on a scratch data directory and three real agents on
//! 127.0.0.11-13, enrolled through the real join-token + CSR path over TLS, then their
//! inventory. Needs no root: the whole of 127.0.0.0/8 is local on Linux.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use preflight_proto::v1 as pb;

use crate::client::{status, Conn};
use crate::Output;

/// Arguments of `preflight demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory for the demo (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep the data directory (and print where it is).
    #[arg(long)]
    keep: bool,
    /// The preflight-agent binary (default: next to this binary).
    #[arg(long, env = "PREFLIGHT_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
}

/// Agents of the demo: id and address.
const AGENTS: [(&str, &str); 3] = [
    ("demo-1", "127.0.0.11"),
    ("demo-2", "127.0.0.12"),
    ("demo-3", "127.0.0.13"),
];

/// Child processes that are stopped when the demo ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes a scratch directory at the end.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn agent_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe().context("cannot locate this binary")?;
    let p = me.with_file_name("preflight-agent");
    if !p.exists() {
        bail!("{} not found: build both binaries with `cargo build --release --bins`, or pass --agent-bin", p.display());
    }
    Ok(p)
}

fn step(out: Output, msg: &str) {
    if out == Output::Text {
        eprintln!("• {msg}");
    }
}

fn agent_cmd(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.stdin(Stdio::null()).env("PREFLIGHT_LOG", "warn");
    c
}

pub async fn run(a: Args, out: Output) -> anyhow::Result<()> {
    let bin = agent_bin(a.agent_bin)?;
    let (data, _scratch) = match a.data {
        Some(d) => (d, Scratch(None)),
        None => {
            let d = std::env::temp_dir().join(format!("preflight-demo-{}", std::process::id()));
            let keep = a.keep;
            (d.clone(), Scratch((!keep).then_some(d)))
        }
    };
    if preflight_controller::is_initialized(&data.join("controller")) {
        bail!(
            "{} already holds a demo: pass another --data or remove it",
            data.display()
        );
    }
    let ctl_dir = data.join("controller");
    step(
        out,
        &format!("initialising a controller in {}", ctl_dir.display()),
    );
    let init = preflight_controller::init(&ctl_dir, &[])?;
    let mut cfg = preflight_controller::ServeConfig::new(&ctl_dir);
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.heartbeat_interval = Duration::from_secs(2);
    let running =
        preflight_controller::start(cfg, Arc::new(preflight_controller::SystemClock)).await?;
    let url = format!("https://{}", running.local_addr);
    step(
        out,
        &format!("controller listening on {url} (CA sha256 {})", init.ca_pin),
    );
    let conn = Conn {
        controller: Some(url.clone()),
        token: Some(init.admin_token.clone()),
        ca_sha256: Some(init.ca_pin.clone()),
        config: Some(PathBuf::from("/dev/null")),
    };
    let mut api = conn.api().await?;
    let mut children = Children(Vec::new());
    for (id, ip) in AGENTS {
        let token = api
            .create_join_token(pb::CreateJoinTokenRequest { ttl_s: 600 })
            .await
            .map_err(status)?
            .into_inner()
            .token;
        let state = data.join(id);
        step(
            out,
            &format!(
                "enrolling agent {id} on {ip} (join token + CSR, key stays in {})",
                state.display()
            ),
        );
        let o = agent_cmd(&bin)
            .args([
                "enroll",
                "--controller",
                &url,
                "--token",
                &token,
                "--ca-sha256",
                &init.ca_pin,
                "--name",
                id,
            ])
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", &format!("{ip}:0")])
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !o.status.success() {
            bail!(
                "enrolling {id} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let child = agent_cmd(&bin)
            .arg("run")
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        children.0.push(child);
    }
    step(out, "waiting for the agents' first heartbeats");
    let deadline = Instant::now() + Duration::from_secs(30);
    let agents = loop {
        let r = api
            .list_agents(pb::ListAgentsRequest {})
            .await
            .map_err(status)?
            .into_inner();
        if r.agents.iter().filter(|a| a.online).count() == AGENTS.len() {
            break r.agents;
        }
        if Instant::now() > deadline {
            bail!("the demo agents did not come online within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut inventories = Vec::new();
    for (id, _) in AGENTS {
        step(
            out,
            &format!("asking {id} for its inventory over mutual TLS"),
        );
        let inv = api
            .get_agent_inventory(pb::GetAgentInventoryRequest {
                agent_id: id.into(),
            })
            .await
            .map_err(status)?
            .into_inner();
        inventories.push((id, inv));
    }
    // The readiness story: a plan for the three servers whose database backup was never copied.
    let site = data.join("site");
    std::fs::create_dir_all(&site).with_context(|| format!("cannot create {}", site.display()))?;
    let app = b"soa-services 4.2.1 (demo package)".to_vec();
    let dump = b"PGDMP demo backup of database portal".to_vec();
    std::fs::write(site.join("soa-services.tar.gz"), &app)?;
    let plan = demo_plan(&site, &app, &dump);
    std::fs::write(data.join("plan.toml"), &plan)?;
    step(
        out,
        "sweep 1: the plan's servers, capacity, clocks and the deployment package",
    );
    let first = demo_sweep(&conn, &plan).await?;
    step(out, "fixing: copying the missing database backup to demo-3");
    std::fs::write(site.join("portal.dump"), &dump)?;
    step(out, "sweep 2");
    let second = demo_sweep(&conn, &plan).await?;
    match out {
        Output::Json => {
            let inv: serde_json::Map<String, serde_json::Value> = inventories
                .iter()
                .map(|(id, i)| Ok((id.to_string(), serde_json::to_value(i)?)))
                .collect::<anyhow::Result<_>>()?;
            crate::json(&serde_json::json!({
                "controller": url,
                "ca_sha256": init.ca_pin,
                "agents": agents,
                "inventory": inv,
                "sweeps": [first, second],
            }))?;
        }
        Output::Text => {
            println!("\nAgents\n");
            print!("{}", preflight_render::agents(&agents, crate::now_ms()));
            for (id, inv) in &inventories {
                println!("\nInventory of {id}\n");
                print!("{}", preflight_render::inventory(inv));
            }
            println!("\nReadiness sweep 1: the database backup was never copied\n");
            print!("{}", preflight_render::sweep(&first, false));
            println!("\nReadiness sweep 2: after copying it\n");
            print!("{}", preflight_render::sweep(&second, false));
        }
    }
    drop(children);
    running.stop().await?;
    if a.keep {
        step(out, &format!("kept the demo data in {}", data.display()));
    }
    Ok(())
}

fn sha256(b: &[u8]) -> String {
    preflight_pki::sha256_hex(b)
}

/// The demo plan: nginx, soa and db on 127.0.0.11-13, thresholds a laptop meets, an app package
/// on the soa server and a database backup on the db server.
fn demo_plan(site: &Path, app: &[u8], dump: &[u8]) -> String {
    let dir = site.display();
    format!(
        r#"# Demo plan written by `preflight demo`.
[batch]
project = "demo-portal"
batch = "demo-1"

[thresholds]
min_cores = 1
min_memory_mib = 256
min_free_disk_gib = 0
max_clock_skew_ms = 5000

[[servers]]
address = "127.0.0.11"
hostname = "demo-1"
role = "nginx"
data_dirs = ["{dir}"]

[[servers]]
address = "127.0.0.12"
hostname = "demo-2"
role = "soa"
data_dirs = ["{dir}"]

[[servers]]
address = "127.0.0.13"
hostname = "demo-3"
role = "db"
data_dirs = ["{dir}"]

[[packages]]
path = "{dir}/soa-services.tar.gz"
size = {app_len}
sha256 = "{app_sha}"
kind = "app"
on = {{ role = "soa" }}

[[packages]]
path = "{dir}/portal.dump"
size = {dump_len}
sha256 = "{dump_sha}"
kind = "db_backup"
database = "portal"
on_exists = "rename"
on = {{ server = "demo-3" }}
"#,
        app_len = app.len(),
        app_sha = sha256(app),
        dump_len = dump.len(),
        dump_sha = sha256(dump),
    )
}

async fn demo_sweep(conn: &Conn, plan: &str) -> anyhow::Result<pb::SweepReport> {
    use futures_util::StreamExt;
    let mut stream = conn
        .service(pb::readiness_client::ReadinessClient::with_interceptor)
        .await?
        .run_sweep(pb::RunSweepRequest {
            batch: "demo-1".into(),
            plan_name: "plan.toml".into(),
            plan_toml: plan.to_string(),
            concurrency: 0,
            skip: vec![],
            measure_ms: 0,
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(ev) = stream.next().await {
        if let Some(r) = ev.map_err(status)?.report {
            return Ok(r);
        }
    }
    bail!("the sweep ended without a report")
}
