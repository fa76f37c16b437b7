//! Generated protobuf and gRPC code for the preflight wire contract (`proto/preflight/v1`).
//! Nothing hand-written lives here but the codec ([`codec`]) and how enums look in JSON ([`json`]): conversions to domain types
//! belong to the services.

#![allow(clippy::all, missing_docs)]

pub mod codec;
pub mod json;

/// Version 1 of the wire contract.
pub mod v1 {
    tonic::include_proto!("preflight.v1");
}
