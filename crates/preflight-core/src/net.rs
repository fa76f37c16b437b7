//! The network vocabulary every crate shares: a transport protocol, a port range, and a port
//! specification (protocol plus range), as plans, firewall facts, listeners and probes name them.

use std::fmt;

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

/// Ports of one protocol: `tcp/22`, `udp/8000-8010`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// The protocol.
    pub proto: Proto,
    /// The ports.
    pub ports: PortRange,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto, self.ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_show_protocol_and_range() {
        let one = PortSpec {
            proto: Proto::Tcp,
            ports: PortRange {
                first: 22,
                last: 22,
            },
        };
        let many = PortSpec {
            proto: Proto::Udp,
            ports: PortRange {
                first: 8000,
                last: 8010,
            },
        };
        assert_eq!(one.to_string(), "tcp/22");
        assert_eq!(many.to_string(), "udp/8000-8010");
        assert_eq!(many.ports.len(), 11);
        assert_eq!(serde_json::to_string(&one.proto).unwrap(), "\"tcp\"");
    }
}
