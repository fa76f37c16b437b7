//! Conversions between the wire enums and the one domain vocabulary of `preflight-core` that
//! the controller, the agent and the CLI all speak, written once here instead of in each.

use preflight_core::net::Proto;

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
}
