//! Harness for the end-to-end tests: real binaries, real TLS, real sled, and (as root)
//! network namespaces.

pub mod cluster;
pub mod grpc;
pub mod netns;
