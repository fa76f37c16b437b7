//! Conversions between the wire enums and the one domain vocabulary of `preflight-core` that
//! the controller, the agent and the CLI all speak, written once here instead of in each.

use preflight_core::net::Proto;
use preflight_core::readiness::CheckGroup;

use crate::v1 as pb;

impl From<Proto> for pb::Protocol {
    fn from(p: Proto) -> Self {
        match p {
            Proto::Tcp => pb::Protocol::Tcp,
            Proto::Udp => pb::Protocol::Udp,
        }
    }
}

/// `PROTOCOL_UNSPECIFIED` on the wire: the caller decides whether that means TCP (a default) or
/// a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnspecifiedProtocol;

impl TryFrom<pb::Protocol> for Proto {
    type Error = UnspecifiedProtocol;
    fn try_from(p: pb::Protocol) -> Result<Self, Self::Error> {
        match p {
            pb::Protocol::Tcp => Ok(Proto::Tcp),
            pb::Protocol::Udp => Ok(Proto::Udp),
            pb::Protocol::Unspecified => Err(UnspecifiedProtocol),
        }
    }
}

impl From<CheckGroup> for pb::CheckGroup {
    fn from(g: CheckGroup) -> Self {
        match g {
            CheckGroup::Packages => pb::CheckGroup::Packages,
            CheckGroup::Ports => pb::CheckGroup::Ports,
            CheckGroup::Paths => pb::CheckGroup::Paths,
            CheckGroup::Bandwidth => pb::CheckGroup::Bandwidth,
            CheckGroup::Disk => pb::CheckGroup::Disk,
            CheckGroup::Vips => pb::CheckGroup::Vips,
        }
    }
}

/// `CHECK_GROUP_UNSPECIFIED` on the wire: no group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnspecifiedCheckGroup;

impl TryFrom<pb::CheckGroup> for CheckGroup {
    type Error = UnspecifiedCheckGroup;
    fn try_from(g: pb::CheckGroup) -> Result<Self, Self::Error> {
        match g {
            pb::CheckGroup::Packages => Ok(CheckGroup::Packages),
            pb::CheckGroup::Ports => Ok(CheckGroup::Ports),
            pb::CheckGroup::Paths => Ok(CheckGroup::Paths),
            pb::CheckGroup::Bandwidth => Ok(CheckGroup::Bandwidth),
            pb::CheckGroup::Disk => Ok(CheckGroup::Disk),
            pb::CheckGroup::Vips => Ok(CheckGroup::Vips),
            pb::CheckGroup::Unspecified => Err(UnspecifiedCheckGroup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_protocol_round_trips_and_unspecified_is_not_one() {
        for p in [Proto::Tcp, Proto::Udp] {
            assert_eq!(Proto::try_from(pb::Protocol::from(p)), Ok(p));
        }
        assert_eq!(
            Proto::try_from(pb::Protocol::Unspecified),
            Err(UnspecifiedProtocol)
        );
    }

    #[test]
    fn every_check_group_round_trips_with_its_json_word() {
        for g in CheckGroup::ALL {
            let w = pb::CheckGroup::from(g);
            assert_eq!(CheckGroup::try_from(w), Ok(g));
            assert_eq!(crate::json::name::<pb::CheckGroup>(w as i32), g.as_str());
        }
        assert_eq!(
            CheckGroup::try_from(pb::CheckGroup::Unspecified),
            Err(UnspecifiedCheckGroup)
        );
    }
}
