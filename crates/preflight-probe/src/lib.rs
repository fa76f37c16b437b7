//! What the agent reads and measures on a host, changing nothing: inventory, benchmarks,
//! listening ports, probes, bandwidth, package verification.

pub mod bench;
pub mod inventory;
pub mod ports;
