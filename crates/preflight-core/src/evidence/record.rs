//! The evidence record: one check, one operation, on one host, and its validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::canonical;
use super::facts::FirewallFacts;
use super::legacy;
use super::merkle::{leaf_hash, Hash32};
use crate::net::PortSpec;
use crate::role::Role;

/// Version of the [`EvidenceRecord`] encoding written by this code.
pub const RECORD_FORMAT_VERSION: u32 = 2;
/// The oldest record format still read (version 1: no typed facts; see [`super::legacy`]).
pub const OLDEST_RECORD_FORMAT_VERSION: u32 = 1;
/// Largest free-text field of a record (observed value, diff).
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Largest identifier-like field of a record (ids, host, versions, paths).
pub const MAX_ID_BYTES: usize = 512;
/// Most files one record may list as read.
pub const MAX_FILES_READ: usize = 1024;
/// Most MLPS or CIS references one record may carry.
pub const MAX_REFS: usize = 64;

const RECORD_DOMAIN: &[u8] = b"preflight evidence record v1\n";

/// The operation a record documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceOperation {
    /// Read-only check of the host.
    Audit,
    /// A change was written.
    Apply,
    /// Audit again after an apply.
    Verify,
    /// A backup was restored.
    Rollback,
}

impl EvidenceOperation {
    /// The snake_case name (as in the encoding).
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceOperation::Audit => "audit",
            EvidenceOperation::Apply => "apply",
            EvidenceOperation::Verify => "verify",
            EvidenceOperation::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for EvidenceOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of a check, as in CHECKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceStatus {
    /// The host meets the expected value.
    Compliant,
    /// The host does not meet the expected value.
    NonCompliant,
    /// The check does not apply to this host.
    NotApplicable,
    /// The check could not decide (the reason says why).
    Unknown,
}

impl EvidenceStatus {
    /// The snake_case name (as in the encoding).
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceStatus::Compliant => "compliant",
            EvidenceStatus::NonCompliant => "non_compliant",
            EvidenceStatus::NotApplicable => "not_applicable",
            EvidenceStatus::Unknown => "unknown",
        }
    }
}

/// Who asked for the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// User name at the controller.
    pub user: String,
    /// The user's role.
    pub role: Role,
}

/// One check, one operation, on one host: every field of CHECKS.md "Evidence record".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRecord {
    /// [`RECORD_FORMAT_VERSION`] for records written by this code; 1 for records written
    /// before records carried typed facts.
    pub format_version: u32,
    /// The agent that ran the operation.
    pub agent_id: String,
    /// SHA-256 of the agent certificate's DER, lowercase hex (64 characters).
    pub agent_cert_sha256: String,
    /// Host name as the agent reports it.
    pub host: String,
    /// Stable check id, e.g. `ssh.permit_root_login`.
    pub check_id: String,
    /// Version of the check catalog that ran.
    pub catalog_version: String,
    /// MLPS item references, e.g. `L3-CES1-06`.
    pub mlps_refs: Vec<String>,
    /// CIS benchmark references, e.g. `5.2.8`.
    pub cis_refs: Vec<String>,
    /// What was done.
    pub operation: EvidenceOperation,
    /// The observed raw value.
    pub observed: String,
    /// Every file read: absolute path -> SHA-256 of its content, lowercase hex.
    pub files_read: BTreeMap<String, String>,
    /// The expected value.
    pub expected: String,
    /// The outcome.
    pub status: EvidenceStatus,
    /// Why the status is what it is (mandatory for `unknown` and `not_applicable`).
    pub reason: Option<String>,
    /// The diff or rule list applied (apply and rollback).
    pub diff_applied: Option<String>,
    /// Reference to the backup taken before the change.
    pub backup_ref: Option<String>,
    /// Who asked.
    pub operator: Operator,
    /// UTC time of the operation in milliseconds since the Unix epoch.
    pub time_utc_ms: u64,
    /// Version of the agent that ran the operation.
    pub agent_version: String,
    /// The controller's request id, to join with the controller's own logs.
    pub controller_request_id: String,
    /// Format version 2: the firewall as a `fw.allowlist_ports` record states it (the ruleset
    /// and listeners a check read, or the allow-list a confirmed change made live). Absent
    /// from the encoding when `None`, so a version-1 record encodes as it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallFacts>,
}

/// A record and the agent's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    /// The record.
    pub record: EvidenceRecord,
    /// ECDSA P-256 SHA-256 ASN.1 DER signature, lowercase hex.
    pub signature: String,
}

/// A record that does not satisfy the evidence rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// Wrong format version.
    #[error("record format_version {0} is not supported; expected {OLDEST_RECORD_FORMAT_VERSION} to {RECORD_FORMAT_VERSION}")]
    FormatVersion(u32),
    /// Typed facts the record's format version does not have, or that break the rules.
    #[error("record facts: {0}")]
    Facts(String),
    /// A mandatory field is empty.
    #[error("record field {0} is empty; fill it in")]
    Empty(&'static str),
    /// A field is longer than its cap.
    #[error("record field {field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A field holds a control character.
    #[error("record field {0} holds a control character; ids and hosts must be printable")]
    ControlChar(&'static str),
    /// A hash field is not 64 lowercase hex characters.
    #[error("record field {field} value {value:?} is not a lowercase hex SHA-256")]
    BadHash {
        /// The field.
        field: &'static str,
        /// The offending value (truncated).
        value: String,
    },
    /// A file path is not absolute.
    #[error("record files_read path {0:?} is not absolute")]
    RelativePath(String),
    /// Too many entries in a list field.
    #[error("record field {field} has {len} entries, more than the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Its entry count.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Status needs a reason.
    #[error("record with status {0:?} needs a reason")]
    MissingReason(EvidenceStatus),
}

// ---------------------------------------------------------------------------------------------
// records and signatures

fn check_text(
    field: &'static str,
    s: &str,
    max: usize,
    id_like: bool,
) -> Result<(), InvalidRecord> {
    if s.len() > max {
        return Err(InvalidRecord::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if id_like && s.chars().any(char::is_control) {
        return Err(InvalidRecord::ControlChar(field));
    }
    Ok(())
}

fn check_id(field: &'static str, s: &str) -> Result<(), InvalidRecord> {
    if s.is_empty() {
        return Err(InvalidRecord::Empty(field));
    }
    check_text(field, s, MAX_ID_BYTES, true)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hash(field: &'static str, s: &str) -> Result<(), InvalidRecord> {
    if is_sha256_hex(s) {
        Ok(())
    } else {
        Err(InvalidRecord::BadHash {
            field,
            value: s.chars().take(80).collect(),
        })
    }
}

impl EvidenceRecord {
    /// Checks the record against the evidence rules (mandatory fields, caps, hash formats).
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if !(OLDEST_RECORD_FORMAT_VERSION..=RECORD_FORMAT_VERSION).contains(&self.format_version) {
            return Err(InvalidRecord::FormatVersion(self.format_version));
        }
        if let Some(f) = &self.firewall {
            if self.format_version < 2 {
                return Err(InvalidRecord::Facts(format!(
                    "a record of format_version {} carries no firewall facts",
                    self.format_version
                )));
            }
            if let Some(p) = f.problem() {
                return Err(InvalidRecord::Facts(p));
            }
        }
        check_id("agent_id", &self.agent_id)?;
        check_hash("agent_cert_sha256", &self.agent_cert_sha256)?;
        check_id("host", &self.host)?;
        check_id("check_id", &self.check_id)?;
        check_id("catalog_version", &self.catalog_version)?;
        for (field, refs) in [("mlps_refs", &self.mlps_refs), ("cis_refs", &self.cis_refs)] {
            if refs.len() > MAX_REFS {
                return Err(InvalidRecord::TooMany {
                    field,
                    len: refs.len(),
                    max: MAX_REFS,
                });
            }
            for r in refs {
                check_id(field, r)?;
            }
        }
        check_text("observed", &self.observed, MAX_TEXT_BYTES, false)?;
        if self.files_read.len() > MAX_FILES_READ {
            return Err(InvalidRecord::TooMany {
                field: "files_read",
                len: self.files_read.len(),
                max: MAX_FILES_READ,
            });
        }
        for (path, hash) in &self.files_read {
            check_text("files_read", path, 4096, true)?;
            if !path.starts_with('/') {
                return Err(InvalidRecord::RelativePath(path.clone()));
            }
            check_hash("files_read", hash)?;
        }
        check_text("expected", &self.expected, MAX_TEXT_BYTES, false)?;
        match (&self.reason, self.status) {
            (None, s @ (EvidenceStatus::Unknown | EvidenceStatus::NotApplicable)) => {
                return Err(InvalidRecord::MissingReason(s));
            }
            (Some(r), _) => check_text("reason", r, MAX_TEXT_BYTES, false)?,
            (None, _) => {}
        }
        if let Some(d) = &self.diff_applied {
            check_text("diff_applied", d, MAX_TEXT_BYTES, false)?;
        }
        if let Some(b) = &self.backup_ref {
            check_id("backup_ref", b)?;
        }
        check_id("operator.user", &self.operator.user)?;
        check_id("agent_version", &self.agent_version)?;
        check_id("controller_request_id", &self.controller_request_id)?;
        Ok(())
    }

    /// The ports the record shows the firewall allowing, when it shows an allow-list: the
    /// typed facts of a current record, or for a version-1 record what
    /// [`legacy::v1_allowed_ports`] reads from its text. `None` for a record that shows none
    /// (a pending apply, a rollback, a check that could not read the ruleset).
    pub fn allowed_ports(&self) -> Option<Vec<PortSpec>> {
        if self.format_version == 1 {
            return legacy::v1_allowed_ports(self);
        }
        self.firewall.as_ref().map(|f| f.allowed.clone())
    }

    /// The canonical encoding (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical(self)
    }

    /// The exact bytes the agent signs: a domain tag followed by the canonical encoding.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = RECORD_DOMAIN.to_vec();
        m.extend_from_slice(&self.canonical_bytes());
        m
    }
}

impl SignedRecord {
    /// The Merkle leaf data: the canonical encoding of record and signature.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        canonical(self)
    }

    /// RFC 6962 leaf hash of [`SignedRecord::leaf_bytes`].
    pub fn leaf_hash(&self) -> Hash32 {
        leaf_hash(&self.leaf_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_bad_records() {
        let mut r = EvidenceRecord {
            format_version: RECORD_FORMAT_VERSION,
            agent_id: "a1".into(),
            agent_cert_sha256: "0".repeat(64),
            host: "h".into(),
            check_id: "ssh.misc".into(),
            catalog_version: "1".into(),
            mlps_refs: vec![],
            cis_refs: vec![],
            operation: EvidenceOperation::Audit,
            observed: String::new(),
            files_read: BTreeMap::new(),
            expected: String::new(),
            status: EvidenceStatus::Compliant,
            reason: None,
            diff_applied: None,
            backup_ref: None,
            operator: Operator {
                user: "u".into(),
                role: Role::Deployer,
            },
            time_utc_ms: 0,
            agent_version: "0.1.0".into(),
            controller_request_id: "r".into(),
            firewall: None,
        };
        assert_eq!(r.validate(), Ok(()));
        r.status = EvidenceStatus::Unknown;
        assert_eq!(
            r.validate(),
            Err(InvalidRecord::MissingReason(EvidenceStatus::Unknown))
        );
        r.reason = Some("cannot parse".into());
        r.files_read.insert("etc/passwd".into(), "0".repeat(64));
        assert!(matches!(r.validate(), Err(InvalidRecord::RelativePath(_))));
        r.files_read.clear();
        r.files_read.insert("/etc/passwd".into(), "A".repeat(64));
        assert!(matches!(r.validate(), Err(InvalidRecord::BadHash { .. })));
        r.files_read.clear();
        r.host = "h\nx".into();
        assert_eq!(r.validate(), Err(InvalidRecord::ControlChar("host")));
    }
}
