//! The network vocabulary every crate shares: a transport protocol, a port range, and a port
//! specification (protocol plus range), as plans, firewall facts, listeners and probes name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An inclusive range of ports; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port, at least 1.
    pub first: u16,
    /// Last port, at least `first`.
    pub last: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.last) - usize::from(self.first) + 1
    }

    /// Always false: a valid range holds at least one port (kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every port of the range.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol word that is neither `tcp` nor `udp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol {0:?} must be tcp or udp")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;

    /// `tcp` or `udp`, as [`Proto::as_str`] writes them (lowercase only).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(UnknownProto(other.to_owned())),
        }
    }
}

/// Ports of one protocol: `22/tcp`, `8000-8010/udp` (as users type them, as the workflow stores
/// missing ports and as the sweep names its port checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// The protocol.
    pub proto: Proto,
    /// The ports.
    pub ports: PortRange,
}

impl PortSpec {
    /// One port of a protocol.
    pub fn single(proto: Proto, port: u16) -> Self {
        PortSpec {
            proto,
            ports: PortRange {
                first: port,
                last: port,
            },
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ports, self.proto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_show_protocol_and_range() {
        let one = PortSpec::single(Proto::Tcp, 22);
        let many = PortSpec {
            proto: Proto::Udp,
            ports: PortRange {
                first: 8000,
                last: 8010,
            },
        };
        assert_eq!(one.to_string(), "22/tcp");
        assert_eq!(many.to_string(), "8000-8010/udp");
        assert_eq!(many.ports.len(), 11);
        assert_eq!(serde_json::to_string(&one.proto).unwrap(), "\"tcp\"");
    }

    #[test]
    fn protocols_read_back_the_words_they_write() {
        for p in [Proto::Tcp, Proto::Udp] {
            assert_eq!(p.to_string().parse::<Proto>(), Ok(p));
        }
        for bad in ["", "TCP", "sctp", "tcp "] {
            let e = bad.parse::<Proto>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("protocol {bad:?} must be tcp or udp")
            );
        }
    }
}
