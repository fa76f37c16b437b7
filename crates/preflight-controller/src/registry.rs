//! The Registry service: enrollment with a one-time join token, then heartbeats and
//! certificate renewal authenticated by the agent's own certificate.

use std::sync::Arc;

use preflight_pki::PeerIdentity;
use preflight_proto::v1 as pb;
use preflight_store::{AgentRecord, StoreError};
use tonic::{Request, Response, Status};

use crate::{hash_token, Shared};

pub(crate) struct RegistrySvc(pub Arc<Shared>);

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::TokenUnknown | StoreError::TokenExpired | StoreError::TokenUsed(_) => {
            Status::permission_denied(e.to_string())
        }
        StoreError::AgentExists(_) => Status::already_exists(e.to_string()),
        StoreError::NoAgent(_) => Status::not_found(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

fn field(name: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{name} is {} bytes; at most {max} are accepted",
            value.len()
        )));
    }
    Ok(())
}

impl RegistrySvc {
    /// The enrolled, unrevoked agent presenting its certificate on `req`.
    fn agent_of<T>(&self, req: &Request<T>) -> Result<AgentRecord, Status> {
        let id = match preflight_pki::transport::peer_identity_of(req) {
            Some(PeerIdentity::Agent(id)) => id,
            Some(PeerIdentity::Controller) => {
                return Err(Status::permission_denied(
                    "a controller certificate cannot act as an agent",
                ))
            }
            None => {
                return Err(Status::unauthenticated(
                    "this call needs the agent's client certificate: enroll first with `preflight-agent enroll`",
                ))
            }
        };
        let rec = self
            .0
            .store
            .agent(&id)
            .map_err(store_status)?
            .ok_or_else(|| Status::permission_denied(format!("agent {id} is not enrolled here")))?;
        if rec.revoked {
            return Err(Status::permission_denied(format!(
                "agent {id} is revoked: enroll the host again with a new join token"
            )));
        }
        Ok(rec)
    }

    fn renew_due(&self, rec: &AgentRecord) -> bool {
        let left_s = rec.cert_not_after_unix - self.0.now_ms() / 1000;
        left_s < (self.0.cfg.agent_cert_ttl.as_secs() / 3) as i64
    }
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistrySvc {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        if r.join_token.is_empty() {
            return Err(Status::invalid_argument(
                "join_token is empty: pass --token",
            ));
        }
        field("join_token", &r.join_token, 256)?;
        field("csr_pem", &r.csr_pem, 16 * 1024)?;
        field("agent_version", &r.agent_version, 64)?;
        field("hostname", &r.hostname, 253)?;
        preflight_pki::validate_agent_id(&r.name)
            .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        let s = &self.0;
        let cert_pem =
            s.ca.sign_agent_csr(&r.csr_pem, &r.name, s.cfg.agent_cert_ttl)
                .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let ident = preflight_pki::Identity {
            cert_pem: cert_pem.clone(),
            key_pem: String::new(),
        };
        let not_after = ident
            .not_after_unix()
            .map_err(|e| Status::internal(e.to_string()))?;
        let now = s.now_ms();
        let rec = AgentRecord {
            id: r.name.clone(),
            hostname: r.hostname,
            addresses: vec![],
            listen_addr: String::new(),
            observed_ip: String::new(),
            version: r.agent_version,
            enrolled_at_ms: now,
            last_heartbeat_ms: 0,
            cert_sha256: ident
                .fingerprint()
                .map_err(|e| Status::internal(e.to_string()))?,
            cert_not_after_unix: not_after,
            revoked: false,
        };
        // The certificate is handed out only once the store durably holds the enrollment.
        s.store
            .enroll(&hash_token(&r.join_token), now, &rec)
            .map_err(store_status)?;
        tracing::info!(agent = %rec.id, hostname = %rec.hostname, "agent enrolled");
        Ok(Response::new(pb::EnrollResponse {
            agent_id: rec.id,
            cert_pem,
            ca_pem: s.ca.cert_pem().to_string(),
            not_after_unix: not_after,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let rec = self.agent_of(&req)?;
        let observed = req
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let r = req.into_inner();
        field("agent_version", &r.agent_version, 64)?;
        field("hostname", &r.hostname, 253)?;
        if r.addresses.len() > 256 {
            return Err(Status::invalid_argument(
                "addresses: at most 256 are accepted",
            ));
        }
        for a in &r.addresses {
            field("addresses[]", a, 64)?;
        }
        if !r.listen_addr.is_empty() && r.listen_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "listen_addr {:?} is not IP:PORT",
                r.listen_addr
            )));
        }
        let now = self.0.now_ms();
        if rec.listen_addr != r.listen_addr || rec.observed_ip != observed {
            self.0.agents.forget(&rec.id);
        }
        let rec = self
            .0
            .store
            .update_agent(&rec.id, false, |a| {
                a.last_heartbeat_ms = now;
                a.version = r.agent_version.clone();
                a.hostname = r.hostname.clone();
                a.addresses = r.addresses.clone();
                a.listen_addr = r.listen_addr.clone();
                a.observed_ip = observed.clone();
            })
            .map_err(store_status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            interval_s: self.0.cfg.heartbeat_interval.as_secs().max(1) as u32,
            renew: self.renew_due(&rec),
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let rec = self.agent_of(&req)?;
        let r = req.into_inner();
        field("csr_pem", &r.csr_pem, 16 * 1024)?;
        let s = &self.0;
        let cert_pem =
            s.ca.sign_agent_csr(&r.csr_pem, &rec.id, s.cfg.agent_cert_ttl)
                .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let ident = preflight_pki::Identity {
            cert_pem: cert_pem.clone(),
            key_pem: String::new(),
        };
        let not_after = ident
            .not_after_unix()
            .map_err(|e| Status::internal(e.to_string()))?;
        let fp = ident
            .fingerprint()
            .map_err(|e| Status::internal(e.to_string()))?;
        s.store
            .update_agent(&rec.id, true, |a| {
                a.cert_sha256 = fp.clone();
                a.cert_not_after_unix = not_after;
            })
            .map_err(store_status)?;
        tracing::info!(agent = %rec.id, not_after, "agent certificate renewed");
        Ok(Response::new(pb::RenewResponse {
            cert_pem,
            not_after_unix: not_after,
        }))
    }
}
