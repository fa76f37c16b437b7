//! Agent network RPCs: listening ports, probe listeners and connector, bandwidth (in progress).

use preflight_proto::v1 as pb;
use tonic::{Request, Status};

/// Network state shared by all requests (open probe listeners, bandwidth receivers).
#[derive(Default)]
pub struct NetState {
    /// The agent's own port, never opened as a probe listener.
    #[allow(dead_code)] // read once the network endpoints are wired
    pub own_port: u16,
}

fn todo<T>() -> Result<T, Status> {
    Err(Status::unimplemented("network endpoints are not wired yet"))
}

pub async fn list_listening_ports(
    _st: &NetState,
    _r: Request<pb::ListListeningPortsRequest>,
) -> Result<pb::ListListeningPortsResponse, Status> {
    todo()
}
pub async fn open_probe_listeners(
    _st: &NetState,
    _r: Request<pb::OpenProbeListenersRequest>,
) -> Result<pb::OpenProbeListenersResponse, Status> {
    todo()
}
pub async fn close_probe_listeners(
    _st: &NetState,
    _r: Request<pb::CloseProbeListenersRequest>,
) -> Result<pb::CloseProbeListenersResponse, Status> {
    todo()
}
pub async fn run_probes(
    _st: &NetState,
    _r: Request<pb::RunProbesRequest>,
) -> Result<pb::RunProbesResponse, Status> {
    todo()
}
pub async fn start_bandwidth_receiver(
    _st: &NetState,
    _r: Request<pb::StartBandwidthReceiverRequest>,
) -> Result<pb::StartBandwidthReceiverResponse, Status> {
    todo()
}
pub async fn run_bandwidth_sender(
    _st: &NetState,
    _r: Request<pb::RunBandwidthSenderRequest>,
) -> Result<pb::RunBandwidthSenderResponse, Status> {
    todo()
}
pub async fn get_bandwidth_result(
    _st: &NetState,
    _r: Request<pb::GetBandwidthResultRequest>,
) -> Result<pb::GetBandwidthResultResponse, Status> {
    todo()
}
