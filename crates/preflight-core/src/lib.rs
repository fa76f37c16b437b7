//! Pure domain logic of preflight. Invariant: nothing here does I/O, reads the clock or knows
//! tokio, tonic, sled or nix; time is a value passed in, so every rule is testable as data.

pub mod evidence;
pub mod plan;
pub mod readiness;
pub mod role;
pub mod timefmt;
pub mod workflow;
