//! `preflight-agent enroll`: the key is made here and never leaves the host; the controller
//! gets a CSR and a one-time join token, and the connection is trusted only if the controller's
//! CA matches the pin the operator typed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use preflight_pki::fsutil;
use preflight_proto::v1 as pb;

use crate::state::{AgentConfig, AgentState, DEFAULT_STATE_DIR};

/// Arguments of `preflight-agent enroll`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (the controller prints this line with `preflight token create`):\n  \
echo pfj_… | preflight-agent enroll --controller https://ctl.example:7443 --ca-sha256 3f2a… --token-file -"
)]
pub struct Args {
    /// The controller, as https://HOST:PORT (port 7443 when omitted).
    #[arg(long, env = "PREFLIGHT_CONTROLLER")]
    pub controller: String,
    /// Join token from `preflight token create`. On a shared host prefer --token-file or
    /// PREFLIGHT_JOIN_TOKEN: a command line is visible to every user in `ps`.
    #[arg(
        long,
        env = "PREFLIGHT_JOIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the join token from this file (`-`: standard input), first line.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// SHA-256 of the controller's CA certificate (64 hex digits), printed with the token.
    #[arg(long = "ca-sha256", env = "PREFLIGHT_CA_SHA256")]
    pub ca_sha256: String,
    /// Agent id to ask for (default: this host's name, lowercased).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the agent keeps its key, certificate and configuration.
    #[arg(long, default_value = DEFAULT_STATE_DIR, env = "PREFLIGHT_AGENT_STATE")]
    pub state_dir: PathBuf,
    /// Address the agent will serve on.
    #[arg(long, default_value = "0.0.0.0:7444")]
    pub listen: SocketAddr,
    /// Replace an existing enrollment in the state directory.
    #[arg(long)]
    pub force: bool,
}

/// A default agent id from the host name.
pub fn default_name() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "agent".into());
    let mut id: String = host
        .split('.')
        .next()
        .unwrap_or("agent")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    id.truncate(preflight_pki::MAX_AGENT_ID_LEN);
    let id = id.trim_matches('-').to_string();
    if id.is_empty() {
        "agent".into()
    } else {
        id
    }
}

/// The first line of `path` (`-`: standard input), at most 4 KiB read.
fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    let r: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?,
        )
    };
    r.take(4096)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or("").to_string())
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    // Everything that can be checked locally is checked before the token is spent.
    let addr = preflight_pki::controller_addr(&a.controller)?;
    let pin =
        preflight_pki::parse_pin(&a.ca_sha256).map_err(|e| anyhow::anyhow!("--ca-sha256: {e}"))?;
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_token_file(f)?,
        (None, None) => bail!(
            "--token or --token-file is missing: `preflight token create` prints the enroll line"
        ),
    };
    let token = token.trim();
    if token.is_empty()
        || token.len() > 256
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("--token is malformed: expected the join token printed by `preflight token create` (pfj_ followed by 64 hex digits)");
    }
    let name = a.name.clone().unwrap_or_else(default_name);
    preflight_pki::validate_agent_id(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    if AgentState::exists(&a.state_dir) && !a.force {
        bail!(
            "{} already holds an enrollment: pass --force to replace it, or use another --state-dir",
            a.state_dir.display()
        );
    }
    fsutil::ensure_private_dir(&a.state_dir, 0o700)
        .with_context(|| format!("state directory {} is not writable", a.state_dir.display()))?;

    let (csr_pem, key_pem) = preflight_pki::make_csr(&name)?;
    let (tls, verifier) = preflight_pki::pinned_client_config(&pin)?;
    let channel = match preflight_pki::transport::connect(
        &addr,
        tls,
        preflight_pki::controller_server_name(),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            if let Some(seen) = verifier.mismatch() {
                bail!("CA pin mismatch: the controller at {addr} has CA sha256 {seen}, but --ca-sha256 is {pin}; check the pin printed by `preflight token create`");
            }
            bail!(
                "cannot reach the controller at {addr}: {}",
                crate::error_chain(&e)
            );
        }
    };
    let mut client = pb::registry_client::RegistryClient::new(channel);
    let resp = client
        .enroll(pb::EnrollRequest {
            join_token: token.to_string(),
            name: name.clone(),
            csr_pem,
            agent_version: crate::VERSION.into(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("enrollment refused: {}", s.message()))?
        .into_inner();
    if preflight_pki::sha256_hex(&preflight_pki::certs(&resp.ca_pem, "CA certificate")?[0]) != pin {
        bail!("the controller returned a CA that does not match --ca-sha256; nothing was written");
    }
    let identity = preflight_pki::Identity {
        cert_pem: resp.cert_pem,
        key_pem,
    };
    identity
        .certified_key()
        .context("the controller returned an unusable certificate")?;
    let cfg = AgentConfig {
        agent_id: resp.agent_id.clone(),
        controller: addr,
        listen: a.listen,
        ca_sha256: pin,
    };
    AgentState::save_new(&a.state_dir, &cfg, &identity, &resp.ca_pem)?;
    println!(
        "enrolled as {} (certificate valid until {}); start it with: preflight-agent run --state-dir {}",
        resp.agent_id,
        crate::fmt_unix(resp.not_after_unix),
        a.state_dir.display()
    );
    Ok(())
}
