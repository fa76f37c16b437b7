//! The Hardening service: remote hardening and the evidence log (in progress).

use std::sync::Arc;

use preflight_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Shared;

pub(crate) struct HardeningSvc(pub Arc<Shared>);

#[tonic::async_trait]
impl pb::hardening_server::Hardening for HardeningSvc {
    async fn ping(
        &self,
        req: Request<pb::HardeningPing>,
    ) -> Result<Response<pb::HardeningPing>, Status> {
        crate::auth::authorize(&self.0, &req, &preflight_core::role::Role::ALL)?;
        Ok(Response::new(pb::HardeningPing {}))
    }
}
