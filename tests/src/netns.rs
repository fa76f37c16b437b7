//! Network namespaces for multi-host tests (in progress).
