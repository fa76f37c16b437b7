//! The Registry service: enrollment with a one-time join token, then heartbeats and
//! certificate renewal authenticated by the agent's own certificate.

use std::sync::Arc;

use preflight_pki::PeerIdentity;
use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use tonic::{Request, Response, Status};

use crate::agents::{check_cert, CertCheck};
use crate::error::{store_status, InvalidRequest};
use crate::{hash_token, Shared};

pub(crate) struct RegistrySvc(pub Arc<Shared>);

/// How long the certificate replaced by a renewal stays accepted at most (until then, also
/// until the agent first uses the new one): covers a renewal whose answer was lost.
pub(crate) const RENEW_OVERLAP_MS: i64 = 5 * 60 * 1000;

fn field(name: &str, value: &str, max: usize) -> Result<(), InvalidRequest> {
    if value.len() > max {
        return Err(InvalidRequest::new(
            name,
            format!("{} bytes; at most {max} are accepted", value.len()),
        ));
    }
    Ok(())
}

/// An enrollment as the registry accepts it: a join token, the agent id asked for, the CSR.
#[derive(Debug)]
pub(crate) struct Enrollment {
    pub join_token: String,
    pub name: String,
    pub csr_pem: String,
    pub agent_version: String,
    pub hostname: String,
}

impl TryFrom<pb::EnrollRequest> for Enrollment {
    type Error = InvalidRequest;

    fn try_from(r: pb::EnrollRequest) -> Result<Self, InvalidRequest> {
        if r.join_token.is_empty() {
            return Err(InvalidRequest::new("join_token", "empty: pass --token"));
        }
        field("join_token", &r.join_token, 256)?;
        field("csr_pem", &r.csr_pem, 16 * 1024)?;
        field("agent_version", &r.agent_version, 64)?;
        field("hostname", &r.hostname, 253)?;
        preflight_pki::validate_agent_id(&r.name).map_err(|e| InvalidRequest::new("name", e))?;
        Ok(Enrollment {
            join_token: r.join_token,
            name: r.name,
            csr_pem: r.csr_pem,
            agent_version: r.agent_version,
            hostname: r.hostname,
        })
    }
}

/// What a heartbeat reports about the agent's host.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    pub agent_version: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    /// `IP:PORT`, or empty when the agent did not say.
    pub listen_addr: String,
}

impl TryFrom<pb::HeartbeatRequest> for Heartbeat {
    type Error = InvalidRequest;

    fn try_from(r: pb::HeartbeatRequest) -> Result<Self, InvalidRequest> {
        field("agent_version", &r.agent_version, 64)?;
        field("hostname", &r.hostname, 253)?;
        if r.addresses.len() > 256 {
            return Err(InvalidRequest::new("addresses", "at most 256 are accepted"));
        }
        for a in &r.addresses {
            field("addresses[]", a, 64)?;
        }
        if !r.listen_addr.is_empty() && r.listen_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(InvalidRequest::new(
                "listen_addr",
                format!("{:?} is not IP:PORT", r.listen_addr),
            ));
        }
        Ok(Heartbeat {
            agent_version: r.agent_version,
            hostname: r.hostname,
            addresses: r.addresses,
            listen_addr: r.listen_addr,
        })
    }
}

/// A certificate renewal: the CSR made on the host.
#[derive(Debug)]
pub(crate) struct Renewal {
    pub csr_pem: String,
}

impl TryFrom<pb::RenewRequest> for Renewal {
    type Error = InvalidRequest;

    fn try_from(r: pb::RenewRequest) -> Result<Self, InvalidRequest> {
        field("csr_pem", &r.csr_pem, 16 * 1024)?;
        Ok(Renewal { csr_pem: r.csr_pem })
    }
}

fn source<T>(req: &Request<T>) -> String {
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// SHA-256 of the DER of the client certificate on `req` (empty without one).
fn peer_fp<T>(req: &Request<T>) -> String {
    req.peer_certs()
        .and_then(|c| {
            c.first()
                .map(|leaf| preflight_pki::sha256_hex(leaf.as_ref()))
        })
        .unwrap_or_default()
}

impl RegistrySvc {
    /// The enrolled, unrevoked agent presenting its certificate on `req`, refusing (and
    /// logging) anything else.
    /// The second value: the agent presented the certificate a renewal replaced (the renewal's
    /// answer was lost, or it restarted before storing it), so it is asked to renew again.
    fn agent_of<T>(&self, req: &Request<T>) -> Result<(AgentRecord, bool), Status> {
        self.agent_of_inner(req).inspect_err(|s| {
            tracing::warn!(source = %source(req), code = ?s.code(), reason = %s.message(), "agent request refused");
        })
    }

    fn agent_of_inner<T>(&self, req: &Request<T>) -> Result<(AgentRecord, bool), Status> {
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
                "agent {id} is revoked: enroll the host again with a new join token under a new --name"
            )));
        }
        // Only the certificate on record is accepted (the one replaced by a renewal, only
        // until the new one is first used and at most RENEW_OVERLAP_MS): a copy of an old
        // certificate and key is refused.
        let fp = peer_fp(req);
        let now = self.0.now_ms();
        match check_cert(&rec, &fp, now) {
            CertCheck::Current => Ok((rec, false)),
            CertCheck::Previous => Ok((rec, true)),
            CertCheck::CurrentFirstUse => self
                .0
                .store
                .update_agent(&id, true, |a| {
                    if a.cert_sha256 == fp {
                        a.prev_cert_sha256.clear();
                        a.prev_cert_until_ms = 0;
                    }
                })
                .map(|r| (r, false))
                .map_err(store_status),
            // Records written before fingerprints were checked always carry one; a record
            // without any is accepted once and pinned to the certificate it presents.
            CertCheck::Unrecorded => self
                .0
                .store
                .update_agent(&id, true, |a| {
                    if a.cert_sha256.is_empty() {
                        a.cert_sha256 = fp.clone();
                    }
                })
                .map(|r| (r, false))
                .map_err(store_status),
            CertCheck::Refused => Err(Status::permission_denied(format!(
                "agent {id} presented certificate {fp}, which is not its current one (retired by a renewal, or never issued to it): use the agent's current identity.pem, or enroll the host again under a new --name"
            ))),
        }
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
        let src = source(&req);
        let r = Enrollment::try_from(req.into_inner())?;
        let s = &self.0;
        // Authentication first: nothing of the CSR is parsed or signed for a token that could
        // not enroll now (the store checks it again, atomically, when recording).
        s.store
            .check_join_token(&hash_token(&r.join_token), s.now_ms(), &r.name)
            .map_err(store_status)
            .inspect_err(|e| {
                tracing::warn!(source = %src, name = %r.name, reason = %e.message(), "enrollment refused");
            })?;
        let cert_pem =
            s.ca.sign_agent_csr(&r.csr_pem, &r.name, s.cfg.agent_cert_ttl)
                .map_err(|e| InvalidRequest::new("csr_pem", e))?;
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
            prev_cert_sha256: String::new(),
            prev_cert_until_ms: 0,
        };
        // The certificate is handed out only once the store durably holds the enrollment.
        s.store
            .enroll(&hash_token(&r.join_token), now, &rec)
            .map_err(store_status)
            .inspect_err(|e| {
                tracing::warn!(source = %src, name = %rec.id, reason = %e.message(), "enrollment refused");
            })?;
        tracing::info!(agent = %rec.id, hostname = %rec.hostname, source = %src, "agent enrolled");
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
        let (rec, stale) = self.agent_of(&req)?;
        let observed = req
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let r = Heartbeat::try_from(req.into_inner())?;
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
            renew: stale || self.renew_due(&rec),
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let (rec, _) = self.agent_of(&req)?;
        let presented = peer_fp(&req);
        let r = Renewal::try_from(req.into_inner())?;
        let s = &self.0;
        let cert_pem =
            s.ca.sign_agent_csr(&r.csr_pem, &rec.id, s.cfg.agent_cert_ttl)
                .map_err(|e| InvalidRequest::new("csr_pem", e))?;
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
        let now = s.now_ms();
        s.store
            .update_agent(&rec.id, true, |a| {
                // The certificate this renewal was asked with stays valid only until the new
                // one is first used (or RENEW_OVERLAP_MS), in case the answer is lost.
                a.prev_cert_sha256 = presented.clone();
                a.cert_sha256 = fp.clone();
                a.prev_cert_until_ms = now + RENEW_OVERLAP_MS;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_requests_are_refused_naming_the_field() {
        let enroll = |f: &dyn Fn(&mut pb::EnrollRequest)| {
            let mut r = pb::EnrollRequest {
                join_token: "pfj_x".into(),
                name: "web-1".into(),
                csr_pem: "csr".into(),
                agent_version: "0.1.0".into(),
                hostname: "web-1".into(),
            };
            f(&mut r);
            Enrollment::try_from(r).map(|e| e.name).map_err(|e| e.field)
        };
        assert_eq!(enroll(&|_| {}), Ok("web-1".to_string()));
        assert_eq!(enroll(&|r| r.join_token.clear()), Err("join_token".into()));
        assert_eq!(
            enroll(&|r| r.join_token = "t".repeat(257)),
            Err("join_token".into())
        );
        assert_eq!(
            enroll(&|r| r.csr_pem = "c".repeat(16 * 1024 + 1)),
            Err("csr_pem".into())
        );
        assert_eq!(
            enroll(&|r| r.agent_version = "v".repeat(65)),
            Err("agent_version".into())
        );
        assert_eq!(
            enroll(&|r| r.hostname = "h".repeat(254)),
            Err("hostname".into())
        );
        assert_eq!(enroll(&|r| r.name = "Web 1".into()), Err("name".into()));

        let beat = |f: &dyn Fn(&mut pb::HeartbeatRequest)| {
            let mut r = pb::HeartbeatRequest {
                agent_version: "0.1.0".into(),
                hostname: "web-1".into(),
                addresses: vec!["10.0.0.5/24".into()],
                listen_addr: "0.0.0.0:7444".into(),
            };
            f(&mut r);
            Heartbeat::try_from(r)
                .map(|h| h.listen_addr)
                .map_err(|e| e.field)
        };
        assert_eq!(beat(&|_| {}), Ok("0.0.0.0:7444".to_string()));
        assert_eq!(beat(&|r| r.listen_addr.clear()), Ok(String::new()));
        assert_eq!(
            beat(&|r| r.listen_addr = "somewhere".into()),
            Err("listen_addr".into())
        );
        assert_eq!(
            beat(&|r| r.addresses = vec!["a".into(); 257]),
            Err("addresses".into())
        );
        assert_eq!(
            beat(&|r| r.addresses = vec!["a".repeat(65)]),
            Err("addresses[]".into())
        );
        assert_eq!(
            beat(&|r| r.hostname = "h".repeat(254)),
            Err("hostname".into())
        );

        let renew = Renewal::try_from(pb::RenewRequest {
            csr_pem: "c".repeat(16 * 1024 + 1),
        });
        let s = Status::from(renew.unwrap_err());
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with("csr_pem: 16385 bytes"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn an_old_record_without_the_new_fields_still_reads() {
        let old = r#"{"id":"a","hostname":"h","version":"0.1.0","enrolled_at_ms":1,"cert_sha256":"ab","cert_not_after_unix":5}"#;
        let r: AgentRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.prev_cert_sha256, "");
        assert_eq!(check_cert(&r, "ab", 0), CertCheck::Current);
    }
}
