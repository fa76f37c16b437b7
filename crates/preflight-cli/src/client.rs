//! How the CLI reaches the controller: address, CA pin and bearer token from flags, the
//! environment or the config file written by `preflight login`, in that order.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use preflight_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Connection flags shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// Controller URL, https://HOST[:PORT] (default from the config file, else https://127.0.0.1:7443).
    #[arg(long, global = true, env = "PREFLIGHT_CONTROLLER")]
    pub controller: Option<String>,
    /// Bearer token (printed once by `preflight serve --init` or `preflight user add`).
    #[arg(long, global = true, env = "PREFLIGHT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// SHA-256 of the controller's CA certificate, 64 hex digits.
    #[arg(long = "ca-sha256", global = true, env = "PREFLIGHT_CA_SHA256")]
    pub ca_sha256: Option<String>,
    /// Config file written by `preflight login`.
    #[arg(long, global = true, env = "PREFLIGHT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The CLI config file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub controller: Option<String>,
    pub token: Option<String>,
    pub ca_sha256: Option<String>,
}

/// Default config path: `$XDG_CONFIG_HOME/preflight/cli.toml` or `~/.config/preflight/cli.toml`.
pub fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("preflight").join("cli.toml")
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

/// A channel whose requests carry the bearer token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A controller client carrying the bearer token.
pub type Api = pb::controller_client::ControllerClient<Authed>;

impl Conn {
    fn file(&self) -> anyhow::Result<FileConfig> {
        let explicit = self.config.is_some();
        let path = self.config.clone().unwrap_or_else(default_config_path);
        match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t)
                .with_context(|| format!("config file {} is invalid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(FileConfig::default())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }

    /// Resolves the three settings.
    pub fn resolve(&self) -> anyhow::Result<(String, Option<String>, Option<String>)> {
        let f = self.file()?;
        let url = self
            .controller
            .clone()
            .or(f.controller)
            .unwrap_or_else(|| "https://127.0.0.1:7443".into());
        Ok((
            url,
            self.token.clone().or(f.token),
            self.ca_sha256.clone().or(f.ca_sha256),
        ))
    }

    /// Connects and returns an authenticated Controller client.
    pub async fn api(&self) -> anyhow::Result<Api> {
        Ok(self
            .service(pb::controller_client::ControllerClient::with_interceptor)
            .await?
            .max_decoding_message_size(preflight_controller::MAX_MESSAGE_BYTES))
    }

    /// Connects and builds any of the controller's service clients (e.g.
    /// `ReadinessClient::with_interceptor`) with the bearer token attached.
    pub async fn service<C>(&self, make: impl FnOnce(Channel, Bearer) -> C) -> anyhow::Result<C> {
        let (url, token, pin) = self.resolve()?;
        let Some(token) = token else {
            bail!("no token: pass --token, set PREFLIGHT_TOKEN, or run `preflight login` (the first admin token is printed by `preflight serve --init`)");
        };
        let channel = connect(&url, pin.as_deref()).await?;
        let header: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", token.trim()).parse().map_err(|_| {
                anyhow::anyhow!("--token contains characters that cannot be sent in a header")
            })?;
        Ok(make(channel, Bearer(header)))
    }
}

/// Opens a TLS channel to the controller at `url`, trusting the CA with SHA-256 `pin`.
pub async fn connect(url: &str, pin: Option<&str>) -> anyhow::Result<Channel> {
    let addr = preflight_pki::controller_addr(url)?;
    let Some(pin) = pin else {
        bail!("no CA pin for {url}: pass --ca-sha256 (printed by `preflight serve --init` and `preflight token create`), set PREFLIGHT_CA_SHA256, or run `preflight login`");
    };
    let (tls, verifier) = preflight_pki::pinned_client_config(pin)
        .map_err(|e| anyhow::anyhow!("--ca-sha256: {e}"))?;
    match preflight_pki::transport::connect(
        &addr,
        tls,
        preflight_pki::controller_server_name(),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(c) => Ok(c),
        Err(e) => {
            if let Some(seen) = verifier.mismatch() {
                bail!("CA pin mismatch: the controller at {addr} has CA sha256 {seen}, not the pinned {}", preflight_pki::parse_pin(pin).unwrap_or_default());
            }
            bail!(
                "cannot reach the controller at {addr}: {}",
                crate::error_chain(&e)
            );
        }
    }
}

/// A failed RPC as one line for people.
pub fn status(s: tonic::Status) -> anyhow::Error {
    let code = match s.code() {
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "not allowed now",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::ResourceExhausted => "busy",
        _ => "failed",
    };
    anyhow::anyhow!("{code}: {}", s.message())
}
