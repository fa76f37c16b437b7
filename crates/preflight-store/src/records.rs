//! On-disk record types (version 1). Field names are part of the on-disk format: add fields
//! with `#[serde(default)]`, never rename; a change of meaning needs a new version byte.

use serde::{Deserialize, Serialize};

/// A person who may call the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// A [`preflight_core::role::Role`] id.
    pub role: String,
    /// SHA-256 of the bearer token, hex; the token itself is never stored.
    pub token_sha256: String,
    pub created_at_ms: i64,
    /// Unix ms after which the token is refused; `None` for no expiry.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// A one-time join token for enrolling one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub token_sha256: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub created_by: String,
    #[serde(default)]
    pub used_by: Option<String>,
    #[serde(default)]
    pub used_at_ms: Option<i64>,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Where its Agent service listens, as it reported it (may be 0.0.0.0:7444).
    #[serde(default)]
    pub listen_addr: String,
    /// The address its heartbeats come from, used when `listen_addr` is unspecified.
    #[serde(default)]
    pub observed_ip: String,
    pub version: String,
    pub enrolled_at_ms: i64,
    #[serde(default)]
    pub last_heartbeat_ms: i64,
    /// SHA-256 of the current certificate.
    pub cert_sha256: String,
    pub cert_not_after_unix: i64,
    #[serde(default)]
    pub revoked: bool,
}
