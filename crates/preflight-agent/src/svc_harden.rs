//! Agent hardening RPCs (in progress).

use preflight_proto::v1 as pb;
use tonic::{Request, Status};

/// Hardening state shared by requests (pending firewall changes, the signing key).
#[derive(Default)]
pub struct HardenState {}

pub async fn harden(
    _st: &HardenState,
    _r: Request<pb::HardenRequest>,
) -> Result<pb::HardenResponse, Status> {
    Err(Status::unimplemented("hardening is not wired yet"))
}

pub async fn confirm_firewall(
    _st: &HardenState,
    _r: Request<pb::ConfirmFirewallRequest>,
) -> Result<pb::ConfirmFirewallResponse, Status> {
    Err(Status::unimplemented("hardening is not wired yet"))
}
