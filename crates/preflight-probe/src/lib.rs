//! What the agent reads and measures on a host, changing nothing: inventory, benchmarks,
//! listening ports, probe listeners and connectors, bandwidth, package verification.

pub mod bandwidth;
pub mod bench;
pub mod inventory;
pub mod netprobe;
pub mod package;
pub mod ports;
