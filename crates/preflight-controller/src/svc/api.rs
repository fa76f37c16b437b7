//! The Controller service for people (the `preflight` CLI). Every RPC names the roles allowed
//! to call it in one place, [`allowed`], which the security tests walk.

use std::time::Duration;

use preflight_core::role::Role;
use preflight_proto::v1 as pb;
use preflight_store::JoinTokenRecord;
use tonic::{Request, Response, Status};

use crate::agents::agent_status;
use crate::auth::authorize;
use crate::error::{store_status, InvalidRequest};
use crate::metrics::{is_online, is_outdated};
use crate::svc::{api_bench, api_net, ApiSvc};
use crate::wire::WireEnum;
use crate::{hash_token, new_secret};

/// Roles allowed to call each RPC of the Controller service (the one table,
/// `preflight_core::role::rpc_roles`; an RPC missing there is refused to everyone).
pub fn allowed(rpc: &str) -> &'static [Role] {
    preflight_core::role::rpc_roles("Controller", rpc).unwrap_or(&[])
}

/// Join tokens live between one minute... and a week; shorter ones are for tests.
const MIN_TTL_S: u32 = 1;
const MAX_TTL_S: u32 = 7 * 24 * 3600;
/// Most enrollments one join token allows (`token create --uses`).
const MAX_USES: u32 = 1000;

/// A new join token as asked for: how long it lives and how many agents it may enroll.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NewJoinToken {
    pub ttl_s: u32,
    pub uses: u32,
}

impl TryFrom<pb::CreateJoinTokenRequest> for NewJoinToken {
    type Error = InvalidRequest;

    fn try_from(r: pb::CreateJoinTokenRequest) -> Result<Self, InvalidRequest> {
        let uses = r.uses.max(1);
        if uses > MAX_USES {
            return Err(InvalidRequest::new(
                "uses",
                format!(
                    "{uses} is out of range: a join token enrolls 1 to {MAX_USES} agents (--uses)"
                ),
            ));
        }
        if !(MIN_TTL_S..=MAX_TTL_S).contains(&r.ttl_s) {
            return Err(InvalidRequest::new(
                "ttl_s",
                format!(
                    "{} is out of range: use 1 s to 7 days (e.g. --ttl 1h)",
                    r.ttl_s
                ),
            ));
        }
        Ok(NewJoinToken {
            ttl_s: r.ttl_s,
            uses,
        })
    }
}

/// An agent named by a request (`agent_id`), well-formed; whether it exists is the store's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AgentRef(pub String);

fn agent_id(id: &str) -> Result<(), InvalidRequest> {
    if id.is_empty() {
        return Err(InvalidRequest::new(
            "agent_id",
            "empty: `preflight agents` lists them",
        ));
    }
    preflight_pki::validate_agent_id(id).map_err(|e| InvalidRequest::new("agent_id", e))
}

impl TryFrom<pb::RevokeAgentRequest> for AgentRef {
    type Error = InvalidRequest;

    fn try_from(r: pb::RevokeAgentRequest) -> Result<Self, InvalidRequest> {
        agent_id(&r.agent_id)?;
        Ok(AgentRef(r.agent_id))
    }
}

impl TryFrom<pb::GetAgentInventoryRequest> for AgentRef {
    type Error = InvalidRequest;

    fn try_from(r: pb::GetAgentInventoryRequest) -> Result<Self, InvalidRequest> {
        agent_id(&r.agent_id)?;
        Ok(AgentRef(r.agent_id))
    }
}

impl ApiSvc {
    /// The record of agent `id`, with INVALID_ARGUMENT / NOT_FOUND naming the problem.
    pub(crate) fn agent_record(&self, id: &str) -> Result<preflight_store::AgentRecord, Status> {
        agent_id(id)?;
        self.0
            .store
            .agent(id)
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!("no agent {id:?}: `preflight agents` lists them"))
            })
    }
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ApiSvc {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let (user, role) = authorize(&self.0, &req, allowed("WhoAmI"))?;
        Ok(Response::new(pb::WhoAmIResponse {
            user: user.name,
            role: role.to_i32(),
            controller_version: crate::VERSION.into(),
        }))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("CreateJoinToken"))?;
        let NewJoinToken { ttl_s: ttl, uses } = req.into_inner().try_into()?;
        let token = new_secret("pfj");
        let now = self.0.now_ms();
        let rec = JoinTokenRecord {
            token_sha256: hash_token(&token),
            created_at_ms: now,
            expires_at_ms: now + i64::from(ttl) * 1000,
            created_by: user.name,
            used_by: None,
            used_at_ms: None,
            max_uses: uses,
            uses: vec![],
        };
        self.0.store.add_join_token(&rec).map_err(store_status)?;
        tracing::info!(by = %rec.created_by, uses, ttl_s = ttl, "join token created");
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token,
            expires_at_unix: rec.expires_at_ms / 1000,
            ca_sha256: self.0.ca.pin(),
            controller_pubkey_sha256: self.0.pubkey_pin.clone(),
            uses,
        }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        authorize(&self.0, &req, allowed("ListAgents"))?;
        let now = self.0.now_ms();
        let agents = self
            .0
            .store
            .agents()
            .map_err(store_status)?
            .into_iter()
            .map(|a| pb::AgentInfo {
                online: is_online(&self.0, &a, now),
                outdated: is_outdated(&a),
                listen_addr: crate::agents::dial_addr(&a).unwrap_or(a.listen_addr),
                id: a.id,
                hostname: a.hostname,
                addresses: a.addresses,
                version: a.version,
                last_heartbeat_unix_ms: a.last_heartbeat_ms,
                revoked: a.revoked,
                enrolled_at_unix_ms: a.enrolled_at_ms,
                cert_not_after_unix: a.cert_not_after_unix,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentResponse>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("RevokeAgent"))?;
        let AgentRef(id) = req.into_inner().try_into()?;
        self.agent_record(&id)?;
        self.0
            .store
            .update_agent(&id, true, |a| a.revoked = true)
            .map_err(store_status)?;
        self.0.agents.forget(&id);
        tracing::warn!(agent = %id, by = %user.name, "agent revoked");
        Ok(Response::new(pb::RevokeAgentResponse {}))
    }

    async fn get_agent_inventory(
        &self,
        req: Request<pb::GetAgentInventoryRequest>,
    ) -> Result<Response<pb::Inventory>, Status> {
        authorize(&self.0, &req, allowed("GetAgentInventory"))?;
        let AgentRef(id) = req.into_inner().try_into()?;
        let rec = self.agent_record(&id)?;
        let mut client = self.0.agents.client(&rec)?;
        let mut r = Request::new(pb::GetInventoryRequest {});
        r.set_timeout(Duration::from_secs(30));
        let inv = client
            .get_inventory(r)
            .await
            .map_err(|s| agent_status(&id, s))?;
        Ok(inv)
    }

    type RunAgentBenchmarkStream = api_bench::EventStream;

    async fn run_agent_benchmark(
        &self,
        req: Request<pb::AgentBenchmarkRequest>,
    ) -> Result<Response<Self::RunAgentBenchmarkStream>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("RunAgentBenchmark"))?;
        api_bench::run_agent_benchmark(self, req, &user.name)
            .await
            .map(Response::new)
    }

    async fn list_agent_ports(
        &self,
        req: Request<pb::AgentPortsRequest>,
    ) -> Result<Response<pb::ListListeningPortsResponse>, Status> {
        authorize(&self.0, &req, allowed("ListAgentPorts"))?;
        api_net::list_agent_ports(self, req)
            .await
            .map(Response::new)
    }

    async fn probe(
        &self,
        req: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        authorize(&self.0, &req, allowed("Probe"))?;
        api_net::probe(self, req).await.map(Response::new)
    }

    async fn bandwidth(
        &self,
        req: Request<pb::BandwidthRequest>,
    ) -> Result<Response<pb::BandwidthResponse>, Status> {
        authorize(&self.0, &req, allowed("Bandwidth"))?;
        api_net::bandwidth(self, req).await.map(Response::new)
    }

    type BandwidthLiveStream = api_net::BandwidthProgressStream;

    async fn bandwidth_live(
        &self,
        req: Request<pb::BandwidthRequest>,
    ) -> Result<Response<Self::BandwidthLiveStream>, Status> {
        authorize(&self.0, &req, allowed("BandwidthLive"))?;
        api_net::bandwidth_live(self, req).await.map(Response::new)
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        authorize(&self.0, &req, allowed("GetStatus"))?;
        let fleet = crate::metrics::fleet(&self.0).map_err(store_status)?;
        let started = self.0.metrics.started_at_ms;
        Ok(Response::new(pb::GetStatusResponse {
            controller_version: crate::VERSION.into(),
            started_at_unix_ms: started,
            uptime_s: ((self.0.now_ms() - started).max(0) / 1000) as u64,
            agents_total: fleet.total,
            agents_online: fleet.online,
            agents_offline: fleet.offline,
            agents_revoked: fleet.revoked,
            outdated: fleet
                .outdated
                .into_iter()
                .map(|(id, version)| pb::OutdatedAgent { id, version })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_requests_are_refused_naming_the_field() {
        let ask = |ttl_s, uses| NewJoinToken::try_from(pb::CreateJoinTokenRequest { ttl_s, uses });
        assert_eq!(
            ask(600, 0),
            Ok(NewJoinToken {
                ttl_s: 600,
                uses: 1
            })
        );
        assert_eq!(ask(600, MAX_USES + 1).unwrap_err().field, "uses");
        assert_eq!(ask(0, 1).unwrap_err().field, "ttl_s");
        assert_eq!(ask(MAX_TTL_S + 1, 1).unwrap_err().field, "ttl_s");
        let s = Status::from(ask(0, 1).unwrap_err());
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with("ttl_s: 0 is out of range"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn agent_ids_are_refused_naming_the_field() {
        let revoke = |id: &str| {
            AgentRef::try_from(pb::RevokeAgentRequest {
                agent_id: id.into(),
            })
        };
        assert_eq!(revoke("web-1"), Ok(AgentRef("web-1".into())));
        for bad in ["", "../etc", "a b"] {
            assert_eq!(revoke(bad).unwrap_err().field, "agent_id", "{bad:?}");
        }
        let inv = AgentRef::try_from(pb::GetAgentInventoryRequest {
            agent_id: String::new(),
        });
        assert_eq!(inv.unwrap_err().field, "agent_id");
    }
}
