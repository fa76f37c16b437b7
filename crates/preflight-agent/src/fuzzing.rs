//! Entry points for the fuzz targets (`fuzz/`): every Agent request type decoded from bytes
//! with prost, then put through the same validation functions its handler calls first,
//! without the side effects (no sockets, files or benchmarks). The property checked by the
//! targets: no panic, and bad input is refused as INVALID_ARGUMENT (or, for benchmark sizes a
//! host could not hold, RESOURCE_EXHAUSTED), never INTERNAL or UNKNOWN.

use preflight_probe::bench::disk::DiskLimits;
use preflight_probe::package::{self, ExpectedFile};
use preflight_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::{svc_bench, svc_harden, svc_net};

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
            let r = decode!(pb::VerifyPackageRequest);
            let files: Vec<ExpectedFile> = r
                .files
                .into_iter()
                .map(|f| ExpectedFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256.to_ascii_lowercase(),
                })
                .collect();
            package::validate(&files).map_err(|e| Status::invalid_argument(e.to_string()))?;
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
            let r = decode!(pb::OpenProbeListenersRequest);
            svc_net::nonce32("nonce", &r.nonce)?;
            for &p in &r.ports {
                svc_net::port_of("ports", p)?;
            }
            svc_net::ip_of("bind_ip", &r.bind_ip)?;
        }
        5 => {
            decode!(pb::CloseProbeListenersRequest);
        }
        6 => {
            let r = decode!(pb::RunProbesRequest);
            svc_net::nonce32("nonce", &r.nonce)?;
            for t in &r.targets {
                svc_net::ip_of("targets.ip", &t.ip)?
                    .ok_or_else(|| Status::invalid_argument("targets.ip is empty"))?;
                svc_net::port_of("targets.port", t.port)?;
            }
        }
        7 => {
            let r = decode!(pb::StartBandwidthReceiverRequest);
            svc_net::nonce32("token", &r.token)?;
            svc_net::ip_of("bind_ip", &r.bind_ip)?;
        }
        8 => {
            let r = decode!(pb::RunBandwidthSenderRequest);
            svc_net::nonce32("token", &r.token)?;
            r.address
                .parse::<std::net::SocketAddr>()
                .map_err(|_| Status::invalid_argument("address is not IP:PORT"))?;
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
