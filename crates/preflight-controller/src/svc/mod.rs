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

/// The Controller service: its RPCs are in `api`, the benchmark and network ones in `api_bench`
/// and `api_net`; defined here so that those modules and `api` do not import each other.
pub(crate) struct ApiSvc(pub std::sync::Arc<crate::Shared>);
