//! The agent's state directory (mode 0700): `agent.toml` (who it is and where its controller
//! is), `identity.pem` (certificate chain and private key in one file, mode 0600, so renewal
//! replaces both with one atomic rename), and `ca.pem`. `agent.toml` is written last at
//! enrollment: without it the directory holds no enrollment at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use preflight_pki::{fsutil, Identity};
use serde::{Deserialize, Serialize};

/// Default state directory on a server.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/preflight-agent";

/// `agent.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's id, as the controller named it in the certificate.
    pub agent_id: String,
    /// The controller's address, HOST:PORT.
    pub controller: String,
    /// Where the Agent service listens.
    pub listen: SocketAddr,
    /// SHA-256 of the CA certificate, as given at enrollment.
    pub ca_sha256: String,
}

/// Everything the agent needs to run.
pub struct AgentState {
    pub dir: PathBuf,
    pub config: AgentConfig,
    pub identity: Identity,
    pub ca_pem: String,
}

fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Splits a PEM file holding a certificate chain and a key.
fn split_identity(pem: &str) -> Identity {
    let mut cert = String::new();
    let mut key = String::new();
    let mut in_key = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            in_key = line.contains("PRIVATE KEY");
        }
        let buf = if in_key { &mut key } else { &mut cert };
        buf.push_str(line);
        buf.push('\n');
    }
    Identity {
        cert_pem: cert,
        key_pem: key,
    }
}

impl AgentState {
    /// Loads an enrolled state directory.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let cfg_path = p(dir, "agent.toml");
        let text = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} has no enrollment: run `preflight-agent enroll --controller https://HOST:7443 --token T --ca-sha256 H --state-dir {}` first",
                dir.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", cfg_path.display())),
        };
        let config: AgentConfig =
            toml::from_str(&text).with_context(|| format!("{} is invalid", cfg_path.display()))?;
        let identity = split_identity(
            &std::fs::read_to_string(p(dir, "identity.pem"))
                .with_context(|| format!("cannot read {}", p(dir, "identity.pem").display()))?,
        );
        identity
            .certified_key()
            .with_context(|| format!("{} is invalid", p(dir, "identity.pem").display()))?;
        let ca_pem = std::fs::read_to_string(p(dir, "ca.pem"))
            .with_context(|| format!("cannot read {}", p(dir, "ca.pem").display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            identity,
            ca_pem,
        })
    }

    /// Writes a new enrollment: identity and CA first, `agent.toml` last.
    pub fn save_new(
        dir: &Path,
        config: &AgentConfig,
        identity: &Identity,
        ca_pem: &str,
    ) -> anyhow::Result<()> {
        Self::save_identity(dir, identity)?;
        fsutil::write_atomic(&p(dir, "ca.pem"), ca_pem.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", p(dir, "ca.pem").display()))?;
        let text = toml::to_string(config).context("serialising agent.toml")?;
        fsutil::write_atomic(&p(dir, "agent.toml"), text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", p(dir, "agent.toml").display()))?;
        Ok(())
    }

    /// Replaces the identity (renewal) with one atomic rename.
    pub fn save_identity(dir: &Path, identity: &Identity) -> anyhow::Result<()> {
        let both = format!("{}{}", identity.cert_pem, identity.key_pem);
        fsutil::write_atomic(&p(dir, "identity.pem"), both.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", p(dir, "identity.pem").display()))
    }

    /// Is there an enrollment in `dir`?
    pub fn exists(dir: &Path) -> bool {
        p(dir, "agent.toml").exists()
    }
}
