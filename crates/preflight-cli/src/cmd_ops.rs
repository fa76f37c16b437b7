//! Day-2 operations: `preflight status` (the fleet at a glance) and the one-line agent
//! installer that `preflight token create --install-command` prints.

use preflight_proto::v1 as pb;

use crate::client::{status, Conn};
use crate::{json, Output};

/// Arguments of `preflight status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
preflight status\n  \
preflight status --output json | jq .outdated\n\n\
Agents are offline when the controller has not heard from them within three heartbeat intervals; \
they are outdated when they report another version than the controller's (upgrade them by \
re-running the install line: it replaces the binary and keeps the enrollment).")]
pub struct StatusArgs {}

/// `preflight status`.
pub async fn status_cmd(_a: StatusArgs, conn: &Conn, out: Output) -> anyhow::Result<()> {
    let r = conn
        .api()
        .await?
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if out == Output::Json {
        return json(&r);
    }
    print!("{}", render_status(&r));
    Ok(())
}

fn render_status(r: &pb::GetStatusResponse) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "controller  {}", r.controller_version);
    let _ = writeln!(
        o,
        "uptime      {} (since {})",
        preflight_core::timefmt::ago(r.uptime_s.min(i64::MAX as u64) as i64),
        preflight_render::time(r.started_at_unix_ms)
    );
    let _ = writeln!(
        o,
        "agents      {} enrolled: {} online, {} offline ({} revoked)",
        r.agents_total, r.agents_online, r.agents_offline, r.agents_revoked
    );
    if r.outdated.is_empty() {
        let _ = writeln!(o, "outdated    none");
    } else {
        let _ = writeln!(
            o,
            "outdated    {} (controller is {}):",
            r.outdated.len(),
            r.controller_version
        );
        for a in &r.outdated {
            let v = if a.version.is_empty() {
                "never reported"
            } else {
                &a.version
            };
            let _ = writeln!(o, "  {}  {}", a.id, v);
        }
    }
    o
}

/// The line an operator pastes on a server, as root or with sudo.
///
/// curl gets `-k` together with `--pinnedpubkey`: the controller's certificate chains to our
/// private CA, which no system trust store holds and which a pasted line cannot carry as a
/// file (`--cacert`). `-k` turns off only the chain and host-name checks; curl still compares
/// the SHA-256 of the server's public key with the pin and aborts (exit 90) before sending or
/// receiving anything when it differs, so the pin is the one trust anchor. `--proto =https`
/// refuses any downgrade and redirects are not followed. The script then downloads the binary
/// with the same pin, checks its SHA-256, and enrolls with the CA pin (`--ca-sha256`).
/// The one-line installer. The join token reaches the script as the first line of its own
/// standard input (`echo` is a shell builtin, so it is in no process's command line), never as
/// an argument that `ps` shows to every user.
pub fn install_command(url: &str, token: &str, ca_sha256: &str, pubkey_pin: &str) -> String {
    let url = url.trim_end_matches('/');
    format!(
        "{{ echo PREFLIGHT_JOIN_TOKEN={token}; curl -fsS --proto =https --tlsv1.2 -k --pinnedpubkey {pubkey_pin} {url}/install.sh; }} \
| sudo sh -s -- --controller {url} --ca-sha256 {ca_sha256} --pin {pubkey_pin}"
    )
}

/// The enroll line for a server: the token on standard input, not on the command line.
pub fn enroll_command(url: &str, token: &str, ca_sha256: &str) -> String {
    let url = url.trim_end_matches('/');
    format!(
        "echo {token} | sudo preflight-agent enroll --controller {url} --ca-sha256 {ca_sha256} --token-file -"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_pins_both_downloads_and_enrollment() {
        let l = install_command("https://ctl:7443/", "pfj_x", "ab", "sha256//K=");
        assert_eq!(
            l,
            "{ echo PREFLIGHT_JOIN_TOKEN=pfj_x; curl -fsS --proto =https --tlsv1.2 -k --pinnedpubkey sha256//K= https://ctl:7443/install.sh; } \
| sudo sh -s -- --controller https://ctl:7443 --ca-sha256 ab --pin sha256//K="
        );
        // The token is never an argument of sh or of the agent.
        assert!(!l.contains("--token"), "{l}");
        let e = enroll_command("https://ctl:7443", "pfj_x", "ab");
        assert!(e.starts_with("echo pfj_x | "), "{e}");
        assert!(!e.contains("--token pfj"), "{e}");
    }

    #[test]
    fn status_lists_outdated_agents() {
        let r = pb::GetStatusResponse {
            controller_version: "0.2.0".into(),
            started_at_unix_ms: 0,
            uptime_s: 3700,
            agents_total: 3,
            agents_online: 2,
            agents_offline: 1,
            agents_revoked: 0,
            outdated: vec![pb::OutdatedAgent {
                id: "web-01".into(),
                version: "0.1.0".into(),
            }],
        };
        let t = render_status(&r);
        assert!(t.contains("3 enrolled: 2 online, 1 offline"), "{t}");
        assert!(t.contains("  web-01  0.1.0"), "{t}");
    }
}
