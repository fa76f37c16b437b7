//! The Agent gRPC service. Every call must come from the controller: a client certificate
//! issued by our CA (checked by TLS) that names the controller (checked here). An agent-role
//! certificate, even a valid one, is refused: agents never command each other.

use preflight_pki::PeerIdentity;
use preflight_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{convert, svc_bench, svc_harden, svc_net, svc_package};

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

/// The Agent service; each capability keeps its state and handlers in its own module.
pub struct AgentSvc {
    pub bench: svc_bench::BenchState,
    pub net: svc_net::NetState,
    pub harden: svc_harden::HardenState,
}

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

    type VerifyPackageStream = svc_package::EventStream;

    async fn verify_package(
        &self,
        req: Request<pb::VerifyPackageRequest>,
    ) -> Result<Response<Self::VerifyPackageStream>, Status> {
        svc_package::verify_package(req, &self.harden.state_dir)
            .await
            .map(Response::new)
    }

    type RunBenchmarkStream = svc_bench::EventStream;

    async fn run_benchmark(
        &self,
        req: Request<pb::BenchmarkRequest>,
    ) -> Result<Response<Self::RunBenchmarkStream>, Status> {
        svc_bench::run_benchmark(&self.bench, req)
            .await
            .map(Response::new)
    }

    async fn list_listening_ports(
        &self,
        req: Request<pb::ListListeningPortsRequest>,
    ) -> Result<Response<pb::ListListeningPortsResponse>, Status> {
        svc_net::list_listening_ports(&self.net, req)
            .await
            .map(Response::new)
    }

    async fn open_probe_listeners(
        &self,
        req: Request<pb::OpenProbeListenersRequest>,
    ) -> Result<Response<pb::OpenProbeListenersResponse>, Status> {
        svc_net::open_probe_listeners(&self.net, req)
            .await
            .map(Response::new)
    }

    async fn close_probe_listeners(
        &self,
        req: Request<pb::CloseProbeListenersRequest>,
    ) -> Result<Response<pb::CloseProbeListenersResponse>, Status> {
        svc_net::close_probe_listeners(&self.net, req)
            .await
            .map(Response::new)
    }

    async fn run_probes(
        &self,
        req: Request<pb::RunProbesRequest>,
    ) -> Result<Response<pb::RunProbesResponse>, Status> {
        svc_net::run_probes(&self.net, req).await.map(Response::new)
    }

    async fn start_bandwidth_receiver(
        &self,
        req: Request<pb::StartBandwidthReceiverRequest>,
    ) -> Result<Response<pb::StartBandwidthReceiverResponse>, Status> {
        svc_net::start_bandwidth_receiver(&self.net, req)
            .await
            .map(Response::new)
    }

    async fn run_bandwidth_sender(
        &self,
        req: Request<pb::RunBandwidthSenderRequest>,
    ) -> Result<Response<pb::RunBandwidthSenderResponse>, Status> {
        svc_net::run_bandwidth_sender(&self.net, req)
            .await
            .map(Response::new)
    }

    type RunBandwidthSenderLiveStream = svc_net::SenderProgressStream;

    async fn run_bandwidth_sender_live(
        &self,
        req: Request<pb::RunBandwidthSenderRequest>,
    ) -> Result<Response<Self::RunBandwidthSenderLiveStream>, Status> {
        svc_net::run_bandwidth_sender_live(&self.net, req)
            .await
            .map(Response::new)
    }

    async fn get_bandwidth_result(
        &self,
        req: Request<pb::GetBandwidthResultRequest>,
    ) -> Result<Response<pb::GetBandwidthResultResponse>, Status> {
        svc_net::get_bandwidth_result(&self.net, req)
            .await
            .map(Response::new)
    }

    async fn harden(
        &self,
        req: Request<pb::HardenRequest>,
    ) -> Result<Response<pb::HardenResponse>, Status> {
        svc_harden::harden(&self.harden, req)
            .await
            .map(Response::new)
    }

    async fn confirm_firewall(
        &self,
        req: Request<pb::ConfirmFirewallRequest>,
    ) -> Result<Response<pb::ConfirmFirewallResponse>, Status> {
        svc_harden::confirm_firewall(&self.harden, req)
            .await
            .map(Response::new)
    }
}
