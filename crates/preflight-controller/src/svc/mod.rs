//! The gRPC services: thin tonic impls that authorize, convert the request into a domain request
//! (`TryFrom`, refusing with the field named), call an engine and convert its answer. Nothing
//! below `svc` imports a service module.

pub(crate) mod api;
pub(crate) mod api_bench;
pub(crate) mod api_net;
pub(crate) mod hardening;
pub(crate) mod readiness;
pub(crate) mod registry;
pub(crate) mod users;
pub(crate) mod workflow;
