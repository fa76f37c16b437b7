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
    /// A disabled user's token is refused until an admin enables the user again.
    #[serde(default)]
    pub disabled: bool,
    /// When the current token was issued (add or rotate); 0 in records from before rotation.
    #[serde(default)]
    pub token_issued_at_ms: i64,
}

/// One change to the people who may call the controller, with who made it (`user_audit`
/// tree, append-only; the names stay here after a user is removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAuditRecord {
    pub at_ms: i64,
    /// The user who made the change (`serve --init` / `serve --rotate-token` for the local
    /// operator at the data directory).
    pub by: String,
    /// `add`, `rotate`, `disable`, `enable` or `remove`.
    pub action: String,
    /// The user changed.
    pub user: String,
    /// E.g. the role added, or the new token's expiry.
    #[serde(default)]
    pub detail: String,
}

/// A join token for enrolling `max_uses` agents (one, unless made with `--uses`).
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
    /// How many enrollments the token allows; records from before `--uses` allow one.
    #[serde(default = "one")]
    pub max_uses: u32,
    /// Every enrollment made with it, in order (`used_by`/`used_at_ms` keep the first).
    #[serde(default)]
    pub uses: Vec<JoinTokenUse>,
}

fn one() -> u32 {
    1
}

/// One enrollment made with a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenUse {
    pub agent: String,
    pub at_ms: i64,
}

impl JoinTokenRecord {
    /// Enrollments made so far (records from before `uses` existed count `used_by`).
    pub fn use_count(&self) -> usize {
        self.uses.len().max(usize::from(self.used_by.is_some()))
    }
}

/// An enrolled agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// SHA-256 of the current certificate's DER: the only certificate accepted for this
    /// agent (besides `prev_cert_sha256` during a renewal). Empty in a record that never had
    /// one: the first certificate presented is then accepted and recorded.
    #[serde(default)]
    pub cert_sha256: String,
    pub cert_not_after_unix: i64,
    #[serde(default)]
    pub revoked: bool,
    /// The certificate replaced by the last renewal, still accepted until the new one is
    /// first used or `prev_cert_until_ms` passes, whichever comes first.
    #[serde(default)]
    pub prev_cert_sha256: String,
    #[serde(default)]
    pub prev_cert_until_ms: i64,
}
