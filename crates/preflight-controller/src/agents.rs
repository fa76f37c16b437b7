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

impl AgentPool {
    pub fn new(ca_pem: &str, identity: &Identity) -> Result<Self, preflight_pki::PkiError> {
        Ok(Self {
            tls: preflight_pki::client_config(ca_pem, Some(identity))?,
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
