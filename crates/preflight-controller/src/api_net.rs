//! Controller network RPCs: agent ports, probes between agents, bandwidth (in progress).

use preflight_proto::v1 as pb;
use tonic::{Request, Status};

use crate::api::ApiSvc;

fn todo<T>() -> Result<T, Status> {
    Err(Status::unimplemented("network readiness is not wired yet"))
}

pub async fn list_agent_ports(
    _svc: &ApiSvc,
    _req: Request<pb::AgentPortsRequest>,
) -> Result<pb::ListListeningPortsResponse, Status> {
    todo()
}

pub async fn probe(
    _svc: &ApiSvc,
    _req: Request<pb::ProbeRequest>,
) -> Result<pb::ProbeResponse, Status> {
    todo()
}

pub async fn bandwidth(
    _svc: &ApiSvc,
    _req: Request<pb::BandwidthRequest>,
) -> Result<pb::BandwidthResponse, Status> {
    todo()
}
