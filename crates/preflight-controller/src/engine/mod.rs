//! The controller's engines: the logic and state behind the services. An engine takes narrow
//! inputs (the store, the agent pool, a clock, another engine) and returns domain values and
//! domain errors; it never imports a service module (`crate::svc`) and never builds a tonic
//! `Status` for a request it did not receive.

pub(crate) mod evidence;
pub(crate) mod hardening;
pub(crate) mod net;
pub(crate) mod sweep;
pub(crate) mod users;
pub(crate) mod workflow;
