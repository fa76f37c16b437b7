//! Running the fixed firewall tools: a closed set of programs, argument vectors (never a shell
//! string), a time limit and an output cap; optionally inside a named network namespace.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::debug;

use super::FirewallError;

/// Longest a firewall tool may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most output read from a tool (a large iptables-save stays far below this).
pub const MAX_TOOL_OUTPUT: usize = 32 * 1024 * 1024;

/// The only programs this module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `nft`
    Nft,
    /// `iptables`
    Iptables,
    /// `iptables-save`
    IptablesSave,
    /// `iptables-restore`
    IptablesRestore,
    /// `ip6tables-save`
    Ip6tablesSave,
    /// `ip6tables-restore`
    Ip6tablesRestore,
    /// `firewall-cmd`
    FirewallCmd,
    /// `systemctl`
    Systemctl,
}

impl Tool {
    /// The program name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Nft => "nft",
            Tool::Iptables => "iptables",
            Tool::IptablesSave => "iptables-save",
            Tool::IptablesRestore => "iptables-restore",
            Tool::Ip6tablesSave => "ip6tables-save",
            Tool::Ip6tablesRestore => "ip6tables-restore",
            Tool::FirewallCmd => "firewall-cmd",
            Tool::Systemctl => "systemctl",
        }
    }
}

/// System directories searched for tools; `PATH` is deliberately not consulted.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Absolute path of a tool, if installed in a system directory.
pub fn find_tool(tool: Tool) -> Option<PathBuf> {
    find_program(tool.name())
}

fn find_program(name: &str) -> Option<PathBuf> {
    TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What a tool printed and how it ended.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit status code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output (capped).
    pub stdout: String,
    /// Standard error (capped).
    pub stderr: String,
}

impl ToolOutput {
    /// Whether the tool exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs tools on the host, or inside one named network namespace through
/// `ip netns exec NAME` (used by tests to drive a namespace without entering it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRunner {
    netns: Option<String>,
}

impl CommandRunner {
    /// Runs tools in the caller's own network namespace.
    pub fn host() -> Self {
        Self { netns: None }
    }

    /// Runs tools inside the named network namespace (`/run/netns/NAME`).
    pub fn in_netns(name: &str) -> Result<Self, FirewallError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !name.starts_with('.');
        if !ok {
            return Err(FirewallError::InvalidInput(format!(
                "network namespace name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        Ok(Self {
            netns: Some(name.to_owned()),
        })
    }

    /// The namespace, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Whether `tool` is installed.
    pub fn has(&self, tool: Tool) -> bool {
        find_tool(tool).is_some()
    }

    /// Runs `tool` with `args`; a non-zero exit is returned, not an error.
    pub fn run(&self, tool: Tool, args: &[&str]) -> Result<ToolOutput, FirewallError> {
        let program = find_tool(tool).ok_or(FirewallError::ToolMissing(tool.name()))?;
        let mut cmd = match &self.netns {
            None => Command::new(&program),
            Some(ns) => {
                let ip = find_program("ip").ok_or(FirewallError::ToolMissing("ip"))?;
                let mut c = Command::new(ip);
                c.args(["netns", "exec", ns.as_str()]).arg(&program);
                c
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C");
        debug!(tool = tool.name(), ?args, netns = ?self.netns, "running firewall tool");
        let mut child = cmd.spawn().map_err(|e| FirewallError::Tool {
            tool: tool.name(),
            detail: format!("cannot start {}: {e}", program.display()),
        })?;
        let mut out_pipe = child.stdout.take();
        let mut err_pipe = child.stderr.take();
        let out_reader = std::thread::spawn(move || read_capped(out_pipe.as_mut()));
        let err_reader = std::thread::spawn(move || read_capped(err_pipe.as_mut()));
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > TOOL_TIMEOUT => {
                    // The tool hung; kill it so the caller can roll back or report.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(FirewallError::Tool {
                        tool: tool.name(),
                        detail: format!("timed out after {} s", TOOL_TIMEOUT.as_secs()),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(FirewallError::Tool {
                        tool: tool.name(),
                        detail: format!("wait failed: {e}"),
                    })
                }
            }
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let out = ToolOutput {
            code: status.code(),
            stdout,
            stderr,
        };
        debug!(tool = tool.name(), code = ?out.code, "firewall tool finished");
        Ok(out)
    }

    /// Runs `tool` and fails unless it exits with status 0.
    pub fn run_ok(&self, tool: Tool, args: &[&str]) -> Result<ToolOutput, FirewallError> {
        let out = self.run(tool, args)?;
        if out.success() {
            Ok(out)
        } else {
            Err(FirewallError::Tool {
                tool: tool.name(),
                detail: format!(
                    "`{} {}` exited with {:?}: {}",
                    tool.name(),
                    args.join(" "),
                    out.code,
                    out.stderr.trim()
                ),
            })
        }
    }
}

fn read_capped(pipe: Option<&mut impl Read>) -> String {
    let Some(pipe) = pipe else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buf.len() < MAX_TOOL_OUTPUT {
                    let take = n.min(MAX_TOOL_OUTPUT - buf.len());
                    buf.extend_from_slice(&chunk[..take]);
                }
                // Keep draining so the tool never blocks on a full pipe.
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
