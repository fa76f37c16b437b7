//! Persistence of hardening evidence (in progress).
