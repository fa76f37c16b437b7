//! Connections from the controller to agents: mutual TLS with the controller's identity,
//! verifying each agent by the name its certificate must carry, one cached channel per agent.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use preflight_pki::Identity;
use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use tonic::transport::Channel;
use tonic::Status;

pub(crate) struct AgentPool {
    tls: rustls::ClientConfig,
    channels: Mutex<HashMap<String, (String, Channel)>>,
}

/// Where an agent is reached: its listen address, or the address its heartbeats came from
/// when it listens on every interface.
pub(crate) fn dial_addr(rec: &AgentRecord) -> Option<String> {
    let listen: SocketAddr = rec.listen_addr.parse().ok()?;
    if listen.ip().is_unspecified() {
        let ip: IpAddr = rec.observed_ip.parse().ok()?;
        Some(SocketAddr::new(ip, listen.port()).to_string())
    } else {
        Some(listen.to_string())
    }
}

/// The enrolled, unrevoked agent serving plan server `host` (its address `address`, when
/// known), or why there is none. One rule for sweeps, hardening and evidence, so a server is
/// never swept on one machine and hardened on another:
/// 1. the agent whose id is `host`;
/// 2. else the one the controller dials at `address` (its certificate then proves which agent
///    answers), else the one reporting `address` among its interfaces — in both cases exactly
///    one, since private addresses repeat across sites and interface lists are the agent's word;
/// 3. else the one agent reporting `host` as its hostname.
///
/// More than one candidate at a step is an error naming them, never a guess.
pub(crate) fn agent_for_host<'a>(
    host: &str,
    address: Option<IpAddr>,
    agents: &'a [AgentRecord],
) -> Result<&'a AgentRecord, String> {
    let live: Vec<&AgentRecord> = agents.iter().filter(|a| !a.revoked).collect();
    if let Some(a) = live.iter().find(|a| a.id == host) {
        return Ok(a);
    }
    let one = |found: Vec<&'a AgentRecord>,
               what: &str|
     -> Result<Option<&'a AgentRecord>, String> {
        match found.as_slice() {
            [] => Ok(None),
            [a] => Ok(Some(a)),
            many => Err(format!(
                "{host}: agents {} all {what}; enroll the server's agent with `--name {host}` so its id is the plan's name",
                many.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    };
    if let Some(ip) = host.parse::<IpAddr>().ok().or(address) {
        let dialled = live
            .iter()
            .copied()
            .filter(|a| {
                dial_addr(a)
                    .and_then(|d| d.parse::<SocketAddr>().ok())
                    .is_some_and(|d| d.ip() == ip)
            })
            .collect();
        if let Some(a) = one(dialled, &format!("are reached at {ip}"))? {
            return Ok(a);
        }
        let holding = live
            .iter()
            .copied()
            .filter(|a| {
                a.addresses
                    .iter()
                    .any(|c| c.split('/').next().and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip))
            })
            .collect();
        if let Some(a) = one(holding, &format!("report the address {ip}"))? {
            return Ok(a);
        }
    }
    let named = live
        .iter()
        .copied()
        .filter(|a| a.hostname.eq_ignore_ascii_case(host))
        .collect();
    one(named, "report this hostname")?
        .ok_or_else(|| format!("{host}: no enrolled agent has this id, address or hostname"))
}

impl AgentPool {
    /// Agents are verified against the CA and by name, and must serve the certificate the
    /// store records for them (`registry::check_cert`: the current one, or the one a renewal
    /// replaced while its overlap lasts), so an old certificate and key copied elsewhere
    /// cannot pass for the agent.
    pub fn new(
        ca_pem: &str,
        identity: &Identity,
        store: preflight_store::Store,
        clock: std::sync::Arc<dyn crate::Clock>,
    ) -> Result<Self, preflight_pki::PkiError> {
        let check: preflight_pki::ServerCheck = std::sync::Arc::new(move |name, fp| {
            let rustls::pki_types::ServerName::DnsName(dns) = name else {
                return Err("an agent is verified by its DNS name".into());
            };
            let Some(id) = dns.as_ref().strip_suffix(preflight_pki::AGENT_SUFFIX) else {
                return Err(format!("{} is not an agent name", dns.as_ref()));
            };
            let rec = store
                .agent(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("agent {id} is not enrolled here"))?;
            match crate::registry::check_cert(&rec, fp, clock.now_ms()) {
                crate::registry::CertCheck::Refused => Err(format!(
                    "agent {id} serves certificate {fp}, which is not its current one: refused"
                )),
                _ => Ok(()),
            }
        });
        Ok(Self {
            tls: preflight_pki::client_config_checked(ca_pem, identity, check)?,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// A client for the agent of `rec`.
    pub fn client(
        &self,
        rec: &AgentRecord,
    ) -> Result<pb::agent_client::AgentClient<Channel>, Status> {
        if rec.revoked {
            return Err(Status::failed_precondition(format!(
                "agent {} is revoked: enroll the host again with a new join token",
                rec.id
            )));
        }
        let addr = dial_addr(rec).ok_or_else(|| {
            Status::unavailable(format!(
                "agent {} has not reported where it listens yet (no heartbeat)",
                rec.id
            ))
        })?;
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let ch = match map.get(&rec.id) {
            Some((a, ch)) if *a == addr => ch.clone(),
            _ => {
                let name = preflight_pki::agent_server_name(&rec.id)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let ch = preflight_pki::transport::connect_lazy(
                    &addr,
                    self.tls.clone(),
                    name,
                    Duration::from_secs(5),
                )
                .map_err(|e| Status::unavailable(e.to_string()))?;
                map.insert(rec.id.clone(), (addr, ch.clone()));
                ch
            }
        };
        Ok(pb::agent_client::AgentClient::new(ch)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES))
    }

    /// Forgets the channel of an agent (revoked, or its address changed).
    pub fn forget(&self, id: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Maps a failed call to an agent to a status for the person who asked, naming the agent.
pub(crate) fn agent_status(id: &str, s: Status) -> Status {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            Status::unavailable(format!("agent {id} is unreachable: {}", s.message()))
        }
        tonic::Code::DeadlineExceeded => {
            Status::deadline_exceeded(format!("agent {id} did not answer in time"))
        }
        _ => Status::new(s.code(), format!("agent {id}: {}", s.message())),
    }
}
