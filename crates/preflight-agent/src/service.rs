//! The Agent gRPC service. Every call must come from the controller: a client certificate
//! issued by our CA (checked by TLS) that names the controller (checked here). An agent-role
//! certificate, even a valid one, is refused: agents never command each other.

use preflight_pki::PeerIdentity;
use preflight_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;

/// Refuses every caller but the controller.
pub fn require_controller(req: Request<()>) -> Result<Request<()>, Status> {
    match preflight_pki::transport::peer_identity_of(&req) {
        Some(PeerIdentity::Controller) => Ok(req),
        Some(PeerIdentity::Agent(id)) => Err(Status::permission_denied(format!(
            "agent certificate ({id}) may not call agents; only the controller may"
        ))),
        None => Err(Status::unauthenticated(
            "a controller client certificate is required",
        )),
    }
}

pub struct AgentSvc;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentSvc {
    async fn get_inventory(
        &self,
        _req: Request<pb::GetInventoryRequest>,
    ) -> Result<Response<pb::Inventory>, Status> {
        let inv = tokio::task::spawn_blocking(preflight_probe::inventory::collect)
            .await
            .map_err(|e| Status::internal(format!("inventory task failed: {e}")))?
            .map_err(|e| Status::internal(format!("inventory: {e}")))?;
        Ok(Response::new(convert::inventory(inv)))
    }
}
