//! Entry points for the fuzz targets (`fuzz/`): every Agent request type decoded from bytes
//! with prost, then put through the same validation functions its handler calls first,
//! without the side effects (no sockets, files or benchmarks). The property checked by the
//! targets: no panic, and bad input is refused as INVALID_ARGUMENT (or, for benchmark sizes a
//! host could not hold, RESOURCE_EXHAUSTED), never INTERNAL or UNKNOWN.

use preflight_probe::bench::disk::DiskLimits;
use preflight_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::{svc_bench, svc_harden, svc_net, svc_package};

/// The Agent service's request types, in the order of `agent.proto`.
pub const REQUEST_TYPES: &[&str] = &[
    "GetInventoryRequest",
    "VerifyPackageRequest",
    "BenchmarkRequest",
    "ListListeningPortsRequest",
    "OpenProbeListenersRequest",
    "CloseProbeListenersRequest",
    "RunProbesRequest",
    "StartBandwidthReceiverRequest",
    "RunBandwidthSenderRequest",
    "GetBandwidthResultRequest",
    "HardenRequest",
    "ConfirmFirewallRequest",
];

/// Decodes `bytes` as request type `kind` (an index into [`REQUEST_TYPES`], modulo its length)
/// and validates it. `Ok(None)`: the bytes are not that message (prost refused them, as tonic
/// would with INTERNAL before any handler runs — a decoding error, not a validation one).
pub fn validate_request(kind: u8, bytes: &[u8]) -> Result<Option<()>, Status> {
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(bytes) {
                Ok(m) => m,
                Err(_) => return Ok(None),
            }
        };
    }
    match usize::from(kind) % REQUEST_TYPES.len() {
        0 => {
            decode!(pb::GetInventoryRequest);
        }
        1 => {
            svc_package::expected_files(
                decode!(pb::VerifyPackageRequest),
                std::path::Path::new(crate::state::DEFAULT_STATE_DIR),
            )?;
        }
        2 => {
            let r = decode!(pb::BenchmarkRequest);
            svc_bench::validate(r, svc_bench::Caller::Remote, &DiskLimits::default())
                .map_err(svc_bench::bench_status)?;
        }
        3 => {
            decode!(pb::ListListeningPortsRequest);
        }
        4 => {
            svc_net::parse_open(&decode!(pb::OpenProbeListenersRequest))?;
        }
        5 => {
            decode!(pb::CloseProbeListenersRequest);
        }
        6 => {
            svc_net::parse_probes(&decode!(pb::RunProbesRequest))?;
        }
        7 => {
            svc_net::parse_receiver(&decode!(pb::StartBandwidthReceiverRequest))?;
        }
        8 => {
            svc_net::parse_sender(&decode!(pb::RunBandwidthSenderRequest))?;
        }
        9 => {
            decode!(pb::GetBandwidthResultRequest);
        }
        10 => {
            let r = decode!(pb::HardenRequest);
            svc_harden::validate_request(&r)?;
        }
        _ => {
            decode!(pb::ConfirmFirewallRequest);
        }
    }
    Ok(Some(()))
}
