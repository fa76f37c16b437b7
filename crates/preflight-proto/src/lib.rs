//! Generated protobuf and gRPC code for the preflight wire contract (`proto/preflight/v1`).
//! Nothing hand-written lives here but the codec ([`codec`]), how enums look in JSON ([`json`])
//! and the conversions of the vocabulary every crate shares ([`convert`]); conversions to a
//! service's own domain types belong to that service.

#![allow(clippy::all, missing_docs)]

pub mod codec;
pub mod convert;
pub mod json;

/// Version 1 of the wire contract.
pub mod v1 {
    tonic::include_proto!("preflight.v1");
}
