//! The Workflow service (in progress).

use std::sync::Arc;

use preflight_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Shared;

pub(crate) struct WorkflowSvc(pub Arc<Shared>);

#[tonic::async_trait]
impl pb::workflow_server::Workflow for WorkflowSvc {
    async fn ping(
        &self,
        req: Request<pb::WorkflowPing>,
    ) -> Result<Response<pb::WorkflowPing>, Status> {
        crate::auth::authorize(&self.0, &req, &preflight_core::role::Role::ALL)?;
        Ok(Response::new(pb::WorkflowPing {}))
    }
}
