//! Pure domain logic of preflight. Invariant: nothing here does I/O, reads the clock or knows
//! tokio, tonic, sled or nix; time is a value passed in, so every rule is testable as data.

pub mod evidence;
pub mod net;
pub mod plan;
pub mod readiness;
pub mod role;
pub mod timefmt;
pub mod units;
pub mod workflow;

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
